"""Churn (issue 9, item 3): 300 connect/disconnect cycles of WebSocket and TCP clients while
the flow streams (1,000 in ``bench/soak.py``): no exception, no leaked file descriptors or
tasks, RSS flat, and both sinks' client bookkeeping back to zero.

Cycles mix the ways clients leave: a clean close, a reset (SO_LINGER 0), a close before the
handshake finished, and a close in the middle of receiving.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import uuid
from typing import Any

import pytest
from websockets.asyncio.client import connect

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowDocument
from les02_flow.nodes.ecuconnect.sink import EcuconnectTcpSink
from les02_flow.nodes.ws.sink import WsSink
from les02_flow.registry import Registry
from les02_flow.testing import wait_until as until

CYCLES = 300
WARMUP = 30


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def ws_cycle(port: int, i: int) -> None:
    loop = asyncio.get_running_loop()
    mode = i % 4
    if mode == 3:  # connect and leave before the handshake
        sock = socket.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        reset(sock) if i % 8 == 3 else sock.close()
        return
    async with connect(f"ws://127.0.0.1:{port}/", close_timeout=1) as ws:
        await ws.recv()
        if mode == 1:  # vanish mid-stream: reset the socket under the client
            transport = ws.transport
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif mode == 2:
            await ws.recv()


async def tcp_cycle(port: int, i: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if i % 3:
            await reader.readexactly(14)  # at least one packet header
    finally:
        if i % 3 == 2:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()
            await writer.wait_closed()


def test_connect_disconnect_churn_leaks_nothing(
    registry: Registry, probes: tuple[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    fd_count, rss_kib = probes
    channel = f"rel-churn-{uuid.uuid4().hex[:8]}"
    doc = FlowDocument(
        path="churn",
        data={
            "version": 1,
            "nodes": {
                "sim": {"type": "les02_sim", "channel": channel, "seed": 1, "rate_hz": 500},
                "bus": {"type": "can_source", "channel": channel, "wires": ["parse", "tcp"]},
                "parse": {"type": "les02_parse", "wires": {"out": ["ws"]}},
                "ws": {"type": "ws_sink", "host": "127.0.0.1", "port": 0},
                "tcp": {"type": "ecuconnect_tcp_sink", "port": 0, "zeroconf": False},
            },
        },
    )
    engine = Engine(compile_document(doc, registry))
    caplog.set_level(logging.INFO)

    async def main() -> dict[str, Any]:
        await engine.start()
        ws, tcp = engine.nodes["ws"], engine.nodes["tcp"]
        assert isinstance(ws, WsSink) and isinstance(tcp, EcuconnectTcpSink)
        assert tcp.port is not None
        out: dict[str, Any] = {}
        try:
            for i in range(CYCLES):
                if i == WARMUP:
                    await until(lambda: ws.client_count == 0 and tcp.client_count == 0, "idle")
                    await asyncio.sleep(0.05)
                    out["fd0"], out["rss0"] = fd_count(), rss_kib()
                    out["tasks0"] = len(asyncio.all_tasks())
                await asyncio.gather(ws_cycle(ws.port, i), tcp_cycle(tcp.port, i))
            await until(lambda: ws.client_count == 0 and tcp.client_count == 0, "all gone")
            await until(
                lambda: (
                    ws.counters.extra.get("clients_disconnected", 0)
                    == ws.counters.extra.get("clients_connected", 0)
                ),
                "ws handlers finished",
            )
            await asyncio.sleep(0.05)
            out["fd1"], out["rss1"] = fd_count(), rss_kib()
            out["tasks1"] = len(asyncio.all_tasks())
            out["ws"], out["tcp"] = ws.counters.as_dict(), tcp.counters.as_dict()
        finally:
            await engine.stop()
        return out

    res = asyncio.run(main())
    assert res["fd1"] <= res["fd0"], (res["fd0"], res["fd1"])
    assert res["tasks1"] <= res["tasks0"], (res["tasks0"], res["tasks1"])
    assert res["rss1"] - res["rss0"] < 8 * 1024, (res["rss0"], res["rss1"])  # KiB
    ws_c, tcp_c = res["ws"], res["tcp"]
    assert ws_c["clients_connected"] == ws_c["clients_disconnected"] >= CYCLES * 3 // 4
    assert tcp_c["clients_connected"] == tcp_c["clients_disconnected"] == CYCLES
    assert ws_c["errors"] == tcp_c["errors"] == 0
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]
    assert "Traceback" not in caplog.text
