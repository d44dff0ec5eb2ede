"""FlushScheduler: immediate when quiet, spaced while busy, never lost.

The scheduler only uses ``loop.time``, ``loop.call_soon`` and ``loop.call_at``, so the tests
drive it with :class:`FakeLoop`: a clock that moves only when told, and one loop iteration
per :meth:`FakeLoop.run_once`. Times are then exact, whatever the load on the machine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import cast

import pytest

from les02_flow.flushing import FlushScheduler


class FakeHandle:
    def __init__(self, fn: Callable[[], None]) -> None:
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """The part of an event loop FlushScheduler uses, on a manual clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self._ready: list[FakeHandle] = []
        self._timers: list[tuple[float, int, FakeHandle]] = []
        self._seq = itertools.count()

    def time(self) -> float:
        return self.now

    def call_soon(self, fn: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(fn)
        self._ready.append(handle)
        return handle

    def call_at(self, when: float, fn: Callable[[], None]) -> FakeHandle:
        handle = FakeHandle(fn)
        heapq.heappush(self._timers, (when, next(self._seq), handle))
        return handle

    def run_once(self) -> None:
        """One loop iteration: the callbacks that are ready now (not those they add)."""
        ready, self._ready = self._ready, []
        for handle in ready:
            if not handle.cancelled:
                handle.fn()

    def advance(self, to: float) -> None:
        """Move the clock to ``to``, running each timer (and what it makes ready) at its time."""
        self.run_once()
        while self._timers and self._timers[0][0] <= to:
            when, _, handle = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not handle.cancelled:
                handle.fn()
            self.run_once()
        self.now = max(self.now, to)

    @property
    def idle(self) -> bool:
        return not self._ready and all(h.cancelled for _, _, h in self._timers)

    def as_loop(self) -> asyncio.AbstractEventLoop:
        return cast(asyncio.AbstractEventLoop, self)


def _run(
    interval: float, script: list[tuple[float, int]], at_once: bool = False
) -> list[tuple[float, int]]:
    """Feed ``(at_seconds, n_requests)`` steps; return ``(flush_time, messages)`` per flush
    (``at_once``: each step's messages in one ``request(n)``, as a sink's batch does)."""
    loop = FakeLoop()
    flushes: list[tuple[float, int]] = []
    queued = 0

    def flush() -> None:
        nonlocal queued
        sched.flushed()
        flushes.append((loop.time(), queued))
        queued = 0

    sched = FlushScheduler(loop.as_loop(), flush, interval)
    for at, n in script:
        loop.advance(at)
        if at_once:
            queued += n
            sched.request(n)
        for _ in range(0 if at_once else n):
            queued += 1
            sched.request()
        loop.run_once()
    loop.advance(script[-1][0] + interval * 3)
    assert not sched.pending and loop.idle
    return flushes


def test_quiet_requests_flush_on_the_next_iteration_whatever_their_phase() -> None:
    # one message every 20 ms with a 50 ms interval: never busy, never deferred
    flushes = _run(0.05, [(i * 0.02, 1) for i in range(5)])
    assert [n for _, n in flushes] == [1] * 5
    assert [t for t, _ in flushes] == pytest.approx([i * 0.02 for i in range(5)])


def test_busy_sink_coalesces_until_a_single_message_flush() -> None:
    # a burst makes the sink busy: what comes within the interval waits and goes out together
    flushes = _run(0.05, [(0.0, 3), (0.005, 2), (0.010, 2), (0.2, 1), (0.25, 1)])
    assert [n for _, n in flushes] == [3, 4, 1, 1]
    times = [t for t, _ in flushes]
    assert times[0] == 0.0
    assert times[1] == pytest.approx(0.05)  # deferred by the interval after the 3-message flush
    # the 4-message flush kept it busy, but 0.2 s later the interval is long over: at once
    assert times[2] == pytest.approx(0.2)
    assert times[3] == pytest.approx(0.25)  # not busy after a 1-message flush


def test_busy_sink_flushes_at_most_once_per_interval_under_a_steady_flood() -> None:
    # two messages every millisecond for 30 ms with a 10 ms interval: one flush per interval
    flushes = _run(0.01, [(i * 0.001, 2) for i in range(30)])
    times = [t for t, _ in flushes]
    assert times == pytest.approx([0.0, 0.01, 0.02, 0.03])
    assert sum(n for _, n in flushes) == 60  # nothing lost


def test_a_batch_request_counts_as_its_messages() -> None:
    script = [(0.0, 3), (0.005, 2), (0.010, 2), (0.2, 1), (0.25, 1)]
    assert _run(0.05, script, at_once=True) == _run(0.05, script)


def test_cancel_drops_the_pending_flush_and_negative_interval_is_refused() -> None:
    loop = FakeLoop()
    calls = 0

    def flush() -> None:
        nonlocal calls
        calls += 1

    sched = FlushScheduler(loop.as_loop(), flush, 0.01)
    sched.request()
    assert sched.pending
    sched.cancel()
    loop.advance(0.03)
    assert calls == 0
    with pytest.raises(ValueError, match="interval"):
        FlushScheduler(loop.as_loop(), lambda: None, -1.0)


def test_a_flush_the_sink_does_by_itself_drops_the_pending_one() -> None:
    loop = FakeLoop()
    calls: list[str] = []

    def flush() -> None:
        sched.flushed()
        calls.append("scheduled")

    sched = FlushScheduler(loop.as_loop(), flush, 0.02)
    sched.request()
    sched.request()
    loop.run_once()  # a 2-message flush: busy
    assert sched.busy
    sched.request()  # deferred by the interval
    before = sched.pending
    sched.flushed()  # e.g. stop() flushing at once
    calls.append("by itself")
    assert (before, sched.pending) == (True, False)
    loop.advance(0.05)
    assert calls == ["scheduled", "by itself"]
