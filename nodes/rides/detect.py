"""Node ``ride_detect``: position samples in, ride events out (a thin wrapper around
:class:`les02_flow.nodes.rides.detector.RideDetector`)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from pydantic import Field
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from les02_flow.events import Event
from les02_flow.node import Context, Kind, Node, NodeConfig
from les02_flow.nodes.rides.detector import DetectorParams, RideDetector

__all__ = ["RideDetect", "RideDetectConfig"]

_COUNTED = {
    "ride_end": "rides",
    "relevel": "relevels",
    "dropout": "dropouts",
}


class RideDetectConfig(NodeConfig, DetectorParams):
    """Configuration of ``ride_detect`` (units: mm, mm/s, s, counts, Hz).

    The detector's fields come from :class:`DetectorParams` (written once, there); only the
    live timer's setting is the node's own.
    """

    live_grace: float = Field(
        default=0.25,
        ge=0,
        allow_inf_nan=False,
        description=(
            "Live runs: wall-clock seconds the idle/stop timer waits past a deadline for "
            "late frames before it decides (the event ts is the deadline, not the wait)."
        ),
    )

    def params(self) -> DetectorParams:
        """The detector parameters of this config."""
        return DetectorParams.model_validate(
            self.model_dump(include=set(DetectorParams.model_fields))
        )


class _Run:
    """The state of one subscription: detectors per source, the live timer, the observer."""

    def __init__(self, node: RideDetect, observer: abc.ObserverBase[Any]) -> None:
        self.node = node
        self.observer = observer
        self.detectors: dict[str, RideDetector] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.anchor_ts = 0.0
        self.anchor_loop = 0.0
        self.closed = False

    def detector(self, source: str) -> RideDetector:
        det = self.detectors.get(source)
        if det is None:
            det = self.detectors[source] = RideDetector(
                self.node.params, source=source, count=self.node.diagnostic
            )
        return det

    def emit_all(self, events: list[Event], emit: Callable[[Any], None] | None = None) -> None:
        emit = emit or self.observer.on_next
        counters = self.node.counters
        for ev in events:
            name = _COUNTED.get(ev["type"])
            if name is not None:
                counters.bump(name)
            elif ev["type"] == "channel_mismatch" and ev["payload"]["state"] == "begin":
                counters.bump("mismatches")
            emit(ev)

    def on_next(self, event: Any) -> None:
        ts = self.handle(event, self.observer.on_next)
        if ts is not None:
            self.anchor(ts)

    def on_batch(self, events: list[Any]) -> list[Any]:
        """:meth:`on_next` for each event, emitting into the returned list (the live timer is
        anchored once, at the last event's ts)."""
        out: list[Any] = []
        emit = out.append
        handle = self.handle
        detectors = self.detectors
        last: float | None = None
        for event in events:
            try:
                # handle()'s common case inline: a position sample of a known source that the
                # detector takes and that decides nothing (anything else: handle() itself; a
                # sample feed() refuses left the detector unchanged, handle() feeds it again)
                if type(event) is dict and event.get("type") == "position_sample":
                    ts = event.get("ts")
                    source = event.get("source", "les02")
                    det = detectors.get(source) if type(source) is str else None
                    payload = event.get("payload")
                    if (
                        det is not None
                        and type(ts) is float
                        and ts - ts == 0.0
                        and type(payload) is dict
                    ):
                        try:
                            made = det.feed(
                                ts,
                                payload.get("channel"),  # type: ignore[arg-type]
                                payload.get("position_raw"),  # type: ignore[arg-type]
                            )
                        except ValueError:
                            made = None
                        if made is not None and not made:
                            emit(event)
                            last = ts
                            continue
                        if made:
                            before = [e for e in made if e["ts"] < ts]
                            self.emit_all(before, emit)
                            emit(event)
                            self.emit_all(made[len(before) :], emit)
                            last = ts
                            continue
                got = handle(event, emit)
            except Exception as exc:  # what the engine's inlet guard does per message
                self.node.report_error(event, exc)
                continue
            if got is not None:
                last = got
        if last is not None:
            self.anchor(last)
        return out

    def handle(self, event: Any, emit: Callable[[Any], None]) -> float | None:
        """One event: emit it and what it made the detector decide, in time order; returns
        the event's ts when it advances the frame clock (``None`` for bad input)."""
        # the common event first: a dict with a finite float ts (ts - ts is 0.0 only then)
        # and a str source; anything else takes the full checks
        ts: Any
        if type(event) is dict:
            ts = event.get("ts")
            source = event.get("source", "les02")
            plain = type(ts) is float and ts - ts == 0.0 and type(source) is str
        else:
            plain = False
        if not plain:
            if not isinstance(event, dict):
                self.node.bad_input(event, "not an event envelope (dict)")
                return None
            ts = event.get("ts")
            source = event.get("source", "les02")
            if (
                not isinstance(ts, (int, float))
                or isinstance(ts, bool)
                or not math.isfinite(ts)
                or not isinstance(source, str)
            ):
                self.node.bad_input(event, "event without a finite numeric ts / string source")
                emit(event)
                return None
        made: list[Event]
        if event.get("type") == "position_sample":
            det = self.detectors.get(source) or self.detector(source)
            payload = event.get("payload")
            try:
                if not isinstance(payload, dict):
                    raise ValueError("payload is not an object")
                made = det.feed(ts, payload.get("channel"), payload.get("position_raw"))  # type: ignore[arg-type]
            except ValueError as exc:
                self.node.bad_input(event, f"bad position_sample: {exc}")
                made = det.advance(ts)
        else:
            det_or_none = self.detectors.get(source)
            made = det_or_none.advance(ts) if det_or_none is not None else []
        if made:
            before = [e for e in made if e["ts"] < ts]
            self.emit_all(before, emit)
            emit(event)
            self.emit_all(made[len(before) :], emit)
        else:
            emit(event)
        return float(ts)

    # -- live timer -------------------------------------------------------------------------

    def anchor(self, ts: float) -> None:
        if self.loop is None:
            try:
                self.loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # fed synchronously (tests): no timers
        self.anchor_ts = ts
        self.anchor_loop = self.loop.time()
        self.arm()

    def arm(self) -> None:
        if self.timer is not None or self.loop is None or self.closed:
            return
        deadlines = [d for det in self.detectors.values() if (d := det.next_deadline()) is not None]
        if not deadlines:
            return
        delay = max(min(deadlines) - self.anchor_ts, 0.0) + self.node.config.live_grace
        self.timer = self.loop.call_later(delay, self.on_timer)

    def on_timer(self) -> None:
        self.timer = None
        if self.closed or self.loop is None:
            return
        frame_now = self.anchor_ts + (self.loop.time() - self.anchor_loop)
        frame_now -= self.node.config.live_grace
        try:
            for det in self.detectors.values():
                self.emit_all(det.advance(frame_now))
        except Exception as exc:
            self.node.report_error("<idle timer>", exc)
        self.arm()

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def on_completed(self) -> None:
        self.cancel()
        reason = "stopped" if self.node.ctx.stopping else "end_of_input"
        try:
            for det in self.detectors.values():
                self.emit_all(det.flush(reason))
        except Exception as exc:
            self.node.report_error("<flush>", exc)
        self.closed = True
        self.observer.on_completed()

    def on_error(self, err: Exception) -> None:
        self.cancel()
        self.closed = True
        self.observer.on_error(err)

    def close(self) -> None:
        self.closed = True
        self.cancel()


class RideDetect(Node[RideDetectConfig]):
    """Detect rides, re-levelling, channel mismatches and dropouts in position samples.

    Port ``out`` carries every input event unchanged **plus** the detector's events
    (``ride_start``, ``ride_end``, ``relevel``, ``channel_mismatch``, ``dropout``; see
    docs/protocol.md) as soon as they are decided, so ``parse -> rides -> ws`` serves
    everything. Each ``source`` gets its own detector. A ride still moving when the input
    ends or the flow is stopped has ``complete: false`` and a ``reason``.

    Timing: the ``ts`` of position samples are host stamps, which come in bursts (USB
    batches, a stalled host, a reader catching up at start). The LES02 sends at a fixed rate
    (``rate_hz``, 250 per channel), so each channel's samples are put back on the sender's
    timeline before anything else: a sample's time is the lower envelope of the stamps
    ``max_stall`` seconds around it, carried along the sample period (estimated continuously,
    never more than ``rate_tolerance`` from nominal). A burst of late samples gets back the
    spacing it was sent with -- no absurd speeds, no false dropouts; samples really missing
    leave a ``dropout`` with their count. The price: events come out ``max_stall`` (0.5 s)
    later, stop/idle decisions twice that; their ``ts`` are unchanged (decision frame time),
    so they can follow samples up to 1 s newer in ``out``. See docs/rides.md.

    Detection runs in frame time (the events' ``ts``) only: speed is a least-squares slope over
    ``window`` seconds; a motion starts above ``start_speed`` for ``start_time`` and ends below
    ``stop_speed`` for ``stop_time`` or after ``idle_timeout`` without a sample; a motion
    shorter than ``min_distance`` is a ``relevel``. Start and end are back-dated to the real
    motion start/end by fitting the departure and arrival. ``ride_id`` is a UUID derived from
    source, channel and start time, so a replayed session gets the same ids.

    Wall clock: the only use is a loop timer (``loop.call_later``) in live runs, so that
    ``ride_end`` still comes out when the bus falls silent. It fires ``live_grace`` seconds
    after the pending deadline (mapped from frame time via the last event's arrival) and the
    events it releases carry the deadline's frame-time ``ts`` -- exactly what a replay gives,
    where the next event after the deadline (or the end of the input) releases them. Any event
    of a source (status frames too) advances that source's frame clock.

    A malformed ``position_sample`` is passed through, counted (``errors``, ``bad_input``) and
    logged (rate-limited). Counters: ``rides``, ``relevels``, ``mismatches``, ``dropouts``,
    ``out_of_order`` (samples older than their channel's previous one, ignored),
    ``discarded_moves`` (motions that went nowhere), ``implausible_speed`` (speeds above
    ``max_speed`` ignored), ``rate_mismatch`` (samples much faster than ``rate_hz``; logged).
    """

    type_name: ClassVar[str] = "ride_detect"
    input_kind: ClassVar[Kind | None] = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}
    examples: ClassVar[tuple[str, ...]] = (
        "rides:\n  type: ride_detect\n",
        "rides:\n  type: ride_detect\n  resolution_mm: 0.1\n  min_distance: 50\n"
        "  stop_time: 1.5\n  tolerance: 20\n",
    )

    def __init__(self, node_id: str, config: RideDetectConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self.params = config.params()
        self._runs: set[_Run] = set()

    def diagnostic(self, name: str) -> None:
        """A detector diagnostic: counted; a sample rate the timing model cannot follow is
        also logged (once per channel and source)."""
        self.counters.bump(name)
        if name == "rate_mismatch":
            p = self.params
            self.log.warning(
                "position samples arrive much faster than rate_hz=%g per channel "
                "(+%d%% at most); the timing model keeps %g Hz -- set rate_hz to the sender's "
                "rate (a simulator at speed N sends N times faster)",
                p.rate_hz,
                round(p.rate_tolerance * 100),
                p.rate_hz,
            )

    def bad_input(self, message: Any, why: str) -> None:
        self.counters.errors += 1
        self.counters.bump("bad_input")
        self._error_log(logging.WARNING, "%s: %r -- passed through", why, message)

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input of events")
        upstream = source

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            run = _Run(self, observer)
            self._runs.add(run)
            sub = upstream.subscribe(run.on_next, run.on_error, run.on_completed)

            def dispose() -> None:
                run.close()
                self._runs.discard(run)
                sub.dispose()

            return Disposable(dispose)

        return {"out": Observable(subscribe)}

    def process_batch(self, messages: list[Any]) -> Mapping[str, list[Any]]:
        """The batch path (replay at speed max): the engine's subscription's state, each
        event handled as :meth:`build`'s stream handles it."""
        for run in self._runs:  # the engine subscribes the port once
            return {"out": run.on_batch(messages)}
        return {}

    async def stop(self) -> None:
        """Cancel the live timers (idempotent)."""
        for run in list(self._runs):
            run.close()
