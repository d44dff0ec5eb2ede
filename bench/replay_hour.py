"""One hour of LES02 traffic replayed through flows/default.yaml at --speed max (issue 16).

    .venv/bin/python -m bench.replay_hour                 # 1.8 M frames, about 2 minutes
    .venv/bin/python -m bench.replay_hour --frames 300000 --profile /tmp/replay.txt
    .venv/bin/python -m bench.replay_hour --baseline /tmp/old   # + an older checkout, same run

``--baseline DIR``: a checkout of another revision with its own venv (``make
.venv/.installed`` there), replayed on the same file in the same run, so before/after figures
share the machine's load (the one-line load average is printed and recorded).

In the same run, on the same candump ``.log`` file (simulated LES02, 2 x 250 position frames/s
plus status frames):

* ``python-can LogReader``: ``for msg in can.LogReader(path)`` and nothing else -- the floor
  any replay of that file pays to read and parse it;
* ``les02-flow replay FILE --flow flows/default.yaml --speed max``: the real CLI in a
  subprocess (start-up, compile, the whole graph: replay_source -> les02_parse -> ride_detect
  -> ws_sink (no clients) + ride_store; file_recorder dropped as replay does; tcp sink without
  clients), wall time of the command;
* with ``--profile FILE``: the same command under ``py-spy --gil`` (only the thread holding
  the GIL is sampled: what costs CPU, not threads waiting for the GIL or for SQLite), with the
  share of every part in the samples.
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

from bench import py_spy
from bench.recording import HOUR, iter_les02_frames, write_recording

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).with_name("RESULTS.md")
FLOW = ROOT / "flows" / "default.yaml"

#: (label, function name substring in a py-spy frame) for the per-part shares
PARTS = (
    ("start-up (imports, node registry, CLI)", "import_module"),
    ("replay_source: reading + parsing the file (read_batches)", "read_batches ("),
    ("les02_parse (decode)", "nodes/les02/"),
    ("ride_detect (node + detector)", "nodes/rides/detect"),
    ("ride_store (consume, loop side)", "nodes/rides/store.py"),
    ("ws_sink (no clients)", "nodes/ws/"),
    ("ecuconnect_tcp_sink (no clients)", "nodes/ecuconnect/"),
    ("web_console (no clients)", "nodes/web/"),
    ("engine hops (outlets, inlets; self time)", "runtime/engine.py"),
    ("Rx / HotPort (self time)", "reactivex/"),
)
#: parts counted by their own frames only (everything runs below the engine)
SELF_PARTS = {"engine hops (outlets, inlets; self time)", "Rx / HotPort (self time)"}


def logreader_seconds(path: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds of python-can's bare LogReader over ``path``, and its frames."""
    c0, t0 = time.process_time(), time.perf_counter()
    n = 0
    for _msg in can.LogReader(str(path)):
        n += 1
    return time.perf_counter() - t0, time.process_time() - c0, n


def replay_cmd(path: Path, tmp: Path, root: Path = ROOT) -> list[str]:
    exe = (
        str(root / ".venv" / "bin" / "les02-flow")
        if root != ROOT
        else str(Path(sys.executable).with_name("les02-flow"))
    )
    flow = root / "flows" / "default.yaml"
    return [exe, "replay", str(path), "--flow", str(flow), "--speed", "max", "--progress", "0",
            "--max-gap", "none", "--set", "ws.host=127.0.0.1", "--set", "ws.port=0",
            "--set", "tcp.port=0", "--set", "console.port=0",
            "--set", f"store.path={tmp}/rides.sqlite",
            "--log-level", "WARNING", "--stats-interval", "0"]  # fmt: skip


def replay_seconds(path: Path, tmp: Path, root: Path = ROOT) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of the replay command."""
    (tmp / "rides.sqlite").unlink(missing_ok=True)
    before = os.times()
    t0 = time.perf_counter()
    done = subprocess.run(replay_cmd(path, tmp, root), cwd=tmp, capture_output=True,
                          text=True, check=False)  # fmt: skip
    elapsed = time.perf_counter() - t0
    after = os.times()
    if done.returncode != 0:
        raise RuntimeError(f"replay failed ({done.returncode}):\n{done.stderr[-3000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return elapsed, cpu


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def profile_shares(path: Path, tmp: Path, raw: Path) -> list[tuple[str, str]]:
    spy = py_spy()
    spy_args = ["record", "--gil", "--rate", "100", "--format", "raw", "-o", str(raw), "--"]
    subprocess.run([spy, *spy_args, *replay_cmd(path, tmp)], cwd=tmp, capture_output=True,
                   check=True)  # fmt: skip
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
            if label in SELF_PARTS:
                if needle in frames[-1] or (needle == "reactivex/" and "streams.py" in frames[-1]):
                    seen.add(label)
            elif any(needle in f for f in frames):
                seen.add(label)
        for label in seen:
            incl[label] += n
        last = frames[-1]
        func, _, where = last.partition(" (")
        self_n[f"{where.rsplit('/', 2)[-2:]}:{func}"] += n
    rows = [("samples", f"{total} (py-spy --gil, 100 Hz, whole command)")]
    for label, _ in PARTS:
        how = "self" if label in SELF_PARTS else "inclusive"
        rows.append((label, f"{incl[label] / max(total, 1):.1%} of the samples ({how})"))
    for name, n in self_n.most_common(12):
        rows.append((f"self {n / max(total, 1):.1%}", name))
    return rows


def main(
    frames: int, profile: Path | None, append: bool, command: str, baseline: Path | None
) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-replay-hour-"))
    try:
        path = tmp / "hour.log"
        t0 = time.perf_counter()
        write_recording(path, iter_les02_frames(frames))
        gen = time.perf_counter() - t0
        print(f"recording: {frames:,} frames, {path.stat().st_size / 1e6:.0f} MB, {gen:.1f} s",
              flush=True)  # fmt: skip
        loads = [load_average()]
        # LogReader before and after the replays: its mean is the same-run reference
        bare1, cpu1, n = logreader_seconds(path)
        print(f"python-can LogReader: {bare1:.1f} s ({n:,} frames), load {loads[0]}", flush=True)
        runs: list[tuple[str, float, float]] = []
        for label, root in [("les02-flow (this checkout)", ROOT)] + (
            [(f"les02-flow ({baseline})", baseline)] if baseline is not None else []
        ):
            wall, cpu = replay_seconds(path, tmp, root)
            runs.append((label, wall, cpu))
            print(f"{label}: {wall:.1f} s wall, {cpu:.1f} s CPU", flush=True)
        bare2, cpu2, _ = logreader_seconds(path)
        loads.append(load_average())
        bare, bare_cpu = (bare1 + bare2) / 2, (cpu1 + cpu2) / 2
        print(f"python-can LogReader again: {bare2:.1f} s, load {loads[1]}", flush=True)
        for label, wall, cpu in runs:
            print(f"{label}: {wall / bare:.2f}x the LogReader (wall), {cpu / bare_cpu:.2f}x (CPU)")
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
                    f"shared with other engineers' work (load average {loads[0]} before, "
                    f"{loads[1]} after; compare the rows of one run). "
                    f"{frames:,} frames ({path.stat().st_size / 1e6:.0f} MB candump .log). "
                    "The les02-flow figures are the whole CLI command (start-up, compile, the "
                    "default flow's graph, shutdown); `LogReader` is the mean of a run before "
                    "and one after them.\n\n"
                )
                f.write(
                    "| what | wall s | CPU s | wall per 1 h (1.8 M frames) | vs LogReader "
                    "(wall) | vs LogReader (CPU) |\n|---|---|---|---|---|---|\n"
                )
                f.write(
                    f"| python-can LogReader alone | {bare:.1f} | {bare_cpu:.1f} | "
                    f"{bare * scale:.1f} | 1.00x | 1.00x |\n"
                )
                for label, wall, cpu in runs:
                    f.write(
                        f"| {label} replay --flow flows/default.yaml --speed max | {wall:.1f} "
                        f"| {cpu:.1f} | {wall * scale:.1f} | {wall / bare:.2f}x "
                        f"| {cpu / bare_cpu:.2f}x |\n"
                    )
                if prof:
                    f.write(f"\npy-spy --gil of the replay command ({profile}):\n\n")
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
    p.add_argument("--baseline", type=Path, default=None,
                   help="a checkout of another revision (its .venv) replayed too")  # fmt: skip
    a = p.parse_args()
    if a.profile is not None:
        py_spy()  # before the long run: the hint when it is missing
    command = ".venv/bin/python -m bench.replay_hour" + (
        f" {' '.join(sys.argv[1:])}" if sys.argv[1:] else ""
    )
    main(a.frames, a.profile, not a.no_append, command, a.baseline)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
