"""Node ``ride_detect``: position samples in, ride events out (a thin wrapper around
:class:`les02_flow.nodes.rides.detector.RideDetector`)."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
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


class RideDetectConfig(NodeConfig):
    """Configuration of ``ride_detect`` (units: mm, mm/s, s, counts)."""

    channel: Literal["master", "slave"] = Field(
        default="master", description="LES02 channel whose samples drive the detection."
    )
    resolution_mm: float = Field(
        default=1.0, gt=0, description="Millimetres per position count (for the *_mm fields)."
    )
    window: float = Field(
        default=0.2, gt=0, description="Seconds of samples in the least-squares speed window."
    )
    start_speed: float = Field(
        default=15.0, gt=0, description="A motion starts above this speed (mm/s) ..."
    )
    start_time: float = Field(
        default=0.05, ge=0, description="... held for at least this many seconds."
    )
    stop_speed: float = Field(
        default=8.0, gt=0, description="A motion ends below this speed (mm/s) ..."
    )
    stop_time: float = Field(
        default=2.0, ge=0, description="... held for at least this many seconds (seed rule)."
    )
    idle_timeout: float = Field(
        default=1.0,
        gt=0,
        description="A motion also ends when the channel sends nothing for this many seconds.",
    )
    min_distance: float = Field(
        default=20.0,
        gt=0,
        description="Motions shorter than this (mm) are re-levelling: a relevel event, no ride.",
    )
    tolerance: int = Field(
        default=10, ge=0, description="Largest |master - slave| difference (counts) that is ok."
    )
    mismatch_time: float = Field(
        default=0.5,
        ge=0,
        description="channel_mismatch when the difference exceeds tolerance this long (s).",
    )
    gap_limit: float = Field(
        default=3.0,
        gt=0,
        description="dropout when a channel's gap exceeds this many sample periods.",
    )
    sample_period: float | None = Field(
        default=None,
        gt=0,
        description="Seconds between two samples of one channel; null = estimate from the data.",
    )
    fit_span: float = Field(
        default=0.25,
        gt=0,
        description="Seconds of motion after the departure used to back-date start and end.",
    )
    fit_search: float = Field(
        default=0.6,
        gt=0,
        description="How far (s) before the departure the real motion start is searched.",
    )
    live_grace: float = Field(
        default=0.25,
        ge=0,
        description=(
            "Live runs: wall-clock seconds the idle/stop timer waits past a deadline for "
            "late frames before it decides (the event ts is the deadline, not the wait)."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> RideDetectConfig:
        self.params()
        return self

    def params(self) -> DetectorParams:
        """The detector parameters of this config (ValueError when inconsistent)."""
        return DetectorParams(
            channel=self.channel,
            resolution_mm=self.resolution_mm,
            window=self.window,
            start_speed=self.start_speed,
            start_time=self.start_time,
            stop_speed=self.stop_speed,
            stop_time=self.stop_time,
            idle_timeout=self.idle_timeout,
            min_distance=self.min_distance,
            tolerance=self.tolerance,
            mismatch_time=self.mismatch_time,
            gap_limit=self.gap_limit,
            sample_period=self.sample_period,
            fit_span=self.fit_span,
            fit_search=self.fit_search,
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
                self.node.params, source=source, count=self.node.counters.bump
            )
        return det

    def emit_all(self, events: list[Event]) -> None:
        emit = self.observer.on_next
        counters = self.node.counters
        for ev in events:
            name = _COUNTED.get(ev["type"])
            if name is not None:
                counters.bump(name)
            elif ev["type"] == "channel_mismatch" and ev["payload"]["state"] == "begin":
                counters.bump("mismatches")
            emit(ev)

    def on_next(self, event: Any) -> None:
        if not isinstance(event, dict):
            self.node.bad_input(event, "not an event envelope (dict)")
            return
        ts = event.get("ts")
        source = event.get("source", "les02")
        if (
            not isinstance(ts, (int, float))
            or isinstance(ts, bool)
            or not math.isfinite(ts)
            or not isinstance(source, str)
        ):
            self.node.bad_input(event, "event without a finite numeric ts / string source")
            self.observer.on_next(event)
            return
        made: list[Event]
        if event.get("type") == "position_sample":
            det = self.detector(source)
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
            self.emit_all(before)
            self.observer.on_next(event)
            self.emit_all(made[len(before) :])
        else:
            self.observer.on_next(event)
        self.anchor(ts)

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
    docs/protocol.md) interleaved in timestamp order, so ``parse -> rides -> ws`` serves
    everything. Each ``source`` gets its own detector.

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
    ``discarded_moves`` (motions that went nowhere).
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

    def bad_input(self, message: Any, why: str) -> None:
        self.counters.errors += 1
        self.counters.bump("bad_input")
        self._error_log(
            logging.WARNING, "node '%s': %s: %r -- passed through", self.node_id, why, message
        )

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"node '{self.node_id}' (ride_detect) needs an input of events")
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

    async def stop(self) -> None:
        """Cancel the live timers (idempotent)."""
        for run in list(self._runs):
            run.close()
