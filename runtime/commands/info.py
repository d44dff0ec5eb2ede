"""``nodes`` and ``schema``: what the node registry knows."""

from __future__ import annotations

import argparse
import json
import sys

from les02_flow.cliargs import Subparsers, add_command
from les02_flow.describe import flow_schema, node_markdown, nodes_markdown
from les02_flow.node import config_ports
from les02_flow.registry import default_registry

__all__ = ["ORDER", "register"]

ORDER = 13


def cmd_nodes(args: argparse.Namespace) -> int:
    registry = default_registry()
    if args.type:
        cls = registry.get(args.type)
        if cls is None:
            close = registry.closest(args.type)
            hint = f" (did you mean '{close}'?)" if close else ""
            print(f"unknown node type '{args.type}'{hint}", file=sys.stderr)
            print(f"known types: {', '.join(registry.names())}", file=sys.stderr)
            return 1
        sys.stdout.write(node_markdown(cls))
        return 0
    if args.markdown:
        sys.stdout.write(nodes_markdown(registry))
        return 0
    width = max(len(n) for n in registry.names())
    for cls in registry:
        inp = cls.input_kind.value if cls.input_kind else "-"
        outs = ",".join(f"{p}:{k.value}" for p, k in cls.output_ports.items()) or "-"
        if config_ports(cls):
            outs = "<config>," + outs
        print(f"{cls.type_name:<{width}}  in={inp:<5} out={outs:<26} {cls.summary()}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.tests:
        from les02_flow.flowtest.model import tests_schema

        json.dump(tests_schema(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    json.dump(flow_schema(default_registry()), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "nodes",
        cmd_nodes,
        "list node types, or document one: ports and every config key",
        "  les02-flow nodes\n  les02-flow nodes ws_sink\n  les02-flow nodes --markdown",
    )
    p.add_argument("type", nargs="?", help="a node type to document")
    p.add_argument("--markdown", action="store_true", help="all types as docs/nodes.md")

    p = add_command(
        sub,
        "schema",
        cmd_schema,
        "print the JSON Schema of the flow format (for editor autocompletion)",
        "  les02-flow schema > flow.schema.json\n"
        "  les02-flow schema --tests > flow-test.schema.json",
    )
    p.add_argument(
        "--tests",
        action="store_true",
        help="the JSON Schema of flow test files instead (docs/testing-flows.md)",
    )
