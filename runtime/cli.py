"""The ``les02-flow`` command line.

Core commands live here; every module in :mod:`les02_flow.commands` adds more through its
``register(subparsers)`` (see :mod:`les02_flow.cliutil`), in the order of its ``ORDER`` number.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from collections.abc import Sequence
from typing import Any

from . import __version__
from .cliutil import (
    Reload,
    add_command,
    add_run_options,
    add_set_option,
    compile_data,
    compile_path,
    flush_logs,
    positive_float,
    run_flow,
    setup_logging,
)
from .describe import flow_schema, node_markdown, nodes_markdown, render_graph
from .flowtest.load import is_test_file
from .node import config_ports
from .registry import RegistryError, default_registry

__all__ = ["build_parser", "main"]


def _command_modules() -> list[Any]:
    from . import commands

    found = [
        importlib.import_module(info.name)
        for info in pkgutil.iter_modules(commands.__path__, commands.__name__ + ".")
    ]
    return sorted(found, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


EPILOG = """\
examples:
  les02-flow run flows/default.yaml                      serve the simulated LES02 on ws://localhost:8765
  les02-flow run flows/default.yaml --set ws.port=9000   override one node's config
  les02-flow validate flows/*.yaml                       check flows, every error with FILE:LINE:COL
  les02-flow graph flows/default.yaml --format dot       draw the pipeline
  les02-flow nodes ws_sink                               document one node type
  les02-flow tap --types position_sample                 print the live event stream
  les02-flow sim --interface socketcan --channel vcan0   put simulated LES02 traffic on a bus
  les02-flow run flows/default.yaml --watch              re-deploy live when the file changes
  les02-flow record s.log -i socketcan -c can0           record a bus (candump -L format)
  les02-flow replay s.log --flow flows/default.yaml      run a recording through a flow
  les02-flow test flows/                                 run the flow tests (*_test.yaml)
  les02-flow canlogger -i socketcan -c can0              serve a bus to CANcorder (ECUconnect)
  les02-flow rides data/rides.sqlite --since 2h          list detected rides
"""


def cmd_run(args: argparse.Namespace) -> int:
    flow = compile_path(args.flow, args.set)
    if flow is None:
        return 1
    return run_flow(flow, args.stats_interval, Reload(args.flow, args.set, watch=args.watch))


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.flows:
        if is_test_file(path):  # a flow test file (les02-flow test): checked, not run
            from .commands.test import validate_test_file

            status |= 0 if validate_test_file(path) else 1
            continue
        flow = compile_path(path, args.set)
        if flow is None:
            status = 1
        else:
            print(f"{path}: ok ({len(flow.nodes)} nodes)")
    return status


def cmd_graph(args: argparse.Namespace) -> int:
    flow = compile_path(args.flow, args.set)
    if flow is None:
        return 1
    sys.stdout.write(render_graph(flow, args.format))
    return 0


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
        from .flowtest.model import tests_schema

        json.dump(tests_schema(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    json.dump(flow_schema(default_registry()), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def cmd_tap(args: argparse.Namespace) -> int:
    from .nodes.ws.tap import run_tap

    types = args.types.split(",") if args.types else None
    return run_tap(args.url, types=types, count=args.count)


def cmd_sim(args: argparse.Namespace) -> int:
    config: dict[str, Any] = {
        "type": "les02_sim",
        "interface": args.interface,
        "channel": args.channel,
        "speed": args.speed,
    }
    for key in ("trips", "seed", "bitrate", "duration"):
        value = getattr(args, key)
        if value is not None:
            config[key] = value
    flow = compile_data({"version": 1, "name": "sim", "nodes": {"sim": config}}, "les02-flow sim")
    if flow is None:
        return 1
    return run_flow(flow, args.stats_interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="les02-flow",
        description="Run YAML flows of reactive nodes over CAN bus data (LES02 elevator, "
        "ECUconnect).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"les02-flow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = add_command(
        sub,
        "run",
        cmd_run,
        "run a flow until Ctrl-C/SIGTERM or until all its sources finish",
        "  les02-flow run flows/default.yaml\n"
        "  les02-flow run flows/default.yaml --set ws.port=9000 --stats-interval 10\n"
        "  les02-flow run flows/socketcan.yaml --set bus.channel=can1\n"
        "  les02-flow run flows/default.yaml --watch     # edit the file: live re-deploy",
    )
    p.add_argument("flow", help="flow file (YAML)")
    p.add_argument(
        "--watch",
        action="store_true",
        help="re-deploy the flow when the file changes (SIGHUP does it without --watch); "
        "unchanged nodes keep running, an invalid edit changes nothing",
    )
    add_set_option(p)
    add_run_options(p)

    p = add_command(
        sub,
        "validate",
        cmd_validate,
        "check flow files; every error is printed as FILE:LINE:COL: node 'ID': message",
        "  les02-flow validate flows/*.yaml\n  les02-flow validate my.yaml --set ws.port=9000",
    )
    p.add_argument("flows", nargs="+", metavar="FLOW", help="flow files")
    add_set_option(p)

    p = add_command(
        sub,
        "graph",
        cmd_graph,
        "print a flow as a Mermaid or Graphviz diagram",
        "  les02-flow graph flows/default.yaml\n"
        "  les02-flow graph flows/default.yaml --format dot | dot -Tpng > flow.png",
    )
    p.add_argument("flow", help="flow file (YAML)")
    p.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    add_set_option(p)

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

    p = add_command(
        sub,
        "tap",
        cmd_tap,
        "print a WebSocket event stream, one JSON event per line",
        "  les02-flow tap\n"
        "  les02-flow tap ws://localhost:9000 --types position_sample,status\n"
        "  les02-flow tap --count 10",
    )
    p.add_argument("url", nargs="?", default="ws://localhost:8765", help="default %(default)s")
    p.add_argument("--types", help="comma-separated event types to receive (default: all)")
    p.add_argument("--count", type=int, help="stop after N events")

    p = add_command(
        sub,
        "sim",
        cmd_sim,
        "put simulated LES02 elevator traffic onto a python-can bus",
        "  les02-flow sim --interface socketcan --channel vcan0\n"
        "  les02-flow sim --interface virtual --channel les02 --speed 4 --trips 3",
    )
    p.add_argument("--interface", "-i", default="virtual", help="python-can interface")
    p.add_argument("--channel", "-c", default="les02", help="bus channel")
    p.add_argument("--bitrate", "-b", type=int, help="bitrate (hardware interfaces)")
    p.add_argument("--speed", type=positive_float, default=1.0, help="time factor (default 1)")
    p.add_argument("--trips", type=int, help="stop after N trips (default endless)")
    p.add_argument("--duration", type=positive_float, help="stop after S simulated seconds")
    p.add_argument("--seed", type=int, help="random seed (same seed, same trips)")
    add_run_options(p)

    for module in _command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(getattr(args, "log_level", None) or "INFO", getattr(args, "log_file", None))
    try:
        code: int = args.func(args)
    except RegistryError as exc:
        flush_logs()
        print(f"les02-flow: node registry: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        flush_logs()
        print(f"les02-flow: {exc}", file=sys.stderr)
        return 1
    finally:
        flush_logs()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
