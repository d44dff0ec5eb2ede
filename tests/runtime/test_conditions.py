"""The condition model: field paths, every operator, absent values, validation messages, and
compile-time errors with FILE:LINE:COL through the flow compiler."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import Any, ClassVar

import can
import pydantic
import pytest
from pydantic import Field

from les02_flow.compiler import compile_document
from les02_flow.conditions import (
    MISSING,
    Condition,
    FieldPath,
    Op,
    all_of,
    conditions_kind,
    parse_path,
)
from les02_flow.flowfile import FlowErrors, load_flow_text
from les02_flow.node import Kind, Node, NodeConfig
from les02_flow.registry import Registry


def event(type_: str = "position_sample", **payload: Any) -> dict[str, Any]:
    return {"proto": 1, "type": type_, "ts": 5.0, "source": "les02", "payload": payload}


def frame(can_id: int = 0x80, data: bytes = bytes([1, 2, 3, 4]), **kw: Any) -> can.Message:
    kw.setdefault("is_extended_id", False)
    return can.Message(timestamp=2.5, arbitration_id=can_id, data=data, **kw)


def holds(field: str, op: Op, value: Any, message: Any) -> bool:
    return Condition(field=field, op=op, value=value).compile()(message)


E = event(channel="master", position_raw=144, name="abc", items=[7, 8], nested={"x": 1.5})


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("type", "eq", "position_sample", True),
        ("type", "eq", "status", False),
        ("payload.position_raw", "eq", 144.0, True),
        ("payload.channel", "ne", "slave", True),
        ("payload.channel", "ne", "master", False),
        ("payload.channel", "in", ["slave", "master"], True),
        ("payload.channel", "in", ["slave"], False),
        ("payload.position_raw", "lt", 145, True),
        ("payload.position_raw", "lt", 144, False),
        ("payload.position_raw", "le", 144, True),
        ("payload.position_raw", "gt", 143.5, True),
        ("payload.position_raw", "gt", 144, False),
        ("payload.position_raw", "ge", 144, True),
        ("payload.position_raw", "range", [144, 144], True),
        ("payload.position_raw", "range", [0, 143], False),
        ("payload.name", "regex", "^a.c$", True),
        ("payload.name", "regex", "^b", False),
        ("payload.name", "regex", "b", True),  # search, not match
        ("payload.items[1]", "eq", 8, True),
        ("payload.nested.x", "ge", 1.5, True),
        ("payload.channel", "exists", True, True),
        ("payload.nope", "exists", False, True),
        ("ts", "eq", 5.0, True),
        ("source", "eq", "les02", True),
        ("proto", "eq", 1, True),
    ],
)
def test_event_operators(field: str, op: Op, value: Any, expected: bool) -> None:
    assert holds(field, op, value, E) is expected


@pytest.mark.parametrize(
    ("field", "op", "value"),
    [
        ("payload.nope", "eq", None),
        ("payload.nope", "ne", "x"),  # absent never matches, ne included
        ("payload.nope", "in", [1]),
        ("payload.nope", "lt", 1),
        ("payload.nope", "range", [0, 1]),
        ("payload.nope", "regex", ".*"),
        ("payload.items[5]", "eq", 7),
        ("payload.name", "lt", 5),  # a string is not a number
        ("payload.position_raw", "regex", "1"),  # a number is not a string
        ("payload.items", "in", [1]),  # unhashable value: no match, no exception
        ("payload.channel.x", "eq", "m"),  # into a string
        ("payload.name[0]", "eq", "a"),  # a string is not indexable as a list
    ],
)
def test_absent_or_wrong_type_never_matches(field: str, op: Op, value: Any) -> None:
    assert holds(field, op, value, E) is False


def test_null_eq_and_present_null() -> None:
    assert holds("payload.v", "eq", None, event(v=None)) is True
    assert holds("payload.v", "exists", True, event(v=None)) is True
    assert holds("payload.v", "eq", None, event()) is False


def test_bool_is_not_a_number_for_comparisons() -> None:
    assert holds("payload.flag", "gt", 0, event(flag=True)) is False


def test_frame_fields() -> None:
    f = frame(0x81, bytes([0x00, 0x12, 0xFF, 0x01]))
    assert holds("arbitration_id", "eq", 0x81, f)
    assert holds("arbitration_id", "range", [0x80, 0x8F], f)
    assert holds("is_extended_id", "eq", False, f)
    assert holds("is_fd", "eq", False, f)
    assert holds("dlc", "eq", 4, f)
    assert holds("data[2]", "eq", 0xFF, f)
    assert not holds("data[4]", "exists", True, f)
    assert holds("data", "eq", "0012ff01", f)
    assert holds("data", "regex", "^0012", f)
    assert holds("timestamp", "ge", 2.5, f)
    ext = frame(0x18FF0001, bytes(8), is_extended_id=True)
    assert holds("is_extended_id", "eq", True, ext)
    assert holds("arbitration_id", "gt", 0x7FF, ext)
    # frame paths on events and event paths on frames are absent, not errors
    assert not holds("arbitration_id", "exists", True, E)
    assert not holds("type", "exists", True, f)
    assert holds("data[0]", "exists", False, E)


def test_all_of() -> None:
    p = all_of(
        [
            {"field": "type", "value": "position_sample"},
            {"field": "payload.channel", "op": "eq", "value": "master"},
            {"field": "payload.position_raw", "op": "lt", "value": 1000},
        ]
    )
    assert p(E)
    assert not p(event(channel="master", position_raw=5000))
    assert all_of([])(E)


def test_paths_and_resolve() -> None:
    assert parse_path("payload.a[0][1].b") == ("payload", "a", 0, 1, "b")
    assert FieldPath("payload.a[0][1].b").get(event(a=[[0, {"b": 3}]])) == 3
    assert Condition(field="payload.channel").resolve(E) == "master"
    assert Condition(field="payload.x").resolve(E) is MISSING
    assert Condition(field="data[0]").kind == "frame"
    assert Condition(field="payload.x").kind == "event"


def test_conditions_kind() -> None:
    assert conditions_kind([]) is None
    assert conditions_kind([Condition(field="type", value="x")]) == "event"
    with pytest.raises(ValueError, match="mix frame fields and event fields"):
        conditions_kind([Condition(field="type", value="x"), Condition(field="dlc", value=8)])


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"field": "typ", "value": "x"}, "unknown field 'typ' (did you mean 'type'?)"),
        ({"field": "arbitration", "value": 1}, "did you mean 'arbitration_id'?"),
        ({"field": "type.x", "value": 1}, "event field 'type' has no sub-fields"),
        ({"field": "dlc[0]", "value": 1}, "frame field 'dlc' has no sub-fields"),
        ({"field": "data[64]", "value": 1}, "past the end"),
        ({"field": "payload[0]", "value": 1}, "write payload.NAME"),
        ({"field": "payload..x", "value": 1}, "bad field path"),
        ({"field": "", "value": 1}, "non-empty string"),
        ({"field": "type", "op": "like", "value": 1}, "Input should be 'eq'"),
        ({"field": "type", "op": "eq", "value": [1]}, "'eq' needs a single value"),
        ({"field": "type", "op": "in", "value": "master"}, "'in' needs a non-empty list"),
        ({"field": "type", "op": "in", "value": []}, "'in' needs a non-empty list"),
        ({"field": "ts", "op": "lt", "value": "3"}, "'lt' needs a finite number"),
        ({"field": "ts", "op": "gt", "value": True}, "'gt' needs a finite number"),
        ({"field": "ts", "op": "ge", "value": float("nan")}, "'ge' needs a finite number"),
        ({"field": "ts", "op": "range", "value": [1]}, "'range' needs [lo, hi]"),
        ({"field": "ts", "op": "range", "value": [3, 1]}, "lo <= hi"),
        ({"field": "type", "op": "regex", "value": "(unclosed"}, "does not compile"),
        ({"field": "type", "op": "regex", "value": 3}, "needs a pattern string"),
        ({"field": "type", "op": "exists", "value": "yes"}, "needs true or false"),
        ({"field": "type", "value": "x", "vaule": 1}, "Extra inputs are not permitted"),
    ],
)
def test_validation_messages(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        Condition.model_validate(raw)
    assert message in str(info.value)


# -- through the compiler: errors carry FILE:LINE:COL -------------------------------------


class WhenConfig(NodeConfig):
    when: list[Condition] = Field(default_factory=list, description="conditions")


class When(Node[WhenConfig]):
    """A node with conditions (test only)."""

    type_name: ClassVar[str] = "when"
    config_model: ClassVar[type[NodeConfig]] = WhenConfig
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {}

    def consume(self, message: Any) -> None:
        pass


def test_compile_time_errors_have_file_line_col() -> None:
    registry = Registry()
    registry.register(When, "test")
    text = textwrap.dedent(
        """\
        version: 1
        nodes:
          w:
            type: when
            when:
              - {field: payload.channel, op: eq, value: master}
              - {field: typo, op: eq, value: 1}
              - field: type
                op: regex
                value: "([a-z"
              - {field: ts, op: range, value: [5, 1]}
        """
    )
    with pytest.raises(FlowErrors) as info:
        compile_document(load_flow_text(text, "c.yaml", env={}), registry)
    errors = [str(e) for e in info.value.errors]
    assert len(errors) == 3, errors
    assert errors[0].startswith("c.yaml:7:17: node 'w': 'when.1.field': Value error, unknown field")
    assert "(did you mean 'type'?)" in errors[0]
    assert errors[1].startswith("c.yaml:10:16: node 'w': 'when.2.value': Value error, regex")
    assert errors[2].startswith("c.yaml:11:39: node 'w': 'when.3.value': Value error, 'range'")


def test_valid_conditions_compile_and_run() -> None:
    registry = Registry()
    registry.register(When, "test")
    text = "version: 1\nnodes:\n  w:\n    type: when\n    when: [{field: dlc, op: ge, value: 4}]\n"
    flow = compile_document(load_flow_text(text, "c.yaml", env={}), registry)
    config = flow.nodes["w"].config
    assert isinstance(config, WhenConfig)
    match = all_of(config.when)
    assert match(frame(data=bytes(4))) and not match(frame(data=bytes(2)))
