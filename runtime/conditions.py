"""The one condition model of flows (declarative only: no code in flow files).

``filter`` and ``switch`` nodes and flow-test expectations all say *which messages* with the
same small piece of data: a **field path**, an **operator** and a **value**. Nothing is ever
evaluated as code; a condition is validated when the flow (or test file) is compiled, so a bad
path, a regex that does not compile or a value of the wrong shape is a ``FILE:LINE:COL`` error
before anything runs (the compiler maps pydantic error locations to the YAML position).

In a flow::

    when:
      - {field: type, op: eq, value: position_sample}
      - {field: payload.channel, op: in, value: [master]}
      - {field: payload.position_raw, op: range, value: [0, 100000]}

A list of conditions matches when **all** of them match (an empty list matches everything).

Field paths
-----------
*Events* (envelopes, ``docs/protocol.md``): ``proto``, ``type``, ``ts``, ``source``,
``payload`` and ``payload.NAME[.NAME...]``; ``[N]`` indexes a list (``payload.items[0]``).

*Frames* (``can.Message``): ``arbitration_id``, ``is_extended_id``, ``is_fd``,
``is_remote_frame``, ``is_error_frame``, ``bitrate_switch``, ``error_state_indicator``,
``is_rx``, ``dlc``, ``timestamp``, ``channel``, ``data`` (the payload bytes as lowercase hex,
e.g. ``"0001"``) and ``data[N]`` (byte N as an int).

Any other root is an "unknown field" error with the closest name. A path whose value is absent
in a message (no such payload key, index past the end, a frame given to an event path) makes
the condition **not match**, whatever the operator (``ne`` included); ``exists`` tests presence.

Operators
---------
==========  =====================================================================
``eq``      equal (``1 == 1.0``); value: a scalar (string, number, bool, null)
``ne``      present and not equal; value: a scalar
``in``      equal to one of; value: a non-empty list of scalars
``lt``..    ``lt``, ``le``, ``gt``, ``ge``: numeric comparison; value: a number.
            A non-numeric field value does not match.
``range``   ``lo <= x <= hi`` (both ends included); value: ``[lo, hi]``, numbers, lo <= hi
``regex``   ``re.search`` on a string field value (anchor with ``^``/``$``); value: a
            pattern that compiles. A non-string field value does not match.
``exists``  the path resolves (value ``true``) or does not (``false``)
==========  =====================================================================

Use from Python
---------------
>>> c = Condition(field="payload.channel", op="eq", value="master")
>>> event = {"proto": 1, "type": "position_sample", "ts": 1.0, "source": "les02",
...          "payload": {"channel": "master", "position_raw": 144}}
>>> match = c.compile()
>>> match(event)
True
>>> c.resolve(event)
'master'
>>> all_of([{"field": "type", "op": "eq", "value": "status"}])(event)
False
>>> import can
>>> frame = can.Message(arbitration_id=0x81, data=bytes([0, 1, 2, 3]), is_extended_id=False)
>>> Condition(field="data[1]", op="ge", value=1).compile()(frame)
True
>>> Condition(field="data", op="regex", value="^0001").compile()(frame)
True
>>> Condition(field="payload.channel", op="eq", value="master").compile()(frame)  # absent
False
>>> Condition(field="typ", op="eq", value="status")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for Condition
field
  Value error, unknown field 'typ' (did you mean 'type'?); ...
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

__all__ = [
    "EVENT_FIELDS",
    "FRAME_FIELDS",
    "MISSING",
    "OPERATORS",
    "Condition",
    "FieldPath",
    "Predicate",
    "all_of",
    "conditions_kind",
    "parse_path",
    "path_kind",
]

Predicate = Callable[[Any], bool]

Op = Literal["eq", "ne", "in", "lt", "le", "gt", "ge", "range", "regex", "exists"]
OPERATORS: tuple[str, ...] = ("eq", "ne", "in", "lt", "le", "gt", "ge", "range", "regex", "exists")

#: top-level fields of an event envelope; only ``payload`` has sub-fields
EVENT_FIELDS: tuple[str, ...] = ("proto", "type", "ts", "source", "payload")
#: attributes of a ``can.Message`` a condition may read; only ``data`` takes an index
FRAME_FIELDS: tuple[str, ...] = (
    "arbitration_id",
    "is_extended_id",
    "is_fd",
    "is_remote_frame",
    "is_error_frame",
    "bitrate_switch",
    "error_state_indicator",
    "is_rx",
    "dlc",
    "timestamp",
    "channel",
    "data",
)


class _Missing:
    """The value of a path that does not resolve (never equal to anything)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")

Step = str | int


def parse_path(text: str) -> tuple[Step, ...]:
    """Split a field path into steps: names (str) and list indexes (int).

    >>> parse_path("payload.signals.Speed")
    ('payload', 'signals', 'Speed')
    >>> parse_path("data[0]")
    ('data', 0)
    >>> parse_path("payload..x")
    Traceback (most recent call last):
    ...
    ValueError: bad field path 'payload..x': expected NAME or NAME[INDEX] between dots
    """
    if not isinstance(text, str) or not text:
        raise ValueError("a field path must be a non-empty string such as 'payload.channel'")
    steps: list[Step] = []
    for part in text.split("."):
        m = _SEGMENT.fullmatch(part)
        if m is None:
            raise ValueError(f"bad field path {text!r}: expected NAME or NAME[INDEX] between dots")
        steps.append(m.group(1))
        steps.extend(int(i) for i in _INDEX.findall(m.group(2)))
    return tuple(steps)


def path_kind(steps: Sequence[Step]) -> Literal["frame", "event"]:
    """Whether a parsed path reads events or frames; raises ``ValueError`` for a path that
    fits neither (with the closest known name).

    >>> path_kind(("payload", "channel")), path_kind(("data", 3))
    ('event', 'frame')
    """
    root = steps[0]
    rest = steps[1:]
    if root in EVENT_FIELDS:
        if rest and root != "payload":
            raise ValueError(f"event field '{root}' has no sub-fields (only 'payload' has)")
        if rest and not isinstance(rest[0], str):
            raise ValueError("'payload' is a mapping: write payload.NAME, not payload[N]")
        return "event"
    if root in FRAME_FIELDS:
        if rest and (root != "data" or len(rest) != 1 or not isinstance(rest[0], int)):
            raise ValueError(f"frame field '{root}' has no sub-fields (only data[N] is indexed)")
        if rest and isinstance(rest[0], int) and rest[0] > 63:
            raise ValueError(f"data[{rest[0]}] is past the end of any CAN frame (64 bytes)")
        return "frame"
    known = [*EVENT_FIELDS, *FRAME_FIELDS]
    close = difflib.get_close_matches(str(root), known, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise ValueError(
        f"unknown field '{root}'{hint}; event fields: {', '.join(EVENT_FIELDS)} "
        f"(payload.NAME...); frame fields: {', '.join(FRAME_FIELDS)} (data[N])"
    )


class FieldPath:
    """A compiled field path: ``get(message)`` returns the value or :data:`MISSING`.

    >>> FieldPath("payload.items[1]").get({"payload": {"items": [5, 6]}})
    6
    >>> FieldPath("payload.x").get({"payload": {}})
    MISSING
    """

    __slots__ = ("get", "kind", "steps", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.steps = parse_path(text)
        self.kind = path_kind(self.steps)
        self.get: Callable[[Any], Any] = (
            _frame_getter(self.steps) if self.kind == "frame" else _event_getter(self.steps)
        )

    def __repr__(self) -> str:
        return f"FieldPath({self.text!r})"


def _event_getter(steps: tuple[Step, ...]) -> Callable[[Any], Any]:
    # Specialised closures for the common depths keep a lookup well under a microsecond.
    if len(steps) == 1:
        (a,) = steps

        def get1(m: Any) -> Any:
            try:
                return m[a]
            except (KeyError, TypeError, IndexError):
                return MISSING

        return get1
    if len(steps) == 2:
        a, b = steps

        def get2(m: Any) -> Any:
            try:
                v = m[a][b]
            except (KeyError, TypeError, IndexError):
                return MISSING
            return v

        return get2

    def getn(m: Any) -> Any:
        v = m
        try:
            for s in steps:
                if isinstance(s, int) and not isinstance(v, list):
                    return MISSING
                v = v[s]
        except (KeyError, TypeError, IndexError):
            return MISSING
        return v

    return getn


def _frame_getter(steps: tuple[Step, ...]) -> Callable[[Any], Any]:
    name = str(steps[0])
    if name == "data" and len(steps) == 2:
        index = int(steps[1])

        def get_byte(m: Any) -> Any:
            try:
                data = m.data
                if index >= len(data):
                    return MISSING
                return data[index]
            except (AttributeError, TypeError):
                return MISSING

        return get_byte
    if name == "data":

        def get_hex(m: Any) -> Any:
            try:
                return bytes(m.data).hex()
            except (AttributeError, TypeError, ValueError):
                return MISSING

        return get_hex

    def get_attr(m: Any) -> Any:
        return getattr(m, name, MISSING)

    return get_attr


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Condition(BaseModel):
    """One condition: ``{field: PATH, op: OP, value: VALUE}`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: str = Field(
        description=(
            "Field path: type, source, ts, payload.NAME... for events; arbitration_id, "
            "is_extended_id, is_fd, dlc, data, data[N], ... for frames."
        )
    )
    op: Op = Field(default="eq", description="Operator: " + ", ".join(OPERATORS) + ".")
    value: Any = Field(
        default=None,
        description=(
            "What to compare with: a scalar (eq, ne), a list (in), a number (lt, le, gt, ge), "
            "[lo, hi] (range), a pattern (regex), true/false (exists)."
        ),
    )

    @field_validator("field")
    @classmethod
    def _check_field(cls, v: str) -> str:
        path_kind(parse_path(v))
        return v

    @field_validator("value")
    @classmethod
    def _check_value(cls, v: Any, info: ValidationInfo) -> Any:
        op = info.data.get("op")
        if op is None:  # the op itself was invalid: reported there
            return v
        if op in ("eq", "ne"):
            if not _is_scalar(v):
                raise ValueError(f"'{op}' needs a single value (string, number, bool or null)")
        elif op == "in":
            if not isinstance(v, list) or not v or not all(_is_scalar(x) for x in v):
                raise ValueError("'in' needs a non-empty list of values, e.g. [master, slave]")
        elif op in ("lt", "le", "gt", "ge"):
            if not _is_number(v):
                raise ValueError(f"'{op}' needs a finite number, got {v!r}")
        elif op == "range":
            if not (isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v)):
                raise ValueError("'range' needs [lo, hi]: two finite numbers")
            if v[0] > v[1]:
                raise ValueError(f"'range' needs lo <= hi, got [{v[0]}, {v[1]}]")
        elif op == "regex":
            if not isinstance(v, str):
                raise ValueError("'regex' needs a pattern string")
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"regex {v!r} does not compile: {exc}") from None
        elif op == "exists" and not isinstance(v, bool):
            raise ValueError("'exists' needs true or false")
        return v

    @property
    def kind(self) -> Literal["frame", "event"]:
        """``"frame"`` or ``"event"``: what kind of message the field path reads."""
        return path_kind(parse_path(self.field))

    def resolve(self, message: Any) -> Any:
        """The value the field path reads from ``message`` (or :data:`MISSING`)."""
        return FieldPath(self.field).get(message)

    def describe(self) -> str:
        """A short human form, e.g. ``payload.channel eq 'master'``."""
        return f"{self.field} {self.op} {self.value!r}"

    def compile(self) -> Predicate:
        """A fast predicate ``message -> bool`` (never raises)."""
        return _compile(FieldPath(self.field).get, self.op, self.value)


def _compile(get: Callable[[Any], Any], op: str, value: Any) -> Predicate:
    missing = MISSING
    if op == "eq":
        if value is None:
            return lambda m: get(m) is None
        return lambda m: get(m) == value
    if op == "ne":

        def ne(m: Any) -> bool:
            x = get(m)
            return x is not missing and x != value

        return ne
    if op == "in":
        try:
            options: frozenset[Any] | tuple[Any, ...] = frozenset(value)
        except TypeError:
            options = tuple(value)

        def in_(m: Any) -> bool:
            try:
                return get(m) in options
            except TypeError:  # an unhashable field value
                return False

        return in_
    if op == "exists":
        if value:
            return lambda m: get(m) is not missing
        return lambda m: get(m) is missing
    if op == "regex":
        search = re.compile(value).search

        def regex(m: Any) -> bool:
            x = get(m)
            return type(x) is str and search(x) is not None

        return regex
    if op == "range":
        lo, hi = value
        return _numeric(get, lambda x: lo <= x <= hi)
    bound = value
    if op == "lt":
        return _numeric(get, lambda x: x < bound)
    if op == "le":
        return _numeric(get, lambda x: x <= bound)
    if op == "gt":
        return _numeric(get, lambda x: x > bound)
    if op == "ge":
        return _numeric(get, lambda x: x >= bound)
    raise ValueError(f"unknown operator {op!r}")  # pragma: no cover - Literal-checked


def _numeric(get: Callable[[Any], Any], test: Callable[[Any], bool]) -> Predicate:
    def numeric(m: Any) -> bool:
        x = get(m)
        t = type(x)
        return (t is int or t is float) and test(x)

    return numeric


def all_of(conditions: Iterable[Condition | Mapping[str, Any]]) -> Predicate:
    """One predicate that is true when every condition is (an empty list is always true).

    Accepts :class:`Condition` instances or their mappings (validated here).

    >>> p = all_of([Condition(field="type", value="status"),
    ...             {"field": "payload.channel", "op": "ne", "value": "slave"}])
    >>> p({"type": "status", "payload": {"channel": "master"}})
    True
    >>> p({"type": "status", "payload": {}})
    False
    >>> all_of([])(object())
    True
    """
    preds = [
        (c if isinstance(c, Condition) else Condition.model_validate(c)).compile()
        for c in conditions
    ]
    if not preds:
        return lambda m: True
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        p, q = preds
        return lambda m: p(m) and q(m)
    return lambda m: all(p(m) for p in preds)


def conditions_kind(conditions: Iterable[Condition]) -> Literal["frame", "event"] | None:
    """``"frame"`` / ``"event"`` when every condition reads that kind, ``None`` for an empty
    list; raises ``ValueError`` when frame and event fields are mixed.

    >>> conditions_kind([Condition(field="dlc", op="eq", value=8)])
    'frame'
    """
    kinds = {c.kind for c in conditions}
    if len(kinds) > 1:
        raise ValueError(
            "conditions mix frame fields and event fields; a message is either a frame or an event"
        )
    return next(iter(kinds)) if kinds else None
