"""The ``filter`` node: frames by id list/range/mask and flags, events by type and
conditions, invert, the rejected port, input kinds, config errors."""

from __future__ import annotations

import uuid
from typing import Any

import can
import pydantic
import pytest

from les02_flow.node import Kind
from les02_flow.nodes.ops.filter import Filter, FilterConfig

from .opsutil import ev, fr, make, run

FRAMES = [
    fr(0x80, ts=1.0),
    fr(0x81, ts=1.1),
    fr(0x30, bytes(8), ts=1.2),
    fr(0x123, bytes(2), ts=1.3),
    fr(0x18FF0080, bytes(8), ts=1.4),
    fr(0x80, bytes(12), ts=1.5, is_fd=True),
]


def ids(frames: list[Any]) -> list[int]:
    return [f.arbitration_id for f in frames]


@pytest.mark.parametrize(
    ("config", "passed"),
    [
        ({"ids": [0x80, 0x30]}, [0x80, 0x30, 0x80]),
        ({"id_range": [0x30, 0x81]}, [0x80, 0x81, 0x30, 0x80]),
        ({"masks": [{"id": 0x0, "mask": 0x1}]}, [0x80, 0x30, 0x18FF0080, 0x80]),  # even ids
        ({"masks": [{"id": 0x80, "mask": 0xFF}]}, [0x80, 0x18FF0080, 0x80]),
        ({"ids": [0x123], "id_range": [0x80, 0x81]}, [0x80, 0x81, 0x123, 0x80]),  # union
        ({"extended": True}, [0x18FF0080]),
        ({"extended": False, "fd": False}, [0x80, 0x81, 0x30, 0x123]),
        ({"fd": True}, [0x80]),
        ({"ids": [0x80], "fd": False}, [0x80]),
        ({"when": [{"field": "dlc", "op": "eq", "value": 8}]}, [0x30, 0x18FF0080]),
        ({"when": [{"field": "data[0]", "op": "eq", "value": 0}], "ids": [0x123]}, [0x123]),
    ],
)
def test_frames(config: dict[str, Any], passed: list[int]) -> None:
    out = run(make(Filter, **config), FRAMES)
    assert ids(out["out"]) == passed
    # nothing is lost: the rest go to 'rejected', in order, unchanged
    assert len(out["out"]) + len(out["rejected"]) == len(FRAMES)
    assert all(any(m is f for f in FRAMES) for m in out["out"] + out["rejected"])


EVENTS = [
    ev("position_sample", channel="master", position_raw=10),
    ev("position_sample", channel="slave", position_raw=10),
    ev("status", channel="master"),
    ev("ride_end", channel="master", distance_mm=1500.0),
]


def test_events_by_type_and_conditions() -> None:
    out = run(make(Filter, types=["position_sample", "status"]), EVENTS)
    assert [e["type"] for e in out["out"]] == ["position_sample", "position_sample", "status"]
    out = run(
        make(
            Filter,
            types=["position_sample"],
            when=[{"field": "payload.channel", "op": "eq", "value": "master"}],
        ),
        EVENTS,
    )
    assert out["out"] == [EVENTS[0]]
    out = run(
        make(Filter, when=[{"field": "payload.distance_mm", "op": "range", "value": [1000, 2000]}]),
        EVENTS,
    )
    assert out["out"] == [EVENTS[3]]


def test_drop_the_slave_channel_with_invert() -> None:
    node = make(
        Filter, when=[{"field": "payload.channel", "op": "eq", "value": "slave"}], invert=True
    )
    out = run(node, EVENTS)
    assert out["out"] == [EVENTS[0], EVENTS[2], EVENTS[3]]
    assert out["rejected"] == [EVENTS[1]]
    assert node.counters.extra == {"rejected": 1}


def test_input_kind_follows_the_config() -> None:
    assert Filter.input_kind_for(FilterConfig(ids=[1])) is Kind.FRAME
    assert Filter.input_kind_for(FilterConfig(extended=False)) is Kind.FRAME
    assert Filter.input_kind_for(FilterConfig(types=["status"])) is Kind.EVENT
    config = FilterConfig.model_validate({"when": [{"field": "dlc", "value": 8}]})
    assert Filter.input_kind_for(config) is Kind.FRAME


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs at least one of"),
        ({"ids": [0x80], "types": ["status"]}, "a message is either a frame or an event"),
        ({"ids": [0x80], "when": [{"field": "type", "value": "x"}]}, "either a frame or an event"),
        ({"types": ["x"], "when": [{"field": "dlc", "value": 8}]}, "'when' reads frame fields"),
        ({"ids": [0x20000000]}, "is not a CAN id"),
        ({"id_range": [0x200, 0x100]}, "lo <= hi"),
        ({"masks": [{"id": 1}]}, "mask"),
        ({"when": [{"field": "payload.x", "op": "regex", "value": "("}]}, "does not compile"),
        ({"idz": [1]}, "Extra inputs"),
    ],
)
def test_config_errors(config: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message if "(" not in message else None):
        FilterConfig.model_validate(config)


def test_non_messages_do_not_break_the_stream() -> None:
    node = make(Filter, ids=[0x80])
    out = run(node, [None, "junk", {"type": "x"}, fr(0x80)])
    assert ids(out["out"]) == [0x80]
    assert out["rejected"][:3] == [None, "junk", {"type": "x"}]
    assert node.counters.errors == 0


def test_real_frames_from_a_virtual_bus() -> None:
    channel = f"filter-{uuid.uuid4().hex}"
    with (
        can.Bus(interface="virtual", channel=channel) as tx,
        can.Bus(interface="virtual", channel=channel) as rx,
    ):
        for f in FRAMES:
            tx.send(f)
        got = [rx.recv(timeout=5.0) for _ in FRAMES]
    assert all(g is not None for g in got)
    out = run(make(Filter, masks=[{"id": 0x0, "mask": 0x1}], extended=False), got)
    assert ids(out["out"]) == [0x80, 0x30, 0x80]
