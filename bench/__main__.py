"""``make bench``: run the benchmarks, print their tables, append them to bench/RESULTS.md.

    python -m bench                 # all of them (about 12 minutes)
    python -m bench micro live      # some of them
    make bench ARGS="live"

Names: micro, rides, ecuconnect, recording, live, floor, fleet, console (each also runs alone as
``python -m bench.<name>``). ``live`` runs the live pipeline against the seed design
(bench/live.py; ``python -m bench.live --quick`` or ``--profile DIR`` for variants);
``floor`` measures the least CPU any Python server pays at 500 frames/s for 12 clients;
``console`` what the web console costs at 500 frames/s and the page's frame rate.
"""

from __future__ import annotations

import datetime
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
Rows = list[tuple[str, str]]


def _print(rows: Rows) -> None:
    if rows:
        width = max(len(name) for name, _ in rows)
        print("\n".join(f"{name:<{width}}  {value}" for name, value in rows), flush=True)


def _micro(command: str) -> Rows:
    from bench import micro

    rows = micro.main()
    _print(rows)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — micro-benchmarks\n\n")
        f.write(f"Command: `{command}` on {platform.python_implementation()} ")
        f.write(f"{platform.python_version()}, {platform.machine()}\n\n")
        f.write("| benchmark | result |\n|---|---|\n")
        for name, value in rows:
            f.write(f"| {name} | {value} |\n")
    return rows


def _rides(command: str) -> Rows:
    from bench import rides

    rows = rides.main()
    _print(rows)
    rides._append(rows, command)
    return rows


def _ecuconnect(command: str) -> Rows:
    from bench import ecuconnect

    rows = ecuconnect.main()
    ecuconnect._append(rows)
    return rows


def _recording(command: str) -> Rows:
    from bench import recording

    rows = recording.main()
    _print(rows)
    recording.append_results(rows, command)
    return rows


def _live(command: str) -> Rows:
    from bench import live

    return live.main(command=command)


def _floor(command: str) -> Rows:
    from bench import floor

    rows = floor.main(command=command)
    _print(rows)
    return rows


def _fleet(command: str) -> Rows:
    from bench import fleet

    return fleet.main([])


def _console(command: str) -> Rows:
    from bench import console

    return console.main([])


BENCHMARKS: dict[str, Callable[[str], Rows]] = {
    "micro": _micro,
    "rides": _rides,
    "ecuconnect": _ecuconnect,
    "recording": _recording,
    "live": _live,
    "floor": _floor,
    "fleet": _fleet,
    "console": _console,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
        return 2
    command = "make bench  (python -m bench " + " ".join(argv) + ")"
    for name in names:
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        BENCHMARKS[name](command.replace("  ", " ").replace(" )", ")"))
        print(f"== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
