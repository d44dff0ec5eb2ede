"""``les02-flow record OUT``: the candump / ``can.logger`` job in one command.

Built as a flow -- ``bus`` (``can_source``) wired into ``recorder`` (``file_recorder``) -- so it
behaves like ``run`` (signals, stats, exit codes) and ``--set`` reaches either node.
``--duration S`` ends the recording after S seconds: the command requests a graceful stop (the
same path as SIGTERM: the bus closes first, then the recorder writes everything it accepted
and finalises the file).
"""

from __future__ import annotations

import argparse
import logging

from les02_flow import cliargs
from les02_flow.clirun import run_document
from les02_flow.flowfile import FlowDocument, apply_sets

__all__ = ["ORDER", "record_flow", "register"]

ORDER = 30

log = logging.getLogger("les02_flow")

EXAMPLES = """\
  les02-flow record session.log                                  candump -L format, virtual bus 'les02'
  les02-flow record recordings/ride-{start:%Y%m%d-%H%M%S}.blf -i socketcan -c can0
  les02-flow record bus.asc.gz -i pcan -c PCAN_USBBUS1 -b 500000 --duration 600
  les02-flow record long.log --max-bytes 100000000            rotate: long-001.log, long-002.log, ...
  les02-flow record x.log --set bus.filters='[{can_id: 0x80, can_mask: 0x7FE}]'"""  # noqa: E501


#: flag -> the config key it sets
FLAGS = {
    **cliargs.bus_flags("bus"),
    "out": "recorder.path",
    "max_bytes": "recorder.max_bytes",
    "max_seconds": "recorder.max_seconds",
    "flush_interval": "recorder.flush_interval",
}
SWITCHES = {"fd": ("bus.fd", True)}


def record_flow(args: argparse.Namespace) -> FlowDocument:
    """The flow ``record`` runs: ``bus`` wired into ``recorder``, the flags applied."""
    doc = FlowDocument(
        path="les02-flow record",
        data={
            "version": 1,
            "name": "record",
            "nodes": {
                "bus": {"type": "can_source", "wires": ["recorder"]},
                "recorder": {"type": "file_recorder"},
            },
        },
    )
    cliargs.apply_overrides(doc, cliargs.flag_overrides(args, FLAGS, SWITCHES))
    return doc


def cmd_record(args: argparse.Namespace) -> int:
    doc = record_flow(args)
    apply_sets(doc, args.set)
    return run_document(doc, args.stats_interval, duration=args.duration)


HELP = (
    "record a CAN bus to a file (.log candump, .asc, .blf, .csv, .trc, .db, .gz) until "
    "Ctrl-C/SIGTERM or --duration"
)
OUT_HELP = (
    "file to write; the suffix picks the format; may hold {start:%%Y%%m%%d-%%H%%M%%S}, "
    "{time:...}, {n}; directories are created, existing files never overwritten"
)


def register(sub: cliargs.Subparsers) -> None:
    p = cliargs.add_command(sub, "record", cmd_record, HELP, EXAMPLES)
    p.add_argument("out", metavar="OUT", help=OUT_HELP)
    cliargs.add_bus_options(p, interface="virtual", channel="les02")
    cliargs.add_options(
        p,
        {
            "--duration": (cliargs.positive_float, "S", "stop after S seconds"),
            "--fd": (None, None, "open the bus in CAN FD mode"),
            "--max-bytes": (cliargs.positive_int, "N", "rotate files at N bytes"),
            "--max-seconds": (cliargs.positive_float, "S", "rotate files every S seconds"),
            "--flush-interval": (cliargs.positive_float, "S", "flush every S seconds (default 1)"),
        },
    )
