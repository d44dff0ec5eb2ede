"""ecuconnect_tcp_sink: real TCP clients on 127.0.0.1, a real virtual CAN bus, no zeroconf."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import can
import pytest
from pydantic import ValidationError

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowDocument
from les02_flow.node import Context, NodeStartError
from les02_flow.nodes.can_source import CanSource
from les02_flow.nodes.ecuconnect.codec import Decoder
from les02_flow.nodes.ecuconnect.sink import (
    AUTO_PORT_FIRST,
    EcuconnectTcpSink,
    EcuconnectTcpSinkConfig,
    bind_listener,
)
from les02_flow.registry import Registry
from les02_flow.testing import wait_until

WAIT = 10.0


async def until(cond: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    await wait_until(cond, what, timeout)


def make_sink(**cfg: Any) -> EcuconnectTcpSink:
    cfg.setdefault("port", 0)
    cfg.setdefault("zeroconf", False)
    config = EcuconnectTcpSinkConfig(**cfg)
    return EcuconnectTcpSink("tcp", config, Context("tcp", logging.getLogger("test.ecu")))


def independent_decode(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """The seed's format read without the project's decoder: (ts_us, id, flags, payload)."""
    out = []
    pos = 0
    while len(data) - pos >= 14:
        ts, can_id, flags, n = struct.unpack_from(">QIBB", data, pos)
        if len(data) - pos < 14 + n:
            break
        out.append((ts, can_id, flags, data[pos + 14 : pos + 14 + n]))
        pos += 14 + n
    assert pos == len(data), "stream ends inside a packet"
    return out


class Reader:
    """A fast client: reads everything into a buffer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.data = bytearray()
        self.eof = False
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while chunk := await self.reader.read(1 << 20):
            self.data += chunk
        self.eof = True

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.writer.wait_closed()


async def connect(port: int) -> Reader:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    return Reader(r, w)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


# -- config ------------------------------------------------------------------------------------


def test_service_name_must_start_with_prefix() -> None:
    with pytest.raises(ValidationError, match="must start with 'ECUconnect-Logger'"):
        EcuconnectTcpSinkConfig(service_name="My logger {port}")
    with pytest.raises(ValidationError, match="unknown placeholder"):
        EcuconnectTcpSinkConfig(service_name="ECUconnect-Logger {nope}")
    EcuconnectTcpSinkConfig(service_name="ECUconnect-Logger bench {hostname} {port}")


def test_port_values() -> None:
    assert EcuconnectTcpSinkConfig().port == "auto"
    assert EcuconnectTcpSinkConfig.model_validate({"port": "42421"}).port == 42421
    with pytest.raises(ValidationError):
        EcuconnectTcpSinkConfig(port=70000)
    with pytest.raises(ValidationError):
        EcuconnectTcpSinkConfig.model_validate({"port": "sometimes"})


def test_auto_port_skips_ports_in_use() -> None:
    first = bind_listener("127.0.0.1", "auto")
    try:
        second = bind_listener("127.0.0.1", "auto")
        try:
            p1, p2 = first.getsockname()[1], second.getsockname()[1]
            assert p1 >= AUTO_PORT_FIRST and p2 > p1
        finally:
            second.close()
    finally:
        first.close()


def test_port_in_use_is_a_start_error() -> None:
    async def main() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            sink = make_sink(port=taken.getsockname()[1])
            with pytest.raises(NodeStartError, match=r"cannot listen on 127\.0\.0\.1 port"):
                await sink.start()
            await sink.stop()

    run(main)


# -- end to end: virtual bus -> flow -> TCP client --------------------------------------------


def test_flow_frames_reach_a_tcp_client_identically() -> None:
    channel = f"ecu-{uuid.uuid4().hex}"
    registry = Registry()
    registry.register(CanSource, "test")
    registry.register(EcuconnectTcpSink, "test")
    data = {
        "version": 1,
        "nodes": {
            "bus": {"type": "can_source", "interface": "virtual", "channel": channel,
                    "bitrate": 250000, "wires": ["tcp"]},
            "tcp": {"type": "ecuconnect_tcp_sink", "host": "127.0.0.1", "port": 0,
                    "zeroconf": False},
        },
    }  # fmt: skip
    flow = compile_document(FlowDocument(path="t", data=data), registry)
    sent = [
        can.Message(arbitration_id=0x80, is_extended_id=False, data=[0, 1, 2, 3]),
        can.Message(arbitration_id=0x18DAF110, is_extended_id=True, data=b""),
        can.Message(arbitration_id=0x123, is_extended_id=False, is_fd=True,
                    bitrate_switch=True, data=bytes(range(64))),
        can.Message(arbitration_id=0x124, is_extended_id=False, is_fd=True,
                    error_state_indicator=True, data=bytes(range(12))),
        can.Message(arbitration_id=0x7FF, is_extended_id=False, data=bytes(8)),
    ]  # fmt: skip

    async def main() -> None:
        engine = Engine(flow)
        sink = engine.nodes["tcp"]
        assert isinstance(sink, EcuconnectTcpSink)
        await engine.start()
        tx = can.Bus(interface="virtual", channel=channel)
        watch = can.Bus(interface="virtual", channel=channel)  # sees the bus timestamps
        client: Reader | None = None
        try:
            assert sink.ctx.bus_info["bitrate"] == "250000"
            assert sink.port is not None
            client = await connect(sink.port)
            await until(lambda: sink.client_count == 1, "client accepted")
            expected = []
            for m in sent:
                tx.send(m)
                got = watch.recv(1.0)
                assert got is not None
                expected.append(got)
            size = sum(14 + len(m.data) for m in sent)
            await until(lambda: len(client.data) >= size, "all packets")
            packets = independent_decode(bytes(client.data))
            assert len(packets) == len(sent)
            for (ts, can_id, flags, payload), m in zip(packets, expected, strict=True):
                assert ts == round(m.timestamp * 1e6)
                assert can_id == m.arbitration_id
                assert bool(flags & 1) == m.is_extended_id
                assert bool(flags & 2) == m.is_fd
                assert bool(flags & 4) == m.bitrate_switch
                assert bool(flags & 8) == m.error_state_indicator
                assert payload == bytes(m.data)
            assert sink.counters.emitted == len(sent)
        finally:
            tx.shutdown()
            watch.shutdown()
            await engine.stop()
            if client is not None:
                await until(lambda: client.eof, "server closed the client")
                await client.close()

    run(main)


# -- slow clients ------------------------------------------------------------------------------

SEQ_FRAMES = 150_000  # x 78 bytes = 11.7 MB: beyond the socket buffers (the kernel
# send buffer autotunes up to 4 MB) plus the 64 KiB backlog


def seq_frame(i: int) -> can.Message:
    return can.Message(
        timestamp=1.0 + i * 1e-6,
        arbitration_id=0x100,
        is_extended_id=False,
        is_fd=True,
        data=i.to_bytes(4, "big") + bytes(60),
    )


async def stalled_client(port: int) -> socket.socket:
    """A client that never reads, with a small receive buffer (64 KiB: smaller makes the
    loopback sender's silly-window avoidance stall it even after it reads again)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.setblocking(False)
    await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
    return s


async def feed(sink: EcuconnectTcpSink, n: int) -> None:
    """The bus side: consume() must return at once; yield to the loop between bursts."""
    frames = [seq_frame(i) for i in range(n)]
    for start in range(0, n, 500):
        for f in frames[start : start + 500]:
            sink.consume(f)
        await asyncio.sleep(0)


def sequence(data: bytes) -> list[int]:
    return [int.from_bytes(p[3][:4], "big") for p in independent_decode(data)]


@pytest.mark.parametrize("policy", ["drop_oldest", "disconnect"])
def test_stalled_client_does_not_delay_a_fast_client(policy: str) -> None:
    async def main() -> None:
        sink = make_sink(buffer=64 * 1024, policy=policy)
        await sink.start()
        assert sink.port is not None
        slow = await stalled_client(sink.port)
        fast = await connect(sink.port)
        try:
            await until(lambda: sink.client_count == 2, "two clients")
            await feed(sink, SEQ_FRAMES)
            await until(lambda: len(fast.data) >= SEQ_FRAMES * 78, "fast client got everything")
            assert sequence(bytes(fast.data)) == list(range(SEQ_FRAMES))
            assert sink.counters.dropped > 0  # the stalled client lost frames, nobody else
            if policy == "disconnect":
                assert sink.counters.extra["clients_too_slow"] == 1
                await until(lambda: sink.client_count == 1, "slow client dropped")
            else:
                assert sink.client_count == 2
                # when the stalled client reads again it gets whole packets, oldest dropped
                loop = asyncio.get_running_loop()
                got = bytearray()

                def complete() -> bool:
                    try:
                        return sequence(bytes(got))[-1] == SEQ_FRAMES - 1
                    except (AssertionError, IndexError):
                        return False

                deadline = loop.time() + WAIT
                while not complete():
                    assert loop.time() < deadline, "stalled client never caught up"
                    got += await asyncio.wait_for(loop.sock_recv(slow, 1 << 20), WAIT)
                seq = sequence(bytes(got))
                assert seq == sorted(seq) and len(seq) < SEQ_FRAMES
        finally:
            slow.close()
            await sink.stop()
            await fast.close()

    run(main)


def test_max_clients_refuses_extra_clients() -> None:
    async def main() -> None:
        sink = make_sink(max_clients=1)
        await sink.start()
        assert sink.port is not None
        first = await connect(sink.port)
        second: Reader | None = None
        try:
            await until(lambda: sink.client_count == 1, "first client")
            second = await connect(sink.port)
            await until(lambda: second.eof, "second client closed")
            assert sink.counters.extra["clients_refused"] == 1
            assert sink.client_count == 1 and not first.eof
        finally:
            await sink.stop()
            await first.close()
            if second is not None:
                await second.close()

    run(main)


def test_bad_messages_are_counted_not_fatal() -> None:
    async def main() -> None:
        sink = make_sink()
        await sink.start()
        assert sink.port is not None
        client = await connect(sink.port)
        try:
            await until(lambda: sink.client_count == 1, "client")
            sink.consume("not a frame")
            sink.consume(can.Message(is_error_frame=True, data=bytes(8)))
            sink.consume(can.Message(arbitration_id=0x900, is_extended_id=False))  # > 11 bits
            sink.consume(seq_frame(7))
            await until(lambda: len(client.data) >= 78, "good frame")
            assert sequence(bytes(client.data)) == [7]
            assert sink.counters.errors == 2
            assert sink.counters.extra["error_frames_skipped"] == 1
        finally:
            await sink.stop()
            await client.close()

    run(main)


def test_a_batch_is_consumed_as_its_messages_one_by_one() -> None:
    """consume_batch (the engine's batch path) sends the packets and counts the problems
    that consume() per message would."""
    batch: list[Any] = [
        seq_frame(1),
        "not a frame",
        can.Message(is_error_frame=True, data=bytes(8)),
        seq_frame(2),
        can.Message(arbitration_id=0x900, is_extended_id=False),  # > 11 bits
        seq_frame(3),
    ]

    async def one(way: str) -> tuple[bytes, int, Any]:
        sink = make_sink()
        await sink.start()
        assert sink.port is not None
        client = await connect(sink.port)
        try:
            await until(lambda: sink.client_count == 1, "client")
            if way == "batch":
                sink.consume_batch(batch)
            else:
                for m in batch:
                    sink.consume(m)
            await until(lambda: len(client.data) >= 3 * 78, "three frames")
            return (
                bytes(client.data),
                sink.counters.errors,
                sink.counters.extra.get("error_frames_skipped"),
            )
        finally:
            await sink.stop()
            await client.close()

    async def main() -> None:
        got = {way: await one(way) for way in ("one by one", "batch")}
        assert got["batch"] == got["one by one"]
        assert sequence(got["batch"][0]) == [1, 2, 3]

    run(main)


def test_stop_flushes_and_closes_clients() -> None:
    async def main() -> None:
        sink = make_sink()
        await sink.start()
        assert sink.port is not None
        client = await connect(sink.port)
        try:
            await until(lambda: sink.client_count == 1, "client")
            for i in range(100):
                sink.consume(seq_frame(i))
            await sink.stop()  # before the flush callback ran
            await until(lambda: client.eof, "closed by stop")
            assert sequence(bytes(client.data)) == list(range(100))
            await sink.stop()  # idempotent
        finally:
            await client.close()

    run(main)


def test_decoder_reads_the_sink_stream() -> None:
    async def main() -> None:
        sink = make_sink()
        await sink.start()
        assert sink.port is not None
        client = await connect(sink.port)
        try:
            await until(lambda: sink.client_count == 1, "client")
            for i in range(1000):
                sink.consume(seq_frame(i))
            await until(lambda: len(client.data) >= 78_000, "all")
            frames = Decoder().feed(bytes(client.data))
            assert [int.from_bytes(f.data[:4], "big") for f in frames] == list(range(1000))
        finally:
            await sink.stop()
            await client.close()

    run(main)
