"""can_source on real python-can virtual buses (and a socketpair bus for the add_reader path)."""

from __future__ import annotations

import asyncio
import logging
import select
import socket
import struct
import sys
import threading
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import can
import can.interfaces
import can.interfaces.virtual
import pytest
from pydantic import ValidationError

from les02_flow.node import Context
from les02_flow.nodes.can_source import (
    BATCH_LIMIT,
    Backoff,
    CanFilter,
    CanSource,
    CanSourceConfig,
    bus_kwargs,
)
from les02_flow.testing import wait_until

LOGGER = "test.can_source"


def unique_channel() -> str:
    return f"t-cansrc-{uuid.uuid4().hex[:12]}"


def make_node(node_id: str = "bus", **config: Any) -> CanSource:
    cfg = CanSourceConfig(**config)
    return CanSource(node_id, cfg, Context(node_id, logging.getLogger(LOGGER)))


def sender_bus(channel: str) -> can.BusABC:
    return can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)


def frame(i: int, ts: float = 0.0, extended: bool = False) -> can.Message:
    return can.Message(
        timestamp=ts or 1737319234.0 + i * 0.001,
        arbitration_id=i % 0x800,
        is_extended_id=extended,
        data=i.to_bytes(4, "big"),
    )


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


# -- config ----------------------------------------------------------------------------------


def test_config_defaults_and_bus_kwargs() -> None:
    cfg = CanSourceConfig()
    assert (cfg.interface, cfg.channel, cfg.retry_initial, cfg.retry_max) == (
        "virtual",
        "les02",
        0.5,
        10.0,
    )
    assert bus_kwargs(cfg) == {"interface": "virtual", "channel": "les02", "ignore_config": True}
    cfg = CanSourceConfig(
        interface="socketcan",
        channel="can0",
        fd=True,
        bitrate=500000,
        data_bitrate=2000000,
        receive_own_messages=True,
        filters=[
            CanFilter.model_validate(
                {"can_id": "0x18DA00F1", "can_mask": 0x1FFFFF00, "extended": True}
            )
        ],
        bus_options={"local_loopback": False},
    )
    assert bus_kwargs(cfg) == {
        "interface": "socketcan",
        "channel": "can0",
        "ignore_config": True,
        "bitrate": 500000,
        "fd": True,
        "data_bitrate": 2000000,
        "receive_own_messages": True,
        "local_loopback": False,
        "can_filters": [{"can_id": 0x18DA00F1, "can_mask": 0x1FFFFF00, "extended": True}],
    }


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"data_bitrate": 2000000}, "needs fd"),
        ({"bus_options": {"bitrate": 1}}, "bus_options may not set bitrate"),
        ({"retry_initial": 5, "retry_max": 1}, "retry_max"),
        ({"retry_initial": 0}, "greater than 0"),
        ({"filters": [{"can_id": "zz", "can_mask": 1}]}, "not an integer"),
        ({"filters": [{"can_id": 0x20000000, "can_mask": 1}]}, "less than or equal"),
        ({"bogus": 1}, "Extra inputs"),
    ],
)
def test_config_rejects(config: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        CanSourceConfig(**config)


def test_bus_info_and_backoff() -> None:
    node = make_node(interface="socketcan", channel="can0", bitrate=250000)
    assert node.bus_info == {"interface": "socketcan", "channel": "can0", "bitrate": "250000"}
    assert make_node(channel=3).bus_info == {"interface": "virtual", "channel": "3"}
    b = Backoff(0.5, 10.0)
    assert [b.next() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    b.reset()
    assert b.next() == 0.5
    assert CanFilter.model_validate({"can_id": "0x80", "can_mask": "2046"}).can_mask == 0x7FE


# -- reading ---------------------------------------------------------------------------------


def test_frames_arrive_in_order_with_timestamps_on_loop_thread() -> None:
    channel = unique_channel()
    received: list[can.Message] = []
    threads: set[int] = set()

    def on_next(msg: can.Message) -> None:
        received.append(msg)
        threads.add(threading.get_ident())

    async def main() -> None:
        node = make_node(channel=channel)
        node.build(None)["out"].subscribe(on_next)
        await node.start()
        assert node.bus is not None
        sender = sender_bus(channel)
        try:
            for i in range(50):
                sender.send(frame(i))
            await wait_until(lambda: len(received) >= 50, "len(received) >= 50")
        finally:
            sender.shutdown()
            await node.stop()
        assert len(received) == 50

    asyncio.run(main())
    loop_thread = threading.get_ident()  # asyncio.run runs the loop on this thread
    assert threads == {loop_thread}
    assert [(m.arbitration_id, m.timestamp, bytes(m.data)) for m in received] == [
        (f.arbitration_id, f.timestamp, bytes(f.data)) for f in map(frame, range(50))
    ]
    assert all(m.channel == channel for m in received)


def test_burst_is_batched_and_complete() -> None:
    channel = unique_channel()
    n = 5000
    received: list[can.Message] = []

    async def main() -> int:
        loop = asyncio.get_running_loop()
        handovers = [0]
        original = loop.call_soon_threadsafe

        def counting(callback: Callable[..., object], *args: Any, **kwargs: Any) -> Any:
            if getattr(callback, "__name__", "") == "_deliver":
                handovers[0] += 1
            return original(callback, *args, **kwargs)

        node = make_node(channel=channel)
        node.build(None)["out"].subscribe(received.append)
        await node.start()
        loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]
        sender = sender_bus(channel)
        try:
            for i in range(n):  # the loop is busy here: the reader can only queue up
                sender.send(frame(i))
            await wait_until(lambda: len(received) >= n, "len(received) >= n", timeout=15)
        finally:
            loop.call_soon_threadsafe = original  # type: ignore[method-assign]
            sender.shutdown()
            await node.stop()
        return handovers[0]

    handovers = asyncio.run(main())
    assert [int.from_bytes(m.data, "big") for m in received] == list(range(n))
    # one call_soon_threadsafe per batch, not per frame
    assert n // BATCH_LIMIT <= handovers <= n // 10


def test_filters() -> None:
    channel = unique_channel()
    received: list[can.Message] = []

    async def main() -> None:
        node = make_node(
            channel=channel,
            filters=[
                {"can_id": 0x80, "can_mask": 0x7FE},
                {"can_id": 0x18DAF110, "can_mask": 0x1FFFFFFF, "extended": True},
            ],
        )
        node.build(None)["out"].subscribe(received.append)
        await node.start()
        sender = sender_bus(channel)
        try:
            for can_id, ext in [
                (0x80, False),
                (0x30, False),
                (0x81, False),
                (0x180, False),
                (0x18DAF111, True),
                (0x18DAF110, True),
            ]:
                sender.send(can.Message(arbitration_id=can_id, is_extended_id=ext, data=[1]))
            await wait_until(
                lambda: any(m.arbitration_id == 0x18DAF110 for m in received), "the 29-bit frame"
            )
        finally:
            sender.shutdown()
            await node.stop()

    asyncio.run(main())
    assert [(m.arbitration_id, m.is_extended_id) for m in received] == [
        (0x80, False),
        (0x81, False),
        (0x18DAF110, True),
    ]


def test_bus_options_reach_the_bus() -> None:
    async def main() -> None:
        node = make_node(channel=unique_channel(), bus_options={"rx_queue_size": 7})
        await node.start()
        try:
            bus = node.bus
            assert isinstance(bus, can.interfaces.virtual.VirtualBus)
            assert bus.queue.maxsize == 7
        finally:
            await node.stop()

    asyncio.run(main())


# -- failures --------------------------------------------------------------------------------


def test_unavailable_bus_logs_once_retries_and_stops_promptly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    channel = unique_channel()

    async def main() -> None:
        node = make_node(
            interface="nonexistent_iface", channel=channel, retry_initial=0.01, retry_max=0.02
        )
        completed: list[bool] = []
        node.build(None)["out"].subscribe(on_completed=lambda: completed.append(True))
        await node.start()  # must not raise
        assert node.bus is None
        assert node.ctx.status.state == "error" and "cannot open" in node.ctx.status.text
        await wait_until(
            lambda: (
                sum(
                    1
                    for r in caplog.records
                    if r.levelno == logging.DEBUG and "retry" in r.getMessage()
                )
                >= 3
            ),
            "three retry lines",
        )
        await node.stop()
        assert completed == [True]
        assert node.counters.extra["bus_errors"] == 1

        # a long backoff does not hold stop() up
        slow = make_node(
            "slow", interface="nonexistent_iface", channel=channel, retry_initial=60, retry_max=60
        )
        await slow.start()
        await asyncio.wait_for(slow.stop(), timeout=3)

    asyncio.run(main())
    errors = error_records(caplog)
    assert len(errors) == 2  # one per node, however many retries
    text = errors[0].getMessage()
    assert "nonexistent_iface" in text and channel in text and "not supported" in text


def test_bus_dying_midstream_reconnects(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    channel = unique_channel()
    received: list[can.Message] = []

    async def main() -> None:
        node = make_node(channel=channel, retry_initial=0.01, retry_max=0.05)
        node.build(None)["out"].subscribe(received.append)
        await node.start()
        sender = sender_bus(channel)
        try:
            sender.send(frame(1))
            await wait_until(lambda: len(received) == 1, "len(received) == 1")
            assert node.ctx.status.state == "ok"
            dead = node.bus
            assert dead is not None
            dead.shutdown()  # the adapter goes away under the reader
            await wait_until(lambda: node.counters.extra.get("reconnects") == 1, "one reconnect")
            assert node.bus is not None and node.bus is not dead
            assert node.ctx.status.state == "ok"
            sender.send(frame(2))
            sender.send(frame(3))
            await wait_until(lambda: len(received) == 3, "len(received) == 3")
        finally:
            sender.shutdown()
            await node.stop()
        assert node.counters.extra["bus_errors"] == 1

    asyncio.run(main())
    assert [int.from_bytes(m.data, "big") for m in received] == [1, 2, 3]
    (error,) = error_records(caplog)
    assert "failed" in error.getMessage() and channel in error.getMessage()
    assert "CanOperationError" in error.getMessage()
    assert any("is back" in r.getMessage() for r in caplog.records if r.name == LOGGER)


def test_stop_is_idempotent_completes_and_releases_the_bus() -> None:
    channel = unique_channel()

    async def main() -> None:
        node = make_node(channel=channel)
        completed: list[bool] = []
        node.build(None)["out"].subscribe(on_completed=lambda: completed.append(True))
        await node.start()
        assert channel in can.interfaces.virtual.channels
        await node.stop()
        await node.stop()
        assert completed == [True]
        assert node.bus is None
        assert channel not in can.interfaces.virtual.channels  # the bus was shut down

        never_started = make_node(channel=unique_channel())
        await never_started.stop()
        await never_started.stop()

    asyncio.run(main())


def test_downstream_exception_does_not_lose_frames(caplog: pytest.LogCaptureFixture) -> None:
    channel = unique_channel()
    received: list[int] = []

    def on_next(msg: can.Message) -> None:
        value = int.from_bytes(msg.data, "big")
        if value == 2:
            raise ValueError("downstream bug")
        received.append(value)

    async def main() -> None:
        node = make_node(channel=channel)
        node.build(None)["out"].subscribe(on_next)
        await node.start()
        sender = sender_bus(channel)
        try:
            for i in range(1, 5):
                sender.send(frame(i))
            await wait_until(lambda: received[-1:] == [4], "received[-1:] == [4]")
        finally:
            sender.shutdown()
            await node.stop()
        assert node.counters.errors == 1

    asyncio.run(main())
    assert received == [1, 3, 4]


# -- the add_reader path (a bus with a file descriptor) ----------------------------------------

_PAIR_FORMAT = ">dI"
_pair_sockets: dict[str, list[socket.socket]] = {}


class SocketPairBus(can.BusABC):
    """A tiny bus whose frames come over a SOCK_SEQPACKET socketpair (it has a ``fileno()``,
    like SocketCAN); the peer closing = the adapter unplugged."""

    def __init__(self, channel: Any = None, **kwargs: Any) -> None:
        available = _pair_sockets.get(str(channel)) or []
        if not available:
            raise can.CanInitializationError(f"no socket for {channel}")
        self._sock = available.pop(0)
        self._sock.setblocking(False)
        super().__init__(channel=channel, **kwargs)
        self.channel_info = f"socketpair {channel}"

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        if timeout:
            select.select([self._sock], [], [], timeout)
        try:
            data = self._sock.recv(128)
        except BlockingIOError:
            return None, False
        if not data:
            raise can.CanOperationError("peer closed")
        ts, can_id = struct.unpack_from(_PAIR_FORMAT, data)
        msg = can.Message(timestamp=ts, arbitration_id=can_id, is_extended_id=False, data=data[12:])
        return msg, False

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        raise can.CanOperationError("read-only test bus")

    def fileno(self) -> int:
        return self._sock.fileno()

    def shutdown(self) -> None:
        super().shutdown()
        self._sock.close()


@pytest.fixture
def socketpair_interface(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    module = types.ModuleType("les02_test_socketpair_bus")
    module.SocketPairBus = SocketPairBus  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(
        can.interfaces.BACKENDS, "les02_socketpair", (module.__name__, "SocketPairBus")
    )
    yield "les02_socketpair"
    _pair_sockets.clear()


def test_fd_bus_is_read_with_add_reader_and_reconnects(
    socketpair_interface: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    channel = unique_channel()
    peers: list[socket.socket] = []
    for _ in range(2):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        _pair_sockets.setdefault(channel, []).append(ours)
        peers.append(theirs)
    received: list[can.Message] = []
    threads: set[int] = set()

    def on_next(msg: can.Message) -> None:
        received.append(msg)
        threads.add(threading.get_ident())

    def put(peer: socket.socket, i: int) -> None:
        peer.send(struct.pack(_PAIR_FORMAT, 100.0 + i, 0x80) + bytes([i % 256]))

    async def main() -> None:
        node = make_node(
            interface=socketpair_interface, channel=channel, retry_initial=0.01, retry_max=0.05
        )
        node.build(None)["out"].subscribe(on_next)
        await node.start()
        try:
            # from a thread: the socket buffer holds fewer frames than we send
            def put_all() -> None:
                for i in range(600):
                    put(peers[0], i)

            await asyncio.to_thread(put_all)
            await wait_until(lambda: len(received) == 600, "len(received) == 600")
            peers[0].close()  # unplugged
            await wait_until(lambda: node.counters.extra.get("reconnects") == 1, "one reconnect")
            put(peers[1], 7)
            await wait_until(lambda: len(received) == 601, "len(received) == 601")
        finally:
            await node.stop()
            for peer in peers:
                peer.close()
        assert not _pair_sockets[channel]  # both sockets were taken (and shut down by stop)

    asyncio.run(main())
    assert threads == {threading.get_ident()}
    assert [m.data[0] for m in received] == [i % 256 for i in range(600)] + [7]
    assert [m.timestamp for m in received[:3]] == [100.0, 101.0, 102.0]
    assert any("via add_reader" in r.getMessage() for r in caplog.records)
    assert len(error_records(caplog)) == 1
