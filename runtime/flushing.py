"""Adaptive write coalescing for sinks that broadcast to many sockets.

A sink queues what a message produces for each client and asks a :class:`FlushScheduler`
for a flush (one :meth:`~FlushScheduler.request` per message). When the previous flush
carried a single message, the sink is not busy and the next flush runs on the next loop
iteration: no added latency, so at the LES02's 500 frames/s every frame is flushed on its
own, whatever its phase. When the previous flush carried several messages (they arrive
faster than the loop goes round), flushes are spaced ``interval`` seconds apart, so
everything that arrives meanwhile goes out in ONE write per client: at 12,600 frames/s and
the default 2 ms that is at most 500 writes per client per second instead of one per
hand-over, for at most ``interval`` of added latency. A flush of one message ends the busy
state.

Calling rules: use it from the event loop thread only; :meth:`FlushScheduler.request` is cheap
and idempotent while a flush is pending; the flush callback must call
:meth:`FlushScheduler.flushed` first thing; :meth:`FlushScheduler.cancel` drops a pending flush
(on stop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["DEFAULT_FLUSH_INTERVAL", "FlushScheduler"]

#: seconds between two flushes of a busy sink (the most latency coalescing adds)
DEFAULT_FLUSH_INTERVAL = 0.002


class FlushScheduler:
    """Runs ``flush`` soon after a :meth:`request`, at most once per ``interval`` seconds.

    >>> import asyncio
    >>> async def demo() -> list[int]:
    ...     calls: list[int] = []
    ...     sched: FlushScheduler
    ...     def flush() -> None:
    ...         sched.flushed()
    ...         calls.append(1)
    ...     sched = FlushScheduler(asyncio.get_running_loop(), flush, 0.01)
    ...     sched.request()  # quiet: flushed on the next iteration
    ...     await asyncio.sleep(0)
    ...     for _ in range(3):
    ...         sched.request()  # three in one iteration: one flush, and now busy
    ...     await asyncio.sleep(0)
    ...     sched.request()  # busy, right after a flush: deferred by the interval
    ...     await asyncio.sleep(0)
    ...     n_early = len(calls)
    ...     await asyncio.sleep(0.03)
    ...     return [n_early, len(calls)]
    >>> asyncio.run(demo())
    [2, 3]
    """

    __slots__ = ("_busy", "_flush", "_handle", "_last", "_loop", "_requests", "interval")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        flush: Callable[[], None],
        interval: float = DEFAULT_FLUSH_INTERVAL,
    ) -> None:
        if interval < 0:
            raise ValueError(f"flush interval must be >= 0, got {interval}")
        self.interval = interval
        self._loop = loop
        self._flush = flush
        self._handle: asyncio.Handle | None = None
        self._last = float("-inf")
        self._requests = 0
        self._busy = False

    @property
    def pending(self) -> bool:
        """A flush is scheduled and has not run yet."""
        return self._handle is not None

    @property
    def busy(self) -> bool:
        """The last flush carried more than one message: flushes are spaced ``interval``."""
        return self._busy

    def request(self, n: int = 1) -> None:
        """``n`` more messages to flush: next iteration, or ``interval`` after the previous
        flush while busy."""
        self._requests += n
        if self._handle is not None:
            return
        if self._busy:
            due = self._last + self.interval
            if self._loop.time() < due:
                self._handle = self._loop.call_at(due, self._flush)
                return
        self._handle = self._loop.call_soon(self._flush)

    def flushed(self) -> None:
        """Called by the flush callback when it starts (also when the sink flushes by itself,
        e.g. on stop: a flush still pending is then dropped)."""
        if self._handle is not None:
            self._handle.cancel()  # harmless for the handle that is running this flush
            self._handle = None
        self._last = self._loop.time()
        self._busy = self._requests > 1
        self._requests = 0

    def cancel(self) -> None:
        """Drop a pending flush (the sink is stopping and flushes by itself)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
