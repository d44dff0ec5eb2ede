"""Fault soak (issue 14): the real CLI under a schedule of storage and re-deploy faults.

    .venv/bin/python -m bench.soak --faults                 # 5 min, one fault every ~10 s
    .venv/bin/python -m bench.soak --faults --minutes 2

The system under test is ``les02-flow run`` in its own process, inside a private mount
namespace (``unshare -rm``) with a 32 MiB tmpfs as its data directory, so the disk can really
be filled: les02_sim (fast rides) -> can_source -> file_recorder (``rec/rec.log``) and ->
les02_parse -> ride_detect -> ride_store (``db/rides.sqlite``). A driver in the same namespace
injects, in a cycle:

1. ``rm`` of the recording being written,
2. ``rm`` of the ride database,
3. a full disk for 5 s (a filler file, then removed),
4. SIGHUP with a hostile flow edit (an alias bomb, then 1,000 levels of nesting, then a 1 MiB
   file), then the original flow again (a valid edit that changes nothing).

At the end (SIGINT, graceful stop) it counts what is on disk and compares it with the counters:
frames accepted by the recorder = frames in the files + frames dropped while the disk was full
(``dropped``) + frames in deleted recordings (``lost``); rides detected = rides saved + rides in
deleted databases (``rides_lost``) + rides finally dropped. Anything else is "unaccounted" and
must be 0. RSS and open fds of the server are sampled after warm-up and at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _proc_stat(pid: int) -> tuple[int, int]:
    rss = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


HOSTILE = [
    "version: 1\nnodes:\n  x: {type: debug}\na: &a [l, l, l, l, l, l, l, l, l]\n"
    + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    ),
    "version: 1\nnodes:\n  a: " + "[" * 1000 + "]" * 1000 + "\n",
    "version: 1\nnodes:\n"
    + "".join(f"  n{i}: {{type: debug, label: {'x' * 480}}}\n" for i in range(1900))
    + "bogus: 1\n",
]


def _stats(line: str) -> dict[str, dict[str, str]]:
    return {
        p.split()[0]: dict(kv.split("=", 1) for kv in p.split()[1:] if "=" in kv)
        for p in line.split(" | ")
    }


def inner(data: Path, seconds: float, period: float) -> dict[str, Any]:
    """Runs inside the namespace: start the flow, inject faults, count, return results."""
    ch = f"soakf-{os.getpid()}"
    flow = {
        "version": 1,
        "nodes": {
            "sim": {
                "type": "les02_sim",
                "channel": ch,
                "seed": 7,
                "dwell_min": 0.5,
                "dwell_max": 1.0,
            },
            "bus": {"type": "can_source", "channel": ch, "wires": ["recorder", "parse"]},
            "recorder": {
                "type": "file_recorder",
                "path": str(data / "rec" / "rec.log"),
                "flush_interval": 0.2,
            },
            "parse": {"type": "les02_parse", "wires": {"out": ["rides"]}},
            "rides": {"type": "ride_detect", "wires": ["store"]},
            "store": {"type": "ride_store", "path": str(data / "db" / "rides.sqlite")},
        },
    }
    work = Path(tempfile.mkdtemp(prefix="les02-soakf-"))
    flow_path = work / "flow.yaml"
    original = yaml.safe_dump(flow)
    flow_path.write_text(original)
    log_path = work / "server.log"
    exe = Path(sys.executable).parent / "les02-flow"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [str(exe), "run", str(flow_path), "--stats-interval", "0"],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    faults: dict[str, int] = {"rm recording": 0, "rm database": 0, "disk full": 0, "bad HUP": 0}
    samples: list[tuple[float, int, int]] = []
    t0 = time.monotonic()
    step = 0
    try:
        while not (data / "rec" / "rec.log").exists():
            if time.monotonic() - t0 > 30 or proc.poll() is not None:
                raise SystemExit("the flow did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.1)
        time.sleep(3.0)  # warm-up
        samples.append((0.0, *_proc_stat(proc.pid)))
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(period)
            kind = step % 4
            if kind == 0:
                recs = sorted((data / "rec").glob("*.log"), key=lambda p: p.stat().st_mtime)
                if recs:
                    recs[-1].unlink()
                    faults["rm recording"] += 1
            elif kind == 1:
                db = data / "db" / "rides.sqlite"
                if db.exists():
                    db.unlink()
                    faults["rm database"] += 1
            elif kind == 2:
                _fill(data / "filler")
                faults["disk full"] += 1
                time.sleep(5.0)
                (data / "filler").unlink()
            else:
                flow_path.write_text(HOSTILE[(step // 4) % len(HOSTILE)])
                os.kill(proc.pid, signal.SIGHUP)
                faults["bad HUP"] += 1
                deadline = time.monotonic() + 60
                before = log_path.read_text().count("flow edit rejected")
                while log_path.read_text().count("flow edit rejected") == before:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.1)
                flow_path.write_text(original)
                os.kill(proc.pid, signal.SIGHUP)
            step += 1
        time.sleep(2.0)  # let the last rides and the retry queue settle
        samples.append((time.monotonic() - t0, *_proc_stat(proc.pid)))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    stats = [line.split("stats ", 1)[1] for line in log.splitlines() if " stats " in line]
    nodes = _stats(stats[-1]) if stats else {}
    sys.path.insert(0, str(ROOT))
    from les02_flow.nodes.recording.formats import RecordingReader

    on_disk = 0
    files = sorted((data / "rec").iterdir())
    torn = 0
    for path in files:
        problems: list[Any] = []
        on_disk += sum(1 for _ in RecordingReader(str(path), problems.append))
        torn += len(problems)
    empty = sum(1 for p in files if p.stat().st_size == 0)
    rides_in_db = 0
    db = data / "db" / "rides.sqlite"
    if db.exists():
        with sqlite3.connect(db) as conn:
            rides_in_db = conn.execute("SELECT count(*) FROM rides").fetchone()[0]
    rec = {k: int(v) for k, v in nodes.get("recorder", {}).items() if v.isdigit()}
    store = {k: int(v) for k, v in nodes.get("store", {}).items() if v.isdigit()}
    detected = int(nodes.get("rides", {}).get("rides", "0"))
    shutil.rmtree(work, ignore_errors=True)
    return {
        "exit_code": proc.returncode,
        "faults": faults,
        "recorder": rec,
        "store": store,
        "rides_detected": detected,
        "frames_on_disk": on_disk,
        "files": len(files),
        "empty_files": empty,
        "corrupt_or_torn": torn,
        "frames_unaccounted": rec.get("in", 0)
        - on_disk
        - rec.get("dropped", 0)
        - rec.get("lost", 0),
        "rides_in_db": rides_in_db,
        "rides_unaccounted": detected
        - store.get("rides_saved", 0)
        - store.get("duplicates", 0)
        - store.get("dropped", 0),
        "db_vs_counters": rides_in_db - (store.get("rides_saved", 0) - store.get("rides_lost", 0)),
        "rss_kib": [samples[0][1], samples[-1][1]],
        "fds": [samples[0][2], samples[-1][2]],
        "edits_rejected": log.count("flow edit rejected"),
        "tracebacks": log.count("Traceback"),
        "seconds": round(samples[-1][0], 1),
    }


def run(minutes: float, period: float = 10.0) -> list[tuple[str, str]]:
    """Start the namespace with its tmpfs and the inner driver; rows for RESULTS.md."""
    if shutil.which("unshare") is None:
        raise SystemExit("bench.soak --faults needs unshare (a private mount namespace)")
    data = Path(tempfile.mkdtemp(prefix="les02-soakf-data-"))
    try:
        proc = subprocess.run(
            [
                "unshare",
                "-rm",
                "sh",
                "-c",
                f"mount -t tmpfs -o size=32m tmpfs {data} && exec {sys.executable} -m "
                f"bench.soak_faults --inner {data} {minutes * 60} {period}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        shutil.rmtree(data, ignore_errors=True)
    if proc.returncode != 0:
        raise SystemExit(f"fault soak failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    label = f"fault soak {res['seconds'] / 60:.1f} min"
    rec, store, rss = res["recorder"], res["store"], res["rss_kib"]
    return [
        (
            f"{label}: exit code / tracebacks in the log",
            f"{res['exit_code']} / {res['tracebacks']}",
        ),
        (f"{label}: faults injected", ", ".join(f"{k} {v}" for k, v in res["faults"].items())),
        (
            f"{label}: recorder frames in / on disk / dropped (disk full) / lost (deleted files)",
            f"{rec.get('in', 0)} / {res['frames_on_disk']} / {rec.get('dropped', 0)} / "
            f"{rec.get('lost', 0)}",
        ),
        (f"{label}: frames unaccounted (must be 0)", str(res["frames_unaccounted"])),
        (
            f"{label}: recorder written counter vs frames on disk",
            f"{rec.get('written', 0)} vs {res['frames_on_disk']}",
        ),
        (
            f"{label}: files / empty / corrupt or torn lines",
            f"{res['files']} / {res['empty_files']} / {res['corrupt_or_torn']}",
        ),
        (
            f"{label}: rides detected / saved / retried / in deleted databases / dropped",
            f"{res['rides_detected']} / {store.get('rides_saved', 0)} / "
            f"{store.get('retried', 0)} / {store.get('rides_lost', 0)} / "
            f"{store.get('dropped', 0)}",
        ),
        (f"{label}: rides unaccounted (must be 0)", str(res["rides_unaccounted"])),
        (
            f"{label}: rides in the final database vs saved - lost (must be 0)",
            str(res["db_vs_counters"]),
        ),
        (f"{label}: hostile edits rejected", str(res["edits_rejected"])),
        (
            f"{label}: server RSS KiB after warm-up -> end",
            f"{rss[0]} -> {rss[1]} ({rss[1] - rss[0]:+d})",
        ),
        (f"{label}: server open fds after warm-up -> end", f"{res['fds'][0]} -> {res['fds'][1]}"),
    ]


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--inner":
        print(json.dumps(inner(Path(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]))))
    else:
        raise SystemExit("use: python -m bench.soak --faults [--minutes M]")
