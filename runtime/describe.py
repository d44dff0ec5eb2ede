"""Everything derived from node declarations: node docs, the flow JSON Schema, graph drawings.

One declaration per node type (its class attributes and config model) drives all three, so the
docs, the schema and validation cannot disagree.
"""

from __future__ import annotations

import inspect
import json
from typing import Any

from pydantic_core import PydanticUndefined

from .compiler import RESERVED, CompiledFlow
from .node import Kind, Node, NodeConfig, config_ports
from .registry import Registry

__all__ = ["flow_schema", "node_markdown", "nodes_markdown", "render_graph"]

_WIRES_SCHEMA: dict[str, Any] = {
    "description": "Where this node's messages go: a list of node ids (the default output "
    "port) or a mapping of port -> list of node ids.",
    "anyOf": [
        {"type": "array", "items": {"type": "string"}},
        {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    ],
}
_RESERVED_SCHEMA: dict[str, Any] = {
    "wires": _WIRES_SCHEMA,
    "label": {"type": "string", "description": "A display name (graph, logs)."},
    "disabled": {
        "type": "boolean",
        "default": False,
        "description": "Keep the node in the file but do not run it.",
    },
}


def _doc_body(cls: type[Node[NodeConfig]]) -> str:
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    return "\n".join(lines[1:]).strip()


def _type_of(schema: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in schema:
        ref = str(schema["$ref"]).split("/")[-1]
        target = defs.get(ref, {})
        if "enum" in target:
            return " | ".join(json.dumps(v) for v in target["enum"])
        return str(target.get("title", ref))
    if "enum" in schema:
        return " | ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "anyOf" in schema:
        return " | ".join(_type_of(s, defs) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list[{_type_of(schema.get('items', {}), defs)}]"
    if kind == "object":
        extra = schema.get("additionalProperties")
        return f"map[str, {_type_of(extra, defs)}]" if isinstance(extra, dict) else "mapping"
    bounds = []
    for key, sym in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            bounds.append(f"{sym} {schema[key]}")
    text = {"integer": "int", "number": "float", "boolean": "bool", "string": "str"}.get(
        kind, str(kind)
    )
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _default_of(cls: type[Node[NodeConfig]], name: str) -> str:
    info = cls.config_model.model_fields[name]
    if info.is_required():
        return "required"
    if info.default is PydanticUndefined and info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    return json.dumps(value, default=str)


def node_markdown(cls: type[Node[NodeConfig]]) -> str:
    """Markdown documentation of one node type."""
    schema = cls.config_model.model_json_schema()
    defs = schema.get("$defs", {})
    lines = [f"## `{cls.type_name}`", "", cls.summary(), ""]
    body = _doc_body(cls)
    if body:
        lines += [body, ""]
    inp = cls.input_kind.value if cls.input_kind else "none (source)"
    lines.append(f"- **input:** {inp}")
    if cls.output_ports:
        ports = ", ".join(f"`{p}` ({k.value})" for p, k in cls.output_ports.items())
        if config_ports(cls):
            ports = f"ports named by the config, plus {ports}"
        if Kind.ANY in cls.output_ports.values():
            ports += "; `any` ports carry what the node receives"
        lines.append(f"- **outputs:** {ports}")
    elif cls.input_kind is not None:
        lines.append("- **outputs:** none (sink)")
    else:
        lines.append("- **outputs:** none (it acts outside the flow, e.g. sends onto a bus)")
    lines += ["", "| key | type | default | description |", "|---|---|---|---|"]
    for name, prop in schema.get("properties", {}).items():
        desc = cls.config_model.model_fields[name].description or ""
        row = [f"`{name}`", _type_of(prop, defs), f"`{_default_of(cls, name)}`", desc]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    for example in cls.examples:
        lines += ["", "Example:", "", "```yaml", example.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def nodes_markdown(registry: Registry) -> str:
    """``docs/nodes.md``: every registered node type (``make docs`` regenerates it)."""
    out = [
        "# Node types",
        "",
        "Generated from the node registry by `les02-flow nodes --markdown` (`make docs`); "
        "do not edit by hand.",
        "",
        "Every node also takes the reserved keys `type`, `wires`, `label` and `disabled` "
        "(see [flows.md](flows.md)).",
        "",
    ]
    out += [f"- [`{c.type_name}`](#{c.type_name}) — {c.summary()}" for c in registry]
    out.append("")
    out += [node_markdown(c) for c in registry]
    return "\n".join(out)


_VARIABLE = {"type": "string", "pattern": r"\$\{[A-Za-z_]", "description": "${VAR} substitution"}


def _allow_variable(prop: dict[str, Any]) -> dict[str, Any]:
    """Let a non-string value also be written as ``${VAR:-default}``."""
    if prop.get("type") == "string":
        return prop
    return {
        **{k: v for k, v in prop.items() if k in ("title", "description", "default")},
        "anyOf": [{k: v for k, v in prop.items() if k not in ("title", "description")}, _VARIABLE],
    }


def flow_schema(registry: Registry) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a flow file: one ``oneOf`` branch per node type."""
    defs: dict[str, Any] = {}
    branches = []
    for cls in registry:
        prefix = cls.type_name
        schema = cls.config_model.model_json_schema(ref_template=f"#/$defs/{prefix}.{{model}}")
        for name, sub in schema.pop("$defs", {}).items():
            defs[f"{prefix}.{name}"] = sub
        props = {k: _allow_variable(v) for k, v in schema.get("properties", {}).items()}
        props.update(_RESERVED_SCHEMA)
        props["type"] = {"const": cls.type_name, "description": cls.summary()}
        branches.append(
            {
                "title": cls.type_name,
                "description": cls.summary(),
                "type": "object",
                "properties": props,
                "required": ["type", *schema.get("required", [])],
                "additionalProperties": False,
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://les02-flow.invalid/flow.schema.json",
        "title": "les02-flow flow",
        "type": "object",
        "required": ["version", "nodes"],
        "additionalProperties": False,
        "patternProperties": {
            "^x-": {"description": "Ignored: a place for YAML anchors (e.g. x-defaults: &d)."}
        },
        "properties": {
            "version": {"const": 1, "description": "Flow format version."},
            "name": {"type": "string", "description": "Flow name (logs, graph)."},
            "description": {"type": "string", "description": "Free text."},
            "nodes": {
                "type": "object",
                "description": "Node id -> node. Reserved keys: " + ", ".join(RESERVED),
                "additionalProperties": {"oneOf": branches},
                "minProperties": 1,
            },
        },
        "$defs": defs,
    }


def render_graph(flow: CompiledFlow, fmt: str = "mermaid") -> str:
    """The flow as a Mermaid ``flowchart`` or a Graphviz ``digraph``."""
    if fmt not in ("mermaid", "dot"):
        raise ValueError(f"unknown graph format {fmt!r} (use mermaid or dot)")
    lines: list[str] = []
    if fmt == "mermaid":
        lines.append("flowchart LR")
        for n in flow.nodes.values():
            text = f"{n.label or n.id}<br/><i>{n.type_name}</i>"
            if n.disabled:
                text += "<br/>(disabled)"
            lines.append(f'  {n.id}["{text}"]')
        for n in flow.nodes.values():
            for port, targets in n.wires.items():
                kind = n.kinds[port].value
                for t in targets:
                    lines.append(f"  {n.id} -->|{port}: {kind}| {t}")
    else:
        lines.append(f'digraph "{flow.name}" {{')
        lines.append("  rankdir=LR; node [shape=box];")
        for n in flow.nodes.values():
            style = ", style=dashed" if n.disabled else ""
            lines.append(f'  "{n.id}" [label="{n.label or n.id}\\n{n.type_name}"{style}];')
        for n in flow.nodes.values():
            for port, targets in n.wires.items():
                kind = n.kinds[port].value
                for t in targets:
                    lines.append(f'  "{n.id}" -> "{t}" [label="{port}: {kind}"];')
        lines.append("}")
    return "\n".join(lines) + "\n"
