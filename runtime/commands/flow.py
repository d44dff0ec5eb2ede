"""``run``, ``validate`` and ``graph``: the commands that take a flow file."""

from __future__ import annotations

import argparse
import sys

from les02_flow.cliargs import Subparsers, add_command, add_run_options, add_set_option
from les02_flow.clirun import Reload, compile_path, run_flow
from les02_flow.compiler import CompiledFlow
from les02_flow.describe import render_graph
from les02_flow.flowtest.load import is_test_file

__all__ = ["ORDER", "flow_warnings", "register"]

ORDER = 10


def cmd_run(args: argparse.Namespace) -> int:
    flow = compile_path(args.flow, args.set)
    if flow is None:
        return 1
    return run_flow(flow, args.stats_interval, Reload(args.flow, args.set, watch=args.watch))


def flow_warnings(flow: CompiledFlow) -> list[str]:
    """What is valid but probably a mistake (pure): a node whose outputs are wired nowhere
    (everything it makes is dropped) and a node that takes input but gets none.

    Each line is ``FILE:LINE:COL: node 'ID': warning: ...``; disabled nodes are left out.
    """
    enabled = {n.id for n in flow.enabled()}
    out: list[str] = []
    for node in flow.enabled():
        where = f"{node.location}: node '{node.id}': warning:"
        wired = any(t in enabled for targets in node.wires.values() for t in targets)
        if node.ports and not wired:
            out.append(f"{where} its output is wired nowhere, what it emits is dropped")
        if node.cls.input_kind is not None and not flow.upstream(node.id):
            out.append(f"{where} nothing is wired into it, it gets no input")
    return out


def cmd_validate(args: argparse.Namespace) -> int:
    status = 0
    for path in args.flows:
        if is_test_file(path):  # a flow test file (les02-flow test): checked, not run
            from les02_flow.commands.test import validate_test_file

            status |= 0 if validate_test_file(path) else 1
            continue
        flow = compile_path(path, args.set)
        if flow is None:
            status = 1
        else:
            for line in flow_warnings(flow):
                print(line, file=sys.stderr)
            print(f"{path}: ok ({len(flow.nodes)} nodes)")
    return status


def cmd_graph(args: argparse.Namespace) -> int:
    flow = compile_path(args.flow, args.set)
    if flow is None:
        return 1
    sys.stdout.write(render_graph(flow, args.format))
    return 0


def register(sub: Subparsers) -> None:
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
