"""Helpers shared by the operator nodes: message time and per-key state keys (pure Python)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from les02_flow.conditions import FieldPath

__all__ = ["QuietFlush", "key_function", "message_time", "validate_paths"]


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


class QuietFlush:
    """Live only: calls ``flush()`` once the input has been quiet for ``quiet`` seconds of
    wall-clock time while ``pending()`` says something is held.

    Frame-time operators (throttle, batch) otherwise send what they hold when the next message
    arrives; a bus that falls silent would keep it. A replay at full speed is never quiet for
    that long, so its output does not depend on this. ``loop_of()`` returns the event loop, or
    ``None`` outside a running flow (then nothing is scheduled).
    """

    def __init__(
        self,
        quiet: float,
        pending: Callable[[], bool],
        flush: Callable[[], None],
        loop_of: Callable[[], asyncio.AbstractEventLoop | None],
    ) -> None:
        self.quiet = quiet
        self.pending = pending
        self.flush = flush
        self.loop_of = loop_of
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None

    def activity(self) -> None:
        """A message arrived (call after handling it)."""
        loop = self.loop_of()
        if loop is None:
            return
        self.last = loop.time()
        if self.timer is None and self.pending():
            self.timer = loop.call_at(self.last + self.quiet, self._check)

    def _check(self) -> None:
        self.timer = None
        loop = self.loop_of()
        if loop is None or not self.pending():
            return
        due = self.last + self.quiet
        if loop.time() >= due:
            self.flush()
        else:
            self.timer = loop.call_at(due, self._check)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
