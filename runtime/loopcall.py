"""Hand work from a thread to the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["post"]


def post(loop: asyncio.AbstractEventLoop, fn: Callable[..., object], *args: object) -> bool:
    """``loop.call_soon_threadsafe(fn, *args)`` that returns False for a closed loop instead
    of raising (a reader thread outliving its run just stops)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # loop closed
        return False
    return True
