"""The websockets internals les02_flow.wscompat relies on, and the ping-flood bound.

The first tests fail loudly when a websockets release changes ``ServerConnection.transport``,
``.paused``, ``.drain()`` or ``data_received``: then adapt les02_flow/wscompat.py (and only
it) and move the upper pin in pyproject.toml.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import inspect
import logging
import os
import socket
import struct
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from les02_flow.node import Context
from les02_flow.nodes.ws.sink import WsSink, WsSinkConfig
from les02_flow.testing import wait_until
from les02_flow.wscompat import CONTROL_LIMIT, TESTED, GuardedServerConnection


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 30))


def test_installed_websockets_is_in_the_tested_range() -> None:
    installed = version("websockets")
    major = int(installed.split(".")[0])
    low, high = (int(part.strip(">=<").split(".")[0]) for part in TESTED.split(","))
    assert low <= major < high, (
        f"websockets {installed} is outside {TESTED}: check les02_flow/wscompat.py"
    )


def test_server_connection_internals_are_what_wscompat_uses() -> None:
    for name in ("data_received", "pause_writing", "resume_writing", "connection_lost"):
        assert callable(getattr(ServerConnection, name, None)), name
    assert inspect.iscoroutinefunction(ServerConnection.drain)
    assert "create_connection" in inspect.signature(serve).parameters

    async def main() -> None:
        seen: dict[str, Any] = {}
        drained = asyncio.Event()

        async def handler(ws: ServerConnection) -> None:
            seen["transport"] = ws.transport
            seen["paused_before"] = ws.paused
            ws.transport.set_write_buffer_limits(high=4096)
            ws.transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
            )
            frame = b"\x81\x7e" + struct.pack("!H", 60000) + b"x" * 60000
            for _ in range(200):  # the client reads nothing yet
                ws.transport.write(frame)
                if ws.paused:
                    break
            seen["paused"] = ws.paused
            await ws.drain()  # returns once the client reads
            seen["after_drain"] = ws.paused
            drained.set()
            await ws.wait_closed()

        async with (
            serve(handler, "127.0.0.1", 0, create_connection=GuardedServerConnection) as server,
        ):
            port = server.sockets[0].getsockname()[1]
            async with connect(f"ws://127.0.0.1:{port}/", max_queue=None, max_size=None) as ws:
                await wait_until(lambda: "paused" in seen, "server wrote")
                assert isinstance(seen["transport"], asyncio.WriteTransport)
                assert seen["paused_before"] is False
                assert seen["paused"] is True, "transport.write beyond the limit sets .paused"
                async for msg in ws:
                    assert isinstance(msg, str)
                    if drained.is_set():
                        break
                assert seen["after_drain"] is False

    run(main)


def _handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _ping(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x89, 0x80 | len(payload))) + mask + masked


def _close_code(stream: bytes) -> int | None:
    """The code of the first close frame in a stream of unmasked server frames."""
    i = 0
    while i + 2 <= len(stream):
        opcode, n = stream[i] & 0x0F, stream[i + 1] & 0x7F
        head = 2
        if n == 126:
            n, head = struct.unpack("!H", stream[i + 2 : i + 4])[0], 4
        elif n == 127:
            n, head = struct.unpack("!Q", stream[i + 2 : i + 10])[0], 10
        if opcode == 0x8:
            return int(struct.unpack("!H", stream[i + head : i + head + 2])[0])
        i += head + n
    return None


def test_a_client_that_pings_and_never_reads_is_bounded_and_closed_with_1008() -> None:
    """Without the guard websockets buffers one pong per ping for ever (the 14.8 flood)."""
    sink = WsSink(
        "ws",
        WsSinkConfig(host="127.0.0.1", port=0, ping_interval=None),
        Context("ws", logging.getLogger("test.wscompat")),
    )

    async def main() -> None:
        await sink.start()
        loop = asyncio.get_running_loop()
        stack = contextlib.ExitStack()
        try:
            sock = await loop.run_in_executor(None, _handshake, sink.port)
            stack.callback(sock.close)
            await wait_until(lambda: sink.client_count == 1, "client")
            conn = next(iter(sink.clients)).transport.ws
            sock.setblocking(False)
            chunk = _ping(b"p" * 125) * 512  # 67 KiB of pings
            sent, biggest, stuck_since, offset = 0, 0, None, 0
            while sent < 32 * 1024 * 1024:  # the old code reads all 32 MiB and answers it
                try:
                    n = sock.send(chunk[offset:])
                    sent, offset = sent + n, (offset + n) % len(chunk)
                    stuck_since = None
                except BlockingIOError:
                    stuck_since = stuck_since or loop.time()
                    if loop.time() - stuck_since > 0.5:
                        break  # the server stopped reading: back-pressure
                except OSError:
                    break  # the server aborted the connection
                biggest = max(biggest, conn.transport.get_write_buffer_size())
                await asyncio.sleep(0)
            await wait_until(
                lambda: sink.counters.extra.get("clients_control_flood") == 1, "flood noticed"
            )
            assert sent < 16 * 1024 * 1024, f"the server kept reading ({sent} bytes)"
            # what websockets buffered: the limit plus at most one read's worth of pongs
            assert biggest <= CONTROL_LIMIT + 256 * 1024 + 4096, biggest
            sock.setblocking(True)
            sock.settimeout(5)
            received = b""
            try:
                while data := await loop.run_in_executor(None, sock.recv, 1 << 20):
                    received += data
                    if _close_code(received) is not None:
                        break
            except (ConnectionResetError, TimeoutError):
                pass
            assert _close_code(received) == 1008
            await wait_until(lambda: sink.client_count == 0, "client released")
        finally:
            stack.close()
            await sink.stop()

    run(main)


def test_max_clients_refusals_are_rate_limited(caplog: Any) -> None:
    sink = WsSink(
        "ws",
        WsSinkConfig(host="127.0.0.1", port=0, max_clients=1),
        Context("ws", logging.getLogger("test.wscompat")),
    )

    async def main() -> None:
        await sink.start()
        try:
            async with connect(f"ws://127.0.0.1:{sink.port}/"):
                await wait_until(lambda: sink.client_count == 1, "first client")
                for _ in range(20):
                    async with connect(f"ws://127.0.0.1:{sink.port}/") as extra:
                        await extra.wait_closed()
                        assert extra.close_code == 1013
        finally:
            await sink.stop()

    with caplog.at_level(logging.WARNING, "test.wscompat"):
        run(main)
    assert sink.counters.extra["clients_refused"] == 20
    refusals = [r for r in caplog.records if "max_clients" in r.getMessage()]
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
