"""`les02-flow canlogger` end to end: the real CLI in a subprocess serving a real TCP client."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Runs the real CLI entry point in a process that also puts frames on the (in-process)
# virtual bus, since a python-can virtual bus cannot cross processes.
DRIVER = """
import sys, threading, time, can
from les02_flow.cli import main
channel = sys.argv[1]
def send():
    bus = can.Bus(interface="virtual", channel=channel)
    i = 0
    while True:
        bus.send(can.Message(arbitration_id=0x123, is_extended_id=False,
                             data=i.to_bytes(4, "big")))
        i += 1
        time.sleep(0.01)
threading.Thread(target=send, daemon=True).start()
sys.exit(main(sys.argv[2:]))
"""


def test_help_lists_the_seed_flags(command_help: Callable[[str], str]) -> None:
    text = command_help("canlogger")
    flags = "-i --interface -c --channel -b --bitrate -p --port -v --verbose --auto"
    for flag in [*flags.split(), "--service-name", "--no-zeroconf", "--host"]:
        assert flag in text


def test_bad_service_name_is_a_validation_error(cli: Callable[..., Any]) -> None:
    done = cli("canlogger", "-i", "virtual", "--no-zeroconf", "--service-name", "Logger x")
    assert done.returncode == 1
    assert "must start with 'ECUconnect-Logger'" in done.stderr


@pytest.mark.skipif(
    Path("/sys/class/net/can0").exists(), reason="this machine has a CAN adapter (can0)"
)
def test_auto_reports_what_it_tried(cli: Callable[..., Any]) -> None:
    done = cli("canlogger", "--auto", "--no-zeroconf", "--host", "127.0.0.1")
    assert done.returncode == 1
    assert "--auto: socketcan can0: failed:" in done.stderr
    assert "--auto: slcan /dev/ttyACM0: failed:" in done.stderr
    assert "no CAN adapter found" in done.stderr


def read_packets(sock: socket.socket, n: int, timeout: float = 20.0) -> list[tuple[int, bytes]]:
    sock.settimeout(timeout)
    data = b""
    while len(data) < n * 18:  # classic frame with 4 data bytes = 14 + 4
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection"
        data += chunk
    out = []
    pos = 0
    while pos + 14 <= len(data):
        _ts, can_id, flags, length = struct.unpack_from(">QIBB", data, pos)
        if pos + 14 + length > len(data):
            break
        assert flags == 0 and length == 4
        out.append((can_id, data[pos + 14 : pos + 18]))
        pos += 14 + length
    return out


def test_canlogger_serves_frames_and_stops_on_sigterm(free_port: int) -> None:
    channel = f"e2e-{uuid.uuid4().hex[:8]}"
    args = ["canlogger", "-i", "virtual", "-c", channel, "-p", str(free_port),
            "--host", "127.0.0.1", "--no-zeroconf", "-v", "--stats-interval", "0"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, channel, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client = socket.create_connection(("127.0.0.1", free_port), timeout=1)
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "canlogger never listened"
                time.sleep(0.05)
        with client:
            packets = read_packets(client, 5)
        assert len(packets) >= 5
        seq = [int.from_bytes(d, "big") for _, d in packets]
        assert {cid for cid, _ in packets} == {0x123}
        assert seq == list(range(seq[0], seq[0] + len(seq)))  # consecutive, nothing lost
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "listening on 127.0.0.1:" in err
    assert "connected. Total clients: 1" in err
    assert "disconnected" in err and "Total clients: 0" in err
    assert f" {channel} 123#" in out  # -v prints each frame (candump -L style)
