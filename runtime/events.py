"""The event envelope (docs/protocol.md) and its JSON encoding.

An event is a plain ``dict`` so that nodes, sinks and recorders share it without copying::

    {"proto": 1, "type": "position_sample", "ts": 1737319234.5678, "source": "les02",
     "payload": {"channel": "master", "position_raw": 144}}

``ts`` is the CAN frame's timestamp (seconds since the epoch, float), never the time of sending.
``docs/protocol.md`` is the normative list of types and payload fields.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["KNOWN_TYPES", "PROTO_VERSION", "Event", "encode_event", "make_event"]

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

Event = dict[str, Any]

_dumps = json.JSONEncoder(separators=(", ", ": "), ensure_ascii=False, allow_nan=False).encode


def make_event(type_: str, ts: float, payload: dict[str, Any], source: str = "les02") -> Event:
    """Build an envelope.

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
