"""FlushScheduler: immediate when quiet, spaced while busy, never lost."""

from __future__ import annotations

import asyncio

import pytest

from les02_flow.flushing import FlushScheduler


def _run(interval: float, script: list[tuple[float, int]]) -> list[tuple[float, int]]:
    """Feed ``(at_seconds, n_requests)`` steps; return ``(flush_time, messages)`` per flush."""

    async def main() -> list[tuple[float, int]]:
        loop = asyncio.get_running_loop()
        flushes: list[tuple[float, int]] = []
        queued = 0
        t0 = loop.time()

        def flush() -> None:
            nonlocal queued
            sched.flushed()
            flushes.append((loop.time() - t0, queued))
            queued = 0

        sched = FlushScheduler(loop, flush, interval)
        for at, n in script:
            delay = t0 + at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for _ in range(n):
                queued += 1
                sched.request()
        await asyncio.sleep(interval * 3)
        assert not sched.pending
        return flushes

    return asyncio.run(main())


def test_quiet_requests_flush_on_the_next_iteration_whatever_their_phase() -> None:
    # one message every 20 ms with a 50 ms interval: never busy, never deferred
    flushes = _run(0.05, [(i * 0.02, 1) for i in range(5)])
    assert [n for _, n in flushes] == [1] * 5
    for (t, _), i in zip(flushes, range(5), strict=True):
        assert t == pytest.approx(i * 0.02, abs=0.015)


def test_busy_sink_coalesces_until_a_single_message_flush() -> None:
    # a burst makes the sink busy: what comes within the interval waits and goes out together
    flushes = _run(0.05, [(0.0, 3), (0.005, 2), (0.010, 2), (0.2, 1), (0.25, 1)])
    counts = [n for _, n in flushes]
    assert counts == [3, 4, 1, 1]
    times = [t for t, _ in flushes]
    assert times[1] - times[0] == pytest.approx(0.05, abs=0.02)  # deferred by the interval
    # the 4-message flush kept it busy, but 0.2 s later the interval is long over: at once
    assert times[2] == pytest.approx(0.2, abs=0.015)
    assert times[3] == pytest.approx(0.25, abs=0.015)  # not busy after a 1-message flush


def test_cancel_drops_the_pending_flush_and_negative_interval_is_refused() -> None:
    async def main() -> int:
        calls = 0

        def flush() -> None:
            nonlocal calls
            calls += 1

        sched = FlushScheduler(asyncio.get_running_loop(), flush, 0.01)
        sched.request()
        assert sched.pending
        sched.cancel()
        await asyncio.sleep(0.03)
        return calls

    assert asyncio.run(main()) == 0
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="interval"):
            FlushScheduler(loop, lambda: None, -1.0)
    finally:
        loop.close()


def test_a_flush_the_sink_does_by_itself_drops_the_pending_one() -> None:
    async def main() -> list[str]:
        calls: list[str] = []
        sched: FlushScheduler

        def flush() -> None:
            sched.flushed()
            calls.append("scheduled")

        sched = FlushScheduler(asyncio.get_running_loop(), flush, 0.02)
        sched.request()
        sched.request()
        await asyncio.sleep(0)  # a 2-message flush: busy
        sched.request()  # deferred by the interval
        before = sched.pending
        sched.flushed()  # e.g. stop() flushing at once
        calls.append("by itself")
        assert (before, sched.pending) == (True, False)
        await asyncio.sleep(0.05)
        return calls

    assert asyncio.run(main()) == ["scheduled", "by itself"]
