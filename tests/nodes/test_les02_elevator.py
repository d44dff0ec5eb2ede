"""The simulated LES02 elevator model: S-curve kinematics, trip schedule and CAN frames."""

from __future__ import annotations

import itertools
import math

import pytest

from les02_flow.nodes.les02.elevator import (
    MAX_RAW,
    POSITION_MASTER_ID,
    POSITION_SLAVE_ID,
    STATUS_MASTER_ID,
    STATUS_SLAVE_ID,
    ElevatorParams,
    ElevatorSim,
    SCurve,
    SimFrame,
    Trip,
    encode_position,
)

# limits in mm and s (the defaults 1.6 m/s, 0.8 m/s², 1.2 m/s³)
V, A, J = 1600.0, 800.0, 1200.0
REL = 1e-9


def raw(frame: SimFrame) -> int:
    return int.from_bytes(frame.data[:3], "big")


def positions(frames: list[SimFrame], can_id: int) -> list[SimFrame]:
    return [f for f in frames if f.can_id == can_id]


def check_kinematics(c: SCurve, dt: float = 1e-3) -> tuple[float, float]:
    """Sample the profile; assert the limits and internal consistency; return the sampled
    peak speed and peak acceleration."""
    n = math.ceil(c.duration / dt)
    ts = [min(i * dt, c.duration) for i in range(n + 1)]
    states = [c.state(t) for t in ts]
    p_prev = -1.0
    v_peak = a_peak = 0.0
    for p, v, a, j in states:
        assert p >= p_prev  # monotonic
        p_prev = p
        assert -1e-9 <= v <= c.v_max * (1 + REL)
        assert abs(a) <= c.a_max * (1 + REL)
        assert abs(j) in (0.0, c.j_max)
        v_peak = max(v_peak, v)
        a_peak = max(a_peak, abs(a))
    # jerk from the sampled acceleration stays within j_max (acceleration is continuous)
    for (_, _, a0, _), (_, _, a1, _), t0, t1 in zip(states, states[1:], ts, ts[1:], strict=False):
        if t1 > t0:
            assert abs(a1 - a0) / (t1 - t0) <= c.j_max * (1 + 1e-6)
    # velocity is the derivative of position, acceleration the derivative of velocity
    h = 1e-6
    for t in ts[1:-1]:
        p_minus, v_minus, _, _ = c.state(t - h)
        p_plus, v_plus, _, _ = c.state(t + h)
        _, v, a, _ = c.state(t)
        assert (p_plus - p_minus) / (2 * h) == pytest.approx(v, abs=1e-3)
        assert (v_plus - v_minus) / (2 * h) == pytest.approx(a, abs=1e-3)
    # rest to rest, exactly from 0 to the distance
    assert c.state(0.0) == (0.0, 0.0, 0.0, 0.0)
    assert c.state(c.duration) == (c.distance, 0.0, 0.0, 0.0)
    end = c.state(c.duration * (1 - 1e-12))
    assert end[0] == pytest.approx(c.distance, abs=1e-6)
    assert abs(end[1]) < 1e-6
    assert abs(end[2]) < 1e-3
    return v_peak, a_peak


# -- S-curve ---------------------------------------------------------------------------------


@pytest.mark.parametrize("distance", [4266.67, 7000.0, 17500.0, 100000.0])
def test_long_trip_reaches_v_max_and_matches_the_analytic_duration(distance: float) -> None:
    c = SCurve.plan(distance, V, A, J)
    assert c.peak_speed == V
    assert c.peak_accel == A
    assert c.duration == pytest.approx(distance / V + V / A + A / J, rel=1e-12)
    assert c.t_cruise == pytest.approx(distance / V - (V / A + A / J), abs=1e-9)
    v_peak, a_peak = check_kinematics(c)
    assert v_peak == pytest.approx(V, rel=1e-6)
    assert a_peak == pytest.approx(A, rel=1e-6)


@pytest.mark.parametrize("distance", [712.0, 1000.0, 3000.0, 3500.0, 4266.0])
def test_short_trip_reaching_a_max_but_not_v_max(distance: float) -> None:
    c = SCurve.plan(distance, V, A, J)
    # T = a/j + sqrt((a/j)^2 + 4 D / a): the reduced peak vp solves vp^2/a + vp a/j = D
    expected = A / J + math.sqrt((A / J) ** 2 + 4 * distance / A)
    assert c.duration == pytest.approx(expected, rel=1e-12)
    assert c.peak_speed < V
    assert c.peak_speed**2 / A + c.peak_speed * A / J == pytest.approx(distance, rel=1e-12)
    assert c.t_cruise == 0.0
    v_peak, a_peak = check_kinematics(c)
    assert v_peak == pytest.approx(c.peak_speed, rel=1e-6)
    assert a_peak == pytest.approx(A, rel=1e-6)


@pytest.mark.parametrize("distance", [0.5, 1.0, 100.0, 500.0, 711.0])
def test_very_short_trip_reaching_neither_limit(distance: float) -> None:
    c = SCurve.plan(distance, V, A, J)
    # triangular acceleration: D = 2 vp^(3/2) / sqrt(j), T = 4 (D / 2j)^(1/3)
    assert c.duration == pytest.approx(4 * (distance / (2 * J)) ** (1 / 3), rel=1e-12)
    assert c.peak_accel < A
    assert c.t_accel == 0.0
    assert c.t_cruise == 0.0
    v_peak, a_peak = check_kinematics(c, dt=c.duration / 2000)
    assert v_peak == pytest.approx(c.peak_speed, rel=1e-5)
    assert a_peak == pytest.approx(c.peak_accel, rel=1e-5)


@pytest.mark.parametrize("distance", [50.0, 300.0, 2000.0])
def test_low_v_max_reached_before_a_max(distance: float) -> None:
    # v*j < a^2: acceleration never reaches a_max, even on a long trip
    v, a, j = 500.0, 1000.0, 1000.0
    c = SCurve.plan(distance, v, a, j)
    full = 2 * v * math.sqrt(v / j)
    if distance >= full:
        assert c.peak_speed == v
        assert c.duration == pytest.approx(distance / v + 2 * math.sqrt(v / j), rel=1e-12)
    else:
        assert c.duration == pytest.approx(4 * (distance / (2 * j)) ** (1 / 3), rel=1e-12)
    assert c.peak_accel < a
    check_kinematics(c, dt=c.duration / 2000)


def test_scurve_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="distance"):
        SCurve.plan(0.0, V, A, J)
    with pytest.raises(ValueError, match="j_max"):
        SCurve.plan(10.0, V, A, math.nan)


# -- schedule and frames ---------------------------------------------------------------------


def short_params(**overrides: object) -> ElevatorParams:
    base: dict[str, object] = {
        "floors_mm": (0.0, 1000.0, 2500.0, 6000.0),
        "dwell_min": 0.5,
        "dwell_max": 1.5,
        "trips": 4,
        "seed": 11,
    }
    base.update(overrides)
    return ElevatorParams.model_validate(base)


def test_trips_start_and_end_exactly_at_floors_and_chain() -> None:
    p = short_params(trips=12, resolution_mm=0.5)
    sim = ElevatorSim(p)
    frames = list(sim.frames())
    trips = sim.trips
    assert [t.index for t in trips] == list(range(12))
    assert trips == list(sim.schedule())
    floor = p.start_floor
    prev_end = 0.0
    for trip in trips:
        assert trip.from_floor == floor
        assert trip.to_floor != trip.from_floor
        assert trip.from_mm == p.floors_mm[trip.from_floor]
        assert trip.to_mm == p.floors_mm[trip.to_floor]
        assert trip.position_mm(trip.start_t) == trip.from_mm
        assert trip.position_mm(trip.end_t) == trip.to_mm
        assert p.dwell_min <= trip.start_t - prev_end <= p.dwell_max
        assert trip.duration == pytest.approx(trip.profile.duration)
        assert trip.peak_speed_mm_s <= V
        floor, prev_end = trip.to_floor, trip.end_t
    # the master reports exactly the floor while standing, and the exact model in between
    master = positions(frames, POSITION_MASTER_ID)
    for f in master:
        stand = [t for t in trips if t.end_t <= f.t]
        moving = [t for t in trips if t.start_t <= f.t < t.end_t]
        if moving:
            expected = moving[0].position_mm(f.t)
        elif stand:
            expected = stand[-1].to_mm
        else:
            expected = p.floors_mm[0]
        assert raw(f) == round(expected / 0.5)
    # frames land on the floors at the trips' ends
    for trip in trips:
        after = next(f for f in master if f.t >= trip.end_t)
        assert raw(after) == round(trip.to_mm / 0.5)


def test_adjacent_floor_trips_are_short_profiles() -> None:
    p = short_params(floors_mm=(0.0, 3500.0), trips=4)
    sim = ElevatorSim(p)
    list(sim.frames())
    assert len(sim.trips) == 4
    expected = A / J + math.sqrt((A / J) ** 2 + 4 * 3500.0 / A)
    for trip in sim.trips:
        assert abs(trip.to_floor - trip.from_floor) == 1
        assert trip.duration == pytest.approx(expected, rel=1e-9)
        assert trip.peak_speed_mm_s < V
        assert trip.peak_accel_mm_s2 == A
    # down trips mirror up trips
    up = next(t for t in sim.trips if t.direction > 0)
    down = next(t for t in sim.trips if t.direction < 0)
    for x in (0.1, 0.5, 1.7, 3.0):
        assert up.position_mm(up.start_t + x) - up.from_mm == pytest.approx(
            down.from_mm - down.position_mm(down.start_t + x), abs=1e-9
        )


def test_position_frames_are_250_hz_per_channel_and_interleaved() -> None:
    sim = ElevatorSim(ElevatorParams(duration=2.0, seed=3, status_interval=0))
    frames = list(sim.frames())
    assert [f.can_id for f in frames] == [POSITION_MASTER_ID, POSITION_SLAVE_ID] * 500
    master = positions(frames, POSITION_MASTER_ID)
    slave = positions(frames, POSITION_SLAVE_ID)
    assert [f.t for f in master] == pytest.approx([i * 0.004 for i in range(500)])
    assert [f.t for f in slave] == pytest.approx([0.002 + i * 0.004 for i in range(500)])
    assert all(len(f.data) == 4 and f.data[3] == 0 for f in frames)
    assert all(b.t > a.t for a, b in itertools.pairwise(frames))


def test_rate_hz_changes_the_tick() -> None:
    sim = ElevatorSim(ElevatorParams(duration=1.0, seed=3, status_interval=0, rate_hz=100))
    frames = list(sim.frames())
    assert len(frames) == 200
    assert frames[1].t == pytest.approx(0.005)


def test_status_frames_per_channel_and_disabled() -> None:
    sim = ElevatorSim(ElevatorParams(duration=3.0, seed=3, status_interval=0.5))
    frames = list(sim.frames())
    status_m = positions(frames, STATUS_MASTER_ID)
    status_s = positions(frames, STATUS_SLAVE_ID)
    assert len(status_m) == len(status_s) == 6
    assert [f.t for f in status_m] == pytest.approx([0.001 + 0.5 * i for i in range(6)])
    assert [f.t for f in status_s] == pytest.approx([0.003 + 0.5 * i for i in range(6)])
    assert all(len(f.data) == 8 for f in status_m + status_s)
    assert [int.from_bytes(f.data[2:4], "big") for f in status_m] == list(range(6))
    assert all(b.t > a.t for a, b in itertools.pairwise(frames))  # merged in time order
    quiet = list(ElevatorSim(ElevatorParams(duration=3.0, seed=3, status_interval=0)).frames())
    assert {f.can_id for f in quiet} == {POSITION_MASTER_ID, POSITION_SLAVE_ID}


@pytest.mark.parametrize(("offset", "noise"), [(2, 1), (-3, 2), (5, 0)])
def test_slave_stays_within_its_offset_bound(offset: int, noise: int) -> None:
    p = short_params(trips=2, slave_offset_counts=offset, slave_noise_counts=noise, seed=5)
    p = ElevatorParams(**{**p.__dict__, "floors_mm": (100.0, 1100.0, 2600.0)})
    sim = ElevatorSim(p)
    frames = list(sim.frames())
    deviations = set()
    for f in positions(frames, POSITION_SLAVE_ID):
        deviation = raw(f) - sim.master_raw(f.t) - offset
        assert abs(deviation) <= noise
        deviations.add(deviation)
    assert deviations == set(range(-noise, noise + 1))  # the noise really is there


def test_positions_are_clamped_to_24_bits() -> None:
    top = float(MAX_RAW)
    p = ElevatorParams(
        floors_mm=(0.0, top), duration=0.1, seed=1, slave_offset_counts=5, start_floor=1
    )
    frames = list(ElevatorSim(p).frames())
    assert {raw(f) for f in positions(frames, POSITION_SLAVE_ID)} == {MAX_RAW}
    assert {raw(f) for f in positions(frames, POSITION_MASTER_ID)} == {MAX_RAW}
    p = ElevatorParams(floors_mm=(0.0, 10.0), duration=0.1, seed=1, slave_offset_counts=-5)
    frames = list(ElevatorSim(p).frames())
    assert {raw(f) for f in positions(frames, POSITION_SLAVE_ID)} == {0}
    assert encode_position(MAX_RAW + 1) == b"\xff\xff\xff\x00"


def test_same_seed_same_run_other_seed_other_run() -> None:
    a = ElevatorSim(short_params(seed=99, start_floor=None))
    b = ElevatorSim(short_params(seed=99, start_floor=None))
    fa, fb = list(a.frames()), list(b.frames())
    assert fa == fb
    assert a.trips == b.trips
    assert list(a.frames()) == fa  # a second generator replays the run
    c = ElevatorSim(short_params(seed=100, start_floor=None))
    assert list(c.frames()) != fa
    assert c.trips != a.trips


def test_unseeded_runs_draw_and_keep_a_seed() -> None:
    sim = ElevatorSim(short_params(seed=None))
    first = list(sim.frames())
    assert list(sim.frames()) == first
    again = ElevatorSim(short_params(seed=sim.seed))
    assert list(again.frames()) == first


def test_finite_trips_end_after_a_final_dwell() -> None:
    p = short_params(trips=3)
    sim = ElevatorSim(p)
    frames = list(sim.frames())
    assert len(sim.trips) == 3
    end = sim.end_t
    assert end is not None
    assert p.dwell_min <= end - sim.trips[-1].end_t <= p.dwell_max
    assert frames[-1].t < end
    assert frames[-1].t >= end - p.tick
    assert raw(positions(frames, POSITION_MASTER_ID)[-1]) == round(sim.trips[-1].to_mm)


def test_duration_ends_the_run_even_mid_trip() -> None:
    p = short_params(trips=None, duration=4.0)
    sim = ElevatorSim(p)
    frames = list(sim.frames())
    assert sim.end_t == 4.0
    assert all(f.t < 4.0 for f in frames)
    pos = [f for f in frames if f.can_id in (POSITION_MASTER_ID, POSITION_SLAVE_ID)]
    assert pos[-1].t == pytest.approx(4.0 - p.tick)
    assert sim.trips == list(sim.schedule())
    assert sim.trips and sim.trips[-1].start_t < 4.0
    # both limits: whichever ends first
    both = ElevatorSim(short_params(trips=1, duration=1000.0))
    assert both.end_t is not None and both.end_t < 1000.0


def test_endless_run_keeps_going() -> None:
    sim = ElevatorSim(short_params(trips=None))
    assert sim.end_t is None
    frames = list(itertools.islice(sim.frames(), 20000))  # 40 s of traffic
    assert frames[-1].t > 39.0
    assert len(sim.trips) >= 5
    assert [t.index for t in sim.trips] == list(range(len(sim.trips)))
    sched = list(itertools.islice(sim.schedule(), len(sim.trips)))
    assert sched == sim.trips


def test_max_trips_bounds_the_ground_truth_of_endless_runs() -> None:
    sim = ElevatorSim(short_params(trips=None), max_trips=3)
    frames = list(itertools.islice(sim.frames(), 20000))
    assert len(sim.trips) == 3
    indices = [t.index for t in sim.trips]
    assert indices[0] > 0
    assert indices == list(range(indices[0], indices[0] + 3))
    # the newest three, equal to the schedule's
    entered = [t for t in itertools.islice(sim.schedule(), 100) if t.start_t <= frames[-1].t]
    assert sim.trips == entered[-3:]
    with pytest.raises(ValueError, match="max_trips"):
        ElevatorSim(short_params(), max_trips=0)


def test_silent_when_stopped() -> None:
    hold = 0.2
    p = short_params(trips=3, silent_when_stopped=True, silent_hold=hold, status_interval=0.25)
    sim = ElevatorSim(p)
    frames = list(sim.frames())
    trips = sim.trips
    pos = [f for f in frames if f.can_id in (POSITION_MASTER_ID, POSITION_SLAVE_ID)]
    pos_t = [f.t for f in pos]
    stops = [0.0] + [t.end_t for t in trips]
    starts = [t.start_t for t in trips] + [math.inf]
    for stop, start in zip(stops, starts, strict=True):
        # frames for the hold time, then silence until the next trip starts
        assert any(stop <= t < stop + hold for t in pos_t)
        assert not any(stop + hold + 1e-9 < t < start for t in pos_t)
    for trip in trips:
        # every tick of a trip is sent
        inside = [t for t in pos_t if trip.start_t <= t < trip.end_t]
        assert len(inside) == pytest.approx(trip.duration / p.tick, abs=1)
    # status frames go on during the silence
    status = [f.t for f in frames if f.can_id in (STATUS_MASTER_ID, STATUS_SLAVE_ID)]
    assert len(status) == 2 * math.ceil(frames[-1].t / 0.25)
    # without the option the car reports every tick
    loud = ElevatorSim(short_params(trips=3, status_interval=0))
    end = loud.end_t
    assert end is not None
    assert len(list(loud.frames())) == math.ceil(end / p.tick)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"floors_mm": (0.0,)}, "floors_mm"),
        ({"floors_mm": (0.0, 10.0, 5.0)}, "floors_mm"),
        ({"floors_mm": (-1.0, 10.0)}, "floors_mm"),
        ({"floors_mm": (0.0, 2e7)}, "floors_mm"),
        ({"start_floor": 9}, "start_floor"),
        ({"v_max": 0.0}, "v_max"),
        ({"a_max": -1.0}, "a_max"),
        ({"j_max": math.inf}, "j_max"),
        ({"dwell_min": 5.0, "dwell_max": 1.0}, "dwell_max"),
        ({"resolution_mm": 0.0}, "resolution_mm"),
        ({"rate_hz": 0.0}, "rate_hz"),
        ({"slave_noise_counts": -1}, "slave_noise_counts"),
        ({"status_interval": -1.0}, "status_interval"),
        ({"trips": 0}, "trips"),
        ({"duration": 0.0}, "duration"),
    ],
)
def test_invalid_params_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        short_params(**overrides)


def test_trip_ground_truth_fields() -> None:
    sim = ElevatorSim(short_params(trips=1))
    (trip,) = list(sim.schedule())
    assert isinstance(trip, Trip)
    assert trip.end_t - trip.start_t == pytest.approx(trip.profile.duration)
    assert trip.peak_speed_mm_s == trip.profile.peak_speed
    assert sim.position_mm(trip.start_t + trip.duration / 2) == pytest.approx(
        (trip.from_mm + trip.to_mm) / 2
    )


def test_sim_config_is_the_params_plus_the_node_fields() -> None:
    from les02_flow.nodes.les02.sim import Les02SimConfig

    config = Les02SimConfig.model_validate(
        {"seed": 4, "trips": 2, "floors_mm": [0.0, 900.0], "channel": "x"}
    )
    params = config.params()
    assert type(params) is ElevatorParams
    assert params == ElevatorParams(seed=4, trips=2, floors_mm=(0.0, 900.0))
    own = set(Les02SimConfig.model_fields) - set(ElevatorParams.model_fields)
    assert own == {"interface", "channel", "bitrate", "speed", "start_delay"}
    with pytest.raises(ValueError, match="dwell_max"):
        Les02SimConfig(dwell_min=5.0, dwell_max=1.0)
