"""Node ``switch``: route each message to named output ports by ordered rules.

The ports are named by the config (one per distinct rule port, plus ``otherwise``), so
``validate`` checks wires to them and the kinds they carry before anything starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from reactivex import Observable, abc

from les02_flow.conditions import Condition, all_of, conditions_kind
from les02_flow.node import Kind, Node, NodeConfig, split_stream

__all__ = ["OTHERWISE", "Rule", "Switch", "SwitchConfig", "router"]

OTHERWISE = "otherwise"
_PORT = re.compile(r"^[a-z][a-z0-9_]*$")


class Rule(BaseModel):
    """One rule: messages matching every condition of ``when`` go to ``port``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    port: str = Field(description="Output port name (snake_case); rules may share a port.")
    when: list[Condition] = Field(
        min_length=1, description="Conditions that must all match ({field, op, value})."
    )

    @field_validator("port")
    @classmethod
    def _check_port(cls, v: str) -> str:
        if not _PORT.match(v):
            raise ValueError(f"port name {v!r} must be snake_case (a-z, 0-9, _)")
        if v == OTHERWISE:
            raise ValueError("'otherwise' is the port for messages no rule matches; name rules")
        return v


class SwitchConfig(NodeConfig):
    """Config of ``switch``."""

    rules: list[Rule] = Field(
        min_length=1, description="Ordered rules: {port: NAME, when: [conditions]}."
    )
    mode: Literal["first", "all"] = Field(
        default="first",
        description=(
            "first: a message goes to the port of the first rule it matches; all: to the port "
            "of every rule it matches (once per port)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> SwitchConfig:
        conditions_kind([c for r in self.rules for c in r.when])
        return self

    @property
    def ports(self) -> tuple[str, ...]:
        """Rule ports in first-use order, then ``otherwise``."""
        return (*dict.fromkeys(r.port for r in self.rules), OTHERWISE)


def router(config: SwitchConfig) -> Callable[[Any], tuple[str, ...]]:
    """The pure routing function: message -> the ports it goes to (in rule order).

    >>> cfg = SwitchConfig(rules=[
    ...     Rule(port="rides", when=[Condition(field="type", op="regex", value="^ride_")]),
    ...     Rule(port="diag", when=[Condition(field="type", op="in", value=["status", "error"])]),
    ... ])
    >>> route = router(cfg)
    >>> route({"type": "ride_end"}), route({"type": "error"}), route({"type": "position_sample"})
    (('rides',), ('diag',), ('otherwise',))
    """
    rules = [(r.port, all_of(r.when)) for r in config.rules]
    otherwise = (OTHERWISE,)
    if config.mode == "first":
        single = {port: (port,) for port, _ in rules}
        pairs = [(single[port], match) for port, match in rules]

        def first(m: Any) -> tuple[str, ...]:
            for ports, match in pairs:
                if match(m):
                    return ports
            return otherwise

        return first

    def every(m: Any) -> tuple[str, ...]:
        hit = tuple(dict.fromkeys(port for port, match in rules if match(m)))
        return hit or otherwise

    return every


class Switch(Node[SwitchConfig]):
    """Route messages to named ports by ordered rules; unmatched ones go to 'otherwise'.

    ``rules`` is an ordered list of ``{port: NAME, when: [conditions]}`` (docs/flows.md
    "Conditions"); every distinct ``port`` becomes an output port, plus ``otherwise``.
    ``mode: first`` (default) sends a message to the first matching rule's port; ``mode: all``
    to every matching rule's port (fan-out of the same message, once per port). Ports carry
    what the switch receives, unchanged; wires to a port no rule names are validation errors.

    Time: none involved; live and replay give the same output. Costs about 1 µs per message.
    """

    type_name: ClassVar[str] = "switch"
    config_model: ClassVar[type[NodeConfig]] = SwitchConfig
    input_kind: ClassVar[Kind | None] = Kind.ANY
    #: every switch has 'otherwise'; the other ports come from its rules (ports_for)
    output_ports: ClassVar[Mapping[str, Kind]] = {OTHERWISE: Kind.ANY}
    examples: ClassVar[tuple[str, ...]] = (
        "route:\n  type: switch\n  rules:\n"
        "    - port: rides\n"
        "      when: [{field: type, op: in, value: [ride_start, ride_end]}]\n"
        "    - port: diagnostics\n"
        "      when: [{field: type, op: in, value: [status, error, system]}]\n"
        "  wires: {rides: [ws], diagnostics: [log], otherwise: []}\n",
        "by_channel:\n  type: switch\n  mode: all\n  rules:\n"
        "    - {port: master, when: [{field: arbitration_id, op: in, value: [0x80, 0x30]}]}\n"
        "    - {port: position, when: [{field: dlc, op: eq, value: 4}]}\n",
    )

    @classmethod
    def ports_for(cls, config: NodeConfig) -> Mapping[str, Kind]:
        assert isinstance(config, SwitchConfig)
        return dict.fromkeys(config.ports, Kind.ANY)

    @classmethod
    def input_kind_for(cls, config: NodeConfig) -> Kind | None:
        assert isinstance(config, SwitchConfig)
        kind = conditions_kind([c for r in config.rules for c in r.when])
        return Kind(kind) if kind else Kind.ANY

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input")
        route = router(self.config)
        report = self.report_error

        def subscribe(
            observer: abc.ObserverBase[tuple[str, Any]],
            scheduler: abc.SchedulerBase | None = None,
        ) -> abc.DisposableBase:
            emit = observer.on_next

            def on_next(m: Any) -> None:
                try:
                    ports = route(m)
                except Exception as exc:  # conditions never raise; keep the stream anyway
                    report(m, exc)
                    return
                for port in ports:
                    emit((port, m))

            return source.subscribe(
                on_next, observer.on_error, observer.on_completed, scheduler=scheduler
            )

        return split_stream(Observable(subscribe), self.config.ports)
