"""A log output nobody reads must not stall the stream (found by bench/soak.py).

``les02-flow run`` writes its log from a writer thread. Here its stderr is a pipe this test
does not read while the flow logs a stats line every millisecond, so the pipe (64 KiB) is full
within a fraction of a second. The WebSocket client must keep receiving the simulator's
500 events/s all the same; once the pipe is read again, the queued log comes out complete
and SIGTERM still ends the run with code 0.
"""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import termios
import time
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]


def pipe_size(fd: int) -> int:
    return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))


def pipe_bytes(fd: int) -> int:
    """Bytes waiting in the pipe (unread)."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


def wait_until_full(fd: int, timeout: float = 10.0) -> int:
    """Poll (bounded) until the flow has filled its stderr pipe to within a page (a pipe
    takes whole pages: from here on a write of its log blocks); the bytes in the pipe."""
    deadline = time.monotonic() + timeout
    last = -1
    while (n := pipe_bytes(fd)) < pipe_size(fd) - 4096 or n != last:  # full, and stays so
        assert time.monotonic() < deadline, f"stderr pipe not full: {n} bytes"
        last = n
        time.sleep(0.05)
    return n


def test_a_blocked_stderr_does_not_stall_the_flow(
    cli_cmd: list[str], free_port: int, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [
            *cli_cmd,
            "run",
            str(ROOT / "flows" / "default.yaml"),
            "--stats-interval",
            "0.001",
            "--set",
            "ws.host=127.0.0.1",
            "--set",
            f"ws.port={free_port}",
            "--set",
            "tcp.port=0",
            "--set",
            "store.disabled=true",
            "--set",
            f"recorder.path={tmp_path / 'rec.log'}",
            "--set",
            "debug.disabled=true",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # not read until the end
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{free_port}/", open_timeout=2)
                break
            except OSError:
                assert proc.poll() is None, "the flow exited"
                assert time.monotonic() < deadline, "ws_sink did not come up"
                time.sleep(0.1)
        assert proc.stderr is not None
        with ws:
            full = wait_until_full(proc.stderr.fileno())
            received = 0
            t_end = time.monotonic() + 2.0
            while time.monotonic() < t_end:
                event = json.loads(ws.recv(timeout=1.0))
                assert event["proto"] == 1
                received += 1
            # not a byte more reached the pipe meanwhile: the log writer was blocked throughout
            assert pipe_bytes(proc.stderr.fileno()) == full
        # 500 events/s for 2 s with stderr full the whole time (a stalled flow delivers what
        # was buffered, a few hundred at most, then times out)
        assert received > 800, received
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err_bytes = proc.communicate(timeout=30)
    err = err_bytes.decode()
    assert proc.returncode == 0, err[-2000:]
    # the queue (10,000 records) held the backlog: once read, the log is complete, down to
    # the final stats line written at exit (dropping beyond the queue: test_log_writer.py)
    lines = err.splitlines()
    assert "flow 'les02-default' running" in err
    assert sum(" stats " in line for line in lines) > 1000
    assert " stats sim out=" in lines[-1]
