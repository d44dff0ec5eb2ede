"""Ride detection on LES02 position samples: a plain class, no I/O, no asyncio, no Rx.

Feed :class:`RideDetector` the position samples of one source in time order with
:meth:`RideDetector.feed` ``(ts, channel, position_raw)``; tell it that time passed without a
sample with :meth:`RideDetector.advance` ``(ts)``; call :meth:`RideDetector.flush` at the end
of the data. Each call returns the event envelopes (``les02_flow.events.make_event``) it
decided, in time order. Everything works in *frame time* (the samples' ``ts``): the same
samples give the same events, whatever the speed at which they are fed.

Rules (``docs/protocol.md`` "Ride events" is the user-facing description):

* **Speed** of the detection ``channel`` is the least-squares slope of its samples over the
  last ``window`` seconds (not single-sample differences, which quantise badly). At least
  three samples in the window are needed; with fewer (after a silence) the speed is unknown
  and taken as standing.
* **Motion starts** when ``|speed| > start_speed`` (mm/s) for at least ``start_time`` seconds
  in one direction. **It ends** when ``|speed| < stop_speed`` for at least ``stop_time``
  seconds (decided at ``below_since + stop_time``), or when no sample of the detection
  channel arrives for ``idle_timeout`` seconds (decided at ``last_ts + idle_timeout``).
  These two are *deadlines*: they fire at their own ``ts`` from whichever comes first, the
  next sample/``advance`` past them or ``flush`` -- so a live timer and a replay agree.
* A motion whose displacement reaches ``min_distance`` (mm) is a **ride**: ``ride_start`` is
  emitted as soon as the displacement is reached and ``fit_span`` seconds of motion data are
  in (so the start can be fitted); ``ride_end`` when the motion ends. A shorter motion that
  moved at least one count is a ``relevel``; one that went nowhere is dropped (counted).
* **Start/end times are the real motion start/end**, back-dated from the decision: the
  displacement from the rest position near the start (resp. the remaining distance near the
  end) is fitted with ``d = k * max(t - t0, 0) ** n`` (least squares over ``t0``, ``k`` and
  ``n`` in 1 … 3.5, which covers jerk-limited and acceleration-limited profiles), using the
  samples from ``fit_search`` seconds before to ``fit_span`` seconds after the sample where
  the displacement first exceeds the rest noise. Distances are the difference of the rest
  positions (medians of the standing samples) before and after, in counts.
* ``ride_id`` is ``uuid5(RIDE_NAMESPACE, f"{source}/{channel}/{start_ts:.6f}")``: the same
  session replayed gives the same ids.
* **channel_mismatch**: for every sample, the other channel's last sample is carried to the
  same instant with the current speed; when ``|master - slave| > tolerance`` (counts) for
  longer than ``mismatch_time`` a ``state: "begin"`` event is emitted, and ``state: "end"``
  when it is back within tolerance (or the detection channel falls silent, or at flush).
* **dropout**: a gap between two samples of one channel longer than ``gap_limit`` sample
  periods (``sample_period``, or estimated from the data) is reported when the next sample
  arrives -- unless it is the LES02's silence while standing: the car stood at the gap's
  start, the position did not change by more than ``tolerance`` and the other channel was
  silent too.

Samples older than the previous sample of their channel are counted (``out_of_order``) and
ignored. Bad arguments to :meth:`RideDetector.feed` raise ``ValueError`` saying what is wrong;
the detector's state is unchanged then.

>>> det = RideDetector(DetectorParams(stop_time=0.5))
>>> events = []
>>> for k in range(1500):                  # 3 s standing, 2 s moving at 100 mm/s, standing
...     t = k * 0.004
...     pos = 0 if t < 3.0 else round(min(t - 3.0, 2.0) * 100.0)
...     events += det.feed(1000.0 + t, "master", 1000 + pos)
>>> events += det.flush()
>>> [e["type"] for e in events]
['ride_start', 'ride_end']
>>> end = events[1]["payload"]
>>> end["distance_raw"], end["direction"], round(end["start_ts"] - 1003.0, 2)
(200, 'up', 0.0)
"""

from __future__ import annotations

import functools
import math
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from les02_flow.events import Event, make_event

__all__ = [
    "CHANNELS",
    "MAX_FIT_POINTS",
    "MAX_RAW",
    "RIDE_NAMESPACE",
    "DetectorParams",
    "RideDetector",
    "SlopeWindow",
    "fit_onset",
    "ride_id",
]

CHANNELS: Final = ("master", "slave")
MAX_RAW: Final = 0xFFFFFF
#: namespace of ``ride_id`` (uuid5); never change it, or replayed sessions get new ids
RIDE_NAMESPACE: Final = uuid.UUID("6f3b1c52-5a1e-4f0e-9a57-1e5d02a1c0de")

_EXPONENTS: Final = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)
_PREFERRED: Final = 3.0
#: another exponent wins over n = 3 only with a residual below this fraction of n = 3's
_CLEARLY_BETTER: Final = 0.6
#: seconds of standing samples used for the rest position before a motion
_REST_SPAN: Final = 0.3
#: rest-noise allowance is capped at this many counts
_MAX_SPREAD: Final = 5
_GOLDEN: Final = (math.sqrt(5.0) - 1.0) / 2.0
#: most points an onset fit uses; denser data is thinned evenly (the LES02's 250 Hz gives
#: ~215 points over fit_search + fit_span, so its fits use every sample). Without the cap the
#: fit's cost grows with the sample rate (66 ms per ride start at 8 kHz per channel).
MAX_FIT_POINTS: Final = 256


def ride_id(source: str, channel: str, start_ts: float) -> str:
    """The ride's UUID, derived from source, channel and start time (microseconds).

    >>> ride_id("les02", "master", 1737319234.5)
    'a50863ea-0f65-50f4-aa22-96c1e3e6ac5a'
    """
    return str(uuid.uuid5(RIDE_NAMESPACE, f"{source}/{channel}/{start_ts:.6f}"))


@dataclass(frozen=True)
class DetectorParams:
    """Detector settings; units: mm, mm/s, seconds, counts. Invalid values raise ValueError."""

    channel: str = "master"
    resolution_mm: float = 1.0
    window: float = 0.2
    start_speed: float = 15.0
    start_time: float = 0.05
    stop_speed: float = 8.0
    stop_time: float = 2.0
    idle_timeout: float = 1.0
    min_distance: float = 20.0
    tolerance: int = 10
    mismatch_time: float = 0.5
    gap_limit: float = 3.0
    sample_period: float | None = None
    fit_span: float = 0.25
    fit_search: float = 0.6

    def __post_init__(self) -> None:
        if self.channel not in CHANNELS:
            raise ValueError(f"channel: must be 'master' or 'slave', got {self.channel!r}")
        for name in (
            "resolution_mm",
            "window",
            "start_speed",
            "stop_speed",
            "idle_timeout",
            "min_distance",
            "gap_limit",
            "fit_span",
            "fit_search",
        ):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be finite and > 0, got {value!r}")
        for name in ("start_time", "stop_time", "mismatch_time"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
        if self.tolerance < 0:
            raise ValueError(f"tolerance: must be >= 0 counts, got {self.tolerance!r}")
        if self.sample_period is not None and not (
            math.isfinite(self.sample_period) and self.sample_period > 0
        ):
            raise ValueError(f"sample_period: must be > 0 or None, got {self.sample_period!r}")
        if self.stop_speed > self.start_speed:
            raise ValueError(
                f"stop_speed: {self.stop_speed} mm/s is above start_speed {self.start_speed}"
            )

    @property
    def history(self) -> float:
        """Seconds of detection-channel samples kept (enough for the end fit)."""
        return self.stop_time + self.idle_timeout + self.fit_span + self.fit_search + 1.0


class SlopeWindow:
    """Least-squares slope of ``(t, x)`` points over the last ``window`` seconds.

    Sums are kept incrementally relative to a reference point and rebuilt every 2048 points,
    so epoch timestamps lose no precision.

    >>> w = SlopeWindow(0.1)
    >>> for k in range(50):
    ...     w.add(1e9 + k * 0.004, 3 * k)
    >>> round(w.slope() or 0.0, 3), len(w)
    (750.0, 26)
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._pts: deque[tuple[float, float]] = deque()
        self._clear_sums()

    def _clear_sums(self) -> None:
        self._ref_t = 0.0
        self._ref_x = 0.0
        self._st = self._sx = self._stt = self._stx = 0.0
        self._adds = 0

    def __len__(self) -> int:
        return len(self._pts)

    def clear(self) -> None:
        self._pts.clear()
        self._clear_sums()

    def add(self, t: float, x: float) -> None:
        pts = self._pts
        if not pts:
            self._clear_sums()
            self._ref_t, self._ref_x = t, x
        pts.append((t, x))
        dt, dx = t - self._ref_t, x - self._ref_x
        self._st += dt
        self._sx += dx
        self._stt += dt * dt
        self._stx += dt * dx
        limit = t - self.window
        while pts[0][0] < limit:
            ot, ox = pts.popleft()
            dt, dx = ot - self._ref_t, ox - self._ref_x
            self._st -= dt
            self._sx -= dx
            self._stt -= dt * dt
            self._stx -= dt * dx
        self._adds += 1
        if self._adds >= 2048:
            self._rebuild()

    def _rebuild(self) -> None:
        pts = list(self._pts)
        self._clear_sums()
        self._ref_t, self._ref_x = pts[0]
        for t, x in pts:
            dt, dx = t - self._ref_t, x - self._ref_x
            self._st += dt
            self._sx += dx
            self._stt += dt * dt
            self._stx += dt * dx

    def slope(self) -> float | None:
        """Slope in x units per second, or None with fewer than 3 points (or no time spread)."""
        n = len(self._pts)
        if n < 3:
            return None
        den = n * self._stt - self._st * self._st
        if den <= 1e-12 * n * n:
            return None
        return (n * self._stx - self._st * self._sx) / den


def _sse(ts: Sequence[float], ds: Sequence[float], t0: float, *, n: float) -> float:
    """Residual sum of squares of ``d = k * max(t - t0, 0) ** n`` with the best ``k``."""
    sdg = sgg = sdd = 0.0
    for t, d in zip(ts, ds, strict=True):
        sdd += d * d
        if t > t0:
            g = (t - t0) ** n
            sdg += d * g
            sgg += g * g
    return sdd - sdg * sdg / sgg if sgg > 0.0 else sdd


def _linear_t0(ts: Sequence[float], ds: Sequence[float], n: float) -> float | None:
    """Quick estimate of t0 from a weighted line through ``d ** (1/n)`` (points with d > 0)."""
    sw = swt = swy = swtt = swty = 0.0
    count = 0
    inv = 1.0 / n
    wexp = 2.0 - 2.0 / n
    for t, d in zip(ts, ds, strict=True):
        if t < 0.0 or d <= 0.0:
            continue
        y = d**inv
        w = d**wexp
        sw += w
        swt += w * t
        swy += w * y
        swtt += w * t * t
        swty += w * t * y
        count += 1
    if count < 3:
        return None
    den = sw * swtt - swt * swt
    if den <= 0.0:
        return None
    b = (sw * swty - swt * swy) / den
    if b <= 0.0:
        return None
    a = (swy - b * swt) / sw
    return -a / b


def _golden(fn: Callable[[float], float], lo: float, hi: float, tol: float) -> tuple[float, float]:
    a, b = lo, hi
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    fc, fd = fn(c), fn(d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = fn(c)
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = fn(d)
    x = (a + b) / 2.0
    return x, fn(x)


def fit_onset(
    points: Sequence[tuple[float, float]], lower: float, upper: float, tol: float = 1e-4
) -> float:
    """Onset time ``t0`` in ``[lower, upper]`` of a displacement that grows from rest.

    ``points`` are ``(t, d)``: time (best relative to the crossing, i.e. small numbers) and
    displacement away from the rest level (0 at rest, growing). The model is
    ``d = k * max(t - t0, 0) ** n``; ``t0``, ``k`` and ``n`` (one of 1, 1.5, 2, 2.5, 3, 3.5) are
    chosen by least squares, preferring ``n = 3`` (jerk-limited) unless another
    exponent's residual is below 0.6 times its. With no usable points, ``upper`` is returned.
    More than :data:`MAX_FIT_POINTS` points are thinned evenly (every k-th point), which
    bounds the cost per fit whatever the sample rate.

    >>> pts = [(k * 0.004 - 0.3, float(round(200 * max(k * 0.004 - 0.3 + 0.2, 0) ** 3)))
    ...        for k in range(150)]
    >>> round(fit_onset(pts, -0.6, 0.0), 3)
    -0.2
    """
    if upper <= lower or not points:
        return upper
    if len(points) > MAX_FIT_POINTS:
        points = points[:: -(-len(points) // MAX_FIT_POINTS)]
    ts = [p[0] for p in points]
    ds = [p[1] for p in points]
    fits: dict[float, tuple[float, float]] = {}
    for n in _EXPONENTS:
        guess = _linear_t0(ts, ds, n)
        if guess is None:
            lo, hi = lower, upper
        else:
            guess = min(max(guess, lower), upper)
            lo, hi = max(lower, guess - 0.05), min(upper, guess + 0.05)
        if hi - lo <= tol:
            t0, sse = lo, _sse(ts, ds, lo, n=n)
        else:
            t0, sse = _golden(functools.partial(_sse, ts, ds, n=n), lo, hi, tol)
        fits[n] = (sse, t0)
    # Quantisation dominates the residuals of a short onset, so the exponent is only weakly
    # identified: prefer the jerk-limited n = 3 (every modern elevator drive) unless another
    # exponent fits clearly better.
    sse3, best_t0 = fits[_PREFERRED]
    best_sse = sse3 * _CLEARLY_BETTER
    for sse, t0 in fits.values():
        if sse < best_sse:
            best_sse, best_t0 = sse, t0
    return best_t0


def _median_low(values: list[int]) -> int:
    values = sorted(values)
    return values[(len(values) - 1) // 2]


@dataclass
class _Chan:
    last_ts: float | None = None
    last_raw: int = 0
    period: float | None = None
    n_intervals: int = 0
    interval_sum: float = 0.0
    received: int = 0
    #: the other channel's ``received`` at this channel's last sample
    other_seen: int = 0


@dataclass
class _Move:
    """A motion in progress on the detection channel."""

    confirmed_ts: float
    direction: int
    rest_raw: int
    rest_spread: int
    t_first: float
    lower: float
    samples: int
    max_speed: float
    below_since: float | None = None
    ride_started: bool = False
    start_ts: float | None = None
    ride_id: str = ""


@dataclass
class _Mismatch:
    since: float
    max_diff: int
    master_raw: int
    slave_raw: int
    active: bool = False


class RideDetector:
    """The detector of one source. See the module docstring for the rules.

    ``count(name)`` (optional) is called for diagnostics that are not events:
    ``out_of_order``, ``discarded_moves``.
    """

    def __init__(
        self,
        params: DetectorParams | None = None,
        source: str = "les02",
        count: Callable[[str], None] | None = None,
    ) -> None:
        self.params = p = params if params is not None else DetectorParams()
        self.source = source
        self._count = count or (lambda _name: None)
        self._chans = {name: _Chan() for name in CHANNELS}
        self._other = {"master": "slave", "slave": "master"}
        self._hist: deque[tuple[float, int]] = deque()
        self._slope = SlopeWindow(p.window)
        self._speed = 0.0  # counts/s, signed (0 when unknown)
        self._standing_at_last = True
        self._segment_start: float | None = None
        self._above_since: float | None = None
        self._above_dir = 0
        self._move: _Move | None = None
        self._mismatch: _Mismatch | None = None
        self._res = p.resolution_mm
        self._flush_reason: str | None = None

    # -- public API ---------------------------------------------------------------------------

    def feed(self, ts: float, channel: str, position_raw: int) -> list[Event]:
        """One position sample. Returns the events decided up to and at ``ts``."""
        if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
            raise ValueError(f"ts must be a finite number, got {ts!r}")
        if channel not in CHANNELS:
            raise ValueError(f"channel must be 'master' or 'slave', got {channel!r}")
        if (
            not isinstance(position_raw, int)
            or isinstance(position_raw, bool)
            or not 0 <= position_raw <= MAX_RAW
        ):
            raise ValueError(f"position_raw must be an integer 0..{MAX_RAW}, got {position_raw!r}")
        ts = float(ts)
        ch = self._chans[channel]
        if ch.last_ts is not None and ts < ch.last_ts:
            self._count("out_of_order")
            return []
        out = self.advance(ts)
        if ch.last_ts is not None:
            self._check_gap(ts, channel, ch, position_raw, out)
        if channel == self.params.channel:
            self._on_detect_sample(ts, position_raw, out)
        self._check_mismatch(ts, channel, position_raw, out)
        self._update_period(ts, ch)
        ch.last_ts = ts
        ch.last_raw = position_raw
        ch.received += 1
        ch.other_seen = self._chans[self._other[channel]].received
        return out

    def next_deadline(self) -> float | None:
        """Frame time of the earliest pending decision (stop/idle), or None."""
        return self._earliest()[0]

    def advance(self, ts: float) -> list[Event]:
        """Time has reached ``ts`` (frame time) with no new sample: fire due deadlines."""
        out: list[Event] = []
        while True:
            deadline, kind = self._earliest()
            if deadline is None or deadline > ts:
                return out
            self._fire(kind, deadline, out)

    def flush(self, reason: str = "end_of_input") -> list[Event]:
        """End of data: fire every pending deadline (at its own ts).

        A ride whose car is still moving at the last sample is cut off: its ``ride_end`` has
        ``complete: false`` and ``reason`` (``"end_of_input"``, or what the caller says, e.g.
        ``"stopped"`` for a flow stopped by a signal).
        """
        self._above_since = None
        self._flush_reason = reason
        try:
            return self.advance(math.inf)
        finally:
            self._flush_reason = None

    # -- deadlines ----------------------------------------------------------------------------

    def _earliest(self) -> tuple[float | None, str]:
        p = self.params
        best: float | None = None
        kind = ""
        last = self._chans[p.channel].last_ts
        move = self._move
        if move is not None and move.below_since is not None:
            best, kind = move.below_since + p.stop_time, "stop"
        if last is not None and (move is not None or self._mismatch is not None):
            idle = last + p.idle_timeout
            if best is None or idle < best:
                best, kind = idle, "idle"
        return best, kind

    def _fire(self, kind: str, deadline: float, out: list[Event]) -> None:
        if self._move is not None:
            self._end_move(deadline, kind, out)
        if kind == "idle" and self._mismatch is not None:
            last = self._chans[self.params.channel].last_ts
            self._end_mismatch(deadline, last if last is not None else deadline, out)

    # -- detection channel ----------------------------------------------------------------------

    def _on_detect_sample(self, ts: float, raw: int, out: list[Event]) -> None:
        p = self.params
        ch = self._chans[p.channel]
        if ch.last_ts is None or self._is_gap(ts - ch.last_ts, ch):
            self._segment_start = ts
            self._slope.clear()
        hist = self._hist
        hist.append((ts, raw))
        limit = ts - p.history
        while hist[0][0] < limit:
            hist.popleft()
        self._slope.add(ts, raw)
        v = self._slope.slope()
        self._speed = v if v is not None else 0.0
        speed_mm = abs(self._speed) * self._res
        self._standing_at_last = speed_mm < p.stop_speed
        move = self._move
        if move is None:
            if speed_mm > p.start_speed:
                direction = 1 if self._speed > 0 else -1
                if self._above_since is None or direction != self._above_dir:
                    self._above_since, self._above_dir = ts, direction
                if ts - self._above_since >= p.start_time:
                    self._begin_move(ts)
                    move = self._move
            else:
                self._above_since = None
            if move is None:
                return
        else:
            move.samples += 1
        move.max_speed = max(move.max_speed, speed_mm)
        if speed_mm < p.stop_speed:
            if move.below_since is None:
                move.below_since = ts
        else:
            move.below_since = None
        if (
            not move.ride_started
            and abs(raw - move.rest_raw) * self._res >= p.min_distance
            and ts >= move.t_first + p.fit_span
        ):
            self._start_ride(ts, move, out)

    def _begin_move(self, ts: float) -> None:
        p = self.params
        assert self._above_since is not None and self._segment_start is not None
        seg = self._segment_start
        direction = self._above_dir
        hi = self._above_since - p.window
        lo = hi - _REST_SPAN
        rest = [r for t, r in self._hist if lo <= t <= hi and t >= seg]
        if not rest:
            rest = [r for t, r in self._hist if t >= seg][:1]
        rest_raw = _median_low(rest)
        spread = min(max(abs(r - rest_raw) for r in rest), _MAX_SPREAD)
        d_lo = 1.5 + spread
        hist = list(self._hist)
        t_first = max(seg, hist[0][0])
        for i in range(len(hist) - 1, -1, -1):
            t, r = hist[i]
            if t < seg:
                break
            if direction * (r - rest_raw) < d_lo:
                t_first = hist[i + 1][0] if i + 1 < len(hist) else t
                break
        lower = t_first - p.fit_search
        if seg > lower:
            period = self._chans[p.channel].period or 0.0
            lower = max(lower, seg - period)
        samples = sum(1 for t, _r in hist if t >= lower)
        self._move = _Move(
            confirmed_ts=ts,
            direction=direction,
            rest_raw=rest_raw,
            rest_spread=spread,
            t_first=t_first,
            lower=lower,
            samples=samples,
            max_speed=0.0,
        )
        self._above_since = None

    def _fit_start(self, move: _Move) -> float:
        if move.start_ts is not None:
            return move.start_ts
        p = self.params
        t_first = move.t_first
        pts = [
            (t - t_first, float(move.direction * (r - move.rest_raw)))
            for t, r in self._hist
            if move.lower <= t <= t_first + p.fit_span
        ]
        move.start_ts = t_first + fit_onset(pts, move.lower - t_first, 0.0)
        move.ride_id = ride_id(self.source, p.channel, move.start_ts)
        return move.start_ts

    def _start_ride(self, ts: float, move: _Move, out: list[Event]) -> None:
        self._fit_start(move)
        move.ride_started = True
        raw = move.rest_raw
        out.append(
            make_event(
                "ride_start",
                ts,
                {
                    "ride_id": move.ride_id,
                    "channel": self.params.channel,
                    "position_raw": raw,
                    "position_mm": self._mm(raw),
                    "direction": "up" if move.direction > 0 else "down",
                    "start_ts": move.start_ts,
                },
                self.source,
            )
        )

    def _end_move(self, decision_ts: float, kind: str, out: list[Event]) -> None:
        move = self._move
        assert move is not None
        self._move = None
        p = self.params
        start_ts = self._fit_start(move)
        hist = list(self._hist)
        last_ts, last_raw = hist[-1]
        end_ts = last_ts
        end_raw = last_raw
        if move.below_since is not None:
            tail = [r for t, r in hist if t >= move.below_since]
            end_raw = _median_low(tail)
            spread = min(max(abs(r - end_raw) for r in tail), _MAX_SPREAD)
            d_lo = 1.5 + spread
            direction = 1 if end_raw >= move.rest_raw else -1
            t_cross: float | None = None
            for i in range(len(hist) - 1, -1, -1):
                t, r = hist[i]
                if direction * (end_raw - r) >= d_lo:
                    t_cross = hist[i + 1][0] if i + 1 < len(hist) else t
                    break
            if t_cross is not None:
                pts = [
                    (t_cross - t, float(direction * (end_raw - r)))
                    for t, r in hist
                    if t_cross - p.fit_span <= t <= t_cross + p.fit_search
                ]
                upper_bound = min(p.fit_search, t_cross - start_ts)
                end_ts = t_cross - fit_onset(pts, -upper_bound, 0.0)
        end_ts = max(end_ts, start_ts)
        samples = move.samples - sum(1 for t, _r in hist if t > end_ts)
        distance = end_raw - move.rest_raw
        payload: dict[str, Any] = {
            "start_ts": start_ts,
            "end_ts": end_ts,
            "duration_s": round(end_ts - start_ts, 6),
            "start_position_raw": move.rest_raw,
            "start_position_mm": self._mm(move.rest_raw),
            "end_position_raw": end_raw,
            "end_position_mm": self._mm(end_raw),
            "distance_raw": abs(distance),
            "distance_mm": self._mm(abs(distance)),
            "direction": ("up" if distance > 0 else "down")
            if distance
            else ("up" if move.direction > 0 else "down"),
            "max_speed_mm_s": round(move.max_speed, 3),
            "samples": max(samples, 0),
        }
        if move.ride_started:
            # complete: the car stood again when the ride ended (stop rule, or the LES02's
            # silence after arrival); cut off: still moving at the last sample
            moving = move.below_since is None
            reason = None
            if moving:
                reason = self._flush_reason or "silence"
            payload["complete"] = reason is None
            payload["reason"] = reason
            out.append(
                make_event(
                    "ride_end", decision_ts, {"ride_id": move.ride_id, **payload}, self.source
                )
            )
        elif distance:
            out.append(
                make_event("relevel", decision_ts, {"channel": p.channel, **payload}, self.source)
            )
        else:
            self._count("discarded_moves")
        self._above_since = None

    # -- diagnostics ----------------------------------------------------------------------------

    def _is_gap(self, gap: float, ch: _Chan) -> bool:
        period = self.params.sample_period or ch.period
        return period is not None and gap > self.params.gap_limit * period

    def _update_period(self, ts: float, ch: _Chan) -> None:
        if ch.last_ts is None or self.params.sample_period is not None:
            return
        dt = ts - ch.last_ts
        if ch.n_intervals < 8:
            ch.n_intervals += 1
            ch.interval_sum += dt
            if ch.n_intervals == 8:
                ch.period = ch.interval_sum / 8 or None
                if ch.period is None:
                    ch.n_intervals = 0
                    ch.interval_sum = 0.0
            return
        assert ch.period is not None
        if dt <= self.params.gap_limit * ch.period:
            ch.period += 0.02 * (dt - ch.period)
            ch.period = max(ch.period, 1e-6)

    def _check_gap(self, ts: float, channel: str, ch: _Chan, raw: int, out: list[Event]) -> None:
        assert ch.last_ts is not None
        gap = ts - ch.last_ts
        if not self._is_gap(gap, ch):
            return
        period = self.params.sample_period or ch.period
        assert period is not None
        other = self._chans[self._other[channel]]
        other_alive = other.received - ch.other_seen > 2  # the other kept sending meanwhile
        jump = abs(raw - ch.last_raw)
        if self._standing_at_last and jump <= self.params.tolerance and not other_alive:
            return  # the LES02's silence while standing
        out.append(
            make_event(
                "dropout",
                ts,
                {
                    "channel": channel,
                    "start_ts": ch.last_ts,
                    "end_ts": ts,
                    "gap_s": round(gap, 6),
                    "missing": max(round(gap / period) - 1, 1),
                    "position_before_raw": ch.last_raw,
                    "position_after_raw": raw,
                },
                self.source,
            )
        )

    def _check_mismatch(self, ts: float, channel: str, raw: int, out: list[Event]) -> None:
        other = self._chans[self._other[channel]]
        if other.last_ts is None:
            return
        period = self.params.sample_period or other.period
        age = ts - other.last_ts
        if period is None or age > self.params.gap_limit * period:
            return  # nothing recent to compare with
        est = other.last_raw + self._speed * age
        master, slave = (raw, est) if channel == "master" else (est, raw)
        diff = master - slave
        mm = self._mismatch
        if abs(diff) > self.params.tolerance:
            idiff = round(diff)
            m_raw = raw if channel == "master" else other.last_raw
            s_raw = raw if channel == "slave" else other.last_raw
            if mm is None:
                mm = self._mismatch = _Mismatch(ts, idiff, m_raw, s_raw)
            elif abs(idiff) > abs(mm.max_diff):
                mm.max_diff, mm.master_raw, mm.slave_raw = idiff, m_raw, s_raw
            if not mm.active and ts - mm.since >= self.params.mismatch_time:
                mm.active = True
                out.append(self._mismatch_event("begin", ts, mm, None))
        elif mm is not None:
            self._end_mismatch(ts, ts, out)

    def _end_mismatch(self, ts: float, end_ts: float, out: list[Event]) -> None:
        mm = self._mismatch
        self._mismatch = None
        if mm is not None and mm.active:
            out.append(self._mismatch_event("end", ts, mm, end_ts))

    def _mismatch_event(self, state: str, ts: float, mm: _Mismatch, end_ts: float | None) -> Event:
        return make_event(
            "channel_mismatch",
            ts,
            {
                "state": state,
                "start_ts": mm.since,
                "end_ts": end_ts,
                "duration_s": round((end_ts if end_ts is not None else ts) - mm.since, 6),
                "max_diff_raw": mm.max_diff,
                "max_diff_mm": self._mm(mm.max_diff),
                "master_raw": mm.master_raw,
                "slave_raw": mm.slave_raw,
                "tolerance_raw": self.params.tolerance,
            },
            self.source,
        )

    def _mm(self, raw: float) -> float:
        return round(raw * self._res, 6)
