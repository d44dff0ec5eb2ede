"""The ``change`` node: set/rename/delete/scale, type and source, copies not mutation,
skipped rules, config errors with their reasons."""

from __future__ import annotations

import copy
from typing import Any

import pydantic
import pytest

from les02_flow.nodes.ops.change import Change, ChangeConfig

from .opsutil import ev, make, run


def test_every_action_in_order() -> None:
    node = make(
        Change,
        rules=[
            {"scale": "payload.position_raw", "factor": 0.001, "to": "payload.position_m"},
            {"scale": "payload.position_raw", "factor": 2, "offset": 1},
            {"rename": "payload.channel", "to": "payload.meta.ch"},
            {"delete": "payload.data"},
            {"set": "payload.site", "value": "shaft-a"},
            {"set": "payload.tags", "value": ["a", "b"]},
            {"set": "type", "value": "position"},
            {"set": "source", "value": "lift-2"},
        ],
    )
    event = ev(channel="master", position_raw=1500, data="00ff")
    before = copy.deepcopy(event)
    (out,) = run(node, [event])["out"]
    assert out == {
        "proto": 1,
        "type": "position",
        "ts": 1.0,
        "source": "lift-2",
        "payload": {
            "position_raw": 3001.0,
            "position_m": 1.5,
            "meta": {"ch": "master"},
            "site": "shaft-a",
            "tags": ["a", "b"],
        },
    }
    assert event == before  # the input (possibly shared with other wires) is untouched
    assert node.counters.extra == {}


def test_rounding_and_nested_copies() -> None:
    node = make(
        Change,
        rules=[
            {"scale": "payload.m.v", "factor": 1 / 3, "digits": 2},
            {"set": "payload.m.w", "value": 1},
        ],
    )
    inner = {"v": 10}
    event = ev(m=inner)
    (out,) = run(node, [event])["out"]
    assert out["payload"]["m"] == {"v": 3.33, "w": 1}
    assert inner == {"v": 10}


def test_set_values_are_not_shared_between_events() -> None:
    node = make(Change, rules=[{"set": "payload.tags", "value": ["x"]}])
    a, b = run(node, [ev(), ev()])["out"]
    a["payload"]["tags"].append("mutated downstream")
    assert b["payload"]["tags"] == ["x"]


def test_rules_with_nothing_to_do_are_counted() -> None:
    node = make(
        Change,
        rules=[
            {"rename": "payload.nope", "to": "payload.x"},
            {"delete": "payload.nope"},
            {"scale": "payload.name", "factor": 2},  # not a number
            {"scale": "payload.flag", "factor": 2},  # bool is not a number
            {"set": "payload.ok", "value": True},
        ],
    )
    (out,) = run(node, [ev(name="abc", flag=True)])["out"]
    assert out["payload"] == {"name": "abc", "flag": True, "ok": True}
    assert node.counters.extra == {"skipped_rules": 4}


def test_frames_and_junk_are_errors_not_crashes() -> None:
    from .opsutil import fr

    node = make(Change, rules=[{"set": "payload.x", "value": 1}])
    out = run(node, [fr(0x80), "junk", ev()])["out"]
    assert len(out) == 1
    assert node.counters.errors == 2


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({}, "exactly one of set, rename, delete, scale (got none)"),
        ({"set": "payload.a", "delete": "payload.b"}, "(got set, delete)"),
        ({"set": "payload.a"}, "'set' needs 'value'"),
        ({"rename": "payload.a"}, "'rename' needs 'to'"),
        ({"delete": "payload.a", "value": 1}, "'delete' does not take value"),
        ({"set": "ts", "value": 1}, "'ts' cannot be changed"),
        ({"set": "type", "value": ""}, "non-empty string"),
        ({"set": "channel", "value": 1}, "must be a payload field"),
        ({"scale": "payload.a", "factor": "x"}, "valid number"),
        ({"rename": "payload.a", "to": "type"}, "to must be a payload field"),
        ({"delete": "payload.a[0]"}, "list indexes are not supported"),
        ({"set": "payload..a", "value": 1}, "bad field path"),
    ],
)
def test_config_errors(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        ChangeConfig.model_validate({"rules": [rule]})
    assert message in str(info.value)
