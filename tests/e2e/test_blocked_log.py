"""A log output nobody reads must not stall the stream (found by bench/soak.py).

``les02-flow run`` writes its log from a writer thread. Here its stderr is a pipe this test
does not read while the flow logs a stats line every millisecond, so the pipe (64 KiB) is full
within a fraction of a second. The WebSocket client must keep receiving the simulator's
500 events/s all the same (1000 of them while the log writer is blocked); once the pipe is
read again, the queued log comes out complete and SIGTERM still ends the run with code 0.
"""

from __future__ import annotations

import fcntl
import json
import platform
import signal
import subprocess
import termios
import time
from pathlib import Path

from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[2]
STDERR = 2
#: events the WebSocket client must get while stderr is blocked: at the simulator's 500/s that
#: takes 2 s or more, while a stalled flow delivers what was buffered (a few hundred at most)
EVENTS = 1000


def pipe_size(fd: int) -> int:
    return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))


def pipe_bytes(fd: int) -> int:
    """Bytes waiting in the pipe (unread)."""
    buf = bytearray(4)
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return int.from_bytes(buf, "little")


#: the write(2) system call's number, by machine (``/proc/PID/task/TID/syscall`` shows it)
WRITE_SYSCALL = {"x86_64": 1, "amd64": 1, "aarch64": 64, "arm64": 64}.get(platform.machine())


def blocked_in_write(pid: int, fd: int) -> bool | None:
    """Whether a thread of ``pid`` sits in a write(2) to ``fd`` (blocked: the pipe is full);
    ``None`` where Linux does not tell (unknown machine, /proc/PID/task/*/syscall unreadable)."""
    if WRITE_SYSCALL is None:
        return None
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            fields = (task / "syscall").read_text().split()
            if len(fields) > 1 and fields[0] == str(WRITE_SYSCALL) and int(fields[1], 16) == fd:
                return True
    except (OSError, ValueError):
        return None
    return False


def wait_until_blocked(pid: int, fd: int, timeout: float = 30.0) -> int:
    """Poll (bounded) until the flow has filled its stderr pipe and its log writer is blocked
    writing to it; the bytes in the pipe then. Where the kernel does not show the blocked
    write, full means: within a page of the pipe's size and unchanged for 0.5 s."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while True:
        n = pipe_bytes(fd)
        blocked = blocked_in_write(pid, STDERR)
        settled = n >= pipe_size(fd) - 4096 and n == last and time.monotonic() - since > 0.5
        if blocked or (blocked is None and settled):
            return n  # no reader: nothing can change the pipe any more
        if n != last:
            last, since = n, time.monotonic()
        assert time.monotonic() < deadline, f"the log writer never blocked: {n} bytes in stderr"
        time.sleep(0.02)


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
        fd = proc.stderr.fileno()
        with ws:
            full = wait_until_blocked(proc.pid, fd)
            for received in range(EVENTS):
                try:
                    event = json.loads(ws.recv(timeout=10.0))
                except TimeoutError:
                    raise AssertionError(
                        f"the flow stalled with its stderr blocked: {received} events"
                    ) from None
                assert event["proto"] == 1
            # not a byte more reached the pipe meanwhile: the log writer was blocked throughout
            assert pipe_bytes(fd) == full
            assert blocked_in_write(proc.pid, STDERR) in (True, None)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err_bytes = proc.communicate(timeout=30)
    err = err_bytes.decode()
    assert proc.returncode == 0, err[-2000:]
    # the queue (10,000 records) held the backlog: once read, the log is complete (nothing
    # dropped: test_log_writer.py), from what was logged while the pipe was full (the stats
    # timer ticks every 1 ms while the client got its events) down to the final stats line
    # written at exit
    assert "flow 'les02-default' running" in err
    assert "log record(s) dropped" not in err, err[-2000:]
    queued = err_bytes[full:].decode().splitlines()
    assert sum(" stats " in line for line in queued) > 100
    assert " stats sim out=" in queued[-1]
