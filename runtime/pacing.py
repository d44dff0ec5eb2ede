"""Drift-free pacing of timed items on the event loop (simulators, replays).

Each item's due time is computed from one start time (``t0 + offset(item)``), never by adding
up sleeps, so pacing errors do not accumulate. When the loop falls behind, due items go out at
once, in bursts of at most ``burst`` before yielding to the loop so sinks still run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TypeVar

__all__ = ["paced"]

T = TypeVar("T")


async def paced(
    items: Iterable[T], offset: Callable[[T], float], t0: float, burst: int = 256
) -> AsyncIterator[T]:
    """Yield each item at ``t0 + offset(item)`` on the running loop's clock.

    >>> import asyncio
    >>> async def demo() -> list[int]:
    ...     loop = asyncio.get_running_loop()
    ...     t0 = loop.time()
    ...     return [x async for x in paced([1, 2, 3], lambda x: x / 1000, t0)]
    >>> asyncio.run(demo())
    [1, 2, 3]
    """
    loop = asyncio.get_running_loop()
    run = 0
    for item in items:
        due = t0 + offset(item)
        now = loop.time()
        if due > now:
            await asyncio.sleep(due - now)
            run = 0
        elif run >= burst:
            await asyncio.sleep(0)  # far behind: let the rest of the loop run
            run = 0
        run += 1
        yield item
