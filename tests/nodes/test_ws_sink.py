"""ws_sink against real websockets clients (and a hand-made slow client) on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError

from les02_flow.events import Event, encode_event, make_event
from les02_flow.node import Context, NodeStartError
from les02_flow.nodes.ws import sink as sink_module
from les02_flow.nodes.ws.sink import (
    TypeFilterError,
    WsSink,
    WsSinkConfig,
    event_json,
    parse_types_query,
)
from les02_flow.testing import wait_until

LOGGER = "test.ws_sink"


def make_sink(**cfg: Any) -> WsSink:
    config = WsSinkConfig(host="127.0.0.1", port=0, **cfg)
    return WsSink("ws", config, Context("ws", logging.getLogger(LOGGER)))


def client(sink: WsSink, query: str = "") -> connect:
    return connect(f"ws://127.0.0.1:{sink.port}/{query}", proxy=None, open_timeout=5)


async def collect(ws: ClientConnection, into: list[str]) -> None:
    """Read every message until the server closes the connection."""
    async for message in ws:
        assert isinstance(message, str)
        into.append(message)


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 15))


def sample(i: int, type_: str = "position_sample", **payload: Any) -> Event:
    return make_event(type_, 1737319234.5 + i / 1000, {"channel": "master", "n": i, **payload})


# -- plain logic -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/", None),
        ("", None),
        ("/?", None),
        ("/anything/at/all", None),
        ("/?types=ride_end", {"ride_end"}),
        ("/?types=ride_start,%20ride_end,,", {"ride_start", "ride_end"}),
        ("/?types=status&types=error", {"status", "error"}),
    ],
)
def test_parse_types_query(path: str, expected: set[str] | None) -> None:
    assert parse_types_query(path) == (None if expected is None else frozenset(expected))


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/?types=", "empty ?types= filter"),
        ("/?types=,,", "empty ?types= filter"),
        ("/?type=ride_end", "unknown query parameter 'type'"),
        ("/?types=Ride-End", "bad event type 'Ride-End'"),
    ],
)
def test_parse_types_query_rejects(path: str, message: str) -> None:
    with pytest.raises(TypeFilterError, match=message.replace("?", r"\?")):
        parse_types_query(path)


def test_event_json_is_encode_event_byte_for_byte() -> None:
    import collections
    import math
    import random

    rng = random.Random(16)
    texts = [
        "master",
        "slave",
        "",
        'q"uote',
        "back\\slash",
        "ctl\x00\x1f\n\t",
        "Aufzug ü €",
        "\ud7ff𝄞",
    ]
    numbers: list[Any] = [0, 1, -1, 2**24 - 1, 2**70, True, False, 1.5, None, "144"]
    stamps: list[Any] = [1737319234.5678, 0.0, -0.0, 1e-300, 1e300, 1.0, 17, math.inf, math.nan]
    checked = fast = 0
    for _ in range(4000):
        payload: dict[str, Any] = {
            "channel": rng.choice([*texts, 7, None]),
            "position_raw": rng.choice(numbers),
        }
        if rng.random() < 0.1:
            payload = dict(reversed(payload.items()))
        if rng.random() < 0.05:
            payload["extra"] = 1
        event: Any = make_event(
            rng.choice(["position_sample", "ride_end", "x\u2028"]),
            rng.choice(stamps),
            payload,
            rng.choice(texts),
        )
        if rng.random() < 0.05:
            event["proto"] = rng.choice([2, True, 1.0])
        if rng.random() < 0.05:
            event = collections.OrderedDict(event)
        try:
            expected: Any = encode_event(event)
        except ValueError as exc:  # NaN/inf: the general encoder's error, unchanged
            with pytest.raises(ValueError, match=str(exc)):
                event_json(event)
            continue
        got = event_json(event)
        assert got == expected, event
        checked += 1
        fast += type(event) is dict and type(payload.get("position_raw")) is int
    assert checked > 3000 and fast > 1000


def test_config_validation() -> None:
    assert WsSinkConfig().model_dump() == {
        "host": "localhost",
        "port": 8765,
        "buffer": 1000,
        "policy": "drop_oldest",
        "max_clients": 64,
        "max_message_size": 4096,
        "ping_interval": 20.0,
        "ping_timeout": 20.0,
        "token_env": None,
        "allowed_origins": [],
    }
    for bad in ({"buffer": 0}, {"policy": "block"}, {"port": 70000}, {"max_clients": 0}):
        with pytest.raises(ValueError):
            WsSinkConfig(**bad)
    assert WsSink.is_sink() and WsSink.type_name == "ws_sink"


# -- broadcasting ------------------------------------------------------------------------------


def test_every_client_gets_every_event_in_order() -> None:
    events = [sample(i, note="Aufzug ü") for i in range(200)]
    expected = [encode_event(e) for e in events]

    async def main() -> None:
        sink = make_sink()
        await sink.start()
        assert sink.port != 0
        try:
            async with client(sink) as a, client(sink) as b, client(sink) as c:
                await wait_until(lambda: sink.client_count == 3, "3 clients")
                for e in events:
                    sink.consume(e)
                for ws in (a, b, c):
                    got = [await ws.recv() for _ in events]
                    assert got == expected
                    assert json.loads(got[0]) == events[0]
            assert sink.counters.emitted == 600
            assert sink.counters.dropped == 0
            assert sink.counters.extra["clients_connected"] == 3
        finally:
            await sink.stop()

    run(main)


def test_events_of_one_loop_iteration_are_one_write_per_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Encoded once, framed once, joined once: every unfiltered client gets the same bytes in
    ONE write; a filtered client one write of what it wants; nothing when nobody wants it."""
    from les02_flow import wscompat

    writes: list[tuple[int, bytes]] = []
    real_write = wscompat.WsPeer.write

    def recording(self: wscompat.WsPeer, data: bytes) -> None:
        writes.append((id(self), data))
        real_write(self, data)

    monkeypatch.setattr(wscompat.WsPeer, "write", recording)
    encoded: list[Any] = []

    def counting_encode(event: Event) -> str:
        encoded.append(event)
        return encode_event(event)

    monkeypatch.setattr(sink_module, "encode_event", counting_encode)
    kinds = ["position_sample", "ride_end"]
    events = [sample(i, kinds[i % 10 == 9]) for i in range(40)]

    async def main() -> None:
        sink = make_sink()
        await sink.start()
        try:
            async with client(sink) as a, client(sink) as b, client(sink, "?types=ride_end") as r:
                await wait_until(lambda: sink.client_count == 3, "3 clients")
                writes.clear()
                for e in events:  # one loop iteration: no await in between
                    sink.consume(e)
                for ws in (a, b):
                    assert [await ws.recv() for _ in events] == [encode_event(e) for e in events]
                assert [await r.recv() for _ in range(4)] == [
                    encode_event(e) for e in events if e["type"] == "ride_end"
                ]
                per_client: dict[int, list[bytes]] = {}
                for who, data in writes:
                    per_client.setdefault(who, []).append(data)
                assert sorted(len(w) for w in per_client.values()) == [1, 1, 1]
                big = [w[0] for w in per_client.values() if len(w[0]) > 1000]
                assert len(big) == 2 and big[0] is big[1]  # the very same bytes object
                assert len(encoded) == len(events)  # each event encoded once
        finally:
            await sink.stop()

    run(main)


def test_per_client_type_filter() -> None:
    kinds = ["position_sample", "ride_start", "status", "ride_end", "error"]
    events = [sample(i, kinds[i % len(kinds)]) for i in range(50)]

    async def main() -> None:
        sink = make_sink()
        await sink.start()
        rides: list[str] = []
        everything: list[str] = []
        async with client(sink, "?types=ride_start,ride_end") as r, client(sink) as a:
            await wait_until(lambda: sink.client_count == 2, "2 clients")
            readers = [
                asyncio.create_task(collect(r, rides)),
                asyncio.create_task(collect(a, everything)),
            ]
            for e in events:
                sink.consume(e)
            await sink.stop()  # flushes, then closes with 1001: readers end
            await asyncio.gather(*readers)
            assert r.close_code == 1001 and a.close_code == 1001
        assert everything == [encode_event(e) for e in events]
        assert rides == [encode_event(e) for e in events if e["type"].startswith("ride_")]
        assert sink.counters.emitted == len(everything) + len(rides)

    run(main)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?types=", "empty ?types= filter"),
        ("?type=ride_end", "unknown query parameter 'type'"),
        ("?types=" + "x" * 300 + "-", "bad event type"),
    ],
)
def test_malformed_filter_closes_with_reason(query: str, reason: str) -> None:
    async def main() -> None:
        sink = make_sink()
        await sink.start()
        try:
            async with client(sink, query) as ws:
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
            assert info.value.rcvd is not None
            assert info.value.rcvd.code == 1008
            assert reason in info.value.rcvd.reason
            assert sink.counters.extra["clients_bad_filter"] == 1
            assert sink.client_count == 0
        finally:
            await sink.stop()

    run(main)


def test_bad_events_are_counted_and_skipped() -> None:
    async def main() -> None:
        sink = make_sink()
        await sink.start()
        try:
            async with client(sink) as ws:
                await wait_until(lambda: sink.client_count == 1, "client")
                sink.consume("not an event")
                sink.consume(sample(0, blob=object()))
                sink.consume(sample(1, value=float("nan")))
                sink.consume(sample(2))
                assert await ws.recv() == encode_event(sample(2))
            assert sink.counters.errors == 3
        finally:
            await sink.stop()

    run(main)


# -- slow clients ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def raw_client(
    port: int,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A WebSocket client done by hand on a socket with a tiny receive buffer; after the
    handshake it stops reading, so the server's outbound data piles up."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    reader, writer = await asyncio.open_connection(sock=sock)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        transport = writer.transport
        assert isinstance(transport, asyncio.ReadTransport)
        transport.pause_reading()
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return b0 & 0x0F, await reader.readexactly(n)


async def feed_until(
    sink: WsSink, fast: list[list[str]], done: Callable[[], bool], limit: int = 3000
) -> list[str]:
    """Consume big events one by one, each time waiting until every fast client has it,
    until ``done()``; returns the encoded events sent."""
    sent: list[str] = []
    for i in range(limit):
        event = sample(i, blob="x" * 30000)
        sink.consume(event)
        sent.append(encode_event(event))
        await wait_until(lambda: all(len(got) == len(sent) for got in fast), "fast clients")
        if done():
            return sent
    raise AssertionError("the slow client never filled its buffer")


def test_slow_client_drop_oldest_does_not_delay_others(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        sink = make_sink(buffer=4)
        await sink.start()
        got_a: list[str] = []
        got_b: list[str] = []
        try:
            async with (
                raw_client(sink.port) as (_, slow),
                client(sink) as a,
                client(sink) as b,
            ):
                await wait_until(lambda: sink.client_count == 3, "3 clients")
                readers = [
                    asyncio.create_task(collect(a, got_a)),
                    asyncio.create_task(collect(b, got_b)),
                ]
                sent = await feed_until(sink, [got_a, got_b], lambda: sink.counters.dropped >= 10)
                # more while the slow one is stuck: fast clients still get all of them
                for i in range(100):
                    sink.consume(sample(10_000 + i))
                    sent.append(encode_event(sample(10_000 + i)))
                    await wait_until(lambda: len(got_a) == len(got_b) == len(sent), "fast")
                assert got_a == sent and got_b == sent
                assert sink.client_count == 3  # drop_oldest keeps the slow client
                dropped = sink.counters.dropped
                assert dropped >= 110
                slow.close()
                await slow.wait_closed()
                await wait_until(lambda: sink.client_count == 2, "slow client gone")
                await sink.stop()
                await asyncio.gather(*readers)
            lines = [r.getMessage() for r in caplog.records if "disconnected" in r.getMessage()]
            assert any(f"sent, {dropped} dropped. Total" in line for line in lines), lines
            assert any(
                "connected (types: all). Total clients: 3" in r.getMessage() for r in caplog.records
            )
        finally:
            await sink.stop()

    run(main)


def test_slow_client_disconnect_policy() -> None:
    async def main() -> None:
        sink = make_sink(buffer=4, policy="disconnect")
        await sink.start()
        got: list[str] = []
        try:
            async with raw_client(sink.port) as (reader, slow), client(sink) as fast:
                await wait_until(lambda: sink.client_count == 2, "2 clients")
                task = asyncio.create_task(collect(fast, got))
                sent = await feed_until(
                    sink, [got], lambda: sink.counters.extra.get("clients_too_slow", 0) > 0
                )
                assert sink.client_count == 1  # the slow one no longer gets events
                assert sink.counters.dropped >= 5
                sink.consume(sample(-1))
                sent.append(encode_event(sample(-1)))
                await wait_until(lambda: len(got) == len(sent), "last event")
                assert got == sent

                # the slow client, once it reads, finds a close frame 1008 "too slow"
                transport = slow.transport
                assert isinstance(transport, asyncio.ReadTransport)
                transport.resume_reading()
                while True:
                    opcode, payload = await asyncio.wait_for(read_frame(reader), 5)
                    if opcode == 0x8:
                        break
                    assert opcode == 0x1
                code = struct.unpack("!H", payload[:2])[0]
                assert code == 1008
                assert payload[2:].decode().startswith("too slow")
                slow.close()
                await slow.wait_closed()
                await sink.stop()
                await task
                assert sink.counters.extra["clients_too_slow"] == 1
        finally:
            await sink.stop()

    run(main)


# -- inbound, limits, lifecycle ----------------------------------------------------------------


def test_inbound_ignored_and_oversize_closes_only_that_client() -> None:
    async def main() -> None:
        sink = make_sink(max_message_size=64)
        await sink.start()
        try:
            async with client(sink) as good, client(sink) as bad:
                await wait_until(lambda: sink.client_count == 2, "2 clients")
                await good.send("hello, server")
                await wait_until(
                    lambda: sink.counters.extra.get("inbound_ignored") == 1, "inbound counted"
                )
                await bad.send("x" * 100)
                with pytest.raises(ConnectionClosedError) as info:
                    await bad.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
                await wait_until(lambda: sink.client_count == 1, "oversize client gone")
                sink.consume(sample(1))
                assert await good.recv() == encode_event(sample(1))
        finally:
            await sink.stop()

    run(main)


def test_max_clients_refuses_with_1013() -> None:
    async def main() -> None:
        sink = make_sink(max_clients=2)
        await sink.start()
        try:
            async with client(sink) as a, client(sink) as b:
                await wait_until(lambda: sink.client_count == 2, "2 clients")
                async with client(sink) as c:
                    with pytest.raises(ConnectionClosedError) as info:
                        await c.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 1013
                assert "too many clients (max 2)" in info.value.rcvd.reason
                assert sink.counters.extra["clients_refused"] == 1
                sink.consume(sample(7))
                assert await a.recv() == await b.recv() == encode_event(sample(7))
            await wait_until(lambda: sink.client_count == 0, "clients gone")
            async with client(sink) as d:  # room again
                await wait_until(lambda: sink.client_count == 1, "new client")
                sink.consume(sample(8))
                assert await d.recv() == encode_event(sample(8))
        finally:
            await sink.stop()

    run(main)


def test_stop_flushes_then_closes_1001_and_is_idempotent() -> None:
    async def main() -> None:
        sink = make_sink()
        await sink.stop()  # before start: nothing to do
        sink = make_sink()
        await sink.start()
        port = sink.port
        got: list[str] = []
        async with client(sink) as ws:
            await wait_until(lambda: sink.client_count == 1, "client")
            reader = asyncio.create_task(collect(ws, got))
            events = [sample(i) for i in range(20)]
            for e in events:
                sink.consume(e)  # queued; the writer has not run yet
            await sink.stop()
            await reader
            assert ws.close_code == 1001
            assert ws.close_reason == "server shutting down"
        assert got == [encode_event(e) for e in events]
        await sink.stop()
        sink.consume(sample(99))  # after stop: counted, never raises
        assert sink.client_count == 0
        with pytest.raises(OSError):
            async with client(sink):
                pass
        # the port is free again
        again = WsSink(
            "ws2",
            WsSinkConfig(host="127.0.0.1", port=port),
            Context("ws2", logging.getLogger(LOGGER)),
        )
        await again.start()
        await again.stop()

    run(main)


def test_stop_is_bounded_with_a_client_that_never_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_module, "FLUSH_TIMEOUT", 0.2)

    async def main() -> None:
        sink = make_sink(buffer=1000)
        await sink.start()
        try:
            async with raw_client(sink.port) as (_reader, _):
                await wait_until(lambda: sink.client_count == 1, "client")
                for i in range(300):  # ~9 MB: far more than the socket buffers hold
                    sink.consume(sample(i, blob="x" * 30000))
                    await asyncio.sleep(0)
                await sink.stop()  # cannot flush: aborts that client after FLUSH_TIMEOUT
                assert sink.client_count == 0
                assert sink.counters.extra["clients_disconnected"] == 1
                assert sink.counters.emitted < 300  # it really was stuck
        finally:
            await sink.stop()

    run(main)


def test_start_on_port_in_use_raises_node_start_error() -> None:
    async def main() -> None:
        first = make_sink()
        await first.start()
        try:
            second = WsSink(
                "ws2",
                WsSinkConfig(host="127.0.0.1", port=first.port),
                Context("ws2", logging.getLogger(LOGGER)),
            )
            with pytest.raises(
                NodeStartError, match=f"ws_sink: cannot listen on 127.0.0.1:{first.port}: "
            ):
                await second.start()
            await second.stop()
        finally:
            await first.stop()

    run(main)


def test_client_closing_itself_is_clean(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)

    async def main() -> None:
        sink = make_sink()
        await sink.start()
        try:
            async with client(sink):
                await wait_until(lambda: sink.client_count == 1, "client")
            # the count and the counter are waited for, not read right after one another: the
            # sink may forget a client before the line with its totals is written
            await wait_until(
                lambda: sink.counters.extra.get("clients_disconnected") == 1,
                "the disconnect counted",
            )
            await wait_until(lambda: sink.client_count == 0, "client gone")
            sink.consume(sample(1))
            assert sink.counters.extra["clients_disconnected"] == 1
            assert sink.counters.extra["clients_connected"] == 1
        finally:
            await sink.stop()

    run(main)
    assert any(
        "disconnected (code 1000): " in r.getMessage()
        and "message(s) sent, 0 dropped. Total clients: 0" in r.getMessage()
        for r in caplog.records
    )


def test_examples_validate() -> None:
    import yaml

    for snippet in WsSink.examples:
        (entry,) = yaml.safe_load(snippet).values()
        assert entry.pop("type") == "ws_sink"
        WsSinkConfig(**entry)
