"""Helpers shared by the operator nodes: message time and per-key state keys (pure Python)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from les02_flow.conditions import FieldPath

__all__ = ["key_function", "message_time", "validate_paths"]


def message_time(message: Any) -> float:
    """The message's own time: an event's ``ts`` or a frame's ``timestamp`` (frame time).

    >>> message_time({"ts": 2.5})
    2.5
    >>> import can
    >>> message_time(can.Message(timestamp=7.0))
    7.0
    """
    if type(message) is dict:
        return float(message["ts"])
    return float(message.timestamp)


def validate_paths(paths: Sequence[str]) -> list[str]:
    """Validate field paths (for a pydantic validator): raises ``ValueError`` with the reason."""
    for p in paths:
        FieldPath(p)
    return list(paths)


def key_function(paths: Sequence[str]) -> Callable[[Any], Any]:
    """A function giving a message's state key from field paths (``()`` for no paths).

    >>> k = key_function(["payload.channel"])
    >>> k({"payload": {"channel": "slave"}})
    'slave'
    >>> key_function(["source", "payload.channel"])({"source": "a", "payload": {}})
    ('a', MISSING)
    >>> key_function([])({"x": 1})
    ()
    """
    getters = [FieldPath(p).get for p in paths]
    if not getters:
        return lambda m: ()
    if len(getters) == 1:
        return getters[0]
    return lambda m: tuple(g(m) for g in getters)
