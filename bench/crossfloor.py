"""The floor of the cross-process bus benchmark: a do-nothing Python receiver of the same bus.

    .venv/bin/python -m bench.crossbus --systems floor-recv,floor-write,les02-flow

:mod:`bench.crossbus` runs this as a system under test beside les02-flow and the seed design,
on the same bus, with the same sender and clients. It shows what any asyncio Python process
pays on this machine before it does any work, so les02-flow's figures can be read against it:

* ``floor-recv``: python-can opens the ``udp_multicast`` bus (same socket, same options); the
  loop watches the socket with ``add_reader`` and reads every datagram with ``recvmsg`` (with
  the kernel timestamp) until ``EAGAIN``, and drops it. No decoding, no client writes (the
  clients get nothing: its *delivered* column is 0 by design);
* ``floor-write``: the same, and for every read (one wake-up, however many datagrams it
  brought) ONE write per client of a ready-made message per datagram: a 60-byte WebSocket text
  frame that the clients count as a ``position_sample`` (with the datagram's receive stamp as
  ``ts``) and a 22-byte ECUconnect packet. No msgpack, no JSON, no pipeline.

``--window S`` (crossbus ``--floor-window``): after a wake-up the loop leaves the socket alone
for ``S`` seconds (as can_source's ``read_interval``), so one wake-up carries several frames.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import socket
import struct
import sys

import can

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TIMESPEC = struct.Struct("@ll")
_WS_EVENT = b'{"proto": 1, "type": "position_sample", "ts": %.6f, "source": 0}'
_ANC = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(4)


class _Floor:
    def __init__(self, write: bool, window: float) -> None:
        self.write = write
        self.window = window
        self.ws: list[asyncio.Transport] = []
        self.tcp: list[asyncio.Transport] = []
        self.frames = 0

    def on_readable(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        stamps: list[float] = []
        recvmsg = sock.recvmsg
        while True:
            try:
                _data, anc, _flags, _addr = recvmsg(4096, _ANC, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            ts = 0.0
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == 35:  # SO_TIMESTAMPNS
                    sec, nsec = _TIMESPEC.unpack_from(cdata)
                    ts = sec + nsec * 1e-9
            stamps.append(ts)
        self.frames += len(stamps)
        if self.write and stamps:
            if self.ws:
                ws = b"".join(_ws_text(_WS_EVENT % t) for t in stamps)
                for tr in self.ws:
                    tr.write(ws)
            if self.tcp:
                tcp = b"".join(
                    struct.pack(">QIBB", int(t * 1e6), 0x80, 0, 8) + bytes(8) for t in stamps
                )
                for tr in self.tcp:
                    tr.write(tcp)
        if self.window > 0:
            loop.remove_reader(sock.fileno())
            loop.call_later(self.window, loop.add_reader, sock.fileno(), self.on_readable,
                            sock, loop)  # fmt: skip


def _ws_text(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload


class _WsProto(asyncio.Protocol):
    def __init__(self, floor: _Floor) -> None:
        self.floor = floor
        self.head = b""
        self.tr: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.tr = transport

    def data_received(self, data: bytes) -> None:
        if self.tr is None or self.tr in self.floor.ws:
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            return
        key = b""
        for line in self.head.split(b"\r\n"):
            if line.lower().startswith(b"sec-websocket-key:"):
                key = line.split(b":", 1)[1].strip()
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())
        self.tr.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.floor.ws.append(self.tr)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tr in self.floor.ws:
            self.floor.ws.remove(self.tr)


class _TcpProto(asyncio.Protocol):
    def __init__(self, floor: _Floor) -> None:
        self.floor = floor

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.floor.tcp.append(transport)
        self.tr = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.tr in self.floor.tcp:
            self.floor.tcp.remove(self.tr)


async def serve(channel: str, port: int, ws_port: int, tcp_port: int, write: bool,
                window: float) -> None:  # fmt: skip
    loop = asyncio.get_running_loop()
    floor = _Floor(write, window)
    bus = can.Bus(interface="udp_multicast", channel=channel, port=port)
    sock: socket.socket = bus._multicast._socket  # type: ignore[attr-defined]
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    ws = await loop.create_server(lambda: _WsProto(floor), "127.0.0.1", ws_port)
    tcp = await loop.create_server(lambda: _TcpProto(floor), "127.0.0.1", tcp_port)
    loop.add_reader(sock.fileno(), floor.on_readable, sock, loop)
    stop = asyncio.Event()
    loop.add_signal_handler(2, stop.set)
    loop.add_signal_handler(15, stop.set)
    await stop.wait()
    ws.close()
    tcp.close()
    bus.shutdown()
    print(f"floor: {floor.frames} frames", file=sys.stderr)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--channel", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ws-port", type=int, required=True)
    p.add_argument("--tcp-port", type=int, required=True)
    p.add_argument("--write", action="store_true")
    p.add_argument("--window", type=float, default=0.0)
    a = p.parse_args()
    asyncio.run(serve(a.channel, a.port, a.ws_port, a.tcp_port, a.write, a.window))
    return 0


if __name__ == "__main__":
    sys.exit(main())
