"""The event envelope (docs/protocol.md) and its JSON encoding.

An event is a plain ``dict`` so that nodes, sinks and recorders share it without copying::

    {"proto": 1, "type": "position_sample", "ts": 1737319234.5678, "source": "les02",
     "payload": {"channel": "master", "position_raw": 144}}

``ts`` is the CAN frame's timestamp (seconds since the epoch, float), never the time of sending.
``docs/protocol.md`` is the normative list of types and payload fields.
"""

import json
from collections.abc import Mapping
from typing import Any, Literal, NotRequired, TypedDict

__all__ = [
    "KNOWN_TYPES",
    "PROTO_VERSION",
    "BatchEvent",
    "BatchPayload",
    "CanInvalidEvent",
    "CanInvalidPayload",
    "CanMessageEvent",
    "CanMessagePayload",
    "Channel",
    "ChannelMismatchEvent",
    "ChannelMismatchPayload",
    "DropoutEvent",
    "DropoutPayload",
    "EdgeStatusEvent",
    "EdgeStatusPayload",
    "Envelope",
    "EnvelopeFields",
    "ErrorEvent",
    "Event",
    "FramePayload",
    "KnownEvent",
    "MovePayload",
    "PositionSampleEvent",
    "PositionSamplePayload",
    "RelevelEvent",
    "RelevelPayload",
    "RideEndEvent",
    "RideEndPayload",
    "RideStartEvent",
    "RideStartPayload",
    "StatusEvent",
    "SystemEvent",
    "encode_event",
    "make_event",
]

PROTO_VERSION = 1

#: the event types les02-flow's own nodes emit (docs/protocol.md); flows and plugins may add
#: more, so this list is for hints (``tap --types`` typos), never for rejecting a type
KNOWN_TYPES = frozenset(
    {
        "position_sample",
        "status",
        "error",
        "system",
        "ride_start",
        "ride_end",
        "relevel",
        "channel_mismatch",
        "dropout",
        "batch",
        "can_message",
        "can_invalid",
        "edge_status",
    }
)

#: any event as it travels through a flow (plugins may add types and fields); the typed
#: envelopes below describe the types les02-flow's own nodes emit
Event = dict[str, Any]

# -- typed events (docs/protocol.md is the normative text; tests/runtime/test_events.py keeps
# -- these equal to its field tables and to what the built-in nodes emit) ---------------------

#: the LES02 measuring channel: even CAN id master, odd slave
Channel = Literal["master", "slave"]


class EnvelopeFields(TypedDict):
    """The envelope fields every event shares (``type`` and ``payload`` are per type)."""

    proto: int
    ts: float
    source: str
    #: added by ``mqtt_source`` (the edge's ``mqtt_sink.site``); absent on a single site
    site: NotRequired[str]


class Envelope(EnvelopeFields):
    """An event of any type: the envelope with an untyped payload."""

    type: str
    payload: dict[str, Any]


class PositionSamplePayload(TypedDict):
    """``position_sample`` (``les02_parse``): exactly these two fields."""

    channel: Channel
    position_raw: int


class FramePayload(TypedDict):
    """``status``, ``error`` and ``system`` (``les02_parse``): the raw frame."""

    channel: Channel
    can_id: int
    #: the 8 data bytes as 16 lowercase hex digits
    data: str


class RideStartPayload(TypedDict):
    """``ride_start`` (``ride_detect``)."""

    ride_id: str
    channel: Channel
    position_raw: int
    position_mm: float
    direction: Literal["up", "down"]
    start_ts: float


class MovePayload(TypedDict):
    """The fields ``ride_end`` and ``relevel`` share: one motion from rest to rest."""

    start_ts: float
    end_ts: float
    duration_s: float
    start_position_raw: int
    start_position_mm: float
    end_position_raw: int
    end_position_mm: float
    distance_raw: int
    distance_mm: float
    direction: Literal["up", "down"]
    max_speed_mm_s: float
    samples: int


class RideEndPayload(MovePayload):
    """``ride_end`` (``ride_detect``)."""

    ride_id: str
    complete: bool
    #: why an incomplete ride ended, ``None`` when complete
    reason: Literal["end_of_input", "stopped", "silence"] | None


class RelevelPayload(MovePayload):
    """``relevel`` (``ride_detect``): a motion shorter than ``min_distance``."""

    channel: Channel


class ChannelMismatchPayload(TypedDict):
    """``channel_mismatch`` (``ride_detect``): master and slave disagree."""

    state: Literal["begin", "end"]
    start_ts: float
    end_ts: float | None
    duration_s: float
    max_diff_raw: int
    max_diff_mm: float
    master_raw: int
    slave_raw: int
    tolerance_raw: int


class DropoutPayload(TypedDict):
    """``dropout`` (``ride_detect``): samples really missing on one channel."""

    channel: Channel
    start_ts: float
    end_ts: float
    gap_s: float
    missing: int
    position_before_raw: int
    position_after_raw: int


class BatchPayload(TypedDict):
    """``batch`` (the ``batch`` node): several events in one envelope."""

    count: int
    first_ts: float
    last_ts: float
    #: ``count``, ``interval``, ``quiet`` or ``end``
    reason: str
    events: list[Event]


class CanMessagePayload(TypedDict):
    """``can_message`` (``dbc_decode``): one decoded frame."""

    message: str
    can_id: int
    extended: bool
    signals: dict[str, float | int]
    units: NotRequired[dict[str, str]]
    choices: NotRequired[dict[str, str]]


class CanInvalidPayload(TypedDict):
    """``can_invalid`` (``dbc_decode``'s ``invalid`` port): a frame it could not decode."""

    #: ``malformed``, ``error_frame``, ``remote_frame``, ``unknown_id``, ``bad_length`` or
    #: ``decode_error``
    reason: str
    detail: str
    can_id: NotRequired[int]
    extended: NotRequired[bool]
    dlc: NotRequired[int]
    data: NotRequired[str]
    message: NotRequired[str]


class EdgeStatusPayload(TypedDict):
    """``edge_status`` (``mqtt_source``): an edge's retained online/offline status."""

    state: Literal["online", "offline"]


class PositionSampleEvent(EnvelopeFields):
    type: Literal["position_sample"]
    payload: PositionSamplePayload


class StatusEvent(EnvelopeFields):
    type: Literal["status"]
    payload: FramePayload


class ErrorEvent(EnvelopeFields):
    type: Literal["error"]
    payload: FramePayload


class SystemEvent(EnvelopeFields):
    type: Literal["system"]
    payload: FramePayload


class RideStartEvent(EnvelopeFields):
    type: Literal["ride_start"]
    payload: RideStartPayload


class RideEndEvent(EnvelopeFields):
    type: Literal["ride_end"]
    payload: RideEndPayload


class RelevelEvent(EnvelopeFields):
    type: Literal["relevel"]
    payload: RelevelPayload


class ChannelMismatchEvent(EnvelopeFields):
    type: Literal["channel_mismatch"]
    payload: ChannelMismatchPayload


class DropoutEvent(EnvelopeFields):
    type: Literal["dropout"]
    payload: DropoutPayload


class BatchEvent(EnvelopeFields):
    type: Literal["batch"]
    payload: BatchPayload


class CanMessageEvent(EnvelopeFields):
    type: Literal["can_message"]
    payload: CanMessagePayload


class CanInvalidEvent(EnvelopeFields):
    type: Literal["can_invalid"]
    payload: CanInvalidPayload


class EdgeStatusEvent(EnvelopeFields):
    type: Literal["edge_status"]
    payload: EdgeStatusPayload


#: an event of a type les02-flow's own nodes emit; ``event["type"] == "ride_end"`` narrows it
#: (mypy) to :class:`RideEndEvent`, so ``event["payload"]["ride_id"]`` is checked
KnownEvent = (
    PositionSampleEvent
    | StatusEvent
    | ErrorEvent
    | SystemEvent
    | RideStartEvent
    | RideEndEvent
    | RelevelEvent
    | ChannelMismatchEvent
    | DropoutEvent
    | BatchEvent
    | CanMessageEvent
    | CanInvalidEvent
    | EdgeStatusEvent
)

_dumps = json.JSONEncoder(separators=(", ", ": "), ensure_ascii=False, allow_nan=False).encode


def make_event(type_: str, ts: float, payload: Mapping[str, Any], source: str = "les02") -> Event:
    """Build an envelope (``payload`` is kept, not copied: pass a fresh ``dict``).

    Annotate the payload with its TypedDict (``payload: RideEndPayload = {...}``) and mypy
    checks its field names and types.

    >>> make_event("position_sample", 1.5, {"channel": "master", "position_raw": 144})
    {'proto': 1, 'type': 'position_sample', 'ts': 1.5, 'source': 'les02', 'payload': {'channel': 'master', 'position_raw': 144}}
    """  # noqa: E501
    return {"proto": PROTO_VERSION, "type": type_, "ts": ts, "source": source, "payload": payload}


def encode_event(event: Event) -> str:
    """One envelope as a JSON text (one WebSocket message, one ``.jsonl`` line).

    >>> encode_event(make_event("status", 2.0, {"channel": "slave"}))
    '{"proto": 1, "type": "status", "ts": 2.0, "source": "les02", "payload": {"channel": "slave"}}'
    """
    return _dumps(event)
