"""``les02-flow uds-sim``: the CANcorder mock UDS logger (``mock_uds_canlogger.py``).

Runs ``flows/uds-mock.yaml`` (``uds_sim`` → ``ecuconnect_tcp_sink``) with the seed's flags
applied as overrides. The flow file is package data (:func:`les02_flow.resources.builtin_flow`),
so the command works in a wheel install too.
"""

from __future__ import annotations

import argparse

from .. import cliargs
from ..clirun import print_errors, run_flow
from ..compiler import CompiledFlow, compile_document
from ..flowfile import FlowDocument, FlowErrors, Location, apply_sets, load_flow
from ..resources import builtin_flow

__all__ = ["FLOW_FILE", "ORDER", "build_flow", "register"]

ORDER = 70

#: the flow this command runs (package data, there in every install)
FLOW_FILE = builtin_flow("uds-mock.yaml")

EXAMPLES = """\
  les02-flow uds-sim                                  serve on an auto port >= 42420, zeroconf on
  les02-flow uds-sim -v --speed 2.0                   print every frame, twice as fast
  les02-flow uds-sim --no-loop                        one session, then exit
  les02-flow uds-sim --tester-id 0x7E2 --ecu-id 0x7EA -p 42420 --no-zeroconf
  les02-flow uds-sim --host 0.0.0.0 --seed 7 --set uds.transfer_blocks=300   serve the LAN"""


#: flag -> the config key it sets
FLAGS = {
    "host": "tcp.host",
    "port": "tcp.port",
    "service_name": "tcp.service_name",
    "tester_id": "uds.tester_id",
    "ecu_id": "uds.ecu_id",
    "functional_id": "uds.functional_id",
    "speed": "uds.speed",
    "seed": "uds.seed",
}
SWITCHES = {"no_loop": ("uds.loop", False), "no_zeroconf": ("tcp.zeroconf", False)}


def _load() -> FlowDocument:
    return load_flow(FLOW_FILE)


def build_flow(args: argparse.Namespace) -> CompiledFlow:
    """The flow of ``args``: the flow file with the flags and ``--set`` applied.

    Raises :class:`FlowErrors` with every problem (each located at its flag or file line).
    """
    doc = _load()
    nodes = doc.data.get("nodes") if isinstance(doc.data, dict) else None
    if doc.errors or not isinstance(nodes, dict):
        return compile_document(doc)  # raises with the file's own errors
    cliargs.apply_overrides(doc, cliargs.flag_overrides(args, FLAGS, SWITCHES))
    if args.verbose:
        nodes["debug"] = {"type": "debug"}
        doc.values[("nodes", "debug")] = Location("-v")
        uds = nodes.get("uds")
        if isinstance(uds, dict):
            wires = uds.get("wires")
            uds["wires"] = [*wires, "debug"] if isinstance(wires, list) else ["tcp", "debug"]
            doc.values[("nodes", "uds", "wires")] = Location("-v")
    apply_sets(doc, args.set)
    return compile_document(doc)


def cmd_uds_sim(args: argparse.Namespace) -> int:
    try:
        flow = build_flow(args)
    except FlowErrors as errors:
        print_errors(errors)
        return 1
    return run_flow(flow, args.stats_interval)


HELP = (
    "mock ECUconnect logger: simulated UDS reprogramming sessions and OBD-II polling served "
    "over TCP (flows/uds-mock.yaml)"
)


def register(sub: cliargs.Subparsers) -> None:
    p = cliargs.add_command(sub, "uds-sim", cmd_uds_sim, HELP, EXAMPLES)
    cliargs.add_server_options(
        p,
        host="127.0.0.1",
        host_help=": this machine only; 0.0.0.0 lets CANcorder on another machine connect",
        port=None,
    )
    cliargs.add_options(
        p,
        {
            "--tester-id": (cliargs.can_id, "ID", "tester request id (default 0x7E0)"),
            "--ecu-id": (cliargs.can_id, "ID", "ECU response id (default 0x7E8)"),
            "--functional-id": (cliargs.can_id, "ID", "OBD-II functional id (default 0x7DF)"),
            "-s --speed": (cliargs.positive_float, "X", "time factor, 2.0 = twice as fast"),
            "--no-loop": (None, None, "play one session, then exit"),
            "--seed": (int, "N", "random seed: the same seed gives the same traffic"),
        },
    )
