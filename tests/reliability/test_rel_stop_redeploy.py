"""Stopping and re-deploying never depend on a free event loop (issue 14, items 6 and 7).

* A second SIGINT exits at once (code 130) even while the loop is stuck in one node for
  minutes, and a first SIGINT alone ends the process within the stop deadline (code 1 with a
  message) when the graceful stop cannot finish. Before issue 14 both signals were handled on
  the loop, so neither did anything until the node returned (a 10,000-way fan-out: two
  SIGINTs 10 s apart ignored).
* A hostile edit re-deployed with SIGHUP (1 MiB of flow, rejected after reading it all) is
  read and compiled off the loop: frames keep being recorded meanwhile. Before, the compile
  ran on the loop and the stream stopped for as long as it took.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import yaml

from les02_flow import clirun
from les02_flow.flowfile import FlowErrors
from les02_flow.nodes.recording.formats import RecordingReader

HOG = textwrap.dedent(
    """
    import logging, sys, time
    from typing import Any, ClassVar
    from les02_flow import clilog, clirun
    from les02_flow.compiler import compile_document
    from les02_flow.flowfile import FlowDocument
    from les02_flow.node import Kind, Node, NodeConfig
    from les02_flow.registry import default_registry

    class Hog(Node[NodeConfig]):
        \"\"\"Blocks the event loop for two minutes on its first message.\"\"\"

        type_name: ClassVar[str] = "hog"
        input_kind: ClassVar[Kind | None] = Kind.ANY

        def consume(self, message: Any) -> None:
            print("hogging", flush=True)
            time.sleep(120)

    clirun.STOP_DEADLINE = float(sys.argv[2])
    clilog.CliLog("INFO").install()
    nodes = {
        "sim": {"type": "les02_sim", "channel": sys.argv[1]},
        "bus": {"type": "can_source", "channel": sys.argv[1], "wires": ["hog"]},
        "hog": {"type": "hog"},
    }
    registry = default_registry().extended(Hog, origin="tests")
    flow = compile_document(FlowDocument("hog", {"version": 1, "nodes": nodes}), registry)
    sys.exit(clirun.run_flow(flow, 0.0))
    """
)


def _start_hog(tmp_path: Path, deadline: float) -> subprocess.Popen[str]:
    script = tmp_path / "hog.py"
    script.write_text(HOG)
    proc = subprocess.Popen(
        [sys.executable, str(script), "hog-" + uuid.uuid4().hex[:8], str(deadline)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "hogging"  # the loop is now blocked
    return proc


def test_second_sigint_exits_while_the_loop_is_blocked(tmp_path: Path) -> None:
    proc = _start_hog(tmp_path, deadline=300.0)
    try:
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        while proc.poll() is None and time.monotonic() - t0 < 30:
            # again and again: signals sent back to back may arrive as one
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=5)  # before: ignored until the node returned (120 s)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert rc == 130, err
    assert "SIGINT again: forcing exit" in err


def test_a_stop_that_cannot_finish_is_bounded(tmp_path: Path) -> None:
    proc = _start_hog(tmp_path, deadline=2.0)
    try:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
        _, err = proc.communicate()
    assert rc == 1, err
    assert "did not stop within 2 s of the signal: forcing exit" in err


def test_hostile_edit_is_compiled_off_the_loop_while_frames_keep_flowing(tmp_path: Path) -> None:
    ch = "rd-" + uuid.uuid4().hex[:8]
    rec = tmp_path / "rec.log"
    flow = {
        "version": 1,
        "nodes": {
            "sim": {"type": "les02_sim", "channel": ch},
            "bus": {"type": "can_source", "channel": ch, "wires": ["recorder"]},
            "recorder": {"type": "file_recorder", "path": str(rec), "flush_interval": 0.05},
        },
    }
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(flow))
    log_path = tmp_path / "run.log"
    exe = Path(sys.executable).parent / "les02-flow"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [str(exe), "run", str(path), "--stats-interval", "0"],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        t0 = time.monotonic()
        while not (rec.exists() and rec.stat().st_size > 20_000):
            assert time.monotonic() - t0 < 30, log_path.read_text()
            time.sleep(0.05)
        # the hostile edit: just under the 1 MiB limit of YAML, 1,900 nodes, one bad key at
        # the end so it is rejected only after all of it was read and checked
        label = "x" * 480
        lines = ["version: 1", "nodes:"]
        lines += [f"  n{i}: {{type: debug, label: {label}}}" for i in range(1900)]
        lines.append("bogus: 1")
        path.write_text("\n".join(lines) + "\n")
        assert 900_000 < path.stat().st_size < 1024 * 1024
        os.kill(proc.pid, signal.SIGHUP)
        t0 = time.monotonic()
        while "flow edit rejected" not in log_path.read_text():
            assert time.monotonic() - t0 < 60, log_path.read_text()[-3000:]
            time.sleep(0.05)
        took = time.monotonic() - t0  # SIGHUP to the rejection: reading and checking
        time.sleep(0.3)  # frames recorded after the rejection, too
    finally:
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    log = log_path.read_text()
    assert rc == 0, log
    assert "unknown top-level key 'bogus'" in log
    stamps = [m.timestamp for m in RecordingReader(str(rec))]
    worst = max(b - a for a, b in itertools.pairwise(stamps))
    # the compile took a while (the test is meaningful), the stream never paused for it
    assert took > 0.5, log
    assert worst < max(0.5, took / 2), (worst, took)


def test_an_edit_that_never_finishes_reading_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo = tmp_path / "flow.yaml"
    os.mkfifo(fifo)  # open() blocks until a writer comes: the read never finishes
    monkeypatch.setattr(clirun, "REDEPLOY_TIMEOUT", 0.5)
    try:
        result = asyncio.run(clirun.compile_off_loop(clirun.Reload(str(fifo))))
    finally:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # release the worker thread
        os.close(fd)
    assert isinstance(result, FlowErrors)
    assert "took longer than 0.5 s" in str(result)
