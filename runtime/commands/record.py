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
from typing import Any

from les02_flow.cliutil import (
    add_command,
    add_run_options,
    add_set_option,
    positive_float,
    run_document,
)
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


def record_flow(args: argparse.Namespace) -> dict[str, Any]:
    """The flow ``record`` runs, as data (pure)."""
    bus: dict[str, Any] = {
        "type": "can_source",
        "interface": args.interface,
        "channel": args.channel,
        "wires": ["recorder"],
    }
    if args.bitrate is not None:
        bus["bitrate"] = args.bitrate
    if args.fd:
        bus["fd"] = True
    recorder: dict[str, Any] = {"type": "file_recorder", "path": args.out}
    if args.max_bytes is not None:
        recorder["max_bytes"] = args.max_bytes
    if args.max_seconds is not None:
        recorder["max_seconds"] = args.max_seconds
    if args.flush_interval is not None:
        recorder["flush_interval"] = args.flush_interval
    return {"version": 1, "name": "record", "nodes": {"bus": bus, "recorder": recorder}}


def cmd_record(args: argparse.Namespace) -> int:
    doc = FlowDocument(path="les02-flow record", data=record_flow(args))
    apply_sets(doc, args.set)
    return run_document(doc, args.stats_interval, duration=args.duration)


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "record",
        cmd_record,
        "record a CAN bus to a file (.log candump, .asc, .blf, .csv, .trc, .db, .gz) until "
        "Ctrl-C/SIGTERM or --duration",
        EXAMPLES,
    )
    p.add_argument(
        "out",
        metavar="OUT",
        help="file to write; the suffix picks the format; may hold {start:%%Y%%m%%d-%%H%%M%%S}, "
        "{time:...}, {n}; directories are created, existing files never overwritten",
    )
    p.add_argument("--interface", "-i", default="virtual", help="python-can interface")
    p.add_argument("--channel", "-c", default="les02", help="bus channel (default les02)")
    p.add_argument("--bitrate", "-b", type=int, help="bitrate in bit/s (hardware interfaces)")
    p.add_argument("--fd", action="store_true", help="open the bus in CAN FD mode")
    p.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--max-bytes", type=int, metavar="N", help="rotate files at N bytes")
    p.add_argument(
        "--max-seconds", type=positive_float, metavar="S", help="rotate files every S seconds"
    )
    p.add_argument(
        "--flush-interval",
        type=positive_float,
        metavar="S",
        help="seconds between flushes to disk (default 1)",
    )
    add_set_option(p)
    add_run_options(p)
