"""``tap``: print a WebSocket event stream, one JSON event per line."""

from __future__ import annotations

import argparse

from les02_flow.cliargs import Subparsers, add_command, positive_int

__all__ = ["ORDER", "register"]

ORDER = 15


def cmd_tap(args: argparse.Namespace) -> int:
    from les02_flow.nodes.ws.tap import run_tap

    types = args.types.split(",") if args.types else None
    return run_tap(args.url, types=types, count=args.count)


def register(sub: Subparsers) -> None:
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
    p.add_argument("--count", type=positive_int, help="stop after N events")
