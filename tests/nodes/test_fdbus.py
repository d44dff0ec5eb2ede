"""The batched socket readers (les02_flow.nodes.fdbus) and the light hot stream (HotPort).

SocketCAN itself is not in this machine's kernel: the SocketCAN reader is fed the very bytes
python-can builds for the kernel (``build_can_frame``) over AF_UNIX datagram socket pairs, which
carry ``SO_TIMESTAMPNS`` like a CAN_RAW socket, and compared field by field with python-can's
own ``capture_message`` reading an identical stream (udp_multicast: test_can_source_udp.py).
"""

from __future__ import annotations

import math
import random
import socket
from collections import deque
from pathlib import Path
from typing import Any

import can
import pytest
from can.interfaces.socketcan.socketcan import build_can_frame, capture_message
from can.interfaces.udp_multicast.utils import pack_message, unpack_message

from les02_flow.nodes.fdbus import SO_TIMESTAMPNS, SocketcanReader, proc_udp_drops, udp_frame
from les02_flow.streams import HotPort


def _frames() -> list[can.Message]:
    out = []
    for i in range(64):
        kind = i % 6
        if kind == 0:
            out.append(can.Message(arbitration_id=0x80 + i % 2, data=bytes([i, 1, 2, 3]),
                                   is_extended_id=False))  # fmt: skip
        elif kind == 1:
            out.append(can.Message(arbitration_id=0x1ABCDE0 + i, is_extended_id=True, data=b""))
        elif kind == 2:
            out.append(can.Message(arbitration_id=0x7FF, is_remote_frame=True, dlc=i % 9,
                                   is_extended_id=False))  # fmt: skip
        elif kind == 3:
            out.append(can.Message(is_error_frame=True, arbitration_id=0x4, data=bytes(8),
                                   is_extended_id=False))  # fmt: skip
        elif kind == 4:
            out.append(can.Message(arbitration_id=0x123, is_fd=True, bitrate_switch=bool(i % 4),
                                   error_state_indicator=bool(i % 3), is_extended_id=False,
                                   data=bytes(range(i % 2 * 48 + 12))))  # fmt: skip
        else:
            out.append(can.Message(arbitration_id=0x88, data=bytes([255] * 8),
                                   is_extended_id=False))  # fmt: skip
    return out


def _pair() -> tuple[socket.socket, socket.socket]:
    tx, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return tx, rx


def _fields(msg: can.Message) -> list[Any]:
    return [msg.arbitration_id, msg.is_extended_id, msg.is_remote_frame, msg.is_error_frame,
            msg.channel, msg.dlc, bytes(msg.data), msg.is_fd, msg.is_rx, msg.bitrate_switch,
            msg.error_state_indicator]  # fmt: skip


@pytest.mark.parametrize("filters", [None, [{"can_id": 0x80, "can_mask": 0x7F0}]])
def test_socketcan_reader_decodes_like_python_can(filters: Any) -> None:
    bus = can.Bus(interface="virtual", channel="fdbus-test", can_filters=filters)
    tx1, rx1 = _pair()
    tx2, rx2 = _pair()
    try:
        reader = SocketcanReader(bus, rx2, "can0")
        frames = _frames()
        for msg in frames:
            tx1.send(build_can_frame(msg))
            tx2.send(build_can_frame(msg))
        theirs = []
        for _ in frames:
            # SocketcanBus._recv_internal: capture, default channel, then BusABC.recv's filter
            m = capture_message(rx1, False)
            assert m is not None
            m.channel = "can0"
            if bus._matches_filters(m):
                theirs.append(m)
        raw: deque[Any] = deque()
        assert reader.read(raw, 1000) is True  # emptied: EAGAIN
        assert len(raw) == len(frames)
        ours = [m for m in (reader.decode(r) for r in raw) if m is not None]
        assert [_fields(m) for m in ours] == [_fields(m) for m in theirs]
        if filters is None:
            assert len(ours) == len(frames)
        else:
            assert 0 < len(ours) < len(frames)
        # kernel receive stamps, seconds + nanoseconds, as python-can computes them
        assert all(abs(a.timestamp - b.timestamp) < 5.0 for a, b in zip(ours, theirs, strict=True))
        assert all(m.timestamp > 1e9 for m in ours)
    finally:
        for s in (tx1, rx1, tx2, rx2):
            s.close()
        bus.shutdown()


def _python_can_udp(data: bytes, ts: float) -> Any:
    """What UdpMulticastBus.recv makes of a datagram (CAN FD bus: FD frames kept)."""
    try:
        msg = unpack_message(data, replace={"timestamp": ts}, check=True)
    except Exception as exc:
        return type(exc).__name__
    return [*_fields(msg), msg.timestamp]


def _udp_messages() -> list[can.Message]:
    out = _frames()
    for ident in (0, 1, 127, 128, 255, 256, 0x7FF, 0x800, 0xFFFF, 0x10000):
        out.append(can.Message(arbitration_id=ident, is_extended_id=False, data=b"\x01"))
    for ident in (0x800, 0x1FFFFFFF, 0x20000000):
        out.append(can.Message(arbitration_id=ident, is_extended_id=True, data=bytes(3)))
    for channel in ("les02", "", "lés02 ü", "x" * 31, "x" * 32, 0, 7):
        out.append(can.Message(arbitration_id=0x81, is_extended_id=False, channel=channel,
                               data=bytes([1, 2])))  # fmt: skip
    # what python-can's check refuses: dlc and data disagree, dlc > 8, id negative
    out.append(can.Message(arbitration_id=0x80, is_extended_id=False, dlc=3, data=bytes(4)))
    out.append(can.Message(arbitration_id=0x80, is_extended_id=False, dlc=9, data=bytes(9)))
    out.append(can.Message(arbitration_id=-1, is_extended_id=False, data=b""))
    out.append(can.Message(arbitration_id=0x80, is_extended_id=False, bitrate_switch=True))
    return out


def test_udp_fast_path_decodes_exactly_like_python_can() -> None:
    accepted = 0
    for msg in _udp_messages():
        data = pack_message(msg)
        for ts in (1.5e9, 0.0, -1.0, math.inf, math.nan):
            theirs = _python_can_udp(data, ts)
            ours = udp_frame(data, ts)
            if ours is None:
                continue  # left to the full decoder (python-can's own path)
            accepted += 1
            assert [*_fields(ours), ours.timestamp] == theirs, (msg, ts)
            assert isinstance(ours.data, bytearray)
    assert accepted >= 60  # the common classic frames do take the fast path


def test_udp_fast_path_on_damaged_datagrams_agrees_or_defers() -> None:
    rng = random.Random(16)
    samples = [pack_message(m) for m in _udp_messages()]
    accepted = 0
    for _ in range(20000):
        data = bytearray(rng.choice(samples))
        for _ in range(rng.randint(1, 3)):
            what = rng.random()
            if what < 0.6 and data:
                data[rng.randrange(len(data))] = rng.randrange(256)
            elif what < 0.8 and data:
                del data[rng.randrange(len(data)) :]
            else:
                data.insert(rng.randrange(len(data) + 1), rng.randrange(256))
        ours = udp_frame(bytes(data), 2.0)
        if ours is not None:
            accepted += 1
            assert [*_fields(ours), ours.timestamp] == _python_can_udp(bytes(data), 2.0)
    assert accepted > 100  # damage inside the data bytes still is a frame


def test_read_stops_at_its_limit_and_reports_more() -> None:
    bus = can.Bus(interface="virtual", channel="fdbus-limit")
    tx, rx = _pair()
    try:
        reader = SocketcanReader(bus, rx, "can0")
        for i in range(10):
            tx.send(build_can_frame(can.Message(arbitration_id=i, is_extended_id=False)))
        raw: deque[Any] = deque()
        assert reader.read(raw, 4) is False
        assert len(raw) == 4
        assert reader.read(raw, 100) is True
        decoded = [reader.decode(r) for r in raw]
        assert [m.arbitration_id if m is not None else None for m in decoded] == list(range(10))
    finally:
        tx.close()
        rx.close()
        bus.shutdown()


def test_proc_udp_drops_reads_the_socket_row(tmp_path: Path) -> None:
    table = tmp_path / "udp"
    table.write_text(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode ref pointer drops\n"
        "  1: 00000000:A869 00000000:0000 07 00000000:00000000 00:00000000 00000000     0"
        "        0 4242 2 0000000000000000 17\n"
        "  2: 00000000:A86A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0"
        "        0 4343 2 0000000000000000 5\n",
        encoding="ascii",
    )
    assert proc_udp_drops(4343, (str(table),)) == 5
    assert proc_udp_drops(4242, (str(tmp_path / "missing"), str(table))) == 17
    assert proc_udp_drops(1, (str(table),)) is None


def test_hot_port_behaves_like_a_subject() -> None:
    port: HotPort[int] = HotPort()
    port.on_next(0)  # nobody listens: nothing happens
    a: list[Any] = []
    b: list[Any] = []
    sub_a = port.observable.subscribe(a.append, on_completed=lambda: a.append("done"))
    port.on_next(1)
    sub_b = port.observable.subscribe(b.append, on_completed=lambda: b.append("done"))
    port.on_next(2)
    sub_a.dispose()
    port.on_next(3)
    port.on_completed()
    port.on_next(4)
    late: list[Any] = []
    port.observable.subscribe(late.append, on_completed=lambda: late.append("done"))
    assert a == [1, 2]
    assert b == [2, 3, "done"]
    assert late == ["done"]
    sub_b.dispose()


def test_hot_port_error_ends_the_stream() -> None:
    port: HotPort[int] = HotPort()
    got: list[Any] = []
    port.observable.subscribe(got.append, on_error=lambda e: got.append(str(e)))
    port.on_error(ValueError("boom"))
    port.on_next(1)
    port.observable.subscribe(got.append, on_error=lambda e: got.append("late " + str(e)))
    assert got == ["boom", "late boom"]
