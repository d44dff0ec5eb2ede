"""Ride detection on LES02 position samples: a plain class, no I/O, no asyncio, no Rx.

Feed :class:`RideDetector` the position samples of one source in time order with
:meth:`RideDetector.feed` ``(ts, channel, position_raw)``; tell it that time passed without a
sample with :meth:`RideDetector.advance` ``(ts)``; call :meth:`RideDetector.flush` at the end
of the data. Each call returns the event envelopes (``les02_flow.events.make_event``) it
decided, in time order. Everything works in *frame time* (the samples' ``ts``): the same
samples give the same events, whatever the speed at which they are fed.

**Timing model** (``docs/rides.md`` is the user-facing description). The ``ts`` are *host*
stamps: later than the send time by a latency that comes in bursts (a startup backlog, USB
batches, a stalled host then a burst). The LES02 sends at a fixed rate, so each channel's
samples go through a :class:`SampleClock` that puts them back on the sender's timeline
(nominal ``rate_hz``, period re-estimated within ``rate_tolerance``; the lower envelope of
the stamps ``max_stall`` seconds ahead and behind). Everything below uses those de-jittered
times. A sample's time is final once ``max_stall`` seconds (or as many samples) followed it,
so events are decided that much later than before; stop/idle deadlines fire ``2 * max_stall``
after their ``ts`` (no sample still to come can be earlier). :meth:`RideDetector.advance`
``(ts)`` promises that no sample stamped before ``ts`` follows.

Rules (``docs/protocol.md`` "Ride events" is the user-facing description):

* **Speed** of the detection ``channel`` is the least-squares slope of its samples over the
  last ``window`` seconds (not single-sample differences, which quantise badly). At least
  three samples in the window are needed; with fewer (after a silence) the speed is unknown
  and taken as standing. A speed above ``max_speed`` is a timing fault the clock could not
  undo (e.g. a stall longer than ``max_stall``): it is ignored and counted
  (``implausible_speed``), the previous speed stands. ``max_speed_mm_s`` reports the
  highest speed reachable at ``max_accel`` from the previous one (a squeezed burst cannot
  report a speed the car did not reach).
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
* **dropout**: a gap on the de-jittered timeline between two samples of one channel longer
  than ``gap_limit`` periods (``missing`` = gap / period - 1) is reported when the next
  sample is released -- unless it is the LES02's silence while standing: the car stood at
  the gap's start, the position did not change by more than ``tolerance`` and the other
  channel was silent too. Bunched stamps (batches, a stall then its burst) are no gap.

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

import bisect
import functools
import itertools
import math
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

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
    "round6",
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
#: samples per block of the period estimate (1 s at 250 Hz) and blocks in its median (15 s)
_PERIOD_BLOCK: Final = 250
_PERIOD_BLOCKS: Final = 15
#: samples a new run of consecutive samples needs ahead before a gap of less than 3 periods
#: is believed (32 ms at 250 Hz: longer than a USB batch)
_MIN_RUN: Final = 8
#: seconds of stamps the "much faster than rate_hz" check (rate_mismatch) looks at
_RATE_SPAN: Final = 5.0


#: below this magnitude a float's ulp is at most 0.25 (2**51)
_EXACT: Final = 2.0**51


def round6(x: float) -> float:
    """``round(x, 6)``, bit for bit, in about half the time (the detector's per-sample path
    inlines it).

    ``round(x, 6)`` is the float nearest to the decimal ``k / 10**6`` nearest to ``x``. When
    ``q = x * 1e6`` (rounded: off by at most 0.125 below 2**51) lies within 0.3 of the integer
    ``k``, the exact ``x * 10**6`` lies within 0.425 of ``k``, so ``k`` is that decimal, and
    IEEE division ``k / 1e6`` (both exact) is correctly rounded: the same float. Anything
    else (near a tie, huge, zero: the sign of -0.0) takes ``round`` itself.

    >>> round6(1737319234.0010002), round6(0.1234565), round6(-0.0)
    (1737319234.001, 0.123456, -0.0)
    """
    q = x * 1e6
    if -_EXACT < q < _EXACT:  # not NaN, not huge
        k = round(q)
        if k and -0.3 <= q - k <= 0.3:
            return k / 1e6
    return round(x, 6)


def ride_id(source: str, channel: str, start_ts: float) -> str:
    """The ride's UUID, derived from source, channel and start time (microseconds).

    >>> ride_id("les02", "master", 1737319234.5)
    'a50863ea-0f65-50f4-aa22-96c1e3e6ac5a'
    """
    return str(uuid.uuid5(RIDE_NAMESPACE, f"{source}/{channel}/{start_ts:.6f}"))


def _f(default: Any, description: str, **constraints: Any) -> Any:
    return Field(default=default, description=description, allow_inf_nan=False, **constraints)


class DetectorParams(BaseModel):
    """Detector settings; units: mm, mm/s, seconds, counts, Hz. Invalid values raise ValueError.

    The one definition of the settings: the ``ride_detect`` node's config model extends it, so
    a field, its default, bounds and description are written here only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    channel: Literal["master", "slave"] = Field(
        default="master", description="LES02 channel whose samples drive the detection."
    )
    resolution_mm: float = _f(1.0, "Millimetres per position count (for the *_mm fields).", gt=0)
    window: float = _f(0.2, "Seconds of samples in the least-squares speed window.", gt=0)
    start_speed: float = _f(15.0, "A motion starts above this speed (mm/s) ...", gt=0)
    start_time: float = _f(0.05, "... held for at least this many seconds.", ge=0)
    stop_speed: float = _f(8.0, "A motion ends below this speed (mm/s) ...", gt=0)
    stop_time: float = _f(2.0, "... held for at least this many seconds (seed rule).", ge=0)
    idle_timeout: float = _f(
        1.0, "A motion also ends when the channel sends nothing for this many seconds.", gt=0
    )
    min_distance: float = _f(
        20.0, "Motions shorter than this (mm) are re-levelling: a relevel event, no ride.", gt=0
    )
    tolerance: int = Field(
        default=10, ge=0, description="Largest |master - slave| difference (counts) that is ok."
    )
    mismatch_time: float = _f(
        0.5, "channel_mismatch when the difference exceeds tolerance this long (s).", ge=0
    )
    rate_hz: float = _f(
        250.0,
        "Nominal samples per second of ONE channel (the LES02 sends 250 Hz per channel); the "
        "timing model starts from it and never leaves rate_tolerance around it.",
        gt=0,
    )
    rate_tolerance: float = _f(
        0.05,
        "How far (fraction) the estimated sample rate may stray from rate_hz (clock drift is "
        "~0.0002); bounds the period estimate so bursts cannot collapse it.",
        gt=0,
        lt=0.5,
    )
    max_stall: float = _f(
        0.5,
        "Longest host stall (s) whose late burst of samples is put back on the sender's "
        "timeline; events are decided this much later (twice it for stop/idle decisions).",
        gt=0,
        le=5.0,
    )
    max_speed: float = _f(
        25000.0,
        "Fastest speed (mm/s) a car can reach; a faster regression speed is a timing fault "
        "and ignored (counted in implausible_speed).",
        gt=0,
    )
    max_accel: float = _f(
        3000.0,
        "Highest acceleration (mm/s²) a car reaches (passenger lifts stay below 1,500); "
        "max_speed_mm_s never rises faster than this, so a burst the timing model could not "
        "undo cannot report a speed the car did not reach.",
        gt=0,
    )
    gap_limit: float = _f(
        3.0,
        "dropout when a channel's de-jittered gap exceeds this many sample periods.",
        gt=1,
    )
    sample_period: float | None = _f(
        None,
        "Seconds between two samples of one channel; null = 1 / rate_hz (then refined from "
        "the data within rate_tolerance).",
        gt=0,
    )
    fit_span: float = _f(
        0.25, "Seconds of motion after the departure used to back-date start and end.", gt=0
    )
    fit_search: float = _f(
        0.6, "How far (s) before the departure the real motion start is searched.", gt=0
    )

    @model_validator(mode="after")
    def _check(self) -> DetectorParams:
        if self.stop_speed > self.start_speed:
            raise ValueError(
                f"stop_speed: {self.stop_speed} mm/s is above start_speed {self.start_speed}"
            )
        if self.max_speed <= self.start_speed:
            raise ValueError(
                f"max_speed: {self.max_speed} mm/s is not above start_speed {self.start_speed}"
            )
        return self

    @property
    def nominal_period(self) -> float:
        """Seconds between two samples of one channel the model starts from."""
        return self.sample_period if self.sample_period is not None else 1.0 / self.rate_hz

    @property
    def history(self) -> float:
        """Seconds of detection-channel samples kept (enough for the end fit)."""
        return self.stop_time + self.idle_timeout + self.fit_span + self.fit_search + 1.0


class SlopeWindow:
    """Least-squares slope of ``(t, x)`` points over the last ``window`` seconds.

    The window is bounded by count too (``max_points``, the newest are kept): timestamps that
    never advance cannot make it grow. Sums are kept incrementally relative to a reference
    point and rebuilt every 2048 points, so epoch timestamps lose no precision.

    >>> w = SlopeWindow(0.1)
    >>> for k in range(50):
    ...     w.add(1e9 + k * 0.004, 3 * k)
    >>> round(w.slope() or 0.0, 3), len(w)
    (750.0, 26)
    """

    def __init__(self, window: float, max_points: int = 1 << 30) -> None:
        self.window = window
        self.max_points = max(int(max_points), 3)
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
        while pts[0][0] < limit or len(pts) > self.max_points:
            ot, ox = pts.popleft()
            dt, dx = ot - self._ref_t, ox - self._ref_x
            self._st -= dt
            self._sx -= dx
            self._stt -= dt * dt
            self._stx -= dt * dx
        self._adds += 1
        if self._adds >= 2048:
            self._rebuild()

    def add_slope(self, t: float, x: float) -> float | None:
        """:meth:`add` then :meth:`slope` in one call (the detector's per-sample path)."""
        pts = self._pts
        if not pts:
            self._clear_sums()
            self._ref_t, self._ref_x = t, x
        pts.append((t, x))
        dt, dx = t - self._ref_t, x - self._ref_x
        st = self._st + dt
        sx = self._sx + dx
        stt = self._stt + dt * dt
        stx = self._stx + dt * dx
        limit = t - self.window
        max_points = self.max_points
        while pts[0][0] < limit or len(pts) > max_points:
            ot, ox = pts.popleft()
            dt, dx = ot - self._ref_t, ox - self._ref_x
            st -= dt
            sx -= dx
            stt -= dt * dt
            stx -= dt * dx
        self._st, self._sx, self._stt, self._stx = st, sx, stt, stx
        self._adds += 1
        if self._adds >= 2048:
            self._rebuild()
        n = len(pts)
        if n < 3:
            return None
        st = self._st
        den = n * self._stt - st * st
        if den <= 1e-12 * n * n:
            return None
        return (n * self._stx - st * self._sx) / den

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


def _sse_of(ts: Sequence[float], ds: Sequence[float], n: float) -> Callable[[float], float]:
    """``t0 -> _sse(ts, ds, t0, n=n)``, bit for bit, for the many ``t0`` of one fit.

    ``sdd`` does not depend on ``t0``: it is summed once, in the same order. The fits' times
    are sorted (ascending for the start fit, descending for the end fit), so the points with
    ``t > t0`` are a suffix (a prefix): only those are visited, in the same order, with the
    same operations. Unsorted times take :func:`_sse` itself.
    """
    sdd = 0.0
    for d in ds:
        sdd += d * d
    pairs = list(zip(ts, ds, strict=True))
    ascending = all(a <= b for a, b in itertools.pairwise(ts))
    descending = not ascending and all(a >= b for a, b in itertools.pairwise(ts))
    if not (ascending or descending):
        return functools.partial(_sse, ts, ds, n=n)

    def sse(t0: float) -> float:
        sdg = sgg = 0.0
        if ascending:
            for t, d in pairs[bisect.bisect_right(ts, t0) :]:
                g = (t - t0) ** n
                sdg += d * g
                sgg += g * g
        else:
            for t, d in pairs:
                if t <= t0:
                    break
                g = (t - t0) ** n
                sdg += d * g
                sgg += g * g
        return sdd - sdg * sdg / sgg if sgg > 0.0 else sdd

    return sse


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
        sse_at = _sse_of(ts, ds, n)
        if hi - lo <= tol:
            t0, sse = lo, sse_at(lo)
        else:
            t0, sse = _golden(sse_at, lo, hi, tol)
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


class SampleClock:
    """De-jittered sample times of ONE channel of a fixed-rate sender (pure; no I/O).

    The sender (the LES02) sends every ``period`` seconds; the host stamps each frame when its
    reader gets it, i.e. *later* by a latency that is mostly small but comes in bursts: a
    startup backlog, USB batches stamped with one time, a host stall followed by the stalled
    frames in a burst. Latency is never negative, so the earliest stamps bound the sender's
    timeline. For sample ``n`` the clock takes the lower envelope of the stamps that follow it
    within ``lookahead`` seconds and ``depth`` samples, carried back along the sender's period::

        t(n) = min over m in [n, n + depth] with h(m) <= h(n) + lookahead of h(m) - (m - n) * P

    then bounds it: never after its own stamp ``h(n)``, never more than ``lookahead`` before it,
    never less than ``P / 2`` after the previous sample. A burst of stale samples therefore gets
    back the spacing it was sent with; samples that are really missing (a dropout) leave a gap
    that the samples after them confirm, because they keep arriving ``P`` apart at the new
    offset. Host clock drift is followed because the envelope is re-anchored to the stamps
    with every sample; only the ``depth`` samples ahead depend on ``P``.

    ``P`` starts at the nominal period and is re-estimated continuously: the median over the
    last :data:`_PERIOD_BLOCKS` blocks of :data:`_PERIOD_BLOCK` de-jittered, gap-free samples,
    clamped to ``nominal * (1 ± tolerance)`` -- a burst can neither collapse nor inflate it.

    A sample is *released* (its time is final) once ``depth`` more samples arrived, or a later
    sample/``release_until`` shows ``lookahead`` seconds passed since its stamp. Both memory and
    work per sample are bounded by ``depth`` whatever the stamps do.

    >>> clk = SampleClock(0.004, 0.05, 0.5)
    >>> out = []
    >>> for k in range(300):                 # 40 samples in a startup burst, then on time
    ...     clk.push(10.0 + max(k, 40) * 0.004 + (0.0 if k >= 40 else k * 1e-5), k, out)
    >>> clk.release_all(out)
    >>> [round(t - 10.0, 4) for t, _ in out[:3]], round(clk.period, 6)
    ([0.0, 0.004, 0.008], 0.004)
    """

    def __init__(self, period: float, tolerance: float, lookahead: float) -> None:
        self.nominal = period
        self.p_lo = period / (1.0 + tolerance)
        self.p_hi = period * (1.0 + tolerance)
        self.period = period
        self.lookahead = lookahead
        # fewer samples than lookahead spans at the slowest rate: on a regular stream samples
        # are released by count (cheap, one per push), by time only after a silence
        self.depth = max(4, int(lookahead / self.p_hi))
        self._pending: deque[tuple[int, float, int]] = deque()  # (index, stamp, raw)
        self._mins: deque[tuple[int, float]] = deque()  # envelope candidates (index, stamp)
        self._back: deque[tuple[int, float]] = deque()  # the same behind (released samples)
        self._next = 0
        self._last_t: float | None = None
        self._run_t0 = 0.0
        self._run_n = -1
        self._blocks: deque[float] = deque(maxlen=_PERIOD_BLOCKS)
        self._raw_n = 0
        #: (stamp, samples so far) every _PERIOD_BLOCK samples (bounded: stamps may not move)
        self._raw_marks: deque[tuple[float, int]] = deque(maxlen=64)
        #: the raw stamps' median spacing is far below the period's bounds
        self.fast = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def too_fast(self) -> bool:
        """The stamps say the sender is much faster than the nominal rate allows."""
        return self.fast

    def push(self, h: float, raw: int, out: list[tuple[float, int]]) -> None:
        """One sample with host stamp ``h`` (not older than the previous one); appends the
        samples whose time became final to ``out`` as ``(t, raw)``."""
        pend = self._pending
        nxt = self._next
        limit = h - self.lookahead
        while pend and (nxt - pend[0][0] > self.depth or pend[0][1] < limit):
            self._release(out)
        pend.append((nxt, h, raw))
        mins = self._mins
        period = self.period
        while mins and h - mins[-1][1] <= (nxt - mins[-1][0]) * period:
            mins.pop()
        mins.append((nxt, h))
        self._next = nxt + 1
        self._raw_n += 1
        if self._raw_n % _PERIOD_BLOCK == 0:
            # the sustained raw rate over the last >= _RATE_SPAN seconds of stamps (a startup
            # backlog or a burst compresses only max_stall of it)
            marks = self._raw_marks
            if not marks or h - marks[-1][0] >= _RATE_SPAN / 16:
                marks.append((h, self._raw_n))
            while len(marks) > 2 and h - marks[1][0] >= _RATE_SPAN:
                marks.popleft()
            h0, n0 = marks[0]
            if h - h0 >= _RATE_SPAN:
                self.fast = (h - h0) / (self._raw_n - n0) < 0.8 * self.p_lo

    def next_release(self) -> float | None:
        """Frame time after which the oldest pending sample is released, or None."""
        return self._pending[0][1] + self.lookahead if self._pending else None

    def release_until(self, ts: float, out: list[tuple[float, int]]) -> None:
        """Time has reached ``ts``: release the samples stamped more than lookahead before."""
        pend = self._pending
        limit = ts - self.lookahead
        while pend and pend[0][1] < limit:
            self._release(out)

    def release_all(self, out: list[tuple[float, int]]) -> None:
        """End of data: release every pending sample."""
        while self._pending:
            self._release(out)

    def _short_run(self, h: float, period: float) -> bool:
        """Fewer than :data:`_MIN_RUN` samples follow (this one's stamp ``h``) before the next
        jump of the stamps: too few to tell a missing sample from this one's latency."""
        prev = h
        for n, (_idx, hm, _raw) in enumerate(self._pending, 1):
            if hm - prev > 3.0 * period:
                return True
            if n >= _MIN_RUN:
                return False
            prev = hm
        return True

    def _release(self, out: list[tuple[float, int]]) -> None:
        idx, h, raw = self._pending.popleft()
        mins = self._mins
        m_idx, m_h = mins[0]
        period = self.period
        t = m_h - (m_idx - idx) * period  # the envelope ahead
        if m_idx == idx:
            mins.popleft()
        # ... and behind, within the same run of consecutive samples: the stamps before carried
        # forward. When even the earliest stamps ahead are later than that by half a period,
        # samples are missing before this one: a new run starts (a real gap).
        back = self._back
        depth = self.depth
        run_on = False
        if back:
            while back[0][0] < idx - depth:
                back.popleft()
            b_idx, b_h = back[0]
            pred = b_h + (idx - b_idx) * period
            if t <= pred + 0.5 * period or (t < pred + 3.0 * period and self._short_run(h, period)):
                run_on = True
                if pred < t:
                    t = pred
        if not run_on:
            back.clear()
        while back and h - back[-1][1] <= (idx - back[-1][0]) * period:
            back.pop()
        back.append((idx, h))
        floor = h - self.lookahead
        last = self._last_t
        if last is not None and last + 0.5 * period > floor:
            floor = last + 0.5 * period
        if t < floor:
            t = floor
        if t > h:
            t = h
        # whole microseconds, like the stamps: no float noise in ids and ts (round6, inlined)
        q = t * 1e6
        if -2251799813685248.0 < q < 2251799813685248.0:  # |q| < 2**51
            k = round(q)
            t = k / 1e6 if k and -0.3 <= q - k <= 0.3 else round(t, 6)
        else:
            t = round(t, 6)
        # period estimate: blocks of gap-free de-jittered samples
        if last is None or not 0.5 * period < t - last < 1.5 * period:
            self._run_t0, self._run_n = t, 0
        else:
            self._run_n += 1
            if self._run_n >= _PERIOD_BLOCK:
                blocks = self._blocks
                blocks.append((t - self._run_t0) / self._run_n)
                self._run_t0, self._run_n = t, 0
                median = sorted(blocks)[len(blocks) // 2]
                self.period = min(max(median, self.p_lo), self.p_hi)
        self._last_t = t
        out.append((t, raw))


def _median_low(values: list[int]) -> int:
    values = sorted(values)
    return values[(len(values) - 1) // 2]


@dataclass
class _Chan:
    last_ts: float | None = None
    last_raw: int = 0
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


class _Core:
    """The ride rules on de-jittered samples (times from :class:`SampleClock`)."""

    def __init__(
        self,
        params: DetectorParams,
        source: str,
        count: Callable[[str], None],
        clocks: dict[str, SampleClock],
    ) -> None:
        self.params = p = params
        self.source = source
        self._count = count
        self._clocks = clocks
        self._chans = {name: _Chan() for name in CHANNELS}
        self._other = {"master": "slave", "slave": "master"}
        #: per channel: (its state, the other's state, the other's name, its clock)
        self._pairs = {
            name: (self._chans[name], self._chans[other], other, clocks[name])
            for name, other in self._other.items()
        }
        self._detect = p.channel
        self._detect_chan = self._chans[p.channel]
        self._stop_time = p.stop_time
        self._idle_timeout = p.idle_timeout
        self._gap_limit = p.gap_limit
        # settings read per sample, computed once (same values as the expressions they replace)
        self._silence = max(p.window, p.idle_timeout / 2)
        self._history = p.history
        p_lo = clocks[p.channel].p_lo
        self._hist: deque[tuple[float, int]] = deque(maxlen=int(2 * p.history / p_lo) + 64)
        self._slope = SlopeWindow(p.window, int(2 * p.window / p_lo) + 8)
        self._speed = 0.0  # counts/s, signed (0 when unknown)
        self._standing_at_last = True
        self._segment_start: float | None = None
        self._above_since: float | None = None
        self._above_dir = 0
        self._move: _Move | None = None
        self._mismatch: _Mismatch | None = None
        self._res = p.resolution_mm
        self._max_speed = p.max_speed
        self._plausible = 0.0  # mm/s
        self._flush_reason: str | None = None

    def busy(self) -> bool:
        """A decision may be pending (a motion or a mismatch is open)."""
        return self._move is not None or self._mismatch is not None

    def sample(self, ts: float, channel: str, position_raw: int) -> list[Event]:
        """One de-jittered sample. Returns the events decided up to and at ``ts``."""
        out: list[Event] = []
        self.sample_into(ts, channel, position_raw, out)
        return out

    def sample_into(self, ts: float, channel: str, position_raw: int, out: list[Event]) -> None:
        """:meth:`sample`, appending the events to ``out``."""
        ch, other, _name, clock = self._pairs[channel]
        last_ts = ch.last_ts
        if last_ts is not None and ts < last_ts:
            ts = last_ts  # cannot happen with SampleClock times; never go back
        if self._move is not None or self._mismatch is not None:
            deadline = self._earliest()[0]
            if deadline is not None and deadline <= ts:
                out += self.advance(ts)
        if last_ts is not None and ts - last_ts > self._gap_limit * clock.period:
            self._check_gap(ts, channel, ch, position_raw, out)
        if channel == self._detect:
            self._on_detect_sample(ts, position_raw, out)
        self._check_mismatch(ts, channel, position_raw, out)
        ch.last_ts = ts
        ch.last_raw = position_raw
        ch.received += 1
        ch.other_seen = other.received

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
        best: float | None = None
        kind = ""
        last = self._detect_chan.last_ts
        move = self._move
        if move is not None and move.below_since is not None:
            best, kind = move.below_since + self._stop_time, "stop"
        if last is not None and (move is not None or self._mismatch is not None):
            idle = last + self._idle_timeout
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
        ch = self._pairs[self._detect][0]
        if ch.last_ts is None or ts - ch.last_ts > self._silence:
            # a silence (not a short dropout: the regression bridges those exactly)
            self._segment_start = ts
            self._slope.clear()
            self._plausible = 0.0
        hist = self._hist
        hist.append((ts, raw))
        limit = ts - self._history
        while hist[0][0] < limit:
            hist.popleft()
        v = self._slope.add_slope(ts, raw)
        if v is None:
            self._speed = 0.0
        elif abs(v) * self._res > self._max_speed:
            self._count("implausible_speed")  # a timing fault the clock could not undo
        else:
            self._speed = v
        speed_mm = abs(self._speed) * self._res
        # the speed a car can have reached (max_accel from the last one): what max_speed reports
        last = ch.last_ts
        step = p.max_accel * (ts - last) if last is not None else 0.0
        self._plausible = min(speed_mm, self._plausible + step)
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
        if self._plausible > move.max_speed:
            move.max_speed = self._plausible
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
            lower = max(lower, seg - self._clocks[p.channel].period)
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

    def _is_gap(self, gap: float, channel: str) -> bool:
        return gap > self.params.gap_limit * self._clocks[channel].period

    def _check_gap(self, ts: float, channel: str, ch: _Chan, raw: int, out: list[Event]) -> None:
        assert ch.last_ts is not None
        gap = ts - ch.last_ts
        if not self._is_gap(gap, channel):
            return
        period = self._clocks[channel].period
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
        _ch, other, other_name, _clock = self._pairs[channel]
        if other.last_ts is None:
            return
        period = self._clocks[other_name].period
        age = ts - other.last_ts
        if age > self._gap_limit * period:
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


class RideDetector:
    """The detector of one source. See the module docstring for the rules.

    ``count(name)`` (optional) is called for diagnostics that are not events:
    ``out_of_order``, ``discarded_moves``, ``implausible_speed``, ``rate_mismatch``.
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
        period = p.nominal_period
        self.clocks = {
            name: SampleClock(period, p.rate_tolerance, p.max_stall) for name in CHANNELS
        }
        self._clock_list = tuple(self.clocks.values())
        self._core = _Core(p, source, self._count, self.clocks)
        self._last_h: dict[str, float] = {}
        #: stop/idle decisions wait this long (frame time): no sample still to come can be
        #: earlier on the de-jittered timeline
        self._horizon = 2.0 * p.max_stall
        self._rate_warned: set[str] = set()
        self._released: list[tuple[float, int]] = []

    def feed(self, ts: float, channel: str, position_raw: int) -> list[Event]:
        """One position sample (host stamp ``ts``). Returns the events decided by now."""
        # fast paths first (a float that is finite: ts - ts is 0.0 only then; a plain int)
        if type(ts) is not float or ts - ts != 0.0:
            if not isinstance(ts, (int, float)) or isinstance(ts, bool) or not math.isfinite(ts):
                raise ValueError(f"ts must be a finite number, got {ts!r}")
            ts = float(ts)
        if channel not in CHANNELS:
            raise ValueError(f"channel must be 'master' or 'slave', got {channel!r}")
        if (
            type(position_raw) is not int
            and (not isinstance(position_raw, int) or isinstance(position_raw, bool))
        ) or not 0 <= position_raw <= MAX_RAW:
            raise ValueError(f"position_raw must be an integer 0..{MAX_RAW}, got {position_raw!r}")
        # whole microseconds, as recordings keep them: a live run (full-precision stamps) and
        # the replay of its recording see the same times, so they give the same events and ids
        q = ts * 1e6  # ts = round6(ts), inlined
        if -2251799813685248.0 < q < 2251799813685248.0:  # |q| < 2**51
            k = round(q)
            ts = k / 1e6 if k and -0.3 <= q - k <= 0.3 else round(ts, 6)
        else:
            ts = round(ts, 6)
        last = self._last_h.get(channel)
        if last is not None and ts < last:
            self._count("out_of_order")
            return []
        # advance(ts), inlined: releases by time are rare, decisions only with a motion open
        out: list[Event] = []
        for clk in self._clock_list:
            pend = clk._pending
            if pend and pend[0][1] + clk.lookahead < ts:
                self._release(out, ts)
                break
        core = self._core
        if core._move is not None or core._mismatch is not None:
            deadline = core._earliest()[0]
            if deadline is not None and deadline <= ts - self._horizon:
                out += core.advance(ts - self._horizon)
        self._last_h[channel] = ts
        clock = self.clocks[channel]
        released = self._released  # reused: one sample is released per push, usually
        released.clear()
        clock.push(ts, position_raw, released)
        if released:
            sample = core.sample_into
            for t, raw in released:
                sample(t, channel, raw, out)
            if clock.fast and channel not in self._rate_warned:
                self._rate_warned.add(channel)
                self._count("rate_mismatch")
        return out

    def next_deadline(self) -> float | None:
        """Frame time at which :meth:`advance` has something to do (a pending sample's
        release, a stop/idle decision), or None."""
        best = self._core.next_deadline()
        if best is not None:
            best += self._horizon
        for clock in self.clocks.values():
            r = clock.next_release()
            if r is not None and (best is None or r < best):
                best = r
        return best

    def advance(self, ts: float) -> list[Event]:
        """Time has reached ``ts`` (frame time) and no sample stamped earlier will follow:
        release what the look-ahead waited for, fire due decisions."""
        out: list[Event] = []
        for clock in self._clock_list:  # cheap test first: releases by time are rare
            r = clock.next_release()
            if r is not None and r < ts:
                self._release(out, ts)
                break
        core = self._core
        if core.busy():
            out += core.advance(ts - self._horizon)
        return out

    def flush(self, reason: str = "end_of_input") -> list[Event]:
        """End of data: release every sample, fire every pending decision (at its own ts).

        A ride whose car is still moving at the last sample is cut off: its ``ride_end`` has
        ``complete: false`` and ``reason`` (``"end_of_input"``, or what the caller says, e.g.
        ``"stopped"`` for a flow stopped by a signal).
        """
        out: list[Event] = []
        self._release(out, None)
        return out + self._core.flush(reason)

    def _release(self, out: list[Event], ts: float | None) -> None:
        """Release by time (``ts``) or everything (None), both channels merged in time."""
        merged: list[tuple[float, str, int]] = []
        for name, clock in self.clocks.items():
            got: list[tuple[float, int]] = []
            if ts is None:
                clock.release_all(got)
            else:
                clock.release_until(ts, got)
            merged += [(t, name, raw) for t, raw in got]
        if len(merged) > 1:
            merged.sort(key=lambda x: x[0])
        sample = self._core.sample_into
        for t, name, raw in merged:
            sample(t, name, raw, out)
