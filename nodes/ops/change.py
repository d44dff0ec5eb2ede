"""Node ``change``: set, rename, delete and scale payload fields; set the type or source.

The edit is pure (:func:`compile_rules` returns ``event -> new event``); the input event is
never modified (other wires may share it): the node emits a copy.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from les02_flow.conditions import parse_path
from les02_flow.node import Kind, Node, NodeConfig

__all__ = ["Change", "ChangeConfig", "ChangeRule", "compile_rules"]

_ACTIONS = ("set", "rename", "delete", "scale")
_EXTRAS: dict[str, frozenset[str]] = {
    "set": frozenset({"value"}),
    "rename": frozenset({"to"}),
    "delete": frozenset(),
    "scale": frozenset({"factor", "offset", "digits", "to"}),
}


def _payload_steps(text: str, what: str) -> tuple[str, ...]:
    steps = parse_path(text)
    if steps[0] != "payload" or len(steps) < 2:
        raise ValueError(
            f"{what} must be a payload field such as payload.position_raw, got {text!r}"
        )
    if not all(isinstance(s, str) for s in steps):
        raise ValueError(f"{what}: list indexes are not supported here ({text!r})")
    return tuple(str(s) for s in steps[1:])


class ChangeRule(BaseModel):
    """One edit. Exactly one of ``set``, ``rename``, ``delete``, ``scale`` names the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    set: str | None = Field(
        default=None, description="Set this field (payload.NAME..., type or source) to 'value'."
    )
    rename: str | None = Field(default=None, description="Move this payload field to 'to'.")
    delete: str | None = Field(default=None, description="Remove this payload field.")
    scale: str | None = Field(
        default=None,
        description=(
            "Replace this numeric payload field x by x * factor + offset (or write it to 'to')."
        ),
    )
    value: Any = Field(default=None, description="set: the new value (any YAML value).")
    to: str | None = Field(default=None, description="rename/scale: the target payload field.")
    factor: float = Field(default=1.0, allow_inf_nan=False, description="scale: multiplier.")
    offset: float = Field(default=0.0, allow_inf_nan=False, description="scale: added after.")
    digits: int | None = Field(
        default=None, ge=0, le=15, description="scale: round the result to this many decimals."
    )

    @model_validator(mode="after")
    def _check(self) -> ChangeRule:
        given = [a for a in _ACTIONS if getattr(self, a) is not None]
        if len(given) != 1:
            raise ValueError(
                "a change rule needs exactly one of set, rename, delete, scale "
                f"(got {', '.join(given) or 'none'})"
            )
        action = given[0]
        extras = {k for k in self.model_fields_set if k not in _ACTIONS}
        wrong = extras - _EXTRAS[action]
        if wrong:
            raise ValueError(f"'{action}' does not take {', '.join(sorted(wrong))}")
        target = str(getattr(self, action))
        if action == "set" and target in ("type", "source"):
            if not isinstance(self.value, str) or not self.value:
                raise ValueError(f"set {target}: the value must be a non-empty string")
        elif action == "set" and target in ("proto", "ts"):
            raise ValueError(f"'{target}' cannot be changed (it describes the envelope and time)")
        else:
            _payload_steps(target, action)
        if action == "rename" and self.to is None:
            raise ValueError("'rename' needs 'to' (the new payload field)")
        if self.to is not None:
            _payload_steps(self.to, "to")
        if action == "set" and "value" not in self.model_fields_set:
            raise ValueError("'set' needs 'value'")
        return self

    @property
    def action(self) -> str:
        return next(a for a in _ACTIONS if getattr(self, a) is not None)


_ABSENT = object()


def _read(payload: Any, steps: tuple[str, ...]) -> Any:
    v = payload
    for s in steps:
        if not isinstance(v, dict) or s not in v:
            return _ABSENT
        v = v[s]
    return v


def _write(payload: dict[str, Any], steps: tuple[str, ...], value: Any) -> None:
    """Write into ``payload`` (already a copy), copying nested mappings on the way."""
    d = payload
    for s in steps[:-1]:
        nxt = d.get(s)
        nxt = dict(nxt) if isinstance(nxt, dict) else {}
        d[s] = nxt
        d = nxt
    d[steps[-1]] = value


def _remove(payload: dict[str, Any], steps: tuple[str, ...]) -> bool:
    if _read(payload, steps) is _ABSENT:
        return False
    d = payload
    for s in steps[:-1]:
        nxt = dict(d[s])
        d[s] = nxt
        d = nxt
    del d[steps[-1]]
    return True


Edit = Callable[[dict[str, Any], dict[str, Any]], bool]


def _compile_rule(rule: ChangeRule) -> Edit:
    """``edit(envelope, payload) -> changed``; both are the node's own copies."""
    action = rule.action
    if action == "set":
        target = str(rule.set)
        value = rule.value
        if target in ("type", "source"):

            def set_envelope(env: dict[str, Any], payload: dict[str, Any]) -> bool:
                env[target] = value
                return True

            return set_envelope
        steps = _payload_steps(target, "set")
        mutable = isinstance(value, (dict, list))
        if len(steps) == 1 and not mutable:
            name = steps[0]

            def set_top(env: dict[str, Any], payload: dict[str, Any]) -> bool:
                payload[name] = value
                return True

            return set_top

        def set_field(env: dict[str, Any], payload: dict[str, Any]) -> bool:
            _write(payload, steps, copy.deepcopy(value) if mutable else value)
            return True

        return set_field
    if action == "rename":
        src = _payload_steps(str(rule.rename), "rename")
        dst = _payload_steps(str(rule.to), "to")

        def rename(env: dict[str, Any], payload: dict[str, Any]) -> bool:
            v = _read(payload, src)
            if v is _ABSENT:
                return False
            _remove(payload, src)
            _write(payload, dst, v)
            return True

        return rename
    if action == "delete":
        steps = _payload_steps(str(rule.delete), "delete")
        if len(steps) == 1:
            name = steps[0]
            return lambda env, payload: payload.pop(name, _ABSENT) is not _ABSENT
        return lambda env, payload: _remove(payload, steps)
    src = _payload_steps(str(rule.scale), "scale")
    dst = _payload_steps(rule.to, "to") if rule.to else src
    factor, offset, digits = rule.factor, rule.offset, rule.digits
    if len(src) == 1 and len(dst) == 1:
        s0, d0 = src[0], dst[0]

        def scale_top(env: dict[str, Any], payload: dict[str, Any]) -> bool:
            x = payload.get(s0)
            if type(x) is not int and type(x) is not float:
                return False
            y = x * factor + offset
            if not math.isfinite(y):
                return False
            payload[d0] = round(y, digits) if digits is not None else y
            return True

        return scale_top

    def scale(env: dict[str, Any], payload: dict[str, Any]) -> bool:
        x = _read(payload, src)
        if type(x) is not int and type(x) is not float:
            return False
        y = x * factor + offset
        if not math.isfinite(y):
            return False
        _write(payload, dst, round(y, digits) if digits is not None else y)
        return True

    return scale


def compile_rules(
    rules: list[ChangeRule],
) -> Callable[[dict[str, Any]], tuple[dict[str, Any], int]]:
    """``event -> (new event, rules that did nothing)``, rules applied in order.

    >>> edit = compile_rules([ChangeRule(scale="payload.position_raw", factor=0.001,
    ...                                  to="payload.position_m"),
    ...                       ChangeRule(delete="payload.position_raw"),
    ...                       ChangeRule(set="type", value="position")])
    >>> event = {"proto": 1, "type": "position_sample", "ts": 1.0, "source": "les02",
    ...          "payload": {"channel": "master", "position_raw": 1500}}
    >>> new, skipped = edit(event)
    >>> new["type"], new["payload"], skipped
    ('position', {'channel': 'master', 'position_m': 1.5}, 0)
    >>> event["payload"]["position_raw"]  # the input is not modified
    1500
    """
    edits = [_compile_rule(r) for r in rules]

    def apply(event: dict[str, Any]) -> tuple[dict[str, Any], int]:
        env = dict(event)
        payload = event.get("payload")
        payload = dict(payload) if isinstance(payload, dict) else {}
        env["payload"] = payload
        skipped = 0
        for edit in edits:
            if not edit(env, payload):
                skipped += 1
        return env, skipped

    return apply


class ChangeConfig(NodeConfig):
    """Config of ``change``."""

    rules: list[ChangeRule] = Field(
        min_length=1,
        description=(
            "Edits in order: {set: FIELD, value: V}, {rename: FIELD, to: FIELD}, {delete: FIELD}, "
            "{scale: FIELD, factor: F, offset: O, digits: D, to: FIELD}; FIELD is payload.NAME..."
            " (set also takes type and source)."
        ),
    )


class Change(Node[ChangeConfig]):
    """Edit events: set/rename/delete/scale payload fields, set the event type or source.

    Rules apply in order to a copy of each event (the input, which other wires may share, is
    never modified). A rule that finds nothing to do (renaming or deleting an absent field,
    scaling a value that is absent or not a number) changes nothing and is counted in
    ``skipped_rules``; the event goes on with the other rules applied. ``set`` creates
    missing parent mappings; ``proto`` and ``ts`` cannot be changed. Events only: wiring
    frames into it is a validation error.

    Time: none involved; live and replay give the same output. Costs about 1-2 µs per event.
    """

    type_name: ClassVar[str] = "change"
    config_model: ClassVar[type[NodeConfig]] = ChangeConfig
    input_kind: ClassVar[Kind | None] = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}
    examples: ClassVar[tuple[str, ...]] = (
        "metres:\n  type: change\n  rules:\n"
        "    - {scale: payload.position_raw, factor: 0.001, digits: 3, to: payload.position_m}\n"
        "    - {delete: payload.position_raw}\n"
        "    - {set: payload.site, value: shaft-a}\n",
        "rename:\n  type: change\n  rules:\n"
        "    - {rename: payload.channel, to: payload.ch}\n"
        "    - {set: source, value: lift-2}\n",
    )

    def build(self, source: Any) -> Mapping[str, Any]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input")
        apply = compile_rules(self.config.rules)
        counters = self.counters

        def edit(event: Any) -> Any:
            if type(event) is not dict:
                raise TypeError("change takes event envelopes (dicts)")
            new, skipped = apply(event)
            if skipped:
                counters.bump("skipped_rules", skipped)
            return new

        return {"out": source.pipe(self.each(edit))}
