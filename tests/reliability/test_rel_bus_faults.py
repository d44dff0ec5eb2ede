"""Bus faults (issue 9, item 4): a test-only python-can interface that can be told to fail.

``faultcan`` is installed for the child process only: a module and a ``*.dist-info`` with an
``entry_points.txt`` (group ``can.interface``) in a temporary directory on ``PYTHONPATH``, so
python-can finds it exactly like a real third-party adapter package. Its channel is a control
file the test writes:

* ``absent`` -- opening fails (adapter not plugged in);
* ``ok`` -- frames 0x123 with a 4-byte sequence number, one per millisecond;
* ``error`` -- opens, then every ``recv`` raises ``CanOperationError`` (bus-off, driver error);
* ``gone`` -- ``recv`` raises and reopening fails (unplugged mid-stream).

The real CLI runs a flow with ``can_source`` on faultcan feeding an ECUconnect TCP sink, and an
independent simulator -> virtual bus -> parse -> ws_sink branch. The test drives the control
file through absent -> ok -> error -> ok -> gone -> ok and checks: can_source logs each outage
once, retries with backoff and resumes (the TCP client sees new frames after each recovery);
the WebSocket branch keeps serving throughout; SIGINT then exits 0 with the counters.
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from websockets.sync.client import connect

from les02_flow.testing import poll_until

ROOT = Path(__file__).resolve().parents[2]

FAULTCAN = textwrap.dedent(
    '''
    """faultcan: a python-can interface for fault-injection tests (control file = channel)."""
    import struct
    import time

    import can


    def _mode(path):
        try:
            with open(path) as fh:
                return fh.read().strip() or "ok"
        except OSError:
            return "absent"


    class FaultBus(can.BusABC):
        def __init__(self, channel, **kwargs):
            self._control = str(channel)
            with open(self._control + ".opens", "a") as fh:  # the test counts open attempts
                fh.write("open\\n")
            mode = _mode(self._control)
            if mode in ("absent", "gone"):
                raise can.CanInitializationError(f"faultcan: no adapter at {self._control}")
            self.channel_info = f"faultcan {self._control}"
            self._seq_file = self._control + ".seq"
            self._next = time.monotonic()
            super().__init__(channel, **kwargs)

        def _seq(self):
            try:
                with open(self._seq_file) as fh:
                    n = int(fh.read() or 0)
            except OSError:
                n = 0
            with open(self._seq_file, "w") as fh:
                fh.write(str(n + 1))
            return n

        def _recv_internal(self, timeout):
            mode = _mode(self._control)
            if mode == "error":
                raise can.CanOperationError("faultcan: bus error (bus-off)")
            if mode in ("gone", "absent"):
                raise can.CanOperationError("faultcan: device unplugged")
            delay = self._next - time.monotonic()
            if delay > 0:
                if timeout is not None and timeout < delay:
                    time.sleep(timeout)
                    return None, False
                time.sleep(delay)
            self._next = max(self._next + 0.001, time.monotonic() - 0.05)
            data = struct.pack(">I", self._seq())
            return can.Message(arbitration_id=0x123, data=data, is_extended_id=False), False

        def send(self, msg, timeout=None):
            raise can.CanOperationError("faultcan is receive-only")
    '''
)


def install_faultcan(base: Path) -> Path:
    """A module plus dist-info with a ``can.interface`` entry point, under ``base``."""
    site = base / "site"
    site.mkdir()
    (site / "faultcan.py").write_text(FAULTCAN)
    dist = site / "faultcan-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: faultcan\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[can.interface]\nfaultcan = faultcan:FaultBus\n")
    return site


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(
    cond: Callable[[], bool], what: str, proc: subprocess.Popen[str], timeout: float = 20
) -> None:
    poll_until(cond, what, timeout, process=proc)


def opens(control: Path) -> int:
    """How many times can_source tried to open the faultcan bus so far."""
    try:
        return control.with_name(control.name + ".opens").read_text().count("open")
    except OSError:
        return 0


def more_opens(control: Path, n: int) -> Callable[[], bool]:
    """A condition: ``n`` more open attempts than now."""
    target = opens(control) + n
    return lambda: opens(control) >= target


def grew(items: list[Any], n: int) -> Callable[[], bool]:
    """A condition: ``items`` holds more than ``n`` entries."""
    return lambda: len(items) > n


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


class TcpReader(threading.Thread):
    """Reads ECUconnect packets and keeps the faultcan sequence numbers."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.seqs: list[int] = []

    def run(self) -> None:
        buf = b""
        try:
            while chunk := self.sock.recv(65536):
                buf += chunk
                while len(buf) >= 14:
                    n = buf[13]
                    if len(buf) < 14 + n:
                        break
                    self.seqs.append(struct.unpack(">I", buf[14 : 14 + n])[0])
                    buf = buf[14 + n :]
        except OSError:
            pass
        finally:
            self.sock.close()


class WsReader(threading.Thread):
    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.times: list[float] = []

    def run(self) -> None:
        try:
            with connect(f"ws://127.0.0.1:{self.port}/", open_timeout=10) as ws:
                for _ in ws:
                    self.times.append(time.monotonic())
        except Exception:
            pass


def test_can_source_survives_absent_failing_and_unplugged_bus(tmp_path: Path) -> None:
    site = install_faultcan(tmp_path)
    control = tmp_path / "adapter"
    control.write_text("absent")
    ws_port, tcp_port = free_port(), free_port()
    channel = f"rel-bus-{uuid.uuid4().hex[:8]}"
    flow = {
        "version": 1,
        "nodes": {
            "bus": {
                "type": "can_source",
                "interface": "faultcan",
                "channel": str(control),
                "retry_initial": 0.1,
                "retry_max": 0.4,
                "wires": ["tcp"],
            },
            "tcp": {"type": "ecuconnect_tcp_sink", "port": tcp_port, "zeroconf": False},
            "sim": {"type": "les02_sim", "channel": channel, "rate_hz": 100},
            "vbus": {"type": "can_source", "channel": channel, "wires": ["parse"]},
            "parse": {"type": "les02_parse", "wires": {"out": ["ws"]}},
            "ws": {"type": "ws_sink", "host": "127.0.0.1", "port": ws_port},
        },
    }
    flow_path = tmp_path / "flow.yaml"
    flow_path.write_text(yaml.safe_dump(flow))
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "les02_flow.cli", "run", str(flow_path), "--stats-interval", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait(lambda: port_open(ws_port), "ws_sink listening", proc)
        ws = WsReader(ws_port)
        ws.start()
        wait(lambda: bool(ws.times), "ws events while the adapter is absent", proc)
        tcp = TcpReader(tcp_port)
        tcp.start()
        wait(more_opens(control, 2), "retries while absent", proc)
        assert tcp.seqs == []  # absent: nothing yet, the rest of the flow serves

        phases = ["ok", "error", "ok", "gone", "ok"]
        for phase in phases:
            control.write_text(phase)
            if phase == "ok":
                before = len(tcp.seqs)
                wait(grew(tcp.seqs, before + 200), "frames after recovery", proc)
            else:  # a few failed (re)open attempts with backoff
                wait(more_opens(control, 3), f"retries while {phase}", proc)
            served = len(ws.times)
            wait(grew(ws.times, served), "ws events during " + phase, proc)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    where = f"interface=faultcan, channel={control}"
    # each outage is one error line (later failed retries are debug lines)
    assert err.count(f"cannot open CAN bus ({where}): CanInitializationError") == 1, err
    assert f"CAN bus ({where}) failed: CanOperationError: faultcan: bus error" in err
    assert f"CAN bus ({where}) failed: CanOperationError: faultcan: device unplugged" in err
    assert err.count(f"CAN bus ({where}) is back") >= 2
    # the sequence numbers the TCP client saw only ever increase: nothing repeated or reordered
    assert tcp.seqs == sorted(set(tcp.seqs)) and len(tcp.seqs) > 600
    stats = re.findall(r"stats (.*)", err)[-1]
    bus = dict(kv.split("=") for kv in stats.split(" | ")[0].split()[1:])
    assert int(bus["bus_errors"]) >= 4 and int(bus["reconnects"]) >= 2, stats
