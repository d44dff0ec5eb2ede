"""Node ``batch``: collect events by count and/or time into one ``batch`` event.

The grouping is pure (:class:`Batcher`, driven by event timestamps); the node only wraps it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import Field, model_validator
from reactivex import Observable

from les02_flow.events import BatchPayload, Event, make_event
from les02_flow.node import Kind, Node, NodeConfig

from .common import HeldStream, message_time

__all__ = ["Batch", "BatchConfig", "Batcher", "batch_event"]


def batch_event(events: list[Event], reason: str, source: str | None) -> Event:
    """The ``batch`` envelope (docs/protocol.md): ``ts`` is the last event's time.

    >>> e = batch_event([{"ts": 1.0, "source": "les02"}, {"ts": 1.5, "source": "les02"}],
    ...                 "count", None)
    >>> e["type"], e["ts"], e["source"], e["payload"]["count"], e["payload"]["reason"]
    ('batch', 1.5, 'les02', 2, 'count')
    """
    first, last = events[0], events[-1]
    payload: BatchPayload = {
        "count": len(events),
        "first_ts": float(first["ts"]),
        "last_ts": float(last["ts"]),
        "reason": reason,
        "events": events,
    }
    return make_event(
        "batch",
        float(last["ts"]),
        payload,
        source if source is not None else str(first.get("source", "batch")),
    )


class Batcher:
    """Groups events: a batch closes at ``count`` events, or when an event arrives whose time
    is at or past ``interval`` seconds after the batch's first event (that event starts the
    next batch), or at the end of the input.

    >>> out = []
    >>> b = Batcher(count=3, interval=1.0, source=None)
    >>> for ts in (0.0, 0.1, 0.2, 0.3, 1.5, 1.6):
    ...     b.feed({"ts": ts, "source": "x"}, out.append)
    >>> b.flush(out.append)
    >>> [(e["payload"]["count"], e["payload"]["reason"]) for e in out]
    [(3, 'count'), (1, 'interval'), (2, 'end')]
    """

    def __init__(self, count: int | None, interval: float | None, source: str | None) -> None:
        self.count = count
        self.interval = interval
        self.source = source
        self.events: list[Event] = []
        self.start = 0.0

    def feed(self, event: Event, emit: Callable[[Event], None]) -> None:
        t = message_time(event)
        if (
            self.events
            and self.interval is not None
            and (t >= self.start + self.interval or t < self.start - self.interval)
        ):
            self._close("interval", emit)
        if not self.events:
            self.start = t
        self.events.append(event)
        if self.count is not None and len(self.events) >= self.count:
            self._close("count", emit)

    def _close(self, reason: str, emit: Callable[[Event], None]) -> None:
        events, self.events = self.events, []
        emit(batch_event(events, reason, self.source))

    def flush(self, emit: Callable[[Event], None], reason: str = "end") -> None:
        """Emit the open batch, if any (the input ended: ``end``; went quiet: ``quiet``)."""
        if self.events:
            self._close(reason, emit)


class BatchConfig(NodeConfig):
    """Config of ``batch``."""

    count: int | None = Field(
        default=None, ge=1, le=100_000, description="Close a batch at this many events."
    )
    interval: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description=(
            "Close a batch when an event arrives this many seconds (event time) after the "
            "batch's first event."
        ),
    )
    source: str | None = Field(
        default=None,
        min_length=1,
        description="'source' of the batch events (default: the first event's source).",
    )
    quiet_flush: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description=(
            "Live: after this many seconds of wall-clock quiet on the input, send the open "
            "batch (reason 'quiet'). Off (null): batches depend on event time only."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> BatchConfig:
        if self.count is None and self.interval is None:
            raise ValueError("a batch needs 'count', 'interval' or both")
        return self


class Batch(Node[BatchConfig]):
    """Collect events by count and/or time into one 'batch' event.

    A batch closes when it holds ``count`` events, or when an event arrives at or past
    ``interval`` seconds (event time, ``ts``) after the batch's first event (that event opens
    the next batch), or when the input ends. The output is one envelope per batch
    (docs/protocol.md, ``batch``): ``type: batch``, ``ts`` of its last event, and a payload
    ``{count, first_ts, last_ts, reason: count|interval|quiet|end, events: [...]}`` holding the
    events unchanged, in order.

    Live vs replay: batches are cut by event time, so a replay at full speed gives the same
    batches as the live run. Live, a batch closed by ``interval`` goes out when the next event
    arrives, so if the input falls silent the open batch waits. With ``quiet_flush: S`` (off
    by default), S seconds of wall-clock quiet send it at once (``reason: quiet``); that is
    wall time, so a live run whose delivery stalls can then differ from a replay. When the
    flow stops, the open batch goes out (``reason: end``) first.
    """

    type_name: ClassVar[str] = "batch"
    config_model: ClassVar[type[NodeConfig]] = BatchConfig
    input_kind: ClassVar[Kind | None] = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}
    examples: ClassVar[tuple[str, ...]] = (
        "per_second:\n  type: batch\n  interval: 1.0\n",
        "uplink:\n  type: batch\n  count: 100\n  interval: 5.0\n  source: shaft-a\n",
    )

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input")
        c = self.config
        batcher = Batcher(c.count, c.interval, c.source)
        self.batcher = batcher
        self.held = HeldStream(
            feed=batcher.feed,
            pending=lambda: bool(batcher.events),
            flush_quiet=lambda emit: batcher.flush(emit, "quiet"),
            flush_end=batcher.flush,
            quiet=c.quiet_flush,
            report=self.report_error,
            loop_of=lambda: self.ctx.loop,
        )
        return {"out": self.held.observable(source)}

    async def stop(self) -> None:
        """Send the open batch on (reason ``end``): downstream sinks stop after this node."""
        held: HeldStream | None = getattr(self, "held", None)
        if held is not None:
            held.flush_at_stop(self.log, "the batch")
