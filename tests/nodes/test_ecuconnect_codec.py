"""ECUconnect wire format: golden bytes, round trips, arbitrary chunking, rejected packets."""

from __future__ import annotations

import struct
from typing import Any

import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from les02_flow.nodes.ecuconnect.codec import (
    FD_LENGTHS,
    Decoder,
    EcuconnectProtocolError,
    _encode_full,
    encode,
)

TS = 1737319234.5678  # 1737319234567800 µs
TS_HEX = "00062c1527d67e78"


def msg(**kw: Any) -> can.Message:
    kw.setdefault("timestamp", TS)
    kw.setdefault("is_extended_id", False)
    return can.Message(**kw)


GOLDEN = [
    (
        "classic standard",
        msg(arbitration_id=0x123, data=bytes.fromhex("01ff23456789abcd")),
        TS_HEX + "00000123" + "00" + "08" + "01ff23456789abcd",
    ),
    (
        "extended",
        msg(arbitration_id=0x18DAF110, is_extended_id=True, data=b"\x02\x10\x03"),
        TS_HEX + "18daf110" + "01" + "03" + "021003",
    ),
    (
        "fd",
        msg(arbitration_id=0x7E0, is_fd=True, data=bytes(range(12))),
        TS_HEX + "000007e0" + "02" + "0c" + bytes(range(12)).hex(),
    ),
    (
        "fd brs extended",
        msg(arbitration_id=0x1, is_extended_id=True, is_fd=True, bitrate_switch=True, data=b"\xaa"),
        TS_HEX + "00000001" + "07" + "01" + "aa",
    ),
    (
        "fd esi",
        msg(arbitration_id=0x10, is_fd=True, error_state_indicator=True, data=bytes(16)),
        TS_HEX + "00000010" + "0a" + "10" + "00" * 16,
    ),
    ("0 bytes", msg(arbitration_id=0x7FF, data=b""), TS_HEX + "000007ff" + "00" + "00"),
    (
        "64 bytes",
        msg(arbitration_id=0x80, is_fd=True, bitrate_switch=True, data=bytes(range(64))),
        TS_HEX + "00000080" + "06" + "40" + bytes(range(64)).hex(),
    ),
]


@pytest.mark.parametrize(("name", "message", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_golden_bytes(name: str, message: can.Message, expected: str) -> None:
    packet = encode(message)
    assert packet.hex() == expected
    # an independent reading of the seed's layout
    ts, can_id, flags, length = struct.unpack(">QIBB", packet[:14])
    assert ts == round(message.timestamp * 1e6)
    assert can_id == message.arbitration_id
    assert bool(flags & 1) == message.is_extended_id
    assert length == len(packet) - 14 == len(message.data)


@pytest.mark.parametrize(("name", "message", "expected"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_decode_golden(name: str, message: can.Message, expected: str) -> None:
    (frame,) = Decoder(channel="x").feed(bytes.fromhex(expected))
    assert frame.arbitration_id == message.arbitration_id
    assert frame.is_extended_id == message.is_extended_id
    assert frame.is_fd == message.is_fd
    assert frame.bitrate_switch == message.bitrate_switch
    assert frame.error_state_indicator == message.error_state_indicator
    assert bytes(frame.data) == bytes(message.data)
    assert frame.dlc == len(message.data)
    assert round(frame.timestamp * 1e6) == 1737319234567800
    assert frame.channel == "x"


def test_payload_over_8_sets_fd_and_pads_to_dlc_step() -> None:
    packet = encode(msg(arbitration_id=1, data=bytes(9)))  # not marked FD
    assert packet[12] == 0x02 and packet[13] == 12 and len(packet) == 14 + 12


def test_brs_esi_only_with_fd() -> None:
    packet = encode(msg(arbitration_id=1, data=b"\x01", bitrate_switch=True))
    assert packet[12] == 0x00  # classic frame: BRS ignored


def test_remote_frame_goes_out_as_empty_data_frame() -> None:
    packet = encode(msg(arbitration_id=0x7DF, is_remote_frame=True, dlc=8))
    assert packet[12:14] == b"\x00\x00" and len(packet) == 14


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (msg(arbitration_id=0x800, data=b""), "standard id"),
        (msg(arbitration_id=0x20000000, is_extended_id=True, data=b""), "extended id"),
        (msg(arbitration_id=1, is_error_frame=True, data=b""), "error frames"),
        (msg(arbitration_id=1, data=b"", timestamp=-1.0), "timestamp"),
        (msg(arbitration_id=1, data=b"", timestamp=float("nan")), "timestamp"),
    ],
)
def test_encode_rejects(message: can.Message, fragment: str) -> None:
    with pytest.raises(EcuconnectProtocolError, match=fragment):
        encode(message)


def test_encode_rejects_payload_over_64() -> None:
    m = msg(arbitration_id=1, is_fd=True, data=bytes(64))
    m.data = bytearray(65)
    with pytest.raises(EcuconnectProtocolError, match="longer than 64"):
        encode(m)


def header(can_id: int, flags: int, length: int) -> bytes:
    return struct.pack(">QIBB", 1, can_id, flags, length)


@pytest.mark.parametrize(
    ("packet", "fragment"),
    [
        (header(1, 0x00, 9) + bytes(9), "not valid for a classic CAN frame"),
        (header(1, 0x02, 65) + bytes(65), "over 64"),
        (header(1, 0x02, 200), "over 64"),
        (header(1, 0x02, 9) + bytes(9), "not valid for a CAN FD frame"),
        (header(1, 0x04, 1) + bytes(1), "BRS/ESI without FD"),
        (header(1, 0x08, 1) + bytes(1), "BRS/ESI without FD"),
        (header(1, 0x10, 0), "unknown bits"),
        (header(0x800, 0x00, 0), "standard id"),
        (header(0x20000000, 0x01, 0), "extended id"),
    ],
)
def test_decoder_rejects_impossible_packets(packet: bytes, fragment: str) -> None:
    good = encode(msg(arbitration_id=5, data=b"\x01"))
    decoder = Decoder()
    with pytest.raises(EcuconnectProtocolError, match=fragment) as info:
        decoder.feed(good + packet)
    assert info.value.offset == len(good)
    assert [f.arbitration_id for f in info.value.frames] == [5]  # frames before it survive
    assert decoder.failed
    with pytest.raises(EcuconnectProtocolError, match="failed earlier"):
        decoder.feed(good)


def test_decoder_rejects_header_split_across_chunks() -> None:
    decoder = Decoder()
    bad = header(1, 0x00, 12)
    assert decoder.feed(bad[:13]) == []
    with pytest.raises(EcuconnectProtocolError, match="offset 0"):
        decoder.feed(bad[13:])


frames_st = st.lists(
    st.builds(
        lambda ext, fd, brs, esi, can_id, n, ts, fill: msg(
            arbitration_id=can_id & (0x1FFFFFFF if ext else 0x7FF),
            is_extended_id=ext,
            is_fd=fd,
            bitrate_switch=fd and brs,
            error_state_indicator=fd and esi,
            data=bytes([fill]) * (n if fd else min(n, 8)),
            timestamp=ts / 1e6,
        ),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.booleans(),
        st.integers(0, 0x1FFFFFFF),
        st.sampled_from(sorted(FD_LENGTHS)),
        st.integers(0, 2**53),
        st.integers(0, 255),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(frames=frames_st, cuts=st.lists(st.integers(1, 100), max_size=60))
def test_random_chunking_gives_the_same_frames(frames: list[can.Message], cuts: list[int]) -> None:
    stream = b"".join(encode(f) for f in frames)
    decoder = Decoder()
    out: list[can.Message] = []
    pos = 0
    for cut in cuts:
        out += decoder.feed(stream[pos : pos + cut])
        pos += cut
    out += decoder.feed(stream[pos:])
    assert decoder.pending == 0
    assert len(out) == len(frames)
    for got, want in zip(out, frames, strict=True):
        assert got.arbitration_id == want.arbitration_id
        assert got.is_extended_id == want.is_extended_id
        assert got.is_fd == (want.is_fd or len(want.data) > 8)
        assert got.bitrate_switch == want.bitrate_switch
        assert got.error_state_indicator == want.error_state_indicator
        assert bytes(got.data) == bytes(want.data)
        assert round(got.timestamp * 1e6) == round(want.timestamp * 1e6)
        assert encode(got) == encode(want)


def _outcome(fn: Any, m: can.Message) -> Any:
    try:
        return fn(m)
    except EcuconnectProtocolError as exc:
        return ("error", str(exc))


@settings(max_examples=400, deadline=None)
@given(
    ident=st.one_of(st.integers(0, 0x7FF), st.integers(-5, 0x2000_0005)),
    ext=st.booleans(),
    fd=st.booleans(),
    remote=st.booleans(),
    error=st.booleans(),
    data=st.binary(max_size=12),
    ts=st.one_of(
        st.floats(0, 2e9),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, 9.999999e12, 1e13, 1.8e13, 2e13]),
        st.integers(0, 2**40),
    ),
)
def test_the_short_path_encodes_as_the_full_rules(
    ident: int, ext: bool, fd: bool, remote: bool, error: bool, data: bytes, ts: Any
) -> None:
    m = can.Message(arbitration_id=ident, is_extended_id=ext, is_fd=fd, is_remote_frame=remote,
                    is_error_frame=error, data=data, timestamp=ts)  # fmt: skip
    assert _outcome(encode, m) == _outcome(_encode_full, m)
