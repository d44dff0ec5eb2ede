"""The ``switch`` node: ordered rules, first/all modes, the otherwise port, shared ports,
one upstream subscription, config errors."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest
from reactivex import Observable, abc
from reactivex.subject import Subject

from les02_flow.node import Kind
from les02_flow.nodes.ops.switch import Switch, SwitchConfig

from .opsutil import ev, fr, make, run

RULES = [
    {"port": "rides", "when": [{"field": "type", "op": "regex", "value": "^ride_"}]},
    {"port": "diagnostics", "when": [{"field": "type", "op": "in", "value": ["status", "error"]}]},
    {"port": "master", "when": [{"field": "payload.channel", "op": "eq", "value": "master"}]},
]

EVENTS = [
    ev("ride_start", channel="master"),
    ev("status", channel="slave"),
    ev("position_sample", channel="master"),
    ev("position_sample", channel="slave"),
    ev("error", channel="master"),
]


def test_first_match() -> None:
    out = run(make(Switch, rules=RULES), EVENTS)
    assert set(out) == {"rides", "diagnostics", "master", "otherwise"}
    assert out["rides"] == [EVENTS[0]]
    assert out["diagnostics"] == [EVENTS[1], EVENTS[4]]
    assert out["master"] == [EVENTS[2]]
    assert out["otherwise"] == [EVENTS[3]]


def test_all_matches() -> None:
    out = run(make(Switch, rules=RULES, mode="all"), EVENTS)
    assert out["rides"] == [EVENTS[0]]
    assert out["diagnostics"] == [EVENTS[1], EVENTS[4]]
    assert out["master"] == [EVENTS[0], EVENTS[2], EVENTS[4]]
    assert out["otherwise"] == [EVENTS[3]]
    assert out["master"][0] is EVENTS[0]  # the same message, not a copy


def test_rules_sharing_a_port_are_alternatives() -> None:
    rules = [
        {"port": "pos", "when": [{"field": "arbitration_id", "value": 0x80}]},
        {"port": "pos", "when": [{"field": "arbitration_id", "value": 0x81}]},
    ]
    node = make(Switch, rules=rules, mode="all")
    assert dict(Switch.ports_for(node.config)) == {"pos": Kind.ANY, "otherwise": Kind.ANY}
    frames = [fr(0x80), fr(0x81), fr(0x30)]
    out = run(node, frames)
    assert [f.arbitration_id for f in out["pos"]] == [0x80, 0x81]  # once each, even in 'all'
    assert [f.arbitration_id for f in out["otherwise"]] == [0x30]
    assert Switch.input_kind_for(node.config) is Kind.FRAME


def test_one_upstream_subscription_for_all_ports() -> None:
    subject: Subject[Any] = Subject()
    count = [0]

    def subscribe(observer: abc.ObserverBase[Any], scheduler: Any = None) -> abc.DisposableBase:
        count[0] += 1
        return subject.subscribe(observer)

    ports = make(Switch, rules=RULES).build(Observable(subscribe))
    subs = [obs.subscribe(lambda _: None) for obs in ports.values()]
    assert count[0] == 1
    for s in subs:
        s.dispose()
    assert not subject.observers


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "at least 1 item"),
        ([{"port": "a", "when": []}], "at least 1 item"),
        ([{"port": "A b", "when": [{"field": "type", "value": "x"}]}], "snake_case"),
        ([{"port": "otherwise", "when": [{"field": "type", "value": "x"}]}], "no rule matches"),
        (
            [
                {"port": "a", "when": [{"field": "type", "value": "x"}]},
                {"port": "b", "when": [{"field": "dlc", "value": 8}]},
            ],
            "mix frame fields and event fields",
        ),
        ([{"port": "a", "when": [{"field": "tpye", "value": "x"}]}], "did you mean 'type'"),
    ],
)
def test_config_errors(rules: list[Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        SwitchConfig.model_validate({"rules": rules})
    assert message in str(info.value)
