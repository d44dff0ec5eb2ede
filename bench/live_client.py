"""Cheap benchmark clients for ``bench.live``: raw WebSocket and ECUconnect TCP readers.

    python -m bench.live_client --ws 127.0.0.1:8765:5 --tcp 127.0.0.1:42420:1

One process serves several connections with ``selectors``. A client must never be the
bottleneck, so nothing is parsed per message in Python:

* WebSocket: a minimal RFC 6455 handshake, then the byte stream is scanned with C-speed
  ``bytes.count`` for the envelope's first key ``{"proto"`` (one per event; the server's
  frames are unmasked text frames) and ``re.findall`` for the top-level ``"ts": <float>``;
  every 10th event's ts is turned into a latency sample (receipt time - ts, in ms);
* ECUconnect TCP: the 14-byte header + payload packets are walked by their length byte;
  every 10th packet's u64 timestamp (µs) gives a latency sample.

Prints ``ready`` once every connection is open, reads until a ``stop`` line on stdin, then
prints one JSON line: per connection ``{kind, count, lat_ms: [...]}`` plus this process's
CPU seconds and the wall time while it was receiving (first to last byte).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import selectors
import socket
import sys
import time
from typing import Any

MARK = b'{"proto"'
POSITION = b'"type": "position_sample"'
TS = re.compile(rb'"ts": ([0-9.eE+-]+), "source"')
SAMPLE_EVERY = 10
ECU_HEADER = 14


class Conn:
    """One connection's counters (the subclasses parse their protocol)."""

    kind = ""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.count = 0
        self.positions = 0  # WebSocket: position_sample events among them
        self.lat_ms: list[float] = []
        self.tail = b""
        self.phase = 0  # messages until the next sample
        self.first = 0.0
        self.last = 0.0

    def feed(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """Count what is still in the tail (no latency sample for it)."""

    def report(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "count": self.count,
            "positions": self.positions,
            "lat_ms": self.lat_ms,
        }


def _ws_complete(buf: bytes, start: int) -> bool:
    """Whether the text frame whose payload starts at ``start`` is complete in ``buf``."""
    if start >= 2 and buf[start - 2] == 0x81 and buf[start - 1] < 126:
        return len(buf) >= start + buf[start - 1]
    if start >= 4 and buf[start - 4] == 0x81 and buf[start - 3] == 126:
        return len(buf) >= start + int.from_bytes(buf[start - 2 : start], "big")
    return False


class WsConn(Conn):
    kind = "ws"

    def feed(self, data: bytes, now: float) -> None:
        buf = self.tail + data if self.tail else data
        cut = buf.rfind(MARK)
        if cut <= 0:
            self.tail = buf
            return
        if _ws_complete(buf, cut):
            done, self.tail = buf, b""
        else:
            done, self.tail = buf[:cut], buf[cut:]
        self.count += done.count(MARK)
        self.positions += done.count(POSITION)
        stamps = TS.findall(done)
        phase = self.phase
        if phase < len(stamps):
            for ts in stamps[phase::SAMPLE_EVERY]:
                self.lat_ms.append((now - float(ts)) * 1e3)
        self.phase = (phase - len(stamps)) % SAMPLE_EVERY

    def finish(self) -> None:
        self.count += self.tail.count(MARK)
        self.positions += self.tail.count(POSITION)
        self.tail = b""


class TcpConn(Conn):
    kind = "tcp"

    def feed(self, data: bytes, now: float) -> None:
        buf = self.tail + data if self.tail else data
        n = len(buf)
        off = 0
        count = 0
        phase = self.phase
        while off + ECU_HEADER <= n:
            end = off + ECU_HEADER + buf[off + 13]
            if end > n:
                break
            if phase == 0:
                ts_us = int.from_bytes(buf[off : off + 8], "big")
                self.lat_ms.append((now - ts_us * 1e-6) * 1e3)
                phase = SAMPLE_EVERY
            phase -= 1
            count += 1
            off = end
        self.phase = phase
        self.count += count
        self.tail = buf[off:]


def _connect(host: str, port: int) -> socket.socket:
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return s


def open_ws(host: str, port: int) -> tuple[socket.socket, bytes]:
    """Connect and complete the WebSocket handshake; returns the socket and early data."""
    s = _connect(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the WebSocket handshake")
        head += chunk
    status, _, rest = head.partition(b"\r\n\r\n")
    if b" 101 " not in status.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {status[:80]!r}")
    return s, rest


def _target(spec: str) -> tuple[str, int, int]:
    host, port, n = spec.rsplit(":", 2)
    return host, int(port), int(n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--ws", action="append", default=[], help="host:port:connections")
    p.add_argument("--tcp", action="append", default=[], help="host:port:connections")
    a = p.parse_args()
    sel = selectors.DefaultSelector()
    conns: list[Conn] = []
    early: list[tuple[Conn, bytes]] = []
    for spec in a.ws:
        host, port, n = _target(spec)
        for _ in range(n):
            sock, rest = open_ws(host, port)
            ws = WsConn(sock)
            conns.append(ws)
            early.append((ws, rest))
    for spec in a.tcp:
        host, port, n = _target(spec)
        for _ in range(n):
            conns.append(TcpConn(_connect(host, port)))
    for c in conns:
        c.sock.setblocking(False)
        sel.register(c.sock, selectors.EVENT_READ, c)
    sel.register(sys.stdin, selectors.EVENT_READ, None)
    for c, rest in early:
        if rest:
            c.feed(rest, time.time())
    print("ready", flush=True)
    first = last = cpu0 = 0.0
    running = True
    clock = time.time
    while running:
        for key, _ in sel.select():
            conn = key.data
            if conn is None:
                running = False  # "stop" (or EOF) on stdin
                continue
            try:
                data = conn.sock.recv(1 << 18)
            except BlockingIOError:
                continue
            if not data:
                sel.unregister(conn.sock)
                continue
            now = clock()
            if not first:
                first = now
                r0 = resource.getrusage(resource.RUSAGE_SELF)
                cpu0 = r0.ru_utime + r0.ru_stime
            last = now
            conn.feed(data, now)
    # read what is already in the socket buffers
    for c in conns:
        try:
            while data := c.sock.recv(1 << 18):
                c.feed(data, clock())
        except (BlockingIOError, OSError):
            pass
        c.finish()
    r = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "conns": [c.report() for c in conns],
        "cpu": r.ru_utime + r.ru_stime - cpu0,
        "active": last - first,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    for c in conns:
        c.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
