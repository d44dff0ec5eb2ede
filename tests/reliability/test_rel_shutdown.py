"""Shutdown (issue 9, item 6): SIGTERM at 5,000 frames/s loses nothing that was accepted.

The real ``les02-flow run flows/default.yaml`` runs as a subprocess with the simulator at
2,500 frames/s per channel (5,000 frames/s on the bus), the WebSocket and ECUconnect sinks on
loopback ports picked by the OS (read back from the log) and the recorder and ride store
redirected into ``tmp_path``. A real websockets client and a raw TCP client read everything
until the server closes them. After about two seconds of streaming the process gets SIGTERM.

Checked against the counters of the final ``stats`` line and the recorder's ``stopped:`` line:

* the process exits with code 0 within :data:`EXIT_BOUND` seconds, with no warning or error in
  its log (no stop timeout, no aborted client);
* the recording holds exactly the frames the flow accepted (``bus out``): accepted == written
  == frames read back, none dropped;
* the TCP client decoded exactly ``tcp out`` packets, none dropped, and they are the LAST
  ``tcp out`` frames of the recording in the same order (it connected after the recording
  started, so its frames are the recording's tail -- up to the very last frame);
* the WebSocket client received exactly ``ws out`` messages, none dropped; every one is a valid
  event envelope, and the events ``les02_parse`` made from frames are exactly the decoded tail
  of the recording, so the last events before the close are the last frames' events;
* both clients saw a clean close: WebSocket close code 1001 "server shutting down", TCP EOF
  with no partial packet (not a reset).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

import can
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from les02_flow.nodes.ecuconnect.codec import Decoder
from les02_flow.nodes.les02.codec import Les02Decoder
from les02_flow.nodes.recording.formats import Problem, RecordingReader
from les02_flow.testing import poll_until

ROOT = Path(__file__).resolve().parents[2]
#: seconds from SIGTERM to exit that the test accepts (each sink's stop is bounded by 2 s)
EXIT_BOUND = 10.0
#: frames the TCP client must have before SIGTERM (about two seconds at 5,000 frames/s)
STREAM_FRAMES = 10_000
#: event types ride_detect adds to the parsed events (everything else comes from a frame)
DETECTOR_TYPES = frozenset({"ride_start", "ride_end", "relevel", "channel_mismatch", "dropout"})
_WS_LISTEN = re.compile(r"ws_sink 'ws': listening on ws://127\.0\.0\.1:(\d+)")
_TCP_LISTEN = re.compile(r"ecuconnect_tcp_sink 'tcp': ECUconnect Logger listening on [^:]+:(\d+)")
_RECORDER = re.compile(
    r"file_recorder 'recorder': stopped: (\d+) accepted, (\d+) written, (\d+) dropped"
)


class LogReader(threading.Thread):
    """Collects a process's stderr lines; :meth:`wait_for` polls them for a pattern."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: re.Pattern[str], proc: subprocess.Popen[str]) -> re.Match[str]:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = pattern.search(self.text)
            if found:
                return found
            assert proc.poll() is None, f"the flow exited early:\n{self.text}"
            time.sleep(0.02)
        raise AssertionError(f"no {pattern.pattern!r} in the log:\n{self.text}")


class WsReader(threading.Thread):
    """A websockets client that keeps every message until the server closes the connection."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.ws = connect(f"ws://127.0.0.1:{port}/", open_timeout=10)
        self.messages: list[str] = []
        self.error: BaseException | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None

    def run(self) -> None:
        try:
            with self.ws:
                try:
                    for message in self.ws:
                        assert isinstance(message, str)
                        self.messages.append(message)
                except ConnectionClosed as exc:  # not a normal closure
                    self.error = exc
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason
        except BaseException as exc:
            self.error = exc


class TcpReader(threading.Thread):
    """A raw ECUconnect client: decodes every packet until EOF."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.decoder = Decoder()
        self.frames: list[can.Message] = []
        self.eof = False
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.sock:
                while True:
                    chunk = self.sock.recv(1 << 16)
                    if not chunk:
                        self.eof = True
                        return
                    self.frames.extend(self.decoder.feed(chunk))
        except BaseException as exc:  # a reset, a timeout or a bad packet
            self.error = exc


def parse_stats(log: str) -> dict[str, dict[str, int]]:
    """The last ``stats`` line as ``{node: {counter: value}}`` (counters left out are 0)."""
    lines = [line for line in log.splitlines() if " les02_flow: stats " in line]
    assert lines, f"no stats line in the log:\n{log}"
    stats: dict[str, dict[str, int]] = {}
    for part in lines[-1].split(" les02_flow: stats ", 1)[1].split(" | "):
        node, _, fields = part.strip().partition(" ")
        stats[node] = {}
        for item in fields.split():
            key, sep, value = item.partition("=")
            if sep:
                stats[node][key] = int(value)
    return stats


def until(cond: Any, what: str, proc: subprocess.Popen[str], log: LogReader) -> None:
    poll_until(cond, what, 20, process=proc, detail=lambda: log.text)


def test_sigterm_at_5000_frames_per_second_delivers_every_accepted_frame(tmp_path: Path) -> None:
    rec = tmp_path / "rec.log"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "les02_flow.cli", "run", "flows/default.yaml",
            "--stats-interval", "0",
            "--set", "sim.rate_hz=2500", "--set", "sim.channel=rel-shutdown",
            "--set", "rides.rate_hz=2500",
            "--set", "bus.interface=virtual", "--set", "bus.channel=rel-shutdown",
            "--set", "ws.host=127.0.0.1", "--set", "ws.port=0",
            "--set", "tcp.host=127.0.0.1", "--set", "tcp.port=0",
            "--set", f"recorder.path={rec}",
            "--set", f"store.path={tmp_path / 'rides.sqlite'}",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    log = LogReader(proc.stderr)
    log.start()
    ws: WsReader | None = None
    tcp: TcpReader | None = None
    try:
        ws_port = int(log.wait_for(_WS_LISTEN, proc).group(1))
        tcp_port = int(log.wait_for(_TCP_LISTEN, proc).group(1))
        ws = WsReader(ws_port)
        ws.start()
        tcp = TcpReader(tcp_port)
        tcp.start()
        until(lambda: len(tcp.frames) >= STREAM_FRAMES and len(ws.messages) > 0, "data", proc, log)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=EXIT_BOUND + 5)
        exit_seconds = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for reader in (ws, tcp):
            if reader is not None:
                reader.join(timeout=10)
        log.join(timeout=10)
        proc.stderr.close()
    text = log.text
    assert returncode == 0, text
    assert exit_seconds < EXIT_BOUND, text
    # no node timed out, aborted a client or failed while stopping
    assert not re.search(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", text, re.MULTILINE), text
    assert not ws.is_alive() and not tcp.is_alive(), "a client did not see the connection end"
    stats = parse_stats(text)
    accepted = stats["bus"]["out"]

    # the recording: every accepted frame, written, none dropped
    found = _RECORDER.search(text)
    assert found, text
    rec_accepted, rec_written, rec_dropped = map(int, found.groups())
    problems: list[Problem] = []
    recorded = list(RecordingReader(str(rec), on_problem=problems.append))
    assert problems == []
    assert all(isinstance(m, can.Message) for m in recorded)
    assert len(recorded) == rec_accepted == rec_written == stats["recorder"]["in"] == accepted
    assert rec_dropped == 0 and stats["recorder"].get("dropped", 0) == 0
    assert accepted > STREAM_FRAMES

    # the TCP client: every frame sent to it, and they are the recording's tail
    assert tcp.error is None, repr(tcp.error)
    assert tcp.eof and tcp.decoder.pending == 0
    tcp_stats = stats["tcp"]
    assert tcp_stats["in"] == accepted
    assert len(tcp.frames) == tcp_stats["out"] >= STREAM_FRAMES
    assert tcp_stats.get("dropped", 0) == 0 and tcp_stats.get("errors", 0) == 0
    tail = recorded[-len(tcp.frames) :]
    assert [(m.arbitration_id, bytes(m.data)) for m in tcp.frames] == [
        (m.arbitration_id, bytes(m.data)) for m in tail
    ]
    assert [m.timestamp for m in tcp.frames] == pytest.approx([m.timestamp for m in tail], abs=2e-6)

    # the WebSocket client: every message sent to it, valid events, the recording's tail
    assert ws.error is None, repr(ws.error)
    assert (ws.close_code, ws.close_reason) == (1001, "server shutting down")
    ws_stats = stats["ws"]
    assert ws_stats["in"] == stats["rides"]["out"]
    # (one client, which may have connected after the first events: out <= in)
    assert 0 < len(ws.messages) == ws_stats["out"] <= ws_stats["in"]
    assert ws_stats.get("dropped", 0) == 0 and ws_stats.get("errors", 0) == 0
    events = [json.loads(m) for m in ws.messages]
    for event in events:
        assert set(event) == {"proto", "type", "ts", "source", "payload"}, event
        assert event["proto"] == 1 and isinstance(event["payload"], dict), event
    from_frames = [e for e in events if e["type"] not in DETECTOR_TYPES]
    assert len(from_frames) > STREAM_FRAMES // 4
    decoder = Les02Decoder()
    expected = [decoder.decode(m) for m in recorded[-len(from_frames) :]]
    assert all(isinstance(e, dict) for e in expected)
    assert [(e["type"], e["payload"]) for e in from_frames] == [
        (e["type"], e["payload"]) for e in expected if isinstance(e, dict)
    ]
    assert [e["ts"] for e in from_frames] == pytest.approx(
        [e["ts"] for e in expected if isinstance(e, dict)], abs=2e-6
    )
    print(
        f"accepted {accepted} frames, tcp client {len(tcp.frames)} frames, ws client "
        f"{len(ws.messages)} messages, exit {exit_seconds:.2f} s after SIGTERM"
    )
