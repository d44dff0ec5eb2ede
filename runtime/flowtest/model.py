"""Flow test files: the pydantic models (one source of truth for validation and JSON Schema).

A test file sits beside its flow (``default.yaml`` -> ``default_test.yaml``) or names it with
``flow:``. It is plain data: inputs, a target, overrides and expectations whose conditions are
:class:`les02_flow.conditions.Condition` (field path, operator, value). Nothing in a test file is
evaluated as code. ``docs/testing-flows.md`` is the user-facing description; ``les02-flow
schema --tests`` prints :func:`tests_schema`.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from les02_flow.conditions import Condition
from les02_flow.configfields import EventTypes, WindowEnd, WindowStart, check_window, int_text

__all__ = [
    "CountBound",
    "Expectation",
    "FlowTest",
    "InlineFrame",
    "Target",
    "TestFile",
    "TestInput",
    "normalize_match",
    "parse_can_id",
    "tests_schema",
]

_STRICT = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

#: how a match is written: an event type, one condition, or a list of conditions (all must hold)
_can_id_text = int_text("a CAN id")

MATCH_HELP = (
    "A message matches when all of these hold: an event type (a string, e.g. ride_end), one "
    "condition {field, op, value}, or a list of conditions."
)


def parse_can_id(value: object) -> object:
    """``0x80``, ``"0x80"``, ``"080"`` (hex text is read as hex only with 0x) -> int."""
    return _can_id_text(value)


def normalize_match(value: object) -> object:
    """An event type (``ride_end``) or one condition mapping -> a list of condition mappings;
    in a list, a string is an event type too (``[ride_end, {field: ..., ...}]``)."""
    if isinstance(value, str):
        return [{"field": "type", "op": "eq", "value": value}]
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [
            {"field": "type", "op": "eq", "value": v} if isinstance(v, str) else v for v in value
        ]
    return value


class CountBound(BaseModel):
    """How many messages: ``count: 3`` or bounds such as ``count: {ge: 1, le: 4}``."""

    model_config = _STRICT

    eq: int | None = Field(default=None, ge=0, description="Exactly this many.")
    ne: int | None = Field(default=None, ge=0, description="Any number but this.")
    lt: int | None = Field(default=None, description="Fewer than this.")
    le: int | None = Field(default=None, description="At most this many.")
    gt: int | None = Field(default=None, description="More than this.")
    ge: int | None = Field(default=None, description="At least this many.")
    range: tuple[int, int] | None = Field(
        default=None, description="[lo, hi]: at least lo and at most hi (both included)."
    )
    min: int | None = Field(default=None, description="At least this many (same as ge).")
    max: int | None = Field(default=None, description="At most this many (same as le).")

    @model_validator(mode="before")
    @classmethod
    def _from_int(cls, value: object) -> object:
        if isinstance(value, bool):
            raise ValueError("count must be a number or bounds like {ge: 1, le: 4}, not a bool")
        if isinstance(value, int):
            return {"eq": value}
        if not isinstance(value, dict):
            raise ValueError(
                f"count must be a number or bounds like {{ge: 1, le: 4}}, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> CountBound:
        if all(getattr(self, k) is None for k in _BOUNDS):
            raise ValueError(
                "count needs a number or at least one of min, max, eq, ne, lt, le, gt, ge, range"
            )
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError(f"count range needs lo <= hi, got {list(self.range)}")
        return self

    def accepts(self, n: int) -> bool:
        """Whether ``n`` messages satisfy every bound given."""
        return (
            (self.eq is None or n == self.eq)
            and (self.ne is None or n != self.ne)
            and (self.lt is None or n < self.lt)
            and (self.le is None or n <= self.le)
            and (self.gt is None or n > self.gt)
            and (self.ge is None or n >= self.ge)
            and (self.range is None or self.range[0] <= n <= self.range[1])
            and (self.min is None or n >= self.min)
            and (self.max is None or n <= self.max)
        )

    def describe(self) -> str:
        """``3``, ``>= 1 and <= 4``, ``1..4``."""
        if self.eq is not None and all(getattr(self, k) is None for k in _BOUNDS if k != "eq"):
            return str(self.eq)
        symbols = {
            "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
            "min": ">=", "max": "<=",
        }  # fmt: skip
        parts = [
            f"{symbols[k]} {getattr(self, k)}" for k in symbols if getattr(self, k) is not None
        ]
        if self.range is not None:
            parts.append(f"{self.range[0]}..{self.range[1]}")
        return " and ".join(parts)


_BOUNDS = ("eq", "ne", "lt", "le", "gt", "ge", "range", "min", "max")


Match = list[Condition]


class Expectation(BaseModel):
    """What one node port must have carried (or a sink received) when the input is done.

    ``type``/``where`` select the messages the other checks look at (default: all of them).
    """

    model_config = _STRICT

    type: list[str] | None = Field(
        default=None,
        description="Only event messages of these types (a name or a list of names).",
    )
    where: Match = Field(
        default_factory=list,
        description="Only messages matching all these conditions (frames or events).",
    )
    count: CountBound | None = Field(
        default=None,
        description="How many selected messages: a number (exactly) or bounds like "
        "{ge: 1, le: 4}, {range: [1, 4]}.",
    )
    every: Match | None = Field(
        default=None,
        description="Every selected message matches this. " + MATCH_HELP,
    )
    contains: list[Match] = Field(
        default_factory=list,
        description="Each entry matches at least one selected message (any order). " + MATCH_HELP,
    )
    ordered: list[Match] = Field(
        default_factory=list,
        description="Messages matching these entries appear in this order (other messages may "
        "come between). " + MATCH_HELP,
    )
    none_of: list[Match] = Field(
        default_factory=list,
        description="No selected message matches any of these entries. " + MATCH_HELP,
    )
    equals_file: str | None = Field(
        default=None,
        min_length=1,
        description="Golden file the selected messages must equal, message by message: .jsonl "
        "for events, .log (candump -L) or another recording format for frames. Relative to "
        "the test file. `les02-flow test --update` (re)writes it.",
    )

    @field_validator("type", mode="before")
    @classmethod
    def _type_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("where", "every", mode="before")
    @classmethod
    def _one_match(cls, value: object) -> object:
        return normalize_match(value)

    @field_validator("contains", "ordered", "none_of", mode="before")
    @classmethod
    def _matches(cls, value: object) -> object:
        if isinstance(value, list):
            return [normalize_match(v) for v in value]
        return value

    @model_validator(mode="after")
    def _something(self) -> Expectation:
        if (
            self.count is None
            and self.every is None
            and not self.contains
            and not self.ordered
            and not self.none_of
            and self.equals_file is None
        ):
            raise ValueError(
                "an expectation needs at least one check: count, every, contains, ordered, "
                "none_of or equals_file"
            )
        return self


_FRAME_TEXT = re.compile(
    r"^\s*(?:\((?P<ts>[-+0-9.eE]+)\)\s+)?(?:(?P<ch>[A-Za-z][\w.-]*)\s+)?"
    r"(?P<id>[0-9A-Fa-f]{1,8})#(?P<rest>\S*)(?:\s+[RT])?\s*$"
)


class InlineFrame(BaseModel):
    """One CAN frame written in the test file."""

    model_config = _STRICT

    ts: float | None = Field(
        default=None,
        description="Timestamp (s). Unset = the previous frame's + the input's period "
        "(the first one: 0).",
    )
    id: int = Field(ge=0, le=0x1FFFFFFF, description="Arbitration id (e.g. 0x80).")
    data: str = Field(
        default="",
        description="Payload bytes as hex, e.g. '00 0D AC 00' or '000DAC00'.",
    )
    extended: bool | None = Field(
        default=None, description="29-bit id. Unset = ids above 0x7FF are extended."
    )
    remote: bool = Field(default=False, description="A remote frame.")
    error: bool = Field(default=False, description="An error frame.")
    fd: bool = Field(default=False, description="A CAN FD frame.")
    dlc: int | None = Field(
        default=None, ge=0, le=64, description="DLC when it should differ from len(data)."
    )
    channel: str | None = Field(default=None, description="The frame's channel.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        m = _FRAME_TEXT.match(value)
        if m is None:
            raise ValueError(
                f"not a frame: {value!r}; write candump style '080#000DAC00', "
                "'(12.004) can0 080#000DAC00', '081#R', or a mapping {id: 0x80, data: '000DAC00'}"
            )
        out: dict[str, Any] = {"id": int(m["id"], 16)}
        if m["ts"]:
            out["ts"] = float(m["ts"])
        if m["ch"]:
            out["channel"] = m["ch"]
        if len(m["id"]) > 3:
            out["extended"] = True
        rest = m["rest"]
        if rest.upper().startswith("R"):
            out["remote"] = True
            if rest[1:]:
                out["dlc"] = int(rest[1:])
        elif rest.startswith("#"):
            out["fd"] = True
            out["data"] = rest[2:]
        else:
            out["data"] = rest
        return out

    @field_validator("id", mode="before")
    @classmethod
    def _hex_id(cls, value: object) -> object:
        return parse_can_id(value)

    @field_validator("data")
    @classmethod
    def _hex_data(cls, value: str) -> str:
        text = re.sub(r"[\s.:]", "", value)
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"data is not hex bytes: {value!r} (e.g. '00 0D AC 00')") from None
        if len(raw) > 64:
            raise ValueError(f"data has {len(raw)} bytes; a CAN FD frame holds at most 64")
        return raw.hex()


class TestInput(BaseModel):
    """What goes into the flow: a recording or frames/events written in the test."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = _STRICT

    file: str | None = Field(
        default=None,
        min_length=1,
        description="A recording (.log .asc .blf .csv .trc .db, or .jsonl events; .gz "
        "variants), relative to the test file.",
    )
    start: WindowStart = 0.0
    end: WindowEnd = None
    ids: list[int] = Field(
        default_factory=list, description="Only frames with these CAN ids (e.g. [0x80, 0x81])."
    )
    types: EventTypes
    frames: list[InlineFrame] | None = Field(
        default=None,
        description="Frames written in the test: candump-style strings like '080#000DAC00' "
        "or mappings {ts, id, data, ...}.",
    )
    events: list[dict[str, Any]] | None = Field(
        default=None,
        description="Event envelopes written in the test: {type, ts, source, payload}; "
        "source defaults to les02, payload to {}, ts to the previous event's + period.",
    )
    period: float = Field(
        default=0.002,
        gt=0,
        description="Seconds between inline frames/events that have no ts.",
    )
    into: list[str] = Field(
        default_factory=list,
        description="Whole-flow tests: the source nodes that get the input (default: every "
        "source with outputs).",
    )

    @field_validator("ids", mode="before")
    @classmethod
    def _hex_ids(cls, value: object) -> object:
        if isinstance(value, list):
            return [parse_can_id(v) for v in value]
        return value

    @field_validator("into", "types", mode="before")
    @classmethod
    def _str_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("events")
    @classmethod
    def _check_events(cls, value: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        for i, ev in enumerate(value or []):
            if not isinstance(ev.get("type"), str) or not ev["type"]:
                raise ValueError(f"event {i}: needs a 'type' (e.g. position_sample)")
            extra = set(ev) - {"proto", "type", "ts", "source", "payload"}
            if extra:
                raise ValueError(
                    f"event {i}: unknown key(s) {sorted(extra)} "
                    "(an event has proto, type, ts, source, payload)"
                )
            ts = ev.get("ts")
            if ts is not None and (isinstance(ts, bool) or not isinstance(ts, int | float)):
                raise ValueError(f"event {i}: ts must be a number, got {ts!r}")
            if not isinstance(ev.get("payload", {}), dict):
                raise ValueError(f"event {i}: payload must be a mapping")
            if not isinstance(ev.get("source", "les02"), str):
                raise ValueError(f"event {i}: source must be a string")
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> TestInput:
        given = [k for k in ("file", "frames", "events") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "input needs exactly one of file, frames, events"
                + (f" (got {', '.join(given)})" if given else "")
            )
        check_window(self.start, self.end)
        return self


class Target(BaseModel):
    """Which part of the flow runs: one node, or the nodes on the paths from A to B."""

    model_config = _STRICT

    node: str | None = Field(default=None, description="Run only this node.")
    from_: str | None = Field(
        default=None,
        alias="from",
        description="The input goes into this node (or replaces it, when it is a source). "
        "Unset = the flow's sources.",
    )
    to: str | None = Field(
        default=None,
        description="The last node of the sub-graph: with 'from', only the nodes on a path "
        "from 'from' to 'to' run. Unset = everything downstream.",
    )

    @model_validator(mode="after")
    def _check(self) -> Target:
        if self.node is not None and (self.from_ is not None or self.to is not None):
            raise ValueError("target: give either node, or from/to, not both")
        if self.node is None and self.from_ is None and self.to is None:
            raise ValueError("target needs node, from or to (leave target out for the whole flow)")
        return self

    @property
    def first(self) -> str | None:
        return self.node if self.node is not None else self.from_

    @property
    def last(self) -> str | None:
        return self.node if self.node is not None else self.to


class FlowTest(BaseModel):
    """One test: an input, a target, overrides, and expectations per node port."""

    model_config = _STRICT

    name: str = Field(min_length=1, description="The test's name (-k selects by it).")
    description: str | None = Field(default=None, description="Free text.")
    input: TestInput = Field(description="What goes into the flow.")
    target: Target | None = Field(
        default=None,
        description="Which part of the flow runs: {node: ID} or {from: ID, to: ID}. Unset = "
        "the whole flow (its sources replaced by the input).",
    )
    set: dict[str, Any] = Field(
        default_factory=dict,
        description="Config overrides like --set: NODE.KEY: value (e.g. rides.min_distance: 50, "
        "recorder.disabled: true).",
    )
    keep: list[str] = Field(
        default_factory=list,
        description="Sinks that really run (e.g. a file_recorder writing a file); every other "
        "sink is replaced by a capture.",
    )
    expect: dict[str, list[Expectation]] = Field(
        description="NODE or NODE.PORT -> expectation(s). NODE alone is the default output "
        "port (out), or for a sink what it received.",
        min_length=1,
    )

    @field_validator("keep", mode="before")
    @classmethod
    def _str_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("expect", mode="before")
    @classmethod
    def _expectation_lists(cls, value: object) -> object:
        """``NODE: {count: 1}`` is ``NODE: [{count: 1}]``."""
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value

    @field_validator("set")
    @classmethod
    def _set_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            parts = str(key).split(".")
            if len(parts) < 2 or not all(parts):
                raise ValueError(f"set: {key!r}: expected NODE.KEY, e.g. rides.min_distance")
        return value

    def expectations(self) -> list[tuple[str, int, Expectation]]:
        """``(key, index in its list, expectation)`` in file order."""
        return [(key, i, e) for key, items in self.expect.items() for i, e in enumerate(items)]


class TestFile(BaseModel):
    """A flow test file: ``flow`` (optional beside NAME.yaml as NAME_test.yaml) and ``tests``."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="les02-flow test file",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema"},
    )

    version: Literal[1] = Field(default=1, description="Always 1.")
    flow: str | None = Field(
        default=None,
        min_length=1,
        description="The flow under test, relative to this file. Unset for NAME_test.yaml = "
        "NAME.yaml beside it.",
    )
    tests: list[FlowTest] = Field(min_length=1, description="The tests, run in this order.")


def tests_schema() -> dict[str, Any]:
    """The JSON Schema of test files (``les02-flow schema --tests``).

    Generated from the models; the short forms their validators accept (``count: 3``, an
    event type as a match, a candump string as a frame, one expectation instead of a list)
    are added, so an editor accepts every file the runner accepts.
    """
    schema = TestFile.model_json_schema(by_alias=True)
    defs = schema["$defs"]
    cond = {"$ref": "#/$defs/Condition"}
    one = {"anyOf": [{"type": "string", "description": "an event type"}, cond]}
    match = {"anyOf": [*one["anyOf"], {"type": "array", "items": one}]}
    strings = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}

    def put(model: str, key: str, new: dict[str, Any], nullable: bool = False) -> None:
        props = defs[model]["properties"]
        old = props[key]
        if nullable:
            new = {"anyOf": [*new.get("anyOf", [new]), {"type": "null"}]}
        props[key] = {
            **{k: v for k, v in old.items() if k in ("description", "default", "title")},
            **new,
        }

    put("Expectation", "type", strings, nullable=True)
    put("Expectation", "where", match)
    put("Expectation", "every", match, nullable=True)
    for key in ("contains", "ordered", "none_of"):
        put("Expectation", key, {"type": "array", "items": match})
    count = {"anyOf": [{"type": "integer", "minimum": 0}, {"$ref": "#/$defs/CountBound"}]}
    put("Expectation", "count", count, nullable=True)
    frame = {
        "anyOf": [
            {"type": "string", "description": "candump style"},
            {"$ref": "#/$defs/InlineFrame"},
        ]
    }
    put("TestInput", "frames", {"type": "array", "items": frame}, nullable=True)
    can_id = {"anyOf": [{"type": "integer", "minimum": 0}, {"type": "string"}]}
    put("TestInput", "ids", {"type": "array", "items": can_id})
    put("InlineFrame", "id", can_id)
    for key in ("into", "types"):
        put("TestInput", key, strings)
    put("FlowTest", "keep", strings)
    exp = {"$ref": "#/$defs/Expectation"}
    put(
        "FlowTest",
        "expect",
        {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": {"anyOf": [exp, {"type": "array", "items": exp}]},
        },
    )
    return schema
