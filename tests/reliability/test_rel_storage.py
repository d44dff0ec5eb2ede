"""Storage faults (issue 9, item 5): the recorder on a disk that fills up while it records.

A read-only location at start is a clear start error (tests/nodes/test_file_recorder.py::
test_unwritable_path_is_a_clear_start_error); a mounted file system cannot be remounted
read-only while the recorder holds a file open for writing (EBUSY), so "goes read-only
mid-run" is the same write-error path as "disk full" below.

The flow runs in a child process inside a private mount namespace (``unshare -rm``) with a
2 MiB tmpfs, so the test can really fill the disk (skipped where
``unshare -rm`` is not allowed). The child runs les02_sim (fast) -> can_source -> recorder,
and -> parse, and checks:

* disk full: the recorder logs a clear error, counts it (``write_errors``, lost messages in
  ``dropped``), the rest of the flow keeps running (parse keeps counting), and when the filler
  file is removed recording resumes by itself in a new file (``recoveries``);
* every file left behind is readable (at most a torn last line).

The ride store on a failing database (unwritable, locked: error, counter, the next ride is
saved) is covered by tests/nodes/test_ride_store.py; on this full tmpfs it logs
"ride ... not saved to '.../rides.sqlite': OperationalError: database or disk is full".
SIGKILL mid-write leaving a readable file is covered by
tests/e2e/test_record_replay.py::test_sigkill_leaves_a_readable_file_with_everything_flushed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, errno, json, logging, os, subprocess, sys, time, uuid
    from les02_flow.compiler import compile_document
    from les02_flow.engine import Engine
    from les02_flow.flowfile import FlowDocument
    from les02_flow.nodes.recording.formats import RecordingReader

    D = sys.argv[1]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    ch = "st-" + uuid.uuid4().hex[:8]
    nodes = {
        "sim": {"type": "les02_sim", "channel": ch, "seed": 2},
        "bus": {"type": "can_source", "channel": ch, "wires": ["recorder", "parse"]},
        "recorder": {"type": "file_recorder", "path": D + "/rec/rec.log",
                     "flush_interval": 0.1},
        "parse": {"type": "les02_parse"},
    }
    engine = Engine(compile_document(FlowDocument("st", {"version": 1, "nodes": nodes})))
    out = {}

    async def until(cond, what, timeout=20.0):
        t0 = time.monotonic()
        while not cond():
            if time.monotonic() - t0 > timeout:
                raise SystemExit(f"timed out: {what} {json.dumps(counters())}")
            await asyncio.sleep(0.02)

    def counters():
        return {k: c.as_dict() for k, c in engine.counters().items()}

    def c(node, key):
        return engine.counters()[node].as_dict().get(key, 0)

    def fill():
        with open(D + "/filler", "wb") as fh:
            try:
                while True:
                    fh.write(b"\\0" * 65536)
                    fh.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc

    async def main():
        await engine.start()
        try:
            await until(lambda: c("recorder", "written") > 500, "recording")
            # 1. disk full
            fill()
            await until(lambda: c("recorder", "write_errors") >= 1, "recorder error")
            parsed = c("parse", "in")
            await until(lambda: c("parse", "in") > parsed, "parsing on while the disk is full")
            out["parse_during_full"] = c("parse", "in") - parsed
            os.remove(D + "/filler")
            await until(lambda: c("recorder", "recoveries") >= 1, "recorder recovery")
            written = c("recorder", "written")
            await until(lambda: c("recorder", "written") > written + 200, "writing again")
        finally:
            await engine.stop()
        out["counters"] = counters()
        files = {}
        for name in sorted(os.listdir(D + "/rec")):
            problems = []
            frames = list(RecordingReader(D + "/rec/" + name, problems.append))
            files[name] = [len(frames), [p.message for p in problems]]
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
def test_full_disk_is_reported_counted_and_recovered(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    script = tmp_path / "storage.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            f"mount -t tmpfs -o size=16m tmpfs {disk} && exec {sys.executable} {script} {disk}",
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    rec = res["counters"]["recorder"]
    err = proc.stderr
    # clear errors, naming the file and the cause
    assert "No space left on device" in err, err
    assert "retries in a new file" in err and "recording again, to" in err, err
    # counted
    assert rec["write_errors"] >= 1 and rec["errors"] >= 1 and rec["dropped"] > 0
    assert rec["recoveries"] >= 1 and rec["files"] >= 2
    # the rest of the flow kept running meanwhile
    assert res["parse_during_full"] > 0
    # every file is readable; at most its last line is torn
    assert len(res["files"]) >= 2
    for name, (frames, problems) in res["files"].items():
        assert frames > 0 or name != "rec.log"
        assert all("unterminated last line" in p for p in problems), (name, problems)
    # written + lost == accepted: nothing vanished without being counted
    assert rec["written"] + rec["dropped"] >= rec["in"] - 1000
