"""Helpers shared by the operator nodes: message time, per-key state keys, and the wiring of
operators that hold messages (throttle, batch)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from reactivex import Observable, abc

from les02_flow.conditions import FieldPath
from les02_flow.node import Logger

__all__ = ["HeldStream", "QuietFlush", "key_function", "message_time", "validate_paths"]


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


Emit = Callable[[Any], None]


class HeldStream:
    """The stream wiring of an operator that holds messages back (``throttle`` latest,
    ``batch``): feed each message, send what is held when the input completes or the flow
    stops, and, with ``quiet`` seconds set, after that much wall-clock quiet (:class:`QuietFlush`).

    ``feed(message, emit)`` is the operator's pure logic; a ``KeyError``, ``TypeError``,
    ``ValueError`` or ``AttributeError`` from it goes to ``report(message, exc)`` and the stream
    goes on. ``pending()`` says whether anything is held, ``flush_quiet(emit)`` and
    ``flush_end(emit)`` send it. Built once per node; :meth:`observable` is subscribed once.
    """

    def __init__(
        self,
        *,
        feed: Callable[[Any, Emit], None],
        pending: Callable[[], bool],
        flush_quiet: Callable[[Emit], None],
        flush_end: Callable[[Emit], None],
        quiet: float | None,
        report: Callable[[Any, BaseException], None],
        loop_of: Callable[[], asyncio.AbstractEventLoop | None],
    ) -> None:
        self._feed = feed
        self._pending = pending
        self._flush_quiet = flush_quiet
        self._flush_end = flush_end
        self._quiet_seconds = quiet
        self._report = report
        self._loop_of = loop_of
        self._emit: Emit | None = None
        self._quiet: QuietFlush | None = None

    def observable(self, source: Observable[Any]) -> Observable[Any]:
        """The operator's output stream over ``source``."""

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            emit = observer.on_next
            self._emit = emit
            feed = self._feed
            report = self._report
            quiet = QuietFlush(
                self._quiet_seconds or 0.0,
                self._pending,
                lambda: self._flush_quiet(emit),
                self._loop_of,
            )
            self._quiet = quiet
            activity = quiet.activity if self._quiet_seconds is not None else None

            def on_next(m: Any) -> None:
                try:
                    feed(m, emit)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    report(m, exc)
                    return
                if activity is not None:
                    activity()

            def on_completed() -> None:
                quiet.cancel()
                self._flush_end(emit)
                observer.on_completed()

            return source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    def flush_at_stop(self, log: Logger, what: str) -> None:
        """Send what is held when the flow stops (never raises; ``what`` names it in the
        node's prefixed ``log``)."""
        if self._quiet is not None:
            self._quiet.cancel()
        if self._emit is None:
            return
        try:
            self._flush_end(self._emit)
        except Exception as exc:  # never raise from stop
            log.warning("flushing %s failed: %s", what, exc)
