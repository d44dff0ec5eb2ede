"""``les02-flow discover``: list ECUconnect loggers announced by zeroconf on the network."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import sys
from typing import Any

from les02_flow.cliargs import Subparsers, add_command, positive_float

__all__ = ["ORDER", "register"]

ORDER = 41


def cmd_discover(args: argparse.Namespace) -> int:
    from les02_flow.nodes.ecuconnect.mdns import SERVICE_TYPE, browse

    for addr in args.interface:
        try:
            ipaddress.IPv4Address(addr)
        except ValueError:
            print(f"--interface {addr!r}: not an IPv4 address", file=sys.stderr)
            return 2
    try:
        found = asyncio.run(browse(args.timeout, interfaces=args.interface, name=args.name))
    except OSError as exc:
        print(f"les02-flow discover: zeroconf failed: {exc}", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = [info.as_dict() for info in found]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for row in rows:
            txt = " ".join(f"{k}={v}" for k, v in row["txt"].items())
            print(f"{row['name']}\t{row['host']}\t{row['port']}\t{txt}")
    if not rows:
        print(
            f"no ECUconnect loggers ({SERVICE_TYPE}) found within {args.timeout:g} s",
            file=sys.stderr,
        )
        return 1
    return 0


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "discover",
        cmd_discover,
        "list ECUconnect loggers announced by zeroconf (name, host, port, TXT); exit code 1 "
        "when none is found",
        "  les02-flow discover\n"
        "  les02-flow discover --timeout 5 --json\n"
        "  les02-flow discover --interface 127.0.0.1 --name 'ECUconnect-Logger lab'",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=3.0,
        metavar="S",
        help="seconds to listen (default 3)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list")
    p.add_argument(
        "--interface",
        action="append",
        default=[],
        metavar="ADDR",
        help="browse only on the interface with this IPv4 address (repeatable; default all)",
    )
    p.add_argument("--name", help="only loggers whose name starts with this")
