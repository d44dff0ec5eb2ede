"""No silent data loss (issue 14, items 1 and 3): files deleted, replaced or filled up while
the flow runs.

* a recording deleted (``rm``) or replaced (``mv other rec.log``) while being written: the
  recorder notices it within a second, logs an error, counts the lost file and its messages
  (``lost_files``, ``lost``; ``written`` is again what is on disk) and records on in a new file;
* the ride database deleted while open: logged, counted (``db_recreated``, ``rides_lost``), a
  new database with the schema is created and the next rides land in it;
* a full disk (a real 16 MiB tmpfs in a private mount namespace): every recording ends on a
  whole line that python-can's own reader accepts, ``written`` equals the frames on disk, no
  empty files are left by retries, rides that failed to save are retried and all land in the
  database, and the WAL is checkpointed back to nothing once the disk has room.

On the code before issue 14 each of these fails: the recorder and the store kept writing
into the unlinked files with no log line and no counter; after ENOSPC the files ended in a
torn line, ``written`` was below what was on disk, each retry left an empty file, failed
rides were dropped and the WAL was never truncated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.events import Event, make_event
from les02_flow.flowfile import FlowDocument
from les02_flow.nodes.recording.formats import RecordingReader
from les02_flow.nodes.rides.store import RideDB
from les02_flow.testing import wait_until

T0 = 1_737_000_000.0


async def until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    await wait_until(cond, what, timeout)


def ride_events(ride_id: str, start: float) -> list[Event]:
    """Position samples around one 2 s ride, its ride_start and ride_end."""
    out: list[Event] = []
    for k in range(600):
        t = start - 0.5 + k * 0.005
        out.append(make_event("position_sample", t, {"channel": "master", "position_raw": k}))
    out.insert(
        100,
        make_event(
            "ride_start", start, {"ride_id": ride_id, "channel": "master", "start_ts": start}
        ),
    )
    end = {
        "ride_id": ride_id,
        "start_ts": start,
        "end_ts": start + 2.0,
        "duration_s": 2.0,
        "start_position_raw": 100,
        "start_position_mm": 100.0,
        "end_position_raw": 500,
        "end_position_mm": 500.0,
        "distance_raw": 400,
        "distance_mm": 400.0,
        "direction": "up",
        "max_speed_mm_s": 200.0,
        "samples": 400,
    }
    out.append(make_event("ride_end", start + 2.5, end))
    return out


def _flow(nodes: dict[str, Any]) -> Engine:
    return Engine(compile_document(FlowDocument("dl", {"version": 1, "nodes": nodes})))


def test_recording_deleted_or_replaced_while_running_is_noticed_counted_and_reopened(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ch = "dl-" + uuid.uuid4().hex[:8]
    rec = tmp_path / "rec" / "rec.log"
    engine = _flow(
        {
            "sim": {"type": "les02_sim", "channel": ch, "seed": 3},
            "bus": {"type": "can_source", "channel": ch, "wires": ["recorder"]},
            "recorder": {"type": "file_recorder", "path": str(rec), "flush_interval": 0.1},
        }
    )

    def c(key: str) -> int:
        return int(engine.counters()["recorder"].as_dict().get(key, 0))

    async def main() -> None:
        await engine.start()
        try:
            await until(lambda: c("written") > 200, "recording")
            os.remove(rec)  # rm of the current recording
            await until(lambda: c("lost_files") == 1, "the deletion noticed")
            assert rec.exists()  # a new recording at the same path, at once
            await until(lambda: c("written") > 100, "recording again")
            other = tmp_path / "other.log"
            other.write_text("(1.000000) vcan0 123#00\n")
            os.replace(other, rec)  # replaced by someone else's file
            await until(lambda: c("lost_files") == 2, "the replacement noticed")
            written = c("written")
            await until(lambda: c("written") > written + 100, "recording again")
        finally:
            await engine.stop()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    counters = engine.counters()["recorder"].as_dict()
    assert counters["lost"] > 200
    log = caplog.text
    assert f"recording {rec} was deleted while being written" in log, log
    assert "was replaced by another file while being written" in log, log
    assert "recording goes on in" in log
    # the foreign file is left alone; what the recorder says it wrote is what is on disk
    assert rec.read_text() == "(1.000000) vcan0 123#00\n"
    ours = [p for p in rec.parent.iterdir() if p != rec]
    assert [p.name for p in ours] == ["rec_1.log"]
    on_disk = len(list(RecordingReader(str(ours[0]))))
    assert on_disk == counters["written"] > 100


def test_ride_database_deleted_while_running_is_recreated_with_its_schema(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "data" / "rides.sqlite"
    engine = _flow({"store": {"type": "ride_store", "path": str(path)}})
    store = engine.nodes["store"]

    def c(key: str) -> int:
        return int(store.counters.as_dict().get(key, 0))

    async def main() -> None:
        await engine.start()
        try:
            for e in ride_events("ride-a", T0):
                store.consume(e)
            await until(lambda: c("rides_saved") == 1, "ride-a saved")
            os.remove(path)  # rm data/rides.sqlite (the -wal and -shm stay)
            await until(lambda: c("db_recreated") == 1, "the deletion noticed")
            for e in ride_events("ride-b", T0 + 10):
                store.consume(e)
            await until(lambda: c("rides_saved") == 2, "ride-b saved")
        finally:
            await engine.stop()

    with caplog.at_level(logging.ERROR):
        asyncio.run(main())
    assert c("rides_lost") == 1 and c("dropped") == 0
    assert f"ride database '{path}' was deleted while open" in caplog.text, caplog.text
    db = RideDB.open_readonly(path)
    try:
        assert [r["ride_id"] for r in db.rides()] == ["ride-b"]
        assert len(db.samples("ride-b")) > 100
    finally:
        db.close()


DISK_FULL = textwrap.dedent(
    """
    import asyncio, json, logging, os, sys, time, uuid
    import can
    sys.path.insert(0, sys.argv[2])
    from test_rel_data_loss import ride_events, until, _flow, T0

    D = sys.argv[1]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    ch = "df-" + uuid.uuid4().hex[:8]
    engine = _flow({
        "sim": {"type": "les02_sim", "channel": ch, "seed": 2},
        "bus": {"type": "can_source", "channel": ch, "wires": ["recorder"]},
        "recorder": {"type": "file_recorder", "path": D + "/rec/rec.log",
                     "flush_interval": 0.1},
        "store": {"type": "ride_store", "path": D + "/db/rides.sqlite"},
    })
    store = engine.nodes["store"]
    out = {"wal": []}

    def c(node, key):
        return engine.counters()[node].as_dict().get(key, 0)

    def fill():
        fd = os.open(D + "/filler", os.O_WRONLY | os.O_CREAT)
        try:
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                try:
                    while True:
                        os.write(fd, b"\\0" * size)
                except OSError:
                    pass
        finally:
            os.close(fd)

    def wal():
        try:
            return os.path.getsize(D + "/db/rides.sqlite-wal")
        except OSError:
            return -1

    async def main():
        await engine.start()
        try:
            for e in ride_events("before", T0):
                store.consume(e)
            await until(lambda: c("recorder", "written") > 500 and c("store", "rides_saved"),
                        "recording")
            fill()
            await until(lambda: c("recorder", "write_errors") >= 2, "recorder errors", 30)
            for i in range(3):
                for e in ride_events(f"full-{i}", T0 + 10 * (i + 1)):
                    store.consume(e)
            await until(lambda: c("store", "write_errors") >= 1, "store error")
            failed = c("store", "write_errors")
            await until(lambda: c("store", "write_errors") > failed, "a retry failing too")
            out["retry_pending"] = c("store", "retry_pending")
            os.remove(D + "/filler")
            await until(lambda: c("recorder", "recoveries") >= 1, "recorder recovery", 30)
            await until(lambda: c("store", "rides_saved") == 4, "store retried", 30)
            await until(lambda: wal() == 0, "WAL checkpointed", 10)
            written = c("recorder", "written")
            await until(lambda: c("recorder", "written") > written + 200, "writing again")
        finally:
            await engine.stop()
        out["counters"] = {k: v.as_dict() for k, v in engine.counters().items()}
        files = {}
        for name in sorted(os.listdir(D + "/rec")):
            data = open(D + "/rec/" + name, "rb").read()
            try:
                read = len(list(can.CanutilsLogReader(D + "/rec/" + name)))
            except Exception as exc:
                read = repr(exc)
            files[name] = {"size": len(data), "ends": data.endswith(b"\\n"),
                           "lines": data.decode().splitlines(), "python_can": read}
        out["files"] = files
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def _mount_ns_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt || exit 1"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _mount_ns_available(), reason="needs `unshare -rm` and tmpfs mounts")
def test_full_disk_leaves_whole_records_exact_counters_and_no_lost_rides(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "disk_full.py"
    script.write_text(DISK_FULL)
    here = Path(__file__).parent
    proc = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            f"mount -t tmpfs -o size=16m tmpfs {disk} && "
            f"exec {sys.executable} {script} {disk} {here}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    rec = res["counters"]["recorder"]
    store = res["counters"]["store"]
    files = res["files"]
    # no empty files from the retries; every file ends on a whole line
    assert files and all(f["size"] > 0 and f["ends"] for f in files.values()), files.keys()
    assert len(files) == rec["files"]
    frames = 0
    for name, f in files.items():
        # python-can's own reader takes every line, and no line was cut to a shorter frame
        assert f["python_can"] == len(f["lines"]), (name, f["python_can"], f["lines"][-2:])
        for line in f["lines"]:
            frame = line.split()[2]
            can_id, _, data = frame.partition("#")
            base = int(can_id, 16) & 0xFE
            assert len(data) == (8 if base == 0x80 else 16), (name, line)
            frames += 1
    # the counter is exactly what is on disk
    assert frames == rec["written"], (frames, rec)
    assert rec["write_errors"] >= 1 and rec["recoveries"] >= 1
    # rides that failed while the disk was full were retried; none lost
    assert res["retry_pending"] >= 1
    assert store["rides_saved"] == 4 and store.get("dropped", 0) == 0, store
    assert store["write_errors"] >= 1 and store["retried"] >= 1
