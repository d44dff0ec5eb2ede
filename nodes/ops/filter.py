"""Node ``filter``: pass the messages that match, send the rest to ``rejected``.

The matching is pure (:func:`frame_predicate`, :func:`les02_flow.conditions.all_of`); the node
only routes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from reactivex import Observable

from les02_flow.conditions import Condition, all_of, conditions_kind
from les02_flow.node import Kind, Node, NodeConfig

__all__ = ["Filter", "FilterConfig", "IdMask", "frame_predicate"]

_PORTS = ("out", "rejected")
_MAX_ID = 0x1FFFFFFF


class IdMask(BaseModel):
    """An id/mask pair: a frame matches when ``arbitration_id & mask == id & mask``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: int = Field(ge=0, le=_MAX_ID, description="The id bits to compare.")
    mask: int = Field(ge=0, le=_MAX_ID, description="Which bits of the id are compared.")


class FilterConfig(NodeConfig):
    """Config of ``filter``."""

    ids: list[int] = Field(
        default_factory=list,
        description="Frames: pass these CAN ids (e.g. [0x80, 0x81]).",
    )
    id_range: tuple[int, int] | None = Field(
        default=None,
        description="Frames: pass ids in [lo, hi], both included (e.g. [0x100, 0x1FF]).",
    )
    masks: list[IdMask] = Field(
        default_factory=list,
        description=(
            "Frames: pass ids matching one of these {id, mask} pairs "
            "(id & mask == arbitration_id & mask), as SocketCAN filters do."
        ),
    )
    extended: bool | None = Field(
        default=None,
        description="Frames: only extended (29-bit) ids when true, only 11-bit ids when false.",
    )
    fd: bool | None = Field(
        default=None, description="Frames: only CAN FD frames when true, only classic when false."
    )
    types: list[str] = Field(
        default_factory=list,
        description="Events: pass these event types (e.g. [position_sample]).",
    )
    when: list[Condition] = Field(
        default_factory=list,
        description=(
            "Conditions that must all match ({field, op, value}; docs/flows.md 'Conditions'); "
            "event or frame fields."
        ),
    )
    invert: bool = Field(
        default=False,
        description="Swap the ports: matching messages go to 'rejected', the others to 'out'.",
    )

    @model_validator(mode="after")
    def _check(self) -> FilterConfig:
        kind = conditions_kind(self.when)
        frame_keys = [
            k
            for k, v in (
                ("ids", self.ids),
                ("id_range", self.id_range),
                ("masks", self.masks),
                ("extended", self.extended),
                ("fd", self.fd),
            )
            if v not in (None, [])
        ]
        if frame_keys and (self.types or kind == "event"):
            raise ValueError(
                f"{', '.join(frame_keys)} select frames but 'types'/'when' select events: "
                "a message is either a frame or an event (use two filters)"
            )
        if self.types and kind == "frame":
            raise ValueError("'types' selects events but 'when' reads frame fields")
        if not (frame_keys or self.types or self.when):
            raise ValueError(
                "a filter needs at least one of ids, id_range, masks, extended, fd, types, when"
            )
        for can_id in self.ids:
            if not 0 <= can_id <= _MAX_ID:
                raise ValueError(f"ids: {can_id:#x} is not a CAN id (0..0x1FFFFFFF)")
        if self.id_range is not None:
            lo, hi = self.id_range
            if not (0 <= lo <= hi <= _MAX_ID):
                raise ValueError(f"id_range: need 0 <= lo <= hi <= 0x1FFFFFFF, got [{lo}, {hi}]")
        return self

    @property
    def selects_frames(self) -> bool:
        frame_fields = (self.ids, self.id_range, self.masks, self.extended, self.fd)
        return any(v not in (None, []) for v in frame_fields) or (
            conditions_kind(self.when) == "frame"
        )

    @property
    def selects_events(self) -> bool:
        return bool(self.types) or conditions_kind(self.when) == "event"


def frame_predicate(config: FilterConfig) -> Callable[[Any], bool]:
    """The match function of a filter config (frames and events).

    Id criteria (``ids``, ``id_range``, ``masks``) are alternatives: a frame matches when one
    of them does. Flags, ``types`` and ``when`` must all hold as well.

    >>> import can
    >>> match = frame_predicate(FilterConfig(ids=[0x80], masks=[IdMask(id=0x100, mask=0x700)]))
    >>> [match(can.Message(arbitration_id=i, is_extended_id=False)) for i in (0x80, 0x81, 0x1AB)]
    [True, False, True]
    >>> frame_predicate(FilterConfig(types=["status"]))({"type": "status", "payload": {}})
    True
    """
    tests: list[Callable[[Any], bool]] = []
    checks: list[Callable[[int], bool]] = []
    ids = frozenset(config.ids)
    if ids:
        checks.append(ids.__contains__)
    if config.id_range is not None:
        lo, hi = config.id_range
        checks.append(lambda cid: lo <= cid <= hi)
    for m in config.masks:

        def masked(cid: int, want: int = m.id & m.mask, mask: int = m.mask) -> bool:
            return cid & mask == want

        checks.append(masked)
    id_test: Callable[[int], bool] | None
    if not checks:
        id_test = None
    elif len(checks) == 1:
        id_test = checks[0]
    else:

        def id_test(cid: int) -> bool:  # a loop: faster than any() on a generator
            for check in checks:  # noqa: SIM110
                if check(cid):
                    return True
            return False

    ext, fd = config.extended, config.fd
    if id_test is not None or ext is not None or fd is not None:
        # one fused function for the frame criteria (the hot path of a CAN filter)
        def frame_ok(m: Any) -> bool:
            try:
                if ext is not None and m.is_extended_id is not ext:
                    return False
                if fd is not None and m.is_fd is not fd:
                    return False
                return id_test(m.arbitration_id) if id_test is not None else True
            except AttributeError:
                return False

        tests.append(frame_ok)
    if config.types:
        types = frozenset(config.types)

        def type_ok(m: Any) -> bool:
            try:
                return m["type"] in types
            except (TypeError, KeyError):
                return False

        tests.append(type_ok)
    if config.when:
        tests.append(all_of(config.when))
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        a, b = tests
        return lambda m: a(m) and b(m)
    return lambda m: all(t(m) for t in tests)


class Filter(Node[FilterConfig]):
    """Pass frames by CAN id/flags or events by type/conditions; the rest go to 'rejected'.

    Frames: ``ids`` (a list), ``id_range`` ([lo, hi]) and ``masks`` ({id, mask} pairs, as
    SocketCAN filters) are alternatives (one must match); ``extended`` and ``fd`` must hold.
    Events: ``types`` (a list of event types). Both: ``when``, conditions that must all match
    (docs/flows.md "Conditions": ``{field: payload.channel, op: eq, value: master}``).
    ``invert: true`` swaps the ports. Messages sent to ``rejected`` are counted there
    (``rejected`` in the stats line; ``out`` counts both ports). A filter selects either frames
    or events; its input kind follows (a frame filter wired from an event port is a validation
    error), and its ports carry what it receives, unchanged.

    Time: none involved; live and replay give the same output. Costs about 1 µs per message.
    """

    type_name: ClassVar[str] = "filter"
    config_model: ClassVar[type[NodeConfig]] = FilterConfig
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.ANY, "rejected": Kind.ANY}
    examples: ClassVar[tuple[str, ...]] = (
        "positions:\n  type: filter\n  ids: [0x80, 0x81]\n  extended: false\n",
        "master_only:\n  type: filter\n  masks: [{id: 0x00, mask: 0x01}]  # even ids\n",
        "no_slave:\n  type: filter\n  when: [{field: payload.channel, op: eq, value: slave}]\n"
        "  invert: true\n",
        "far:\n  type: filter\n  types: [position_sample]\n"
        "  when: [{field: payload.position_raw, op: gt, value: 100000}]\n",
    )

    @classmethod
    def input_kind_for(cls, config: NodeConfig) -> Kind | None:
        assert isinstance(config, FilterConfig)
        if config.selects_frames:
            return Kind.FRAME
        if config.selects_events:
            return Kind.EVENT
        return Kind.ANY

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input")
        match = frame_predicate(self.config)
        invert = self.config.invert
        counters = self.counters

        def route(m: Any) -> tuple[str, Any]:
            if (not match(m)) is invert:
                return ("out", m)
            counters.bump("rejected")
            return ("rejected", m)

        # one port per message: Node.split (an exception in a predicate is reported, the
        # message skipped, the stream goes on -- predicates never raise)
        return self.split(source, route, _PORTS)
