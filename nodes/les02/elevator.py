"""A simulated LES02 elevator: exact jerk-limited trips between floors, as LES02 CAN frames.

Pure model: no I/O, no asyncio, no Rx. The ``les02_sim`` node (:mod:`.sim`) puts the frames on a
CAN bus; tests and benchmarks can iterate them directly.

The car
    * floors are given as absolute heights in millimetres (``floors_mm``, strictly increasing,
      default six floors 3.5 m apart: ``0, 3500, ..., 17500``); floor ``i`` is ``floors_mm[i]``;
    * the car starts standing on ``start_floor`` (an index; ``None`` = a random floor);
    * it alternates *dwell* (doors open, standing, a uniform random time between ``dwell_min``
      and ``dwell_max`` seconds) and *trip* (to a uniformly chosen other floor). A run starts
      with a dwell; a finite ``trips=N`` run ends with one more dwell after the N-th trip;
    * a trip is a 7-segment S-curve (jerk-limited, rest to rest) with limits ``v_max`` (m/s),
      ``a_max`` (m/s²) and ``j_max`` (m/s³), solved in closed form (:class:`SCurve`). Short trips
      that never reach ``v_max`` (or never reach ``a_max``) use the reduced exact peak.

The frames (as docs/protocol.md describes them)
    * position frames: id ``0x80`` (master) and ``0x81`` (slave), DLC 4, bytes 0..2 =
      ``position_raw`` (24-bit big-endian), byte 3 = 0. Each channel sends at ``rate_hz``
      (default 250 Hz), interleaved: tick ``k`` is at ``t = k / (2 * rate_hz)`` seconds, even
      ticks are master frames, odd ticks slave frames (master at 0, 4, 8 ms, slave at 2, 6 ms);
    * ``position_raw = round(pos_mm / resolution_mm)`` for the master; the slave adds
      ``slave_offset_counts`` and a uniform integer noise in ``[-slave_noise_counts,
      +slave_noise_counts]``; both clamped to ``0 .. 0xFFFFFF``. Each channel samples the car at
      its own tick time;
    * with ``silent_when_stopped``, no position frames are sent while the car stands, from
      ``silent_hold`` seconds after it stopped (or after the start) until the next trip begins;
    * status frames (simulator-defined; the seed defines no status fields): id ``0x30`` (master)
      at ``n * status_interval + tick / 2`` and ``0x31`` (slave) one tick later, DLC 8:
      byte 0 = ``0x01`` (state "measuring"), byte 1 = ``0x00`` (no warnings), bytes 2..3 = the
      status sequence number ``n`` (u16 big-endian, wraps), bytes 4..7 = ``0x00``. They are sent
      whether or not the car is silent. ``status_interval = 0`` disables them.

A run is finite with ``trips`` and/or ``duration`` (frames with ``t < duration``; whichever
ends first), endless otherwise. Everything is deterministic for a given ``seed``; with
``seed=None`` a random seed is drawn once and kept in :attr:`ElevatorSim.seed`.

Calling rules: :meth:`ElevatorSim.frames` returns a fresh generator each call (each replays the
same run); :attr:`ElevatorSim.trips` is the ground truth of the trips the most recent
generator has entered (a trip is appended when the generator reaches its ``start_t``).
:meth:`ElevatorSim.schedule` gives the trips up front without generating frames.

>>> sim = ElevatorSim(ElevatorParams(trips=1, seed=7, dwell_min=1.0, dwell_max=1.0))
>>> frames = list(sim.frames())
>>> [hex(f.can_id) for f in frames[:4]], frames[0].t, frames[1].t
(['0x80', '0x30', '0x81', '0x31'], 0.0, 0.001)
>>> frames[0].data.hex(), len(sim.trips)
('00000000', 1)
>>> trip = sim.trips[0]
>>> trip.start_t, trip.from_mm, trip.to_mm == sim.params.floors_mm[trip.to_floor]
(1.0, 0.0, True)
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, NamedTuple, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_FLOORS_MM",
    "MAX_RAW",
    "POSITION_MASTER_ID",
    "POSITION_SLAVE_ID",
    "STATUS_MASTER_ID",
    "STATUS_SLAVE_ID",
    "ElevatorParams",
    "ElevatorSim",
    "SCurve",
    "SimFrame",
    "Trip",
    "encode_position",
    "encode_status",
]

POSITION_MASTER_ID: Final = 0x80
POSITION_SLAVE_ID: Final = 0x81
STATUS_MASTER_ID: Final = 0x30
STATUS_SLAVE_ID: Final = 0x31
MAX_RAW: Final = 0xFFFFFF
DEFAULT_FLOORS_MM: Final[tuple[float, ...]] = (0.0, 3500.0, 7000.0, 10500.0, 14000.0, 17500.0)


class SimFrame(NamedTuple):
    """One simulated CAN frame: ``t`` seconds from the start of the run, 11-bit id, payload."""

    t: float
    can_id: int
    data: bytes


def encode_position(raw: int) -> bytes:
    """A position payload: 24-bit big-endian ``raw`` (clamped to 0..0xFFFFFF), then a zero byte.

    >>> encode_position(144).hex(), encode_position(-5).hex(), encode_position(1 << 30).hex()
    ('00009000', '00000000', 'ffffff00')
    """
    if raw < 0:
        raw = 0
    elif raw > MAX_RAW:
        raw = MAX_RAW
    return raw.to_bytes(3, "big") + b"\x00"


def encode_status(sequence: int) -> bytes:
    """The simulator-defined status payload (see the module docstring).

    >>> encode_status(258).hex()
    '0100010200000000'
    """
    return b"\x01\x00" + (sequence & 0xFFFF).to_bytes(2, "big") + b"\x00\x00\x00\x00"


# --------------------------------------------------------------------------------------------
# Motion profile


@dataclass(frozen=True)
class SCurve:
    """An exact 7-segment jerk-limited rest-to-rest profile over ``distance`` (> 0).

    Units are whatever the caller uses consistently (the simulator uses mm and s). Segments:
    jerk ``+j`` for ``t_jerk``, constant acceleration for ``t_accel``, jerk ``-j`` for
    ``t_jerk``, cruise at ``peak_speed`` for ``t_cruise``, then the mirror image. When the
    distance is too short to reach ``v_max`` the peak speed is solved exactly: first with
    ``a_max`` still reached (a quadratic), else with a triangular acceleration (a cube root).

    >>> c = SCurve.plan(3500.0, 1600.0, 800.0, 1200.0)   # one 3.5 m floor, mm and s
    >>> round(c.peak_speed, 3), c.peak_accel, c.t_cruise, round(c.duration, 4)
    (1427.769, 800.0, 0.0, 4.9028)
    >>> c.position(0.0), c.position(c.duration), round(c.position(c.duration / 2), 9)
    (0.0, 3500.0, 1750.0)
    """

    distance: float
    v_max: float
    a_max: float
    j_max: float
    peak_speed: float
    peak_accel: float
    t_jerk: float
    t_accel: float
    t_cruise: float
    duration: float
    #: segment start times, and per segment (t0, p0, v0, a0, jerk)
    _starts: tuple[float, ...] = field(repr=False)
    _segments: tuple[tuple[float, float, float, float, float], ...] = field(repr=False)

    @classmethod
    def plan(cls, distance: float, v_max: float, a_max: float, j_max: float) -> SCurve:
        """Solve the profile. All arguments must be finite and > 0 (``ValueError`` otherwise)."""
        for name, value in (
            ("distance", distance),
            ("v_max", v_max),
            ("a_max", a_max),
            ("j_max", j_max),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"SCurve: {name} must be finite and > 0, got {value!r}")
        v, a, j = v_max, a_max, j_max
        # distance of accelerating to v_max and back (a_max reached on the way when v*j >= a^2)
        full = v * (v / a + a / j) if v * j >= a * a else 2.0 * v * math.sqrt(v / j)
        if distance >= full:
            vp = v
        elif v * j >= a * a and distance >= 2.0 * a**3 / (j * j):
            # a_max still reached: vp^2/a + vp*a/j = D
            vp = 0.5 * a * (-a / j + math.sqrt((a / j) ** 2 + 4.0 * distance / a))
            vp = min(vp, v)
        else:
            # triangular acceleration: D = 2 * vp^(3/2) / sqrt(j)
            vp = min((distance * distance * j / 4.0) ** (1.0 / 3.0), v)
        if vp * j >= a * a:
            ap = a
            tj = a / j
            ta = max(vp / a - a / j, 0.0)
        else:
            tj = math.sqrt(vp / j)
            ap = j * tj
            ta = 0.0
        t_ramp = 2.0 * tj + ta
        tc = max((distance - vp * t_ramp) / vp, 0.0) if vp >= v else 0.0
        durations = (tj, ta, tj, tc, tj, ta, tj)
        jerks = (j, 0.0, -j, 0.0, -j, 0.0, j)
        segments: list[tuple[float, float, float, float, float]] = []
        t0 = p0 = v0 = a0 = 0.0
        for dt, jk in zip(durations, jerks, strict=True):
            if dt <= 0.0:
                continue
            segments.append((t0, p0, v0, a0, jk))
            p0 += v0 * dt + a0 * dt * dt / 2.0 + jk * dt**3 / 6.0
            v0 += a0 * dt + jk * dt * dt / 2.0
            a0 += jk * dt
            t0 += dt
        return cls(
            distance=distance,
            v_max=v,
            a_max=a,
            j_max=j,
            peak_speed=vp,
            peak_accel=ap,
            t_jerk=tj,
            t_accel=ta,
            t_cruise=tc,
            duration=2.0 * t_ramp + tc,
            _starts=tuple(s[0] for s in segments),
            _segments=tuple(segments),
        )

    def state(self, t: float) -> tuple[float, float, float, float]:
        """``(position, velocity, acceleration, jerk)`` at ``t`` seconds after the start.

        Before 0 and after ``duration`` the car stands at 0 resp. ``distance``. Position is
        clamped to ``0 .. distance`` (it is monotonic; the clamp only removes rounding).
        """
        if t <= 0.0:
            return 0.0, 0.0, 0.0, 0.0
        if t >= self.duration:
            return self.distance, 0.0, 0.0, 0.0
        i = bisect.bisect_right(self._starts, t) - 1
        t0, p0, v0, a0, jk = self._segments[i]
        dt = t - t0
        p = p0 + v0 * dt + a0 * dt * dt / 2.0 + jk * dt**3 / 6.0
        p = min(max(p, 0.0), self.distance)
        return p, v0 + a0 * dt + jk * dt * dt / 2.0, a0 + jk * dt, jk

    def position(self, t: float) -> float:
        """Position at ``t`` seconds after the start (exactly 0 / ``distance`` at the ends)."""
        return self.state(t)[0]


# --------------------------------------------------------------------------------------------
# Schedule


@dataclass(frozen=True)
class Trip:
    """Ground truth of one trip. Times are seconds from the start of the run.

    ``start_t`` is when the car begins to move, ``end_t`` when it stands again at ``to_mm``.
    """

    index: int
    start_t: float
    end_t: float
    from_floor: int
    to_floor: int
    from_mm: float
    to_mm: float
    peak_speed_mm_s: float
    peak_accel_mm_s2: float
    profile: SCurve = field(repr=False, compare=False)

    @property
    def duration(self) -> float:
        return self.end_t - self.start_t

    @property
    def direction(self) -> int:
        """+1 up, -1 down."""
        return 1 if self.to_mm > self.from_mm else -1

    def position_mm(self, t: float) -> float:
        """The car's position at run time ``t`` (``from_mm`` before, ``to_mm`` after the trip)."""
        if t >= self.end_t:
            return self.to_mm
        return self.from_mm + self.direction * self.profile.position(t - self.start_t)


class ElevatorParams(BaseModel):
    """Model parameters; invalid values raise ``ValueError`` naming the field.

    Distances are in mm, times in s, limits in SI units (m/s, m/s², m/s³) as elevator data
    sheets give them. See the module docstring for the meaning of each field. The one
    definition of these fields: the ``les02_sim`` node's config model extends it, so a field,
    its default, bounds and description are written here only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    floors_mm: tuple[float, ...] = Field(
        default=DEFAULT_FLOORS_MM,
        min_length=2,
        description="Floor heights in mm, strictly increasing (floor i = floors_mm[i]).",
    )
    start_floor: int | None = Field(
        default=0, ge=0, description="Index of the floor the car starts on; null = random."
    )
    v_max: float = Field(default=1.6, gt=0, description="Maximum speed in m/s.")
    a_max: float = Field(default=0.8, gt=0, description="Maximum acceleration in m/s².")
    j_max: float = Field(default=1.2, gt=0, description="Maximum jerk in m/s³.")
    dwell_min: float = Field(
        default=3.0, ge=0, description="Shortest door dwell between trips, in seconds."
    )
    dwell_max: float = Field(
        default=8.0, ge=0, description="Longest door dwell between trips, in seconds."
    )
    resolution_mm: float = Field(
        default=1.0, gt=0, description="Millimetres per position count (position_raw)."
    )
    rate_hz: float = Field(
        default=250.0, gt=0, description="Position frames per second per channel (interleaved)."
    )
    slave_offset_counts: int = Field(
        default=2, description="Constant offset of the slave position from the master, counts."
    )
    slave_noise_counts: int = Field(
        default=1, ge=0, description="Uniform noise bound on the slave position, +/- counts."
    )
    silent_when_stopped: bool = Field(
        default=False,
        description="Send no position frames while the car stands (after silent_hold).",
    )
    silent_hold: float = Field(
        default=0.5, ge=0, description="Seconds of position frames after stopping before silence."
    )
    status_interval: float = Field(
        default=1.0, ge=0, description="Seconds between status frames per channel; 0 = none."
    )
    trips: int | None = Field(
        default=None, ge=1, description="Stop after this many trips (and one last dwell)."
    )
    duration: float | None = Field(
        default=None, gt=0, description="Stop after this many simulated seconds."
    )
    seed: int | None = Field(
        default=None, description="Random seed for trips, dwells and noise; null = random."
    )

    @model_validator(mode="after")
    def _check_model(self) -> Self:
        floors = self.floors_mm
        if not all(math.isfinite(f) and f >= 0.0 for f in floors):
            raise ValueError(f"floors_mm: heights must be finite and >= 0, got {list(floors)}")
        if any(b <= a for a, b in itertools.pairwise(floors)):
            raise ValueError(f"floors_mm: heights must be strictly increasing, got {list(floors)}")
        _positive("resolution_mm", self.resolution_mm)
        if round(floors[-1] / self.resolution_mm) > MAX_RAW:
            raise ValueError(
                f"floors_mm: top floor {floors[-1]} mm is {round(floors[-1] / self.resolution_mm)}"
                f" counts at resolution_mm={self.resolution_mm}, above the 24-bit maximum {MAX_RAW}"
            )
        if self.start_floor is not None and not 0 <= self.start_floor < len(floors):
            raise ValueError(
                f"start_floor: {self.start_floor} is not a floor index 0..{len(floors) - 1}"
            )
        for name in ("v_max", "a_max", "j_max", "rate_hz"):
            _positive(name, getattr(self, name))
        for name in ("dwell_min", "dwell_max", "silent_hold", "status_interval"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"{name}: must be finite and >= 0, got {value!r}")
        if self.dwell_max < self.dwell_min:
            raise ValueError(f"dwell_max: {self.dwell_max} is less than dwell_min {self.dwell_min}")
        if self.duration is not None:
            _positive("duration", self.duration)
        return self

    def elevator_params(self) -> ElevatorParams:
        """These parameters as a plain :class:`ElevatorParams` (drops a subclass's own fields)."""
        if type(self) is ElevatorParams:
            return self
        return ElevatorParams(**{name: getattr(self, name) for name in ElevatorParams.model_fields})

    @property
    def tick(self) -> float:
        """Seconds between two consecutive position frames (of either channel)."""
        return 1.0 / (2.0 * self.rate_hz)

    @property
    def finite(self) -> bool:
        return self.trips is not None or self.duration is not None


def _positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name}: must be finite and > 0, got {value!r}")


class _Phase(NamedTuple):
    start_t: float
    end_t: float
    pos_mm: float  # standing position (dwell) or start position (trip)
    trip: Trip | None  # None = dwell
    final: bool  # the last phase of a finite trips=N run


class ElevatorSim:
    """The elevator model and its CAN frames. See the module docstring."""

    def __init__(self, params: ElevatorParams | None = None, max_trips: int | None = None) -> None:
        """``max_trips`` bounds :attr:`trips` for endless runs (the oldest are dropped; their
        ``index`` keeps counting); ``None`` keeps every trip."""
        if max_trips is not None and max_trips < 1:
            raise ValueError(f"max_trips: must be >= 1 or None, got {max_trips}")
        self.params = params if params is not None else ElevatorParams()
        self.max_trips = max_trips
        #: the seed actually used (drawn at random once when ``params.seed`` is None)
        self.seed: int = (
            self.params.seed
            if self.params.seed is not None
            else random.SystemRandom().getrandbits(63)
        )
        #: trips entered by the most recent :meth:`frames` generator, in order (the last
        #: ``max_trips`` of them when that is set)
        self.trips: list[Trip] = []
        p = self.params
        mm = 1000.0
        self._limits = (p.v_max * mm, p.a_max * mm, p.j_max * mm)

    # -- schedule --------------------------------------------------------------------------

    def _phases(self) -> Iterator[_Phase]:
        p = self.params
        rng = random.Random(self.seed)
        floors = p.floors_mm
        n = len(floors)
        floor = p.start_floor if p.start_floor is not None else rng.randrange(n)
        t = 0.0
        index = 0
        while True:
            dwell = rng.uniform(p.dwell_min, p.dwell_max)
            last = p.trips is not None and index >= p.trips
            yield _Phase(t, t + dwell, floors[floor], None, last)
            if last:
                return
            t += dwell
            r = rng.randrange(n - 1)
            dest = r if r < floor else r + 1
            curve = SCurve.plan(abs(floors[dest] - floors[floor]), *self._limits)
            trip = Trip(
                index=index,
                start_t=t,
                end_t=t + curve.duration,
                from_floor=floor,
                to_floor=dest,
                from_mm=floors[floor],
                to_mm=floors[dest],
                peak_speed_mm_s=curve.peak_speed,
                peak_accel_mm_s2=curve.peak_accel,
                profile=curve,
            )
            yield _Phase(t, trip.end_t, floors[floor], trip, False)
            t = trip.end_t
            floor = dest
            index += 1

    def schedule(self) -> Iterator[Trip]:
        """The run's trips in order, computed without generating frames (a fresh iterator;
        endless for an endless run). Trips that start at or after ``duration`` are left out.

        >>> sim = ElevatorSim(ElevatorParams(trips=3, seed=1))
        >>> [t.index for t in sim.schedule()], len(list(sim.frames())) > 0, sim.trips == list(sim.schedule())
        ([0, 1, 2], True, True)
        """  # noqa: E501
        limit = self.params.duration if self.params.duration is not None else math.inf
        tick = self.params.tick
        for phase in self._phases():
            if phase.trip is None:
                continue
            # the frame generator enters a trip at its first tick at or after start_t
            k = math.ceil(phase.start_t / tick)
            while k > 0 and (k - 1) * tick >= phase.start_t:
                k -= 1
            while k * tick < phase.start_t:
                k += 1
            if k * tick >= limit:
                return
            yield phase.trip

    @property
    def end_t(self) -> float | None:
        """Run length in seconds (frames have ``t < end_t``), ``None`` when endless."""
        p = self.params
        end = p.duration if p.duration is not None else math.inf
        if p.trips is not None:
            for phase in self._phases():
                if phase.start_t >= end:
                    break
                if phase.final:
                    end = min(end, phase.end_t)
        return None if math.isinf(end) else end

    def position_mm(self, t: float) -> float:
        """The car's exact model position at run time ``t`` (walks the schedule from the
        start: meant for tests, not per frame)."""
        pos = 0.0
        for phase in self._phases():
            if t < phase.start_t:
                break
            pos = phase.trip.position_mm(t) if phase.trip is not None else phase.pos_mm
        return pos

    def master_raw(self, t: float) -> int:
        """The master's ``position_raw`` at run time ``t`` (clamped to 24 bits)."""
        return min(max(round(self.position_mm(t) / self.params.resolution_mm), 0), MAX_RAW)

    # -- frames ----------------------------------------------------------------------------

    def frames(self) -> Iterator[SimFrame]:
        """All frames of the run in time order (a fresh generator; resets :attr:`trips`)."""
        self.trips = []
        return self._frames()

    def _frames(self) -> Iterator[SimFrame]:
        p = self.params
        tick = p.tick
        res = p.resolution_mm
        offset = p.slave_offset_counts
        noise_n = p.slave_noise_counts
        noise = random.Random(f"{self.seed}:slave-noise")
        silent = p.silent_when_stopped
        hold = p.silent_hold
        end = p.duration if p.duration is not None else math.inf
        interval = p.status_interval
        status_t = [tick / 2.0, tick * 1.5] if interval > 0 else [math.inf, math.inf]
        status_n = [0, 0]
        status_ids = (STATUS_MASTER_ID, STATUS_SLAVE_ID)
        trips = self.trips
        max_trips = self.max_trips

        def statuses(until: float) -> Iterator[SimFrame]:
            # status frames due strictly before ``until``, in time order
            while True:
                ch = 0 if status_t[0] <= status_t[1] else 1
                ts = status_t[ch]
                if ts >= until:
                    return
                yield SimFrame(ts, status_ids[ch], encode_status(status_n[ch]))
                status_n[ch] += 1
                status_t[ch] = status_n[ch] * interval + tick * (0.5 + ch)

        phases = self._phases()
        phase = next(phases)
        k = 0
        while True:
            t = k * tick
            if t >= end:
                yield from statuses(end)
                return
            while t >= phase.end_t:
                if phase.final:
                    yield from statuses(phase.end_t)
                    return
                phase = next(phases)
                if phase.trip is not None:
                    trips.append(phase.trip)
                    if max_trips is not None and len(trips) > max_trips:
                        del trips[: len(trips) - max_trips]
            if status_t[0] < t or status_t[1] < t:
                yield from statuses(t)
            trip = phase.trip
            if trip is not None:
                pos = trip.position_mm(t)
            elif silent and t >= phase.start_t + hold:
                k += 1
                continue
            else:
                pos = phase.pos_mm
            raw = round(pos / res)
            if k & 1:
                if noise_n:
                    raw += offset + noise.randint(-noise_n, noise_n)
                else:
                    raw += offset
                yield SimFrame(t, POSITION_SLAVE_ID, encode_position(raw))
            else:
                yield SimFrame(t, POSITION_MASTER_ID, encode_position(raw))
            k += 1
