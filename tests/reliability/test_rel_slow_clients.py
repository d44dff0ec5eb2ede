"""Slow and dead clients (issue 9, item 2), at 5,000 frames/s for a few seconds.

The flow runs in this process (so the test can look inside the sinks): ``les02_sim`` at 2,500
frames/s per channel -> ``can_source`` -> ``les02_parse`` -> two ``ws_sink`` (drop_oldest and
disconnect), and the raw frames -> two ``ecuconnect_tcp_sink`` (drop_oldest and disconnect).
Every sink gets a client that connects and never reads (receive buffer shrunk to a few KiB);
the drop_oldest sinks also get a fast client that reads everything.

The memory bound asserted while streaming (sampled every 20 ms), per client:

* ws_sink: at most ``buffer`` queued messages once the client is behind (``buffer`` +
  ``BURST_SLACK`` while a burst is handed over; the encoded bytes are shared by all clients)
  plus the connection's write buffer, which ``send`` keeps near websockets' ``write_limit``
  (32 KiB) -- bound used: (``buffer`` + ``BURST_SLACK``) x 250 bytes + 64 KiB;
* ecuconnect_tcp_sink: backlog <= ``buffer`` bytes, transport buffer <= 64 KiB high-water mark
  + one backlog (written in one piece on resume) + one batch -- bound used: 2 x ``buffer`` +
  128 KiB.

So the whole server holds at most (per-client bound) x (clients) beyond the kernel's socket
buffers, however long a client stalls. The 60 s version is ``bench/soak.py --slow``.
Also here: dead peers. A WebSocket client that stops answering pings is closed after
``ping_interval + ping_timeout``; a half-open TCP peer (the network vanishes, no FIN/RST) is
released after ``dead_peer_timeout`` -- tested in a private network namespace where the test
can take the loopback interface down (skipped where ``unshare -rn`` is not allowed).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.events import encode_event
from les02_flow.flowfile import FlowDocument
from les02_flow.nodes.ecuconnect.codec import encode
from les02_flow.nodes.ecuconnect.sink import TRANSPORT_HIGH_WATER, EcuconnectTcpSink
from les02_flow.nodes.ws.sink import BURST_SLACK, WsSink
from les02_flow.registry import Registry
from les02_flow.testing import wait_until
from les02_flow.wscompat import WsPeer

ROOT = Path(__file__).resolve().parents[2]
RUN_SECONDS = 6.0
WS_BUFFER = 200
TCP_BUFFER = 64 * 1024


async def until(cond: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    await wait_until(cond, what, timeout)


def stalled_socket() -> socket.socket:
    """A client socket with a tiny receive buffer (the kernel holds little for it)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def stalled_tcp(port: int) -> socket.socket:
    sock = stalled_socket()
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def stalled_ws(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads again."""
    loop = asyncio.get_running_loop()
    sock = stalled_socket()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    while b"\r\n\r\n" not in head:  # read exactly the response head, byte by byte
        chunk = await loop.sock_recv(sock, 1)
        assert chunk, "server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def flow(registry: Registry, channel: str) -> Engine:
    nodes: dict[str, Any] = {
        "sim": {"type": "les02_sim", "channel": channel, "seed": 3, "rate_hz": 2500},
        "bus": {
            "type": "can_source",
            "channel": channel,
            "wires": ["tcp_drop", "tcp_disc", "frames"],
        },
        "parse": {"type": "les02_parse", "wires": {"out": ["ws_drop", "ws_disc", "events"]}},
        "ws_drop": {"type": "ws_sink", "host": "127.0.0.1", "port": 0, "buffer": WS_BUFFER},
        "ws_disc": {
            "type": "ws_sink",
            "host": "127.0.0.1",
            "port": 0,
            "buffer": WS_BUFFER,
            "policy": "disconnect",
        },
        "tcp_drop": {
            "type": "ecuconnect_tcp_sink",
            "port": 0,
            "zeroconf": False,
            "buffer": TCP_BUFFER,
        },
        "tcp_disc": {
            "type": "ecuconnect_tcp_sink",
            "port": 0,
            "zeroconf": False,
            "buffer": TCP_BUFFER,
            "policy": "disconnect",
        },
        "frames": {"type": "collect"},
        "events": {"type": "collect"},
    }
    nodes["bus"]["wires"].append("parse")
    doc = FlowDocument(path="slow", data={"version": 1, "nodes": nodes})
    return Engine(compile_document(doc, registry))


def ws_held(sink: WsSink) -> int:
    """Bytes a ws_sink holds for its clients beyond the kernel (queued + write buffers)."""
    return sum(sink.held_bytes(client) for client in sink.clients)


def tcp_held(sink: EcuconnectTcpSink) -> int:
    return sum(sink.held_bytes(client) for client in sink.clients)


def test_stalled_clients_are_bounded_fast_ones_get_everything(
    registry: Registry, collected: dict[str, list[Any]]
) -> None:
    engine = flow(registry, f"rel-slow-{uuid.uuid4().hex[:8]}")
    nodes = engine.nodes
    ws_drop, ws_disc = nodes["ws_drop"], nodes["ws_disc"]
    tcp_drop, tcp_disc = nodes["tcp_drop"], nodes["tcp_disc"]
    assert isinstance(ws_drop, WsSink) and isinstance(ws_disc, WsSink)
    assert isinstance(tcp_drop, EcuconnectTcpSink) and isinstance(tcp_disc, EcuconnectTcpSink)
    ws_bound = (WS_BUFFER + BURST_SLACK) * 250 + 64 * 1024  # ~200-byte position events
    tcp_bound = 2 * TCP_BUFFER + 2 * TRANSPORT_HIGH_WATER

    nodes_all: list[Any] = [ws_drop, ws_disc, tcp_drop, tcp_disc]

    async def main() -> dict[str, Any]:
        await engine.start()
        out: dict[str, Any] = {"ws_max": 0, "tcp_max": 0}
        try:
            assert tcp_drop.port and tcp_disc.port
            stalled = [
                await stalled_ws(ws_drop.port),
                await stalled_ws(ws_disc.port),
                await stalled_tcp(tcp_drop.port),
                await stalled_tcp(tcp_disc.port),
            ]
            # a constrained link: small kernel send buffers for the stalled peers, so the
            # test sees the sinks' own bounds within seconds instead of megabytes of kernel
            # buffer first (autotuning would grow them to tcp_wmem max)
            await until(lambda: all(s.client_count == 1 for s in nodes_all), "stalled clients")
            for sink in nodes_all:
                for c in list(sink.clients):
                    peer = c.transport
                    transport = peer.ws.transport if isinstance(peer, WsPeer) else peer.transport
                    assert transport is not None
                    server_sock = transport.get_extra_info("socket")
                    server_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            fast_ws: list[str] = []
            fast_tcp = bytearray()
            ws_first = len(collected.get("events", []))
            reader, writer = await asyncio.open_connection("127.0.0.1", tcp_drop.port)

            async def read_ws() -> None:
                async with connect(f"ws://127.0.0.1:{ws_drop.port}/", max_queue=None) as ws:
                    out["ws_connected"] = True
                    async for msg in ws:
                        assert isinstance(msg, str)
                        fast_ws.append(msg)

            async def read_tcp() -> None:
                while chunk := await reader.read(1 << 20):
                    fast_tcp.extend(chunk)

            tasks = [asyncio.create_task(read_ws()), asyncio.create_task(read_tcp())]
            await until(lambda: "ws_connected" in out and tcp_drop.client_count == 2, "clients")
            loop = asyncio.get_running_loop()
            end = loop.time() + RUN_SECONDS
            while loop.time() < end:
                out["ws_max"] = max(out["ws_max"], ws_held(ws_drop), ws_held(ws_disc))
                out["tcp_max"] = max(out["tcp_max"], tcp_held(tcp_drop), tcp_held(tcp_disc))
                for sink in (ws_drop, ws_disc):
                    for client in sink.clients:
                        assert len(client.queue) <= WS_BUFFER + BURST_SLACK
                await asyncio.sleep(0.02)
            out["slow_ws_dropped"] = [c.queue.dropped for c in ws_drop.clients]
            out["slow_tcp_dropped"] = [c.queue.dropped for c in tcp_drop.clients]
            await engine.stop()  # flushes; the fast clients read to the end
            await asyncio.wait_for(asyncio.gather(*tasks), 10)
            writer.close()
            await writer.wait_closed()
            for sock in stalled:
                sock.close()
            out["fast_ws"], out["fast_tcp"], out["ws_first"] = fast_ws, bytes(fast_tcp), ws_first
            return out
        finally:
            await engine.stop()

    res = asyncio.run(main())
    events, frames = collected["events"], collected["frames"]
    assert len(frames) > 5000 * RUN_SECONDS * 0.5, "the flow did not stream at speed"

    # bounded: never more than the per-client bound x clients (ws_held/tcp_held sum two sinks'
    # clients each, two clients per sink at most)
    assert res["ws_max"] <= 2 * ws_bound, res["ws_max"]
    assert res["tcp_max"] <= 2 * tcp_bound, res["tcp_max"]

    # drop_oldest: the stalled client lost messages, counted; the fast one lost nothing
    assert ws_drop.counters.dropped > 0 and max(res["slow_ws_dropped"]) > 0
    assert min(res["slow_ws_dropped"]) == 0
    assert tcp_drop.counters.dropped > 0 and max(res["slow_tcp_dropped"]) > 0
    assert min(res["slow_tcp_dropped"]) == 0
    # disconnect: the stalled client was closed and counted
    assert ws_disc.counters.extra.get("clients_too_slow") == 1
    assert tcp_disc.counters.extra.get("clients_too_slow") == 1

    # the fast WebSocket client got a gap-free tail of every event, up to the very last
    fast_ws = res["fast_ws"]
    encoded = [encode_event(e) for e in events]
    start = encoded.index(fast_ws[0])
    assert start >= res["ws_first"]
    assert fast_ws == encoded[start:]
    # the fast TCP client got a gap-free tail of every frame, up to the very last
    stream = b"".join(encode(m) for m in frames)
    fast_tcp = res["fast_tcp"]
    assert len(fast_tcp) > 100_000 and stream.endswith(fast_tcp)
    assert json.loads(fast_ws[-1])["type"] == "position_sample"


def test_websocket_client_that_stops_answering_pings_is_closed(registry: Registry) -> None:
    """A peer that is gone without a FIN (or hung) is detected by ping_timeout."""
    doc = FlowDocument(
        path="ping",
        data={
            "version": 1,
            "nodes": {
                "ws": {
                    "type": "ws_sink",
                    "host": "127.0.0.1",
                    "port": 0,
                    "ping_interval": 0.3,
                    "ping_timeout": 0.3,
                },
            },
        },
    )
    engine = Engine(compile_document(doc, registry))

    async def main() -> None:
        await engine.start()
        try:
            ws = engine.nodes["ws"]
            assert isinstance(ws, WsSink)
            sock = await stalled_ws(ws.port)
            try:
                await until(lambda: ws.client_count == 1, "client")
                await until(lambda: ws.client_count == 0, "dead client released")
                assert ws.counters.extra["clients_disconnected"] == 1
            finally:
                sock.close()
        finally:
            await engine.stop()

    asyncio.run(main())


HALF_OPEN_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, logging, socket, subprocess, time
    from les02_flow.node import Context
    from les02_flow.nodes.ecuconnect.sink import EcuconnectTcpSink, EcuconnectTcpSinkConfig
    import can

    async def main():
        cfg = EcuconnectTcpSinkConfig(port=0, zeroconf=False, dead_peer_timeout=2)
        sink = EcuconnectTcpSink("tcp", cfg, Context("tcp", logging.getLogger("t")))
        await sink.start()
        idle = socket.create_connection(("127.0.0.1", sink.port))
        busy = socket.create_connection(("127.0.0.1", sink.port))
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for _ in range(200):
            if sink.client_count == 2:
                break
            await asyncio.sleep(0.01)
        assert sink.client_count == 2
        # the network vanishes: no FIN, no RST ever reaches the server again
        subprocess.run(["ip", "link", "set", "lo", "down"], check=True)
        t0 = time.monotonic()
        while sink.client_count and time.monotonic() - t0 < 30:
            # frames keep coming, so one peer has unacknowledged data (TCP_USER_TIMEOUT)
            sink.consume(can.Message(arbitration_id=0x80, data=b"1234", timestamp=1.0))
            await asyncio.sleep(0.05)
        result = {"left": sink.client_count, "seconds": time.monotonic() - t0,
                  "counters": sink.counters.as_dict()}
        await sink.stop()
        idle.close(); busy.close()
        print(json.dumps(result))

    asyncio.run(main())
    """
)


def _netns_available() -> bool:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, check=False
    )
    return probe.returncode == 0


@pytest.mark.skipif(not _netns_available(), reason="needs `unshare -rn` (user+net namespace)")
def test_half_open_tcp_peers_are_detected_and_released(tmp_path: Path) -> None:
    script = tmp_path / "halfopen.py"
    script.write_text(HALF_OPEN_SCRIPT)
    proc = subprocess.run(
        ["unshare", "-rn", "sh", "-c", f"ip link set lo up && exec {sys.executable} {script}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["left"] == 0, result
    assert result["counters"]["clients_disconnected"] == 2, result
