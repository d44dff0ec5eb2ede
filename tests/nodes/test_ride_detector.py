"""RideDetector on synthetic sample streams, one scenario per test."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from les02_flow.events import Event
from les02_flow.nodes.les02.elevator import SCurve
from les02_flow.nodes.rides.detector import (
    MAX_FIT_POINTS,
    DetectorParams,
    RideDetector,
    fit_onset,
    ride_id,
)

T0 = 1_737_000_000.0
TICK = 0.002  # interleaved: master at even ticks, slave at odd ticks (250 Hz each)
Sample = tuple[float, str, int]


class Move:
    """A jerk-limited move of ``dist`` mm starting at ``start`` (s from T0)."""

    def __init__(self, start: float, dist: float, v: float = 1600.0, a: float = 800.0) -> None:
        self.start = start
        self.sign = 1 if dist > 0 else -1
        self.curve = SCurve.plan(abs(dist), v, a, 1200.0 if v > 100 else 3000.0)
        self.end = start + self.curve.duration

    def offset(self, t: float) -> float:
        return self.sign * self.curve.position(t - self.start)


def stream(
    moves: list[Move],
    duration: float,
    base: float = 1000.0,
    noise: int = 0,
    slave_offset: Callable[[float], int] = lambda t: 2,
    keep: Callable[[float], bool] = lambda t: True,
) -> list[Sample]:
    rng = random.Random(5)
    out: list[Sample] = []
    for k in range(round(duration / TICK)):
        t = k * TICK
        if not keep(t):
            continue
        pos = base + sum(m.offset(t) for m in moves)
        raw = round(pos)
        if k % 2 == 0:
            out.append((T0 + t, "master", raw + (rng.randint(-noise, noise) if noise else 0)))
        else:
            out.append((T0 + t, "slave", raw + slave_offset(t)))
    return out


def run(samples: list[Sample], params: DetectorParams | None = None) -> list[Event]:
    det = RideDetector(params)
    events: list[Event] = []
    for s in samples:
        events += det.feed(*s)
    return events + det.flush()


def of(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e["type"] == kind]


def test_full_trip_is_one_ride_with_exact_times_and_distance() -> None:
    move = Move(3.0, 7000.0)
    events = run(stream([move], 16.0))
    starts, ends = of(events, "ride_start"), of(events, "ride_end")
    assert len(starts) == 1 and len(ends) == 1
    end = ends[0]["payload"]
    assert abs(end["start_ts"] - (T0 + move.start)) < 0.05
    assert abs(end["end_ts"] - (T0 + move.end)) < 0.05
    assert end["distance_raw"] == 7000 and end["distance_mm"] == 7000.0
    assert end["start_position_raw"] == 1000 and end["end_position_raw"] == 8000
    assert end["direction"] == "up"
    assert abs(end["max_speed_mm_s"] - 1600.0) < 5.0
    assert end["duration_s"] == pytest.approx(end["end_ts"] - end["start_ts"], abs=1e-5)
    assert 0.9 * move.curve.duration * 250 < end["samples"] < 1.1 * move.curve.duration * 250
    start = starts[0]["payload"]
    assert start["ride_id"] == end["ride_id"] == ride_id("les02", "master", end["start_ts"])
    assert start["position_raw"] == 1000 and start["direction"] == "up"
    assert start["channel"] == "master" and start["start_ts"] == end["start_ts"]
    # decisions happen after the facts, in frame time: start soon after, end stop_time later
    assert end["start_ts"] < starts[0]["ts"] < end["start_ts"] + 1.0
    assert ends[0]["ts"] > end["end_ts"] + 1.5
    assert not of(events, "relevel") and not of(events, "dropout")
    assert not of(events, "channel_mismatch")
    assert end["complete"] is True and end["reason"] is None


def test_ride_cut_off_by_the_end_of_the_data_is_marked_incomplete() -> None:
    move = Move(2.0, 7000.0)
    samples = [s for s in stream([move], 14.0) if s[0] < T0 + move.start + 2.0]  # mid-ride
    (end,) = [e["payload"] for e in of(run(samples), "ride_end")]
    assert end["complete"] is False and end["reason"] == "end_of_input"
    assert end["end_ts"] == pytest.approx(samples[-1][0], abs=0.005)
    det = RideDetector()
    for s in samples:
        det.feed(*s)
    (stopped,) = [e["payload"] for e in of(det.flush("stopped"), "ride_end")]
    assert stopped["complete"] is False and stopped["reason"] == "stopped"
    # the car arrived before the data ended: a complete ride, even without the stop_time wait
    arrived = [s for s in stream([move], 14.0) if s[0] < T0 + move.end + 0.8]
    (end,) = [e["payload"] for e in of(run(arrived), "ride_end")]
    assert end["complete"] is True and end["reason"] is None
    assert end["distance_raw"] == 7000


def test_short_trip_down_never_reaching_rated_speed() -> None:
    move = Move(2.0, -600.0)
    assert move.curve.peak_speed < 1600.0
    events = run(stream([move], 8.0))
    (end,) = [e["payload"] for e in of(events, "ride_end")]
    assert end["direction"] == "down" and end["distance_raw"] == 600
    assert abs(end["start_ts"] - (T0 + move.start)) < 0.05
    assert abs(end["end_ts"] - (T0 + move.end)) < 0.05
    assert end["max_speed_mm_s"] < move.curve.peak_speed + 5


def test_relevel_is_not_a_ride() -> None:
    relevel = Move(2.0, 6.0, v=40.0, a=300.0)
    events = run(stream([relevel], 6.0))
    assert not of(events, "ride_start") and not of(events, "ride_end")
    (ev,) = of(events, "relevel")
    p = ev["payload"]
    assert p["distance_raw"] == 6 and p["direction"] == "up" and p["channel"] == "master"
    assert abs(p["start_ts"] - (T0 + 2.0)) < 0.1


def test_silence_while_standing_ends_the_ride_at_the_idle_deadline() -> None:
    move = Move(1.0, 3500.0)
    silent_from = move.end + 0.5
    samples = stream([move], 12.0, keep=lambda t: t < silent_from)
    det = RideDetector()
    events: list[Event] = []
    for s in samples:
        events += det.feed(*s)
    assert not of(events, "ride_end")
    last_master = max(t for t, ch, _ in samples if ch == "master")
    # first the look-ahead (max_stall = 0.5 s) releases the last samples ...
    release = det.next_deadline()
    assert release is not None and release == pytest.approx(samples[-1][0] + 0.5)
    assert det.advance(release + 0.001) == []
    # ... then the idle decision is due at last + idle_timeout, taken 2 * max_stall later
    due = det.next_deadline()
    assert due is not None and due == pytest.approx(last_master + 1.0 + 1.0)
    assert det.advance(due - 0.001) == []
    (end,) = det.advance(due + 5.0)  # a timer firing late still gives the deadline's ts
    assert end["type"] == "ride_end" and end["ts"] == pytest.approx(last_master + 1.0)
    assert abs(end["payload"]["end_ts"] - (T0 + move.end)) < 0.05
    assert end["payload"]["distance_raw"] == 3500
    # the car resumes after the silence: no dropout for the LES02's silence while standing
    later = det.feed(T0 + 20.0, "master", 4500) + det.feed(T0 + 20.002, "slave", 4502)
    assert not of(later, "dropout")


def test_noise_while_standing_gives_no_ride_and_no_relevel() -> None:
    events = run(stream([], 60.0, noise=1, slave_offset=lambda t: 2))
    assert events == []


def test_noisy_trip_is_still_accurate() -> None:
    move = Move(2.0, 10500.0)
    (end,) = [e["payload"] for e in of(run(stream([move], 16.0, noise=1)), "ride_end")]
    assert abs(end["distance_raw"] - 10500) <= 2
    assert abs(end["start_ts"] - (T0 + 2.0)) < 0.05
    assert abs(end["end_ts"] - (T0 + move.end)) < 0.05


def test_dropout_mid_ride_is_reported_and_the_ride_survives() -> None:
    move = Move(1.0, 7000.0)
    hole = (move.start + 3.0, move.start + 3.03)
    events = run(stream([move], 14.0, keep=lambda t: not hole[0] <= t < hole[1]))
    drops = [e["payload"] for e in of(events, "dropout")]
    assert {d["channel"] for d in drops} == {"master", "slave"}
    for d in drops:
        assert T0 + hole[0] - 0.005 < d["start_ts"] < T0 + hole[0]
        assert T0 + hole[1] <= d["end_ts"] < T0 + hole[1] + 0.005
        assert d["gap_s"] == pytest.approx(d["end_ts"] - d["start_ts"], abs=1e-6)
        assert 6 <= d["missing"] <= 9  # 30 ms at 4 ms per sample and channel
    (end,) = [e["payload"] for e in of(events, "ride_end")]
    assert end["distance_raw"] == 7000


def test_channel_mismatch_begins_and_ends() -> None:
    events = run(stream([], 6.0, slave_offset=lambda t: 50 if 2.0 <= t < 3.5 else 2))
    mm = [e for e in of(events, "channel_mismatch")]
    assert [e["payload"]["state"] for e in mm] == ["begin", "end"]
    begin, end = mm[0]["payload"], mm[1]["payload"]
    assert begin["start_ts"] == pytest.approx(T0 + 2.0, abs=0.005)
    assert begin["end_ts"] is None and mm[0]["ts"] >= begin["start_ts"] + 0.5
    assert end["end_ts"] == pytest.approx(T0 + 3.5, abs=0.005)
    assert end["max_diff_raw"] == -50 and end["slave_raw"] - end["master_raw"] == 50
    # a short blip is not a mismatch
    assert not of(run(stream([], 4.0, slave_offset=lambda t: 50 if 2 <= t < 2.2 else 2)), "x")
    assert not of(
        run(stream([], 4.0, slave_offset=lambda t: 50 if 2 <= t < 2.2 else 2)),
        "channel_mismatch",
    )


def test_replay_is_deterministic_whatever_the_timer_does() -> None:
    moves = [Move(1.0, 3500.0), Move(10.0, -3500.0), Move(18.0, 5.0, v=40.0, a=300.0)]
    samples = stream(moves, 24.0, keep=lambda t: not (6.5 < t < 9.9))  # silence while standing
    reference = run(samples)
    assert [e["type"] for e in reference] == ["ride_start", "ride_end"] * 2 + ["relevel"]
    # the same samples with "timer" calls in between (as a live run might make) and a fresh
    # detector: identical events, ids included
    det = RideDetector()
    live: list[Event] = []
    rng = random.Random(3)
    for s in samples:
        live += det.feed(*s)
        if rng.random() < 0.01:
            live += det.advance(s[0] + rng.uniform(0.0, 0.5))  # never past a future sample
    live += det.flush()
    assert live == reference


def test_bad_samples_raise_and_late_samples_are_counted() -> None:
    counted: list[str] = []
    det = RideDetector(count=counted.append)
    det.feed(T0, "master", 5)
    for args in ((T0 + 1, "left", 5), (T0 + 1, "master", -1), (T0 + 1, "master", 1 << 24)):
        with pytest.raises(ValueError):
            det.feed(*args)
    with pytest.raises(ValueError):
        det.feed(float("nan"), "master", 5)
    with pytest.raises(ValueError):
        det.feed(T0 + 1, "master", "5")  # type: ignore
    assert det.feed(T0 - 1, "master", 5) == []
    assert counted == ["out_of_order"]


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="channel"):
        DetectorParams(channel="left")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stop_speed"):
        DetectorParams(start_speed=5.0, stop_speed=10.0)
    with pytest.raises(ValueError, match="window"):
        DetectorParams(window=0.0)


def test_fit_onset_recovers_a_quadratic_start() -> None:
    pts = [(k * 0.004 - 0.3, float(round(400 * max(k * 0.004 - 0.2, 0) ** 2))) for k in range(150)]
    assert fit_onset(pts, -0.6, 0.0) == pytest.approx(-0.1, abs=0.01)


def test_fit_onset_on_dense_data_is_thinned_and_stays_accurate() -> None:
    # 8 kHz samples of a jerk-limited start at t = -0.2 s: 6,800 points over the search
    # window. The fit must thin them (bounded cost whatever the rate) and still find the onset.
    pts = [
        (k / 8000 - 0.6, float(round(200 * max(k / 8000 - 0.6 + 0.2, 0) ** 3 * 50)))
        for k in range(6800)
    ]
    assert len(pts) > 20 * MAX_FIT_POINTS
    assert fit_onset(pts, -0.6, 0.25) == pytest.approx(-0.2, abs=0.005)
    thinned = pts[:: -(-len(pts) // MAX_FIT_POINTS)]
    assert len(thinned) <= MAX_FIT_POINTS
    # the result is exactly the fit over the evenly thinned points
    assert fit_onset(pts, -0.6, 0.25) == fit_onset(thinned, -0.6, 0.25)
