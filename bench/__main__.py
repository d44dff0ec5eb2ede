"""``make bench``: run every benchmark, print a table, append it to bench/RESULTS.md."""

from __future__ import annotations

import datetime
import platform
import sys
from pathlib import Path

from bench import micro

RESULTS = Path(__file__).with_name("RESULTS.md")


def main() -> int:
    command = "make bench  (python -m bench " + " ".join(sys.argv[1:]) + ")"
    rows = micro.main()
    width = max(len(name) for name, _ in rows)
    table = [f"{name:<{width}}  {value}" for name, value in rows]
    print("\n".join(table))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — micro-benchmarks\n\n")
        f.write(f"Command: `{command.strip()}` on {platform.python_implementation()} ")
        f.write(f"{platform.python_version()}, {platform.machine()}\n\n")
        f.write("| benchmark | result |\n|---|---|\n")
        for name, value in rows:
            f.write(f"| {name} | {value} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
