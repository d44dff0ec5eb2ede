"""``les02-flow rides DB``: list the rides of a ride database, or export one ride's samples."""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import re
import sys
import time
from typing import Any

from ..cliargs import Subparsers, add_command

ORDER = 50

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, now: float | None = None) -> float:
    """``--since``: epoch seconds, an ISO 8601 date/time (local time unless it has an offset),
    or a duration back from now (``90s``, ``15m``, ``2h``, ``7d``).

    >>> parse_since("1737319234.5"), parse_since("2h", now=10000.0)
    (1737319234.5, 2800.0)
    >>> parse_since("2025-01-19T20:40:34+00:00")
    1737319234.0
    """
    text = text.strip()
    m = _RELATIVE.match(text)
    if m:
        base = time.time() if now is None else now
        return base - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--since {text!r}: expected epoch seconds, an ISO date/time "
            "(e.g. 2025-01-19T20:40) or a duration like 15m, 2h, 7d"
        ) from None


def _local(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="milliseconds")


def format_table(rides: list[dict[str, Any]]) -> str:
    """The rides as a readable, aligned text table."""
    fleet = any(r.get("site") for r in rides)
    right = {2, 3, 4, 5, 6}
    head: tuple[str, ...] = (
        "start (local time)",
        "dir",
        "from mm",
        "to mm",
        "dist mm",
        "dur s",
        "max mm/s",
        "ride_id",
    )
    rows: list[tuple[str, ...]] = [
        (
            _local(r["start_ts"]),
            r["direction"],
            f"{r['start_position_mm']:.1f}",
            f"{r['end_position_mm']:.1f}",
            f"{r['distance_mm']:.1f}",
            f"{r['duration_s']:.3f}",
            f"{r['max_speed_mm_s']:.1f}",
            r["ride_id"],
        )
        for r in rides
    ]
    if fleet:  # rides from a fleet (mqtt_source): say which lift
        head = ("site/source", *head)
        rows = [
            (f"{r.get('site', '')}/{r['source']}", *row) for r, row in zip(rides, rows, strict=True)
        ]
        right = {i + 1 for i in right}
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(head), "  ".join("-" * w for w in widths)]
    out += [line(row) for row in rows]
    return "\n".join(out) + "\n"


def cmd_rides(args: argparse.Namespace) -> int:
    from ..nodes.rides.store import RideDB, StoreError

    try:
        db = RideDB.open_readonly(args.db)
    except StoreError as exc:
        print(f"les02-flow rides: {exc}", file=sys.stderr)
        return 1
    try:
        if args.export:
            return _export(db, args)
        rides = db.rides(args.since, args.site, args.source)
    finally:
        db.close()
    if args.json:
        json.dump(rides, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif rides:
        sys.stdout.write(format_table(rides))
        print(f"{len(rides)} ride{'s' if len(rides) != 1 else ''}")
    else:
        which = [
            f"{name} {value!r}"
            for name, value in (("site", args.site), ("source", args.source))
            if value is not None
        ]
        print(
            "no rides"
            + (" since then" if args.since is not None else "")
            + (" of " + " and ".join(which) if which else "")
        )
    return 0


def _export(db: Any, args: argparse.Namespace) -> int:
    found = db.find(args.export)
    if not found:
        print(f"les02-flow rides: no ride {args.export!r} in {args.db}", file=sys.stderr)
        return 1
    if len(found) > 1:
        ids = ", ".join(r["ride_id"] for r in found[:5])
        print(
            f"les02-flow rides: {args.export!r} matches {len(found)} rides: {ids}", file=sys.stderr
        )
        return 1
    sys.stdout.write(export_text(db, found[0], args.format))
    return 0


def export_text(db: Any, ride: dict[str, Any], fmt: str) -> str:
    """One ride's samples as ``--export`` prints them (``fmt``: ``csv`` or ``json``).

    ``db`` is an open :class:`~les02_flow.nodes.rides.store.RideDB`, ``ride`` one of its rows;
    ``web_console`` serves the same text as its downloads.
    """
    samples = db.samples(ride["ride_id"])
    res = ride["distance_mm"] / ride["distance_raw"] if ride["distance_raw"] else 1.0
    if fmt == "json":
        doc = {
            "ride": ride,
            "samples": [
                {"ts": t, "channel": ch, "position_raw": raw, "position_mm": round(raw * res, 6)}
                for t, ch, raw in samples
            ],
        }
        return json.dumps(doc, indent=2) + "\n"
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["ts", "channel", "position_raw", "position_mm"])
    for t, ch, raw in samples:
        w.writerow([repr(t), ch, raw, round(raw * res, 6)])
    return out.getvalue()


def register(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "rides",
        cmd_rides,
        "list the rides in a ride database (ride_store), or export one ride's samples",
        "  les02-flow rides data/rides.sqlite\n"
        "  les02-flow rides data/rides.sqlite --since 2h\n"
        "  les02-flow rides data/fleet-rides.sqlite --site hq --source lift-3\n"
        "  les02-flow rides data/rides.sqlite --since 2025-01-19T08:00 --json\n"
        "  les02-flow rides data/rides.sqlite --export 3f2a9c1e --format csv > ride.csv",
    )
    p.add_argument("db", metavar="DB", help="SQLite ride database (ride_store's path)")
    p.add_argument(
        "--since",
        type=parse_since,
        metavar="T",
        help="only rides starting at/after T: epoch seconds, ISO date/time, or 15m/2h/7d ago",
    )
    p.add_argument("--site", metavar="S", help="only rides of this fleet site (mqtt_sink.site)")
    p.add_argument(
        "--source", metavar="X", help="only rides of this source (the lift, les02_parse.source)"
    )
    p.add_argument("--json", action="store_true", help="print the rides as a JSON array")
    p.add_argument(
        "--export",
        metavar="RIDE_ID",
        help="print one ride's position samples instead (a unique id prefix is enough)",
    )
    p.add_argument(
        "--format",
        choices=["csv", "json"],
        default="csv",
        help="export format (default csv: ts,channel,position_raw,position_mm)",
    )
