"""Node ``deadband`` (Node-RED's rbe): pass a message only when a field changed enough.

The state is pure (:class:`Deadband`); the node only wraps it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from les02_flow.conditions import MISSING, FieldPath
from les02_flow.node import Kind, Node, NodeConfig

from .common import key_function, validate_paths

__all__ = ["Deadband", "DeadbandConfig", "DeadbandNode"]


class Deadband:
    """Per-key last passed value; ``admit(message)`` says whether the message passes.

    With ``band > 0`` a numeric value passes when it differs from the last *passed* value of
    its key by more than ``band`` (``>= band`` when ``inclusive``); with ``band == 0`` any
    change passes (strings too). The first value of a key always passes.

    >>> d = Deadband(FieldPath("payload.v").get, lambda m: (), band=5)
    >>> [d.admit({"payload": {"v": v}}) for v in (0, 3, 6, 8, 12, 11.5)]
    [True, False, True, False, True, False]
    """

    def __init__(
        self,
        get: Callable[[Any], Any],
        key: Callable[[Any], Any],
        band: float,
        *,
        inclusive: bool = False,
        on_missing: Literal["pass", "drop"] = "pass",
    ) -> None:
        self.get = get
        self.key = key
        self.band = band
        self.inclusive = inclusive
        self.pass_missing = on_missing == "pass"
        self.last: dict[Any, Any] = {}
        self.missing = 0

    def admit(self, message: Any) -> bool:
        x = self.get(message)
        numeric = type(x) is int or type(x) is float
        if x is MISSING or (self.band > 0 and not numeric):
            self.missing += 1
            return self.pass_missing
        k = self.key(message)
        last = self.last.get(k, MISSING)
        if last is MISSING:
            self.last[k] = x
            return True
        if self.band == 0:
            changed = x != last
        else:
            delta = abs(x - last)
            changed = delta >= self.band if self.inclusive else delta > self.band
        if changed:
            self.last[k] = x
        return bool(changed)


class DeadbandConfig(NodeConfig):
    """Config of ``deadband``."""

    field: str = Field(
        description="The field to watch, e.g. payload.position_raw (or a frame field, data[0])."
    )
    deadband: float = Field(
        default=0.0,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Pass when the value moved by more than this from the last passed value of its key; "
            "0 = pass on any change (report by exception)."
        ),
    )
    inclusive: bool = Field(
        default=False, description="Pass when the change is >= deadband (instead of >)."
    )
    key: list[str] = Field(
        default_factory=list,
        description="Field paths whose values key the state (e.g. [payload.channel]); [] = one.",
    )
    missing: Literal["pass", "drop"] = Field(
        default="pass",
        description=(
            "Messages without the field (or, with deadband > 0, with a non-numeric value): "
            "pass them on unchanged, or drop them (counted in 'no_value')."
        ),
    )

    @field_validator("field")
    @classmethod
    def _check_field(cls, v: str) -> str:
        FieldPath(v)
        return v

    @field_validator("key")
    @classmethod
    def _check_key(cls, v: list[str]) -> list[str]:
        return validate_paths(v)

    @model_validator(mode="after")
    def _check_kinds(self) -> DeadbandConfig:
        kinds = {FieldPath(p).kind for p in [self.field, *self.key]}
        if len(kinds) > 1:
            raise ValueError("'field' and 'key' mix frame fields and event fields")
        return self


class DeadbandNode(Node[DeadbandConfig]):
    """Pass a message only when a field changed by more than N since the last one passed.

    Node-RED's rbe/deadband: ``field`` is watched per ``key`` (e.g. ``[payload.channel]``,
    so master and slave are compared with themselves). ``deadband: 0`` passes every change
    (and drops repeats of the same value, strings too); ``deadband: N`` passes numbers that
    moved more than N from the last passed value (``inclusive: true``: at least N). The first
    message of each key passes. Messages without the field pass (``missing: drop`` drops
    them); both are counted in ``no_value``. The port carries what the node receives.

    Time: none involved; live and replay give the same output. Costs about 1 µs per message.
    """

    type_name: ClassVar[str] = "deadband"
    config_model: ClassVar[type[NodeConfig]] = DeadbandConfig
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.ANY}
    examples: ClassVar[tuple[str, ...]] = (
        "moved:\n  type: deadband\n  field: payload.position_raw\n  deadband: 100\n"
        "  key: [payload.channel]\n",
        "changes:\n  type: deadband\n  field: data\n  key: [arbitration_id]\n",
    )

    @classmethod
    def input_kind_for(cls, config: NodeConfig) -> Kind | None:
        assert isinstance(config, DeadbandConfig)
        kinds = {FieldPath(p).kind for p in [config.field, *config.key]}
        return Kind(kinds.pop()) if len(kinds) == 1 else Kind.ANY

    def build(self, source: Any) -> Mapping[str, Any]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input")
        c = self.config
        state = Deadband(
            FieldPath(c.field).get,
            key_function(c.key),
            c.deadband,
            inclusive=c.inclusive,
            on_missing=c.missing,
        )
        self.state = state
        admit = state.admit
        counters = self.counters

        def step(m: Any) -> Any:
            before = state.missing
            ok = admit(m)
            if state.missing != before:
                counters.bump("no_value")
            if ok:
                return m
            counters.dropped += 1
            return None

        return {"out": source.pipe(self.each(step))}
