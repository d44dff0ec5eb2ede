"""ecuconnect_source: real TCP servers on 127.0.0.1 (no zeroconf here)."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import can
import pytest
from pydantic import ValidationError

from les02_flow.node import Context
from les02_flow.nodes.ecuconnect.codec import encode
from les02_flow.nodes.ecuconnect.source import EcuconnectSource, EcuconnectSourceConfig
from les02_flow.testing import wait_until

WAIT = 10.0


async def until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    await wait_until(cond, what, timeout)


def frame(i: int, **kw: Any) -> can.Message:
    kw.setdefault("is_extended_id", False)
    return can.Message(timestamp=100.0 + i / 1000, arbitration_id=0x100 + i, data=[i], **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_source(port: int) -> tuple[EcuconnectSource, list[can.Message]]:
    cfg = EcuconnectSourceConfig(
        host="127.0.0.1", port=port, retry_initial=0.05, retry_max=0.2, connect_timeout=2
    )
    node = EcuconnectSource("remote", cfg, Context("remote", logging.getLogger("test.src")))
    got: list[can.Message] = []
    node.build(None)["out"].subscribe(got.append)
    return node, got


def test_config_rules() -> None:
    with pytest.raises(ValidationError, match="set host and port"):
        EcuconnectSourceConfig(host="x")
    with pytest.raises(ValidationError, match="not both"):
        EcuconnectSourceConfig(host="x", port=1, discover=True)
    with pytest.raises(ValidationError, match="needs discover"):
        EcuconnectSourceConfig(host="x", port=1, service_name="ECUconnect-Logger a")
    with pytest.raises(ValidationError, match="not an IPv4"):
        EcuconnectSourceConfig(discover=True, zeroconf_interfaces=["lo"])
    cfg = EcuconnectSourceConfig(discover=True, service_name="ECUconnect-Logger lab")
    node = EcuconnectSource("r", cfg, Context("r", logging.getLogger("t")))
    assert node.bus_info == {"interface": "ecuconnect", "channel": "zeroconf:ECUconnect-Logger lab"}


def test_receives_frames_and_reconnects_after_server_restart() -> None:
    sent = [
        frame(1),
        frame(2, is_extended_id=True),
        frame(3, is_fd=True, bitrate_switch=True),
    ]

    async def main() -> None:
        port = free_port()
        writers: list[asyncio.StreamWriter] = []

        async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            writers.append(w)
            stream = b"".join(encode(m) for m in sent)
            for i in range(0, len(stream), 5):  # arbitrary chunking on the wire
                w.write(stream[i : i + 5])
                await w.drain()

        server = await asyncio.start_server(handler, "127.0.0.1", port)
        node, got = make_source(port)
        await node.start()
        try:
            await until(lambda: len(got) == 3, "first three frames")
            for g, m in zip(got, sent, strict=True):
                assert (g.arbitration_id, g.is_extended_id, g.is_fd, g.bitrate_switch) == (
                    m.arbitration_id,
                    m.is_extended_id,
                    m.is_fd,
                    m.bitrate_switch,
                )
                assert round(g.timestamp * 1e6) == round(m.timestamp * 1e6)
                assert g.channel == f"127.0.0.1:{port}"
            assert node.bus_info == {"interface": "ecuconnect", "channel": f"127.0.0.1:{port}"}
            # the server goes away, then comes back on the same port
            server.close()
            for w in writers:
                w.close()
            await server.wait_closed()
            await until(lambda: node.connected_to is None, "connection lost")
            server = await asyncio.start_server(handler, "127.0.0.1", port)
            await until(lambda: len(got) == 6, "frames after the restart")
            assert node.counters.extra["connects"] == 2
        finally:
            await node.stop()
            await node.stop()  # idempotent
            server.close()
            for w in writers:
                w.close()
            await server.wait_closed()

    asyncio.run(main())


def test_protocol_error_drops_the_connection_and_keeps_good_frames() -> None:
    async def main() -> None:
        port = free_port()
        writers: list[asyncio.StreamWriter] = []

        async def handler(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            writers.append(w)
            w.write(encode(frame(1)) + bytes(12) + b"\x00\x40" + bytes(64))  # length 64, no FD
            await w.drain()

        server = await asyncio.start_server(handler, "127.0.0.1", port)
        node, got = make_source(port)
        await node.start()
        try:
            await until(lambda: node.counters.extra.get("protocol_errors", 0) >= 2, "2 errors")
            assert {g.arbitration_id for g in got} == {0x101}
            assert node.counters.extra["connects"] >= 2  # it reconnected
        finally:
            await node.stop()
            server.close()
            for w in writers:
                w.close()
            await server.wait_closed()

    asyncio.run(main())


def test_unreachable_logger_is_retried_quietly() -> None:
    async def main() -> None:
        node, got = make_source(free_port())
        await node.start()
        try:
            await until(lambda: node.counters.extra.get("connect_failures", 0) >= 3, "retries")
            assert got == []
        finally:
            await node.stop()

    asyncio.run(main())
