"""Flow compiler: validates a :class:`FlowDocument` against the registry, collecting *every*
error before anything is built. ``validate``, ``graph``, ``run`` and ``schema`` share it.

Checks, each reported as ``FILE:LINE:COL: node 'ID': message``: top-level shape and
``version``; unknown node type (with the closest known name); unknown config key (with the
closest known key); wrong value type or range (pydantic); reserved keys (``type``, ``wires``,
``label``, ``disabled``); wires to a missing node or port, into a source, out of a sink; kind
mismatch between an output port and an input; cycles; plus what reading found (YAML syntax,
duplicate ids, unset variables, bad ``--set``).
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from .flowfile import FlowDocument, FlowError, FlowErrors, Location, apply_sets, load_flow
from .node import DEFAULT_PORT, Kind, Node, NodeConfig, config_ports
from .registry import Registry, default_registry

__all__ = ["CompiledFlow", "CompiledNode", "compile_document", "compile_file"]

#: most nodes in one flow (docs/flows.md, "Limits")
MAX_NODES = 2000

RESERVED = ("type", "wires", "label", "disabled")
TOP_LEVEL = ("version", "name", "description", "nodes")


@dataclass
class CompiledNode:
    """One validated node: its class, config instance and outgoing wires per port.

    ``ports`` are this instance's output ports (``cls.ports_for(config)``: the class-level
    ``output_ports`` for most types, ports named by the config for e.g. ``switch``);
    ``kinds`` what each port carries in this flow (an ``any`` port of a pass-through node is
    resolved to the kind wired into it, where that is one kind).
    """

    id: str
    cls: type[Node[NodeConfig]]
    config: NodeConfig
    wires: dict[str, list[str]] = field(default_factory=dict)
    label: str | None = None
    disabled: bool = False
    location: Location = field(default_factory=lambda: Location("<flow>"))
    ports: dict[str, Kind] = field(default_factory=dict)
    kinds: dict[str, Kind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = dict(self.cls.ports_for(self.config))
        for port, kind in self.ports.items():
            self.kinds.setdefault(port, kind)

    @property
    def type_name(self) -> str:
        return self.cls.type_name


@dataclass
class CompiledFlow:
    """A valid flow: nodes in topological order (sources first)."""

    name: str
    path: str
    nodes: dict[str, CompiledNode]

    def enabled(self) -> list[CompiledNode]:
        return [n for n in self.nodes.values() if not n.disabled]

    def upstream(self, node_id: str) -> list[tuple[str, str]]:
        """``(node id, port)`` pairs wired into ``node_id`` from enabled nodes."""
        return [
            (n.id, port)
            for n in self.enabled()
            for port, targets in n.wires.items()
            if node_id in targets
        ]


def compile_file(
    path: str | Path, sets: Sequence[str] = (), registry: Registry | None = None
) -> CompiledFlow:
    """Read, override and validate a flow file; raises :class:`FlowErrors` with all errors."""
    doc = load_flow(path)
    if doc.data is not None:
        apply_sets(doc, sets)
    return compile_document(doc, registry)


def compile_document(doc: FlowDocument, registry: Registry | None = None) -> CompiledFlow:
    """Validate a loaded document; raises :class:`FlowErrors` with every error found."""
    registry = registry or default_registry()
    errors = list(doc.errors)
    data = doc.data
    if data is None:
        if not errors:
            errors.append(FlowError(Location(doc.path, 1, 1), "the flow file is empty"))
        raise FlowErrors(errors)
    if not isinstance(data, dict):
        errors.append(FlowError(doc.where(()), "a flow must be a mapping with 'nodes'"))
        raise FlowErrors(errors)

    for key in data:
        if key not in TOP_LEVEL and not (isinstance(key, str) and key.startswith("x-")):
            errors.append(
                FlowError(
                    doc.where((key,), key=True),
                    f"unknown top-level key '{key}'{_hint(key, TOP_LEVEL)} "
                    f"(allowed: {', '.join(TOP_LEVEL)}, and x-... for YAML anchors)",
                )
            )
    version = data.get("version")
    if version != 1:
        where = doc.where(("version",)) if "version" in data else doc.where(())
        errors.append(FlowError(where, f"'version' must be 1, got {version!r}"))
    name = data.get("name", Path(doc.path).stem)
    if not isinstance(name, str):
        errors.append(FlowError(doc.where(("name",)), "'name' must be a string"))
        name = str(name)

    raw_nodes = data.get("nodes")
    nodes: dict[str, CompiledNode] = {}
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        where = doc.where(("nodes",)) if "nodes" in data else doc.where(())
        errors.append(FlowError(where, "'nodes' must be a non-empty mapping of id -> node"))
        raise FlowErrors(errors)
    if len(raw_nodes) > MAX_NODES:
        errors.append(
            FlowError(
                doc.where(("nodes",)),
                f"the flow has {len(raw_nodes):,} nodes; the limit is {MAX_NODES:,}",
            )
        )
        raise FlowErrors(errors)

    classes: dict[str, type[Node[NodeConfig]]] = {}
    wiring: dict[str, dict[str, list[str]]] = {}
    #: per node: output port -> kind (None: the config is invalid, so the ports are unknown)
    port_kinds: dict[str, dict[str, Kind] | None] = {}
    input_kinds: dict[str, Kind | None] = {}
    for node_id, raw in raw_nodes.items():
        nid = str(node_id)
        cls, compiled = _compile_node(doc, registry, nid, raw, errors)
        if cls is None:
            continue
        classes[nid] = cls
        if compiled is not None:
            ports: dict[str, Kind] | None = dict(compiled.ports)
            input_kinds[nid] = cls.input_kind_for(compiled.config)
        elif config_ports(cls):
            ports = None
            input_kinds[nid] = cls.input_kind
        else:
            ports = dict(cls.output_ports)
            input_kinds[nid] = cls.input_kind
        port_kinds[nid] = ports
        wiring[nid] = _compile_wires(doc, nid, cls, ports, raw.get("wires"), raw_nodes, errors)
        if compiled is not None:
            compiled.wires = wiring[nid]
            nodes[nid] = compiled
    resolved = _resolve_kinds(classes, port_kinds, input_kinds, wiring)
    for nid, compiled in nodes.items():
        compiled.kinds = dict(resolved.get(nid) or compiled.ports)
    _check_kinds(doc, classes, resolved, input_kinds, wiring, errors)
    _check_cycles(doc, wiring, errors)
    if errors:
        raise FlowErrors(errors)
    ordered = {nid: nodes[nid] for nid in _topological(nodes)}
    return CompiledFlow(name=name, path=doc.path, nodes=ordered)


def _hint(word: str, choices: Sequence[str]) -> str:
    found = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{found[0]}'?)" if found else ""


def _compile_node(
    doc: FlowDocument, registry: Registry, nid: str, raw: Any, errors: list[FlowError]
) -> tuple[type[Node[NodeConfig]] | None, CompiledNode | None]:
    """The node's class (when its type is known) and the compiled node (when all is valid)."""
    base = ("nodes", nid)
    loc = doc.where(base, key=True)
    if not isinstance(raw, dict):
        errors.append(
            FlowError(doc.where(base), "a node must be a mapping with at least 'type'", nid)
        )
        return None, None
    type_name = raw.get("type")
    if type_name is None:
        errors.append(FlowError(loc, "missing 'type'", nid))
        return None, None
    cls = registry.get(str(type_name))
    if cls is None:
        close = registry.closest(str(type_name))
        hint = f" (did you mean '{close}'?)" if close else ""
        errors.append(
            FlowError(doc.where((*base, "type")), f"unknown node type '{type_name}'{hint}", nid)
        )
        return None, None

    label = raw.get("label")
    if label is not None and not isinstance(label, str):
        errors.append(FlowError(doc.where((*base, "label")), "'label' must be a string", nid))
    disabled = raw.get("disabled", False)
    if not isinstance(disabled, bool):
        errors.append(
            FlowError(doc.where((*base, "disabled")), "'disabled' must be true or false", nid)
        )
        disabled = False

    fields = cls.config_model.model_fields
    settings = {k: v for k, v in raw.items() if k not in RESERVED}
    config: NodeConfig | None = None
    strict = _strict_problems(cls.config_model, settings, ())
    for loc_path, msg in strict:
        dotted = ".".join(map(str, loc_path))
        errors.append(FlowError(doc.where((*base, *loc_path)), f"'{dotted}': {msg}", nid))
    if strict:
        return cls, None
    try:
        config = cls.config_model.model_validate(settings)
    except ValidationError as exc:
        for err in exc.errors():
            loc_path = tuple(err["loc"])
            full = (*base, *loc_path)
            if any(full[:n] in doc.poisoned for n in range(len(base) + 1, len(full) + 1)):
                continue  # already reported (e.g. an unset variable)
            key = str(loc_path[0]) if loc_path else ""
            if err["type"] == "extra_forbidden":
                known = [*fields, *RESERVED]
                msg = f"unknown config key '{key}' for {type_name}{_hint(key, known)}"
                where = doc.where((*base, *loc_path), key=True)
            elif err["type"] == "missing":
                msg = f"missing required config key '{'.'.join(map(str, loc_path))}'"
                where = loc
            else:
                dotted = ".".join(map(str, loc_path))
                given = err.get("input")
                shown = repr(given)
                if len(shown) > 80:
                    shown = shown[:60] + f"... ({len(shown):,} characters)"
                msg = f"'{dotted}': {err['msg']} (got {shown})" if dotted else err["msg"]
                where = doc.where((*base, *loc_path))
            errors.append(FlowError(where, msg, nid))
    if config is None:
        return cls, None
    return cls, CompiledNode(
        id=nid,
        cls=cls,
        config=config,
        label=label if isinstance(label, str) else None,
        disabled=disabled,
        location=loc,
    )


_NON_FINITE = frozenset(
    f"{sign}{word}" for sign in ("", "+", "-") for word in ("inf", "infinity", "nan")
)


def _flatten(annotation: Any) -> list[Any]:
    """The alternatives of an annotation (Optional/Union/Annotated unwrapped)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _flatten(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [a for arg in typing.get_args(annotation) for a in _flatten(arg)]
    return [annotation]


def _strict_problems(
    model: type[BaseModel], value: Any, path: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    """Values pydantic's lax mode would misread: a boolean where a number is meant
    (``port: true`` is not port 1) and non-finite numbers (``.inf``, ``nan``) anywhere."""
    if not isinstance(value, dict):
        return []
    problems: list[tuple[tuple[str | int, ...], str]] = []
    fields = model.model_fields
    for key, item in value.items():
        info = fields.get(key) if isinstance(key, str) else None
        if info is not None:
            problems += _check_value(info.annotation, item, (*path, key))
    return problems


def _check_value(
    annotation: Any, value: Any, path: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    alts = _flatten(annotation)
    if any(a is Any or a is object for a in alts):
        return _non_finite_anywhere(value, path)
    plain = {a for a in alts if isinstance(a, type)}
    literals = [
        v for a in alts if typing.get_origin(a) is typing.Literal for v in typing.get_args(a)
    ]
    numeric = bool(plain & {int, float})
    if isinstance(value, bool):
        if bool not in plain and not any(isinstance(v, bool) for v in literals) and numeric:
            return [(path, f"expected a number, got the boolean {str(value).lower()}")]
        return []
    if isinstance(value, float) and not math.isfinite(value):
        return [(path, f"must be a finite number, got {value}")]
    if (
        isinstance(value, str)
        and float in plain
        and str not in plain
        and value.strip().lower() in _NON_FINITE
        and value not in literals
    ):
        return [(path, f"must be a finite number, got {value!r}")]
    if isinstance(value, list):
        item_types = [
            typing.get_args(a)[0]
            for a in alts
            if typing.get_origin(a) in (list, tuple, set, frozenset) and typing.get_args(a)
        ]
        if item_types:
            out: list[tuple[tuple[str | int, ...], str]] = []
            for i, item in enumerate(value):
                out += _check_value(item_types[0], item, (*path, i))
            return out
        return _non_finite_anywhere(value, path)
    if isinstance(value, dict):
        for a in alts:
            if isinstance(a, type) and issubclass(a, BaseModel):
                return _strict_problems(a, value, path)
        for a in alts:
            if typing.get_origin(a) in (dict, Mapping) and len(typing.get_args(a)) == 2:
                vtype = typing.get_args(a)[1]
                out = []
                for k, item in value.items():
                    out += _check_value(vtype, item, (*path, k))
                return out
        return _non_finite_anywhere(value, path)
    return []


def _non_finite_anywhere(
    value: Any, path: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    todo: list[tuple[Any, tuple[str | int, ...]]] = [(value, path)]
    out: list[tuple[tuple[str | int, ...], str]] = []
    while todo:
        v, p = todo.pop()
        if isinstance(v, float) and not math.isfinite(v):
            out.append((p, f"must be a finite number, got {v}"))
        elif isinstance(v, list):
            todo += [(item, (*p, i)) for i, item in enumerate(v)]
        elif isinstance(v, dict):
            todo += [(item, (*p, k)) for k, item in v.items()]
    return out


def _compile_wires(
    doc: FlowDocument,
    nid: str,
    cls: type[Node[NodeConfig]],
    known_ports: Mapping[str, Kind] | None,
    raw: Any,
    raw_nodes: dict[Any, Any],
    errors: list[FlowError],
) -> dict[str, list[str]]:
    """Wires by port. ``known_ports`` is ``None`` when the ports depend on a config that is
    invalid (already reported): port names are then not checked."""
    base = ("nodes", nid, "wires")
    if raw is None:
        return {}
    ports = dict(cls.output_ports if known_ports is None else known_ports)
    if not ports and known_ports is not None:
        errors.append(
            FlowError(doc.where(base), f"{cls.type_name} is a sink: it has no output to wire", nid)
        )
        return {}
    by_port: dict[str, tuple[Any, tuple[str | int, ...]]] = {}
    if isinstance(raw, list):
        default = DEFAULT_PORT if DEFAULT_PORT in ports else next(iter(ports))
        by_port[default] = (raw, base)
    elif isinstance(raw, dict):
        for port, targets in raw.items():
            by_port[str(port)] = (targets, (*base, port))
    elif isinstance(raw, str):
        default = DEFAULT_PORT if DEFAULT_PORT in ports else next(iter(ports))
        by_port[default] = ([raw], base)
    else:
        errors.append(
            FlowError(
                doc.where(base),
                "'wires' must be a list of node ids or a mapping of port -> list of node ids",
                nid,
            )
        )
        return {}
    wires: dict[str, list[str]] = {}
    for port, (targets, path) in by_port.items():
        if port not in ports and known_ports is not None:
            errors.append(
                FlowError(
                    doc.where(path, key=True),
                    f"{cls.type_name} has no output port '{port}' "
                    f"(ports: {', '.join(ports)}){_hint(port, list(ports))}",
                    nid,
                )
            )
            continue
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, list):
            errors.append(
                FlowError(doc.where(path), f"port '{port}': expected a list of node ids", nid)
            )
            continue
        clean: list[str] = []
        for i, target in enumerate(targets):
            where = doc.where((*path, i)) if isinstance(raw, (list, dict)) else doc.where(path)
            if not isinstance(target, str):
                msg = f"wire target must be a node id, got {target!r}"
                errors.append(FlowError(where, msg, nid))
            elif target not in raw_nodes:
                known = [str(k) for k in raw_nodes]
                errors.append(
                    FlowError(where, f"wire to missing node '{target}'{_hint(target, known)}", nid)
                )
            elif target == nid:
                errors.append(FlowError(where, "a node cannot be wired to itself", nid))
            elif target not in clean:
                clean.append(target)
        wires[port] = clean
    return wires


def _resolve_kinds(
    classes: dict[str, type[Node[NodeConfig]]],
    port_kinds: dict[str, dict[str, Kind] | None],
    input_kinds: dict[str, Kind | None],
    wiring: dict[str, dict[str, list[str]]],
) -> dict[str, dict[str, Kind] | None]:
    """Resolve the ``any`` output ports of pass-through nodes (class input ``any``): to the
    instance's input kind when its config narrows it (a filter on CAN ids: ``frame``), else to
    the one kind wired into the node, following the wires to a fixpoint (cycles are reported
    elsewhere). Several kinds wired in, or none known, leave the port ``any``."""
    resolved = {nid: (dict(p) if p is not None else None) for nid, p in port_kinds.items()}
    through_nodes = [
        nid
        for nid, p in port_kinds.items()
        if p is not None and classes[nid].input_kind is Kind.ANY and Kind.ANY in p.values()
    ]
    # a worklist: a node is looked at again only when a node wired into it changed, so a
    # chain of thousands of pass-through nodes resolves in linear time (not rounds x nodes)
    incoming: dict[str, list[tuple[str, str]]] = {nid: [] for nid in wiring}
    for src, wires in wiring.items():
        for port, targets in wires.items():
            for t in targets:
                if t in incoming:
                    incoming[t].append((src, port))
    through_set = set(through_nodes)
    todo = deque(through_nodes)
    queued = set(through_nodes)
    budget = 8 * (len(through_nodes) + 1) + sum(len(v) for v in incoming.values())
    while todo and budget > 0:
        budget -= 1
        nid = todo.popleft()
        queued.discard(nid)
        narrowed = input_kinds.get(nid)
        through: Kind
        if narrowed is not None and narrowed is not Kind.ANY:
            through = narrowed
        else:
            seen: set[Kind] = set()
            for src, port in incoming.get(nid, ()):
                kinds = resolved.get(src)
                seen.add(kinds.get(port, Kind.ANY) if kinds else Kind.ANY)
            through = next(iter(seen)) if len(seen) == 1 else Kind.ANY
        current = resolved[nid]
        assert current is not None
        changed = False
        for port, declared in (port_kinds[nid] or {}).items():
            if declared is Kind.ANY and current[port] is not through:
                current[port] = through
                changed = True
        if changed:
            for targets in wiring.get(nid, {}).values():
                for t in targets:
                    if t in through_set and t not in queued:
                        queued.add(t)
                        todo.append(t)
    return resolved


def _check_kinds(
    doc: FlowDocument,
    classes: dict[str, type[Node[NodeConfig]]],
    port_kinds: dict[str, dict[str, Kind] | None],
    input_kinds: dict[str, Kind | None],
    wiring: dict[str, dict[str, list[str]]],
    errors: list[FlowError],
) -> None:
    for nid, wires in wiring.items():
        kinds = port_kinds.get(nid)
        for port, targets in wires.items():
            out_kind = kinds.get(port, Kind.ANY) if kinds is not None else Kind.ANY
            for i, target in enumerate(targets):
                dst = classes.get(target)
                if dst is None:
                    continue  # an error was already reported for that node
                by_port = ("nodes", nid, "wires", port, i)
                listed = ("nodes", nid, "wires", i)
                where = doc.where(by_port if by_port in doc.values else listed)
                dst_kind = input_kinds.get(target, dst.input_kind)
                if dst_kind is None:
                    msg = f"'{target}' ({dst.type_name}) is a source: it takes no input"
                    errors.append(FlowError(where, msg, nid))
                elif not dst_kind.accepts(out_kind):
                    errors.append(
                        FlowError(
                            where,
                            f"kind mismatch: port '{port}' carries {out_kind.value} messages but "
                            f"'{target}' ({dst.type_name}) takes {dst_kind.value}",
                            nid,
                        )
                    )


def _check_cycles(
    doc: FlowDocument, wiring: dict[str, dict[str, list[str]]], errors: list[FlowError]
) -> None:
    """Depth-first search with an explicit stack (a chain of thousands of nodes must not hit
    Python's recursion limit); each cycle is reported once, at the node it returns to."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(wiring, white)
    reported: set[frozenset[str]] = set()

    def targets_of(nid: str) -> Iterator[str]:
        for targets in wiring[nid].values():
            for t in targets:
                if t in wiring:
                    yield t

    for root in wiring:
        if color[root] != white:
            continue
        color[root] = grey
        path = [root]
        stack = [targets_of(root)]
        while stack:
            t = next(stack[-1], None)
            if t is None:
                stack.pop()
                color[path.pop()] = black
                continue
            if color[t] == grey:
                cycle = [*path[path.index(t) :], t]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    errors.append(
                        FlowError(
                            doc.where(("nodes", t), key=True),
                            f"cycle: {' -> '.join(cycle)}",
                            node_id=t,
                        )
                    )
            elif color[t] == white:
                color[t] = grey
                path.append(t)
                stack.append(targets_of(t))


def _topological(nodes: dict[str, CompiledNode]) -> list[str]:
    indegree = dict.fromkeys(nodes, 0)
    for node in nodes.values():
        for targets in node.wires.values():
            for t in targets:
                indegree[t] += 1
    ready = deque(nid for nid, d in indegree.items() if d == 0)
    order: list[str] = []
    while ready:
        nid = ready.popleft()
        order.append(nid)
        for targets in nodes[nid].wires.values():
            for t in targets:
                indegree[t] -= 1
                if indegree[t] == 0:
                    ready.append(t)
    return order
