"""One hour of LES02 traffic replayed through flows/default.yaml at --speed max (issue 16).

    .venv/bin/python -m bench.replay_hour                 # 1.8 M frames, about 2 minutes
    .venv/bin/python -m bench.replay_hour --frames 300000 --profile /tmp/replay.txt

In the same run, on the same candump ``.log`` file (simulated LES02, 2 x 250 position frames/s
plus status frames):

* ``python-can LogReader``: ``for msg in can.LogReader(path)`` and nothing else -- the floor
  any replay of that file pays to read and parse it;
* ``les02-flow replay FILE --flow flows/default.yaml --speed max``: the real CLI in a
  subprocess (start-up, compile, the whole graph: replay_source -> les02_parse -> ride_detect
  -> ws_sink (no clients) + ride_store; file_recorder dropped as replay does; tcp sink without
  clients), wall time of the command;
* with ``--profile FILE``: the same command under py-spy (slower), with the share of every
  node's ``on_next``/``consume`` in the samples, ride_detect included.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import can

from bench.recording import HOUR, iter_les02_frames, write_recording

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
FLOW = ROOT / "flows" / "default.yaml"

#: (label, function name substring in a py-spy frame) for the per-part shares
PARTS = (
    ("replay_source: reading + parsing the file (python-can LogReader)", "can/io/"),
    ("les02_parse (decode)", "nodes/les02/"),
    ("ride_detect (node + detector)", "nodes/rides/detect"),
    ("ride_store (consume, loop side)", "nodes/rides/store.py"),
    ("ws_sink (no clients)", "nodes/ws/"),
    ("ecuconnect_tcp_sink (no clients)", "nodes/ecuconnect/"),
    ("engine hops (outlets, inlets)", "runtime/engine.py"),
)


def logreader_seconds(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = 0
    for _msg in can.LogReader(str(path)):
        n += 1
    return time.perf_counter() - t0, n


def replay_cmd(path: Path, tmp: Path) -> list[str]:
    exe = str(Path(sys.executable).with_name("les02-flow"))
    return [exe, "replay", str(path), "--flow", str(FLOW), "--speed", "max", "--progress", "0",
            "--max-gap", "none", "--set", "ws.host=127.0.0.1", "--set", "ws.port=0",
            "--set", "tcp.port=0", "--set", f"store.path={tmp}/rides.sqlite",
            "--log-level", "WARNING", "--stats-interval", "0"]  # fmt: skip


def replay_seconds(path: Path, tmp: Path) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(replay_cmd(path, tmp), cwd=tmp, capture_output=True, text=True,
                          check=False)  # fmt: skip
    elapsed = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"replay failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def profile_shares(path: Path, tmp: Path, raw: Path) -> list[tuple[str, str]]:
    spy = str(Path(sys.executable).with_name("py-spy"))
    subprocess.run([spy, "record", "--rate", "100", "--format", "raw", "-o", str(raw), "--",
                    *replay_cmd(path, tmp)], cwd=tmp, capture_output=True, check=True)  # fmt: skip
    total = 0
    incl: collections.Counter[str] = collections.Counter()
    self_n: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        seen = set()
        for label, needle in PARTS:
            if any(needle in f for f in frames):
                seen.add(label)
        for label in seen:
            incl[label] += n
        last = frames[-1]
        func, _, where = last.partition(" (")
        self_n[f"{where.rsplit('/', 2)[-2:]}:{func}"] += n
    rows = [("samples", f"{total} (py-spy, 100 Hz, whole command)")]
    for label, _ in PARTS:
        rows.append((label, f"{incl[label] / max(total, 1):.1%} of the samples (inclusive)"))
    for name, n in self_n.most_common(12):
        rows.append((f"self {n / max(total, 1):.1%}", name))
    return rows


def main(frames: int, profile: Path | None, append: bool, command: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-hour-"))
    try:
        path = tmp / "hour.log"
        t0 = time.perf_counter()
        write_recording(path, iter_les02_frames(frames))
        gen = time.perf_counter() - t0
        print(f"recording: {frames:,} frames, {path.stat().st_size / 1e6:.0f} MB, {gen:.1f} s",
              flush=True)  # fmt: skip
        bare, n = logreader_seconds(path)
        print(f"python-can LogReader: {bare:.1f} s ({n:,} frames)", flush=True)
        flow_s = replay_seconds(path, tmp)
        print(f"les02-flow replay --flow flows/default.yaml --speed max: {flow_s:.1f} s "
              f"({flow_s / bare:.2f}x the bare LogReader)", flush=True)  # fmt: skip
        prof: list[tuple[str, str]] = []
        if profile is not None:
            prof = profile_shares(path, tmp, profile)
            for k, v in prof:
                print(f"  {k:<62} {v}")
        scale = HOUR / frames
        if append:
            stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
            with RESULTS.open("a", encoding="utf-8") as f:
                f.write(f"\n## {stamp} — replay of one hour of LES02 at --speed max (issue 16)"
                        "\n\n")  # fmt: skip
                f.write(
                    f"Command: `{command}` on {platform.python_implementation()} "
                    f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs "
                    "shared with other engineers' work (compare the rows of one run). "
                    f"{frames:,} frames ({path.stat().st_size / 1e6:.0f} MB candump .log); "
                    "wall times; the les02-flow figure is the whole CLI command (start-up, "
                    "compile, the default flow's graph, shutdown).\n\n"
                )
                f.write("| what | seconds | per 1 h (1.8 M frames) | vs LogReader |\n")
                f.write("|---|---|---|---|\n")
                f.write(
                    f"| python-can LogReader alone | {bare:.1f} | {bare * scale:.1f} | 1.00x |\n"
                )
                f.write(
                    f"| les02-flow replay --flow flows/default.yaml --speed max | {flow_s:.1f} "
                    f"| {flow_s * scale:.1f} | {flow_s / bare:.2f}x |\n"
                )
                if prof:
                    f.write(f"\npy-spy of the replay command ({profile}):\n\n")
                    f.write("| part | share |\n|---|---|\n")
                    for k, v in prof:
                        f.write(f"| {k} | `{v}` |\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _cli() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--frames", type=int, default=HOUR)
    p.add_argument("--profile", type=Path, default=None, help="py-spy raw output file")
    p.add_argument("--no-append", action="store_true")
    a = p.parse_args()
    command = ".venv/bin/python -m bench.replay_hour" + (
        f" {' '.join(sys.argv[1:])}" if sys.argv[1:] else ""
    )
    main(a.frames, a.profile, not a.no_append, command)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
