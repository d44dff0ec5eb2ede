"""The background task of a source that connects (and reconnects) on its own.

``ecuconnect_source`` and ``mqtt_source`` connect in a task started at ``start()`` (an
unreachable peer never fails the start) and ended at ``stop()``. :class:`ConnectTask` is that
lifecycle, written once: started at most once and never after a stop; ``stop`` cancels the
task, waits for it within a bound, then runs the node's finishing steps (complete the ports,
abort a transport) -- once, never raising.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from les02_flow.node import Logger

__all__ = ["ConnectTask"]


class ConnectTask:
    """One node's connect loop as a task; ``stopped`` tells the loop to end."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self.task: asyncio.Task[None] | None = None
        self.stopped = False

    def start(
        self, loop: asyncio.AbstractEventLoop, run: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Run ``run()`` as the task, unless it already runs or the node was stopped."""
        if self.task is None and not self.stopped:
            self.task = loop.create_task(run(), name=self.name)

    async def stop(self, log: Logger, *finish: Callable[[], object]) -> None:
        """Cancel the task and wait for it (at most ``timeout`` s), then call each of
        ``finish`` in order (an error in one is suppressed, the next still runs). Idempotent,
        bounded, never raises."""
        if self.stopped:
            return
        self.stopped = True
        try:
            task = self.task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=self.timeout)
        except Exception as exc:
            log.warning("error while stopping: %s", exc)
        finally:
            for step in finish:
                with contextlib.suppress(Exception):
                    step()
