"""Node ``throttle``: at most one message per interval per key, by the messages' own time.

The timing is pure (:class:`Throttler`, driven by message timestamps); the node only wraps it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator
from reactivex import Observable

from les02_flow.conditions import FieldPath
from les02_flow.node import Kind, Node, NodeConfig

from .common import HeldStream, key_function, message_time, validate_paths

__all__ = ["Throttle", "ThrottleConfig", "Throttler"]

Emit = Callable[[Any], None]

#: a message this close to a window's end counts as at the end (float sums of timestamps)
EPS = 1e-6


class Throttler:
    """Rate limiting by message time (seconds), per key.

    ``first``: a message passes when its key has no open window; it opens one of ``interval``
    seconds, and later messages of that key inside it are dropped.

    ``latest`` (sample): the first message of a quiet key passes at once and opens a window;
    inside the window the newest message is held (replacing older ones); when the window is
    over (a message of any key with a time at or past its end arrives, or the input ends) the
    held message is emitted and a new window starts at that end. Each key so gets at most one
    message per interval, always its most recent one, delayed by at most one interval.

    Times within 1 µs of a window's end count as at its end. A message older than its key's
    window start by more than one interval (time went back:
    a looped replay, a new recording) resets that key.

    >>> out = []
    >>> t = Throttler(0.1, "latest", lambda m: ())
    >>> for ts in (0.0, 0.03, 0.06, 0.09, 0.12, 0.15, 0.21):
    ...     t.feed({"ts": ts}, out.append)
    >>> t.flush(out.append)
    >>> [m["ts"] for m in out]
    [0.0, 0.09, 0.15, 0.21]
    >>> out = []
    >>> t = Throttler(0.1, "first", lambda m: ())
    >>> for ts in (0.0, 0.03, 0.06, 0.09, 0.12, 0.15, 0.21):
    ...     t.feed({"ts": ts}, out.append)
    >>> [m["ts"] for m in out]
    [0.0, 0.12]
    """

    def __init__(
        self,
        interval: float,
        mode: Literal["first", "latest"],
        key: Callable[[Any], Any],
        time_of: Callable[[Any], float] = message_time,
    ) -> None:
        self.interval = interval
        self.latest = mode == "latest"
        self.key = key
        self.time_of = time_of
        #: key -> window end
        self.ends: dict[Any, float] = {}
        #: key -> held message (latest mode)
        self.held: dict[Any, Any] = {}
        self.next_due = float("inf")
        self.dropped = 0

    def feed(self, message: Any, emit: Emit) -> None:
        t = self.time_of(message)
        k = self.key(message)
        interval = self.interval
        if not self.latest:
            end = self.ends.get(k)
            if end is None or t >= end - EPS or t < end - 2 * interval:
                self.ends[k] = t + interval
                emit(message)
            else:
                self.dropped += 1
            return
        if t >= self.next_due - EPS:
            self._flush_due(t + EPS, emit)
        end = self.ends.get(k)
        if end is not None and t < end - 2 * interval:  # time went back: start over
            held = self.held.pop(k, None)
            if held is not None:
                emit(held)
            end = None
        if end is None or t >= end - EPS:
            self.ends[k] = t + interval
            emit(message)
            return
        if k in self.held:
            self.dropped += 1
        else:
            self.next_due = min(self.next_due, end)
        self.held[k] = message

    def _flush_due(self, t: float, emit: Emit) -> None:
        due = sorted(
            ((self.ends[k], k) for k in self.held if self.ends[k] <= t), key=lambda e: e[0]
        )
        for end, k in due:
            emit(self.held.pop(k))
            self.ends[k] = end + self.interval
        self.next_due = min((self.ends[k] for k in self.held), default=float("inf"))

    def flush_quiet(self, emit: Emit) -> None:
        """Emit every held message now as if its window had ended (the input went quiet);
        each key's next window starts where the old one ended, as in :meth:`feed`."""
        self._flush_due(float("inf"), emit)

    @property
    def holding(self) -> bool:
        return bool(self.held)

    def flush(self, emit: Emit) -> None:
        """Emit every held message (the input ended), in window order."""
        for _, k in sorted(((self.ends[k], k) for k in self.held), key=lambda e: e[0]):
            emit(self.held.pop(k))
        self.next_due = float("inf")


class ThrottleConfig(NodeConfig):
    """Config of ``throttle``."""

    interval: float = Field(
        gt=0,
        le=86400,
        allow_inf_nan=False,
        description=(
            "Seconds (message time): at most one message per interval per key (0.1 = 10 Hz)."
        ),
    )
    mode: Literal["first", "latest"] = Field(
        default="latest",
        description=(
            "latest: each interval's most recent message (a smooth sampled stream, delayed by up "
            "to one interval); first: the first message of each interval, the rest dropped."
        ),
    )
    key: list[str] = Field(
        default_factory=list,
        description="Field paths keying the limit (e.g. [payload.channel] or [arbitration_id]).",
    )
    quiet_flush: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        allow_inf_nan=False,
        description=(
            "Live (latest mode): after this many seconds of wall-clock quiet on the input, send "
            "the held messages. Off (null): the output depends on message time only, so live "
            "and replay give the same stream; set it when the source can fall silent."
        ),
    )

    @field_validator("key")
    @classmethod
    def _check_key(cls, v: list[str]) -> list[str]:
        return validate_paths(v)


class Throttle(Node[ThrottleConfig]):
    """At most one message per interval per key; 'first' or 'latest' (sample) semantics.

    Time is the messages' own (an event's ``ts``, a frame's ``timestamp``), so a replay at
    full speed gives exactly what a live run gives. ``mode: latest`` (default) sends each
    key's newest message once per interval: the first message of a quiet key at once, then the
    newest one at the end of each interval (a steady 10 Hz stream from a 250 Hz bus with
    ``interval: 0.1``). ``mode: first`` sends the first message of each interval at once and
    drops the rest. ``key`` (field paths, e.g. ``[payload.channel]``) limits each key apart.
    Dropped and replaced messages are counted in ``dropped``.

    Live vs replay: a held message goes out when a message at or past its window's end
    arrives (on a 250 Hz LES02 bus, within 4 ms of the wall-clock end) or when the input
    ends, so if the bus falls silent the newest message waits for the next one. With
    ``quiet_flush: S`` (off by default), S seconds of wall-clock quiet send the held messages
    at once; that is wall time, so a live run whose delivery stalls for S seconds (a loaded
    machine) can then differ from a replay. A message
    without a time is an error (counted, logged, skipped). When the flow stops, held messages
    go out first. The port carries what the node receives.
    Costs about 1 µs per message.
    """

    type_name: ClassVar[str] = "throttle"
    config_model: ClassVar[type[NodeConfig]] = ThrottleConfig
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.ANY}
    examples: ClassVar[tuple[str, ...]] = (
        "ten_hz:\n  type: throttle\n  interval: 0.1\n  key: [payload.channel]\n",
        "first_per_id:\n  type: throttle\n  interval: 1.0\n  mode: first\n"
        "  key: [arbitration_id]\n",
    )

    @classmethod
    def input_kind_for(cls, config: NodeConfig) -> Kind | None:
        assert isinstance(config, ThrottleConfig)
        kinds = {FieldPath(p).kind for p in config.key}
        return Kind(kinds.pop()) if len(kinds) == 1 else Kind.ANY

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input")
        c = self.config
        throttler = Throttler(c.interval, c.mode, key_function(c.key))
        self.throttler = throttler
        counters = self.counters
        feed = throttler.feed

        def counted_feed(m: Any, emit: Callable[[Any], None]) -> None:
            before = throttler.dropped
            feed(m, emit)
            if throttler.dropped != before:
                counters.dropped += throttler.dropped - before

        self.held = HeldStream(
            feed=counted_feed,
            pending=lambda: throttler.holding,
            flush_quiet=throttler.flush_quiet,
            flush_end=throttler.flush,
            quiet=c.quiet_flush if c.mode == "latest" else None,
            report=self.report_error,
            loop_of=lambda: self.ctx.loop,
        )
        return {"out": self.held.observable(source)}

    async def stop(self) -> None:
        """Send the held messages (latest mode) on: downstream sinks stop after this node."""
        held: HeldStream | None = getattr(self, "held", None)
        if held is not None:
            held.flush_at_stop(self.log, "held messages")
