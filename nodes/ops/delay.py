"""Node ``delay``: pass every message on after a fixed wall-clock delay, order kept."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from les02_flow.node import Kind, Node, NodeConfig

__all__ = ["Delay", "DelayConfig"]


class DelayConfig(NodeConfig):
    """Config of ``delay``."""

    seconds: float = Field(
        gt=0, le=3600, allow_inf_nan=False, description="How long every message is held."
    )
    max_pending: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description=(
            "Messages held at most; beyond it the oldest goes out early (counted in "
            "'early'), so memory stays bounded."
        ),
    )


class Delay(Node[DelayConfig]):
    """Pass every message on after a fixed delay (wall clock), in arrival order.

    Each message is held ``seconds`` after it arrived and then emitted unchanged; the order is
    kept (a fixed delay cannot reorder). When the input ends, what is held still goes out at
    its time and then the output ends; when the flow stops, what is held goes out at once
    (nothing accepted is lost). ``max_pending`` bounds memory: beyond it the oldest message
    goes out early (counted in ``early``).

    Live vs replay: the delay is wall-clock time (a message's own timestamp is not changed), so
    the output *content and order* are the same in a replay at full speed, only the moment
    each message leaves differs: a replay at full speed delivers all of it ``seconds`` after
    it was read. The port carries what the node receives.
    """

    type_name: ClassVar[str] = "delay"
    config_model: ClassVar[type[NodeConfig]] = DelayConfig
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.ANY}
    examples: ClassVar[tuple[str, ...]] = ("later:\n  type: delay\n  seconds: 2.0\n",)

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input")
        self._pending: deque[tuple[float, Any]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._observer: abc.ObserverBase[Any] | None = None
        self._input_done = False
        seconds = self.config.seconds
        limit = self.config.max_pending
        counters = self.counters

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            self._observer = observer
            pending = self._pending

            def on_next(m: Any) -> None:
                loop = self.ctx.get_loop()
                pending.append((loop.time() + seconds, m))
                if len(pending) > limit:
                    counters.bump("early")
                    observer.on_next(pending.popleft()[1])
                if self._timer is None:
                    self._schedule(loop)

            def on_completed() -> None:
                self._input_done = True
                if not pending:
                    observer.on_completed()

            sub = source.subscribe(on_next, observer.on_error, on_completed, scheduler=scheduler)

            def dispose() -> None:
                sub.dispose()
                self._cancel()
                self._observer = None

            return Disposable(dispose)

        return {"out": Observable(subscribe)}

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._pending:
            self._timer = loop.call_at(self._pending[0][0], self._release)
        else:
            self._timer = None

    def _release(self) -> None:
        self._timer = None
        observer = self._observer
        if observer is None:
            return
        loop = self.ctx.get_loop()
        now = loop.time()
        pending = self._pending
        while pending and pending[0][0] <= now:
            observer.on_next(pending.popleft()[1])
        if pending:
            self._schedule(loop)
        elif self._input_done:
            observer.on_completed()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def stop(self) -> None:
        """Send what is still held at once (downstream sinks stop after this node)."""
        self._cancel()
        observer = self._observer
        pending = getattr(self, "_pending", None)
        if observer is None or not pending:
            return
        while pending:
            try:
                observer.on_next(pending.popleft()[1])
            except Exception as exc:  # never raise from stop
                self.log.warning("flushing a held message failed: %s", exc)
        if self._input_done:
            observer.on_completed()
