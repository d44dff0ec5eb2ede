"""The ``deadband`` node: per-key deadband, rbe (any change), inclusive, missing values,
frames, config errors."""

from __future__ import annotations

import pydantic
import pytest

from les02_flow.node import Kind
from les02_flow.nodes.ops.deadband import DeadbandConfig, DeadbandNode

from .opsutil import ev, fr, make, run


def positions(values: list[tuple[str, int]]) -> list[dict[str, object]]:
    return [ev(channel=ch, position_raw=v, ts=i * 0.004) for i, (ch, v) in enumerate(values)]


def test_per_key_deadband_compares_with_the_last_passed_value() -> None:
    events = positions(
        [("master", 0), ("slave", 0), ("master", 60), ("master", 110), ("slave", 101),
         ("master", 150), ("master", 211), ("slave", 150)]
    )  # fmt: skip
    node = make(DeadbandNode, field="payload.position_raw", deadband=100, key=["payload.channel"])
    out = run(node, events)["out"]
    assert [(e["payload"]["channel"], e["payload"]["position_raw"]) for e in out] == [
        ("master", 0),
        ("slave", 0),
        ("master", 110),  # 110 - 0 > 100 (60 did not pass, so 0 stays the reference)
        ("slave", 101),
        ("master", 211),
    ]
    assert node.counters.dropped == 3


def test_inclusive() -> None:
    events = positions([("m", 0), ("m", 100), ("m", 199), ("m", 200)])
    out = run(make(DeadbandNode, field="payload.position_raw", deadband=100), events)["out"]
    assert [e["payload"]["position_raw"] for e in out] == [0, 199]  # 100 is not > 100
    node = make(DeadbandNode, field="payload.position_raw", deadband=100, inclusive=True)
    out = run(node, events)["out"]
    assert [e["payload"]["position_raw"] for e in out] == [0, 100, 200]


def test_zero_is_report_by_exception_for_any_value() -> None:
    events = [ev(state=s) for s in ("idle", "idle", "moving", "moving", "idle", 1, 1.0)]
    out = run(make(DeadbandNode, field="payload.state"), events)["out"]
    assert [e["payload"]["state"] for e in out] == ["idle", "moving", "idle", 1]


def test_missing_and_non_numeric_values() -> None:
    events = [ev(v=1), ev("status"), ev(v="x"), ev(v=500)]
    node = make(DeadbandNode, field="payload.v", deadband=10)
    out = run(node, events)["out"]
    assert out == events  # missing and non-numeric pass, 500 moved by more than 10
    assert node.counters.extra == {"no_value": 2}
    node = make(DeadbandNode, field="payload.v", deadband=10, missing="drop")
    out = run(node, events)["out"]
    assert out == [events[0], events[3]]


def test_frames_by_id() -> None:
    frames = [fr(0x80, bytes([1])), fr(0x81, bytes([1])), fr(0x80, bytes([1])), fr(0x80, b"\x02")]
    node = make(DeadbandNode, field="data", key=["arbitration_id"])
    out = run(node, frames)["out"]
    assert out == [frames[0], frames[1], frames[3]]
    assert DeadbandNode.input_kind_for(node.config) is Kind.FRAME


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"field": "payload.x", "deadband": -1}, "greater than or equal to 0"),
        ({"field": "typo"}, "unknown field 'typo'"),
        ({"field": "payload.x", "key": ["chanel"]}, "did you mean 'channel'"),
        ({"field": "payload.x", "key": ["arbitration_id"]}, "mix frame fields and event fields"),
        ({"field": "payload.x", "missing": "keep"}, "'pass' or 'drop'"),
    ],
)
def test_config_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        DeadbandConfig.model_validate(config)
    assert message in str(info.value)
