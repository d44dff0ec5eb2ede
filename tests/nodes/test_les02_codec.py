"""Tests of the LES02 frame decoder against the frame rules of docs/protocol.md."""

from __future__ import annotations

import json
from typing import Any

import can
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from les02_flow.events import make_event
from les02_flow.nodes.les02.codec import (
    REASONS,
    STRICT_IDS,
    Les02Decoder,
    Rejection,
    parse_position,
)


def frame(
    can_id: int,
    data: bytes | list[int],
    *,
    ts: float = 1737319234.5678,
    dlc: int | None = None,
    **flags: bool,
) -> can.Message:
    flags.setdefault("is_extended_id", False)
    return can.Message(timestamp=ts, arbitration_id=can_id, data=data, dlc=dlc, **flags)


def event(result: dict[str, Any] | Rejection) -> dict[str, Any]:
    assert not isinstance(result, Rejection), result
    return result


def rejection(result: dict[str, Any] | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    assert result.reason in REASONS
    assert result.message
    return result


DEC = Les02Decoder()
STRICT = Les02Decoder(strict_ids=True)


# -- position -----------------------------------------------------------------------------------


def test_seed_example_envelope_exactly() -> None:
    ev = DEC.decode(frame(0x80, [0x00, 0x00, 0x90, 0x00], ts=1737319234.5678))
    assert ev == {
        "proto": 1,
        "type": "position_sample",
        "ts": 1737319234.5678,
        "source": "les02",
        "payload": {"channel": "master", "position_raw": 144},
    }
    assert ev == make_event(
        "position_sample", 1737319234.5678, {"channel": "master", "position_raw": 144}
    )


@pytest.mark.parametrize(("can_id", "channel"), [(0x80, "master"), (0x81, "slave")])
def test_position_channel_parity(can_id: int, channel: str) -> None:
    ev = event(DEC.decode(frame(can_id, [0x12, 0x34, 0x56, 0x00])))
    assert ev["payload"] == {"channel": channel, "position_raw": 0x123456}


def test_position_is_big_endian_and_byte3_ignored() -> None:
    a = event(DEC.decode(frame(0x80, [0x01, 0x02, 0x03, 0x00])))
    b = event(DEC.decode(frame(0x80, [0x01, 0x02, 0x03, 0xFF])))
    assert a["payload"]["position_raw"] == b["payload"]["position_raw"] == 0x010203 == 66051


def test_position_extremes() -> None:
    top = event(DEC.decode(frame(0x81, [0xFF, 0xFF, 0xFF, 0xFF])))
    assert top["payload"]["position_raw"] == 0xFFFFFF == 16777215
    zero = event(DEC.decode(frame(0x81, [0, 0, 0, 0xAB])))
    assert zero["payload"]["position_raw"] == 0
    assert parse_position(bytes([0xFF, 0xFF, 0xFF])) == 0xFFFFFF


def test_ts_is_frame_timestamp_and_source_configurable() -> None:
    dec = Les02Decoder(source="shaft-b")
    ev = event(dec.decode(frame(0x80, [0, 0, 1, 0], ts=42.25)))
    assert ev["ts"] == 42.25
    assert ev["source"] == "shaft-b"


# -- status / error / system -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("can_id", "type_", "channel"),
    [
        (0x30, "status", "master"),
        (0x31, "status", "slave"),
        (0x20, "error", "master"),
        (0x21, "error", "slave"),
        (0x10, "system", "master"),
        (0x11, "system", "slave"),
    ],
)
def test_status_error_system_raw_payload(can_id: int, type_: str, channel: str) -> None:
    data = bytes([0xDE, 0xAD, 0xBE, 0xEF, 0x00, 0x01, 0x0A, 0xFF])
    ev = event(DEC.decode(frame(can_id, data, ts=3.5)))
    assert ev == {
        "proto": 1,
        "type": type_,
        "ts": 3.5,
        "source": "les02",
        "payload": {"channel": channel, "can_id": can_id, "data": "deadbeef00010aff"},
    }


# -- DLC and length ----------------------------------------------------------------------------


@pytest.mark.parametrize("can_id", [0x80, 0x81])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 6, 7, 8])
def test_position_wrong_dlc(can_id: int, n: int) -> None:
    rej = rejection(DEC.decode(frame(can_id, bytes(n))))
    assert rej.reason == "bad_dlc"
    assert "DLC 4" in rej.message and f"got {n}" in rej.message


@pytest.mark.parametrize("can_id", [0x10, 0x11, 0x20, 0x21, 0x30, 0x31])
@pytest.mark.parametrize("n", [0, 1, 4, 7])
def test_status_error_system_wrong_dlc(can_id: int, n: int) -> None:
    rej = rejection(DEC.decode(frame(can_id, bytes(n))))
    assert rej.reason == "bad_dlc"
    assert "DLC 8" in rej.message


def test_data_shorter_than_dlc() -> None:
    rej = rejection(DEC.decode(frame(0x80, bytes([1, 2, 3]), dlc=4)))
    assert rej.reason == "length_mismatch"
    assert "3 data bytes" in rej.message
    rej = rejection(DEC.decode(frame(0x31, bytes(2), dlc=8)))
    assert rej.reason == "length_mismatch"


def test_data_longer_than_dlc() -> None:
    rej = rejection(DEC.decode(frame(0x80, bytes(8), dlc=4)))
    assert rej.reason == "length_mismatch"


# -- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("can_id", [0x00, 0x01, 0x12, 0x22, 0x40, 0x7E, 0x82, 0xFF, 0x7FF])
def test_unknown_ids(can_id: int) -> None:
    for dec in (DEC, STRICT):
        rej = rejection(dec.decode(frame(can_id, bytes(8))))
        assert rej.reason == "unknown_id"
        assert f"0x{can_id:03X}" in rej.message


def test_0x180_default_follows_seed_mask() -> None:
    master = event(DEC.decode(frame(0x180, [0, 0, 7, 0])))
    slave = event(DEC.decode(frame(0x181, [0, 0, 8, 0])))
    assert master["payload"] == {"channel": "master", "position_raw": 7}
    assert slave["payload"] == {"channel": "slave", "position_raw": 8}
    status = event(DEC.decode(frame(0x731, bytes(8))))
    assert status["type"] == "status"
    assert status["payload"]["can_id"] == 0x731


def test_0x180_rejected_with_strict_ids() -> None:
    for can_id, data in ((0x180, bytes(4)), (0x181, bytes(4)), (0x731, bytes(8))):
        rej = rejection(STRICT.decode(frame(can_id, data)))
        assert rej.reason == "unknown_id"
        assert "strict_ids" in rej.message


def test_strict_accepts_exactly_eight_ids() -> None:
    assert {0x10, 0x11, 0x20, 0x21, 0x30, 0x31, 0x80, 0x81} == STRICT_IDS
    assert STRICT.accepted_ids == STRICT_IDS
    # default: 8 blocks of 256 ids, 8 ids each
    assert len(DEC.accepted_ids) == 64
    assert all(i & 0xFE in (0x10, 0x20, 0x30, 0x80) for i in DEC.accepted_ids)
    for can_id in STRICT_IDS:
        n = 4 if can_id & 0xFE == 0x80 else 8
        event(STRICT.decode(frame(can_id, bytes(n))))


def test_standard_id_out_of_11_bit_range() -> None:
    # 0x880 & 0xFE == 0x80, but it is not an 11-bit id
    rej = rejection(DEC.decode(frame(0x880, bytes(4))))
    assert rej.reason == "unknown_id"
    assert "11-bit" in rej.message


# -- frame kinds ---------------------------------------------------------------------------------


def test_extended_id_rejected_even_for_les02_id() -> None:
    rej = rejection(DEC.decode(frame(0x80, bytes(4), is_extended_id=True)))
    assert rej.reason == "extended_id"
    assert "0x00000080" in rej.message
    # python-can's default is an extended id: a frame built without is_extended_id=False
    rej = rejection(DEC.decode(can.Message(arbitration_id=0x80, data=bytes(4))))
    assert rej.reason == "extended_id"


def test_error_frame_rejected() -> None:
    rej = rejection(DEC.decode(frame(0x80, bytes(4), is_error_frame=True)))
    assert rej.reason == "error_frame"


def test_remote_frame_rejected() -> None:
    rej = rejection(DEC.decode(frame(0x80, b"", dlc=4, is_remote_frame=True)))
    assert rej.reason == "remote_frame"


def test_fd_frame_rejected() -> None:
    rej = rejection(DEC.decode(frame(0x80, bytes(4), is_fd=True)))
    assert rej.reason == "fd_frame"


def test_rejection_keeps_the_frame() -> None:
    msg = frame(0x55, bytes(8))
    rej = rejection(DEC.decode(msg))
    assert rej.frame is msg


@pytest.mark.parametrize("junk", [None, "frame", 42, {"arbitration_id": 0x80}])
def test_not_a_frame_is_malformed(junk: Any) -> None:
    rej = rejection(DEC.decode(junk))
    assert rej.reason == "malformed"
    assert rej.frame is junk


def test_mutated_frame_data_is_malformed() -> None:
    msg = frame(0x30, bytes(8))
    msg.data = None  # type: ignore[assignment]
    assert rejection(DEC.decode(msg)).reason == "malformed"


# -- property: any frame is an event or a rejection, as the rules say ----------------------------


def expected(msg: can.Message, strict: bool) -> str | None:
    """Independent oracle: the rejection reason, or None when the frame is valid."""
    if msg.is_error_frame:
        return "error_frame"
    if msg.is_remote_frame:
        return "remote_frame"
    if msg.is_fd:
        return "fd_frame"
    if msg.is_extended_id:
        return "extended_id"
    cid = msg.arbitration_id
    if cid > 0x7FF or (strict and cid not in {0x10, 0x11, 0x20, 0x21, 0x30, 0x31, 0x80, 0x81}):
        return "unknown_id"
    base = cid & 0xFE
    if base not in (0x10, 0x20, 0x30, 0x80):
        return "unknown_id"
    need = 4 if base == 0x80 else 8
    if msg.dlc != need:
        return "bad_dlc"
    if len(msg.data) != need:
        return "length_mismatch"
    return None


ids = st.one_of(
    st.integers(0, 0x1FFFFFFF),
    st.integers(0, 0x7FF),
    st.sampled_from([0x10, 0x11, 0x20, 0x21, 0x30, 0x31, 0x80, 0x81, 0x180, 0x181]),
)


@settings(max_examples=600)
@given(
    can_id=ids,
    data=st.binary(min_size=0, max_size=64),
    dlc=st.one_of(st.none(), st.integers(0, 64)),
    ext=st.booleans(),
    fd=st.booleans(),
    err=st.booleans(),
    rtr=st.booleans(),
    ts=st.floats(0, 2e9),
    strict=st.booleans(),
)
def test_random_frames_never_raise(
    can_id: int,
    data: bytes,
    dlc: int | None,
    ext: bool,
    fd: bool,
    err: bool,
    rtr: bool,
    ts: float,
    strict: bool,
) -> None:
    msg = can.Message(
        timestamp=ts,
        arbitration_id=can_id,
        data=data,
        dlc=dlc,
        is_extended_id=ext,
        is_fd=fd,
        is_error_frame=err,
        is_remote_frame=rtr,
    )
    result = (STRICT if strict else DEC).decode(msg)
    reason = expected(msg, strict)
    if reason is None:
        ev = event(result)
        assert ev["ts"] == ts and ev["proto"] == 1 and ev["source"] == "les02"
        assert ev["payload"]["channel"] == ("slave" if can_id & 1 else "master")
        if can_id & 0xFE == 0x80:
            assert ev["type"] == "position_sample"
            assert ev["payload"] == {
                "channel": ev["payload"]["channel"],
                "position_raw": int.from_bytes(data[:3], "big"),
            }
        else:
            assert ev["payload"]["data"] == data.hex()
            assert ev["payload"]["can_id"] == can_id
    else:
        rej = rejection(result)
        assert rej.reason == reason
        assert rej.frame is msg


def test_protocol_md_examples_match_the_decoder() -> None:
    """Each JSON example in docs/protocol.md is what the decoder + encoder produce."""
    from pathlib import Path

    from les02_flow.events import encode_event

    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text("utf-8")
    blocks = [b.split("\n```", 1)[0].strip() for b in text.split("```json\n")[1:]]
    frames = {
        "position_sample": frame(0x80, [0, 0, 0x90, 0], ts=1737319234.5678),
        "status": frame(0x31, bytes.fromhex("0100000000000000"), ts=1737319234.5702),
        "error": frame(0x20, bytes.fromhex("00000000000000ff"), ts=1737319234.5703),
        "system": frame(0x10, bytes.fromhex("0102030405060708"), ts=1737319234.5704),
    }
    blocks = [b for b in blocks if json.loads(b)["type"] in frames]  # decoder events only
    assert [json.loads(b)["type"] for b in blocks] == list(frames)
    for block, msg in zip(blocks, frames.values(), strict=True):
        assert encode_event(event(DEC.decode(msg))) == block
