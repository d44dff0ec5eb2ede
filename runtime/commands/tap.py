"""``tap``: print a WebSocket event stream, one JSON event per line."""

from __future__ import annotations

import argparse

from les02_flow.cliargs import Subparsers, add_command, non_negative_float, positive_int

__all__ = ["ORDER", "register"]

ORDER = 15


def cmd_tap(args: argparse.Namespace) -> int:
    from les02_flow.nodes.ws.tap import run_tap

    types = args.types.split(",") if args.types else None
    return run_tap(args.url, types=types, count=args.count, reconnect=args.reconnect)


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "tap",
        cmd_tap,
        "print a WebSocket event stream, one JSON event per line",
        "  les02-flow tap\n"
        "  les02-flow tap ws://localhost:9000 --types position_sample,status\n"
        "  les02-flow tap --count 10\n"
        "  les02-flow tap --reconnect 0          end when the sink stops",
    )
    p.add_argument("url", nargs="?", default="ws://localhost:8765", help="default %(default)s")
    p.add_argument("--types", help="comma-separated event types to receive (default: all)")
    p.add_argument("--count", type=positive_int, help="stop after N events")
    p.add_argument(
        "--reconnect",
        type=non_negative_float,
        default=5.0,
        metavar="S",
        help="when the sink stops, restarts or the connection is lost, reconnect, waiting "
        "0.5 s and doubling up to S seconds between attempts (default 5; 0 = exit instead)",
    )
