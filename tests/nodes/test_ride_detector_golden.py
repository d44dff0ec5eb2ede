"""RideDetector gives exactly the same events as the detector it was optimised from (issue 16).

The detector's per-sample path was rewritten for speed (fewer calls, allocations and attribute
lookups) with the rule that its output must not change by one bit. This test feeds simulated
trips -- clean, with ±1 count noise and dropped bursts, with host-stamp jitter, batching and
stalls, with the LES02's silence while standing -- and compares every event envelope, the
diagnostic counters, the pending deadline and the period estimates with a golden file written
by the detector of commit f3be194 (before the optimisation).

Regenerate ``data/ride_detector_golden.json`` only for an intended change of the ride rules:
``.venv/bin/python tests/nodes/test_ride_detector_golden.py --write``.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from les02_flow.nodes.les02.elevator import (
    POSITION_MASTER_ID,
    POSITION_SLAVE_ID,
    ElevatorParams,
    ElevatorSim,
)
from les02_flow.nodes.rides.detector import RideDetector, _sse, _sse_of, round6

GOLDEN = Path(__file__).with_name("data") / "ride_detector_golden.json"
T0 = 1_737_000_000.0
Sample = tuple[float, str, int]


def _samples(params: ElevatorParams) -> list[Sample]:
    out: list[Sample] = []
    for f in ElevatorSim(params).frames():
        if f.can_id == POSITION_MASTER_ID:
            out.append((T0 + f.t, "master", int.from_bytes(f.data[:3], "big")))
        elif f.can_id == POSITION_SLAVE_ID:
            out.append((T0 + f.t, "slave", int.from_bytes(f.data[:3], "big")))
    return out


def _noise(samples: list[Sample], rng: random.Random) -> list[Sample]:
    return [
        (t, c, max(r + rng.choice((-1, 0, 1)), 0) if c == "master" else r) for t, c, r in samples
    ]


def _drop_bursts(samples: list[Sample], rng: random.Random) -> list[Sample]:
    out: list[Sample] = []
    skip = 0
    for s in samples:
        if skip:
            skip -= 1
        elif rng.random() < 0.0005:
            skip = rng.randint(5, 60)
        else:
            out.append(s)
    return out


def _host_stamps(samples: list[Sample], rng: random.Random) -> list[Sample]:
    """Host stamps: latency + jitter, USB-like batches of 1-8 ms, a few stalls of 80-300 ms."""
    out: list[Sample] = []
    prev = 0.0
    batch_at = samples[0][0]
    stall_at = samples[0][0] + rng.uniform(5.0, 15.0)
    for t, c, r in samples:
        h = t + 0.0003 + rng.uniform(0.0, 0.0005)
        if t >= stall_at:
            stall_end = stall_at + rng.uniform(0.08, 0.3)
            stall_at += rng.uniform(10.0, 20.0)
            batch_at = max(batch_at, stall_end)
        if h > batch_at:
            batch_at = h + rng.uniform(0.001, 0.008)
        h = max(batch_at, prev + 2e-6)
        prev = h
        out.append((round(h, 6), c, r))
    return out


def cases() -> dict[str, list[Sample]]:
    rng = random.Random(16)
    mixed = _samples(ElevatorParams(trips=4, seed=101))
    return {
        "mixed": mixed,
        "noise": _noise(_samples(ElevatorParams(trips=3, seed=105)), rng),
        "bursts": _drop_bursts(_samples(ElevatorParams(trips=3, seed=106)), rng),
        "silent, host stamps": _host_stamps(
            _samples(ElevatorParams(trips=3, seed=206, silent_when_stopped=True)), rng
        ),
        "stamps, noise, bursts": _host_stamps(
            _drop_bursts(_noise(_samples(ElevatorParams(trips=3, seed=208)), rng), rng), rng
        ),
    }


def run(samples: list[Sample]) -> dict[str, Any]:
    counts: dict[str, int] = {}

    def count(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    det = RideDetector(count=count)
    events: list[Any] = []
    for i, (ts, ch, raw) in enumerate(samples):
        events += det.feed(ts, ch, raw)
        if i % 3000 == 0:  # the live timer's calls, interleaved
            events.append({"next_deadline": det.next_deadline()})
            events += det.advance(ts)
    events += det.flush()
    periods = [clock.period for clock in det.clocks.values()]
    # through JSON, as the golden file: floats keep every bit (repr round-trips)
    return dict(json.loads(json.dumps({"events": events, "counts": counts, "periods": periods})))


def results() -> dict[str, Any]:
    return {name: run(samples) for name, samples in cases().items()}


def _same(a: float, b: float) -> bool:
    return (a == b and math.copysign(1.0, a) == math.copysign(1.0, b)) or (a != a and b != b)


def test_round6_is_round_to_6_digits_bit_for_bit() -> None:
    """The detector's inlined rounding of stamps (round6) equals round(x, 6) everywhere:
    recorded stamps, raw host stamps, microsecond halves (ties), small, negative, huge."""
    rng = random.Random(6)
    values = [0.0, -0.0, 5e-7, -5e-7, 1.5e-6, 2.0**51 / 1e6, 2.0**53, math.inf, math.nan]
    for _ in range(50_000):
        values += [
            float(f"{rng.uniform(1.6e9, 1.8e9):.6f}"),  # what a recording holds
            rng.uniform(1.6e9, 1.8e9),  # a live host stamp
            (rng.randrange(10**15) + 0.5) / 1e6,  # next to a tie
            rng.uniform(-1e3, 1e3) * 10.0 ** rng.randint(-9, 6),
        ]
    bad = [x for x in values if not _same(round6(x), round(x, 6))]
    assert not bad, bad[:5]


@settings(max_examples=2000, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_round6_equals_round_on_any_float(x: float) -> None:
    assert _same(round6(x), round(x, 6))


def test_sse_of_a_fit_is_sse_bit_for_bit() -> None:
    """The onset fit's residual function (sdd once, only the points past t0) equals _sse."""
    rng = random.Random(7)
    for case in range(300):
        n_pts = rng.randint(0, 220)
        ts = [rng.uniform(-0.6, 0.25) for _ in range(n_pts)]
        if case % 3 == 0:
            ts.sort()  # the start fit
        elif case % 3 == 1:
            ts.sort(reverse=True)  # the end fit
        if case % 5 == 0 and ts:
            ts[len(ts) // 2 :] = [ts[len(ts) // 2]] * (len(ts) - len(ts) // 2)  # equal times
        ds = [max(0.0, rng.gauss(5.0, 4.0)) for _ in ts]
        for n in (1.0, 1.5, 2.0, 2.5, 3.0, 3.5):
            sse_at = _sse_of(ts, ds, n)
            for t0 in [rng.uniform(-0.7, 0.3) for _ in range(20)] + ts[:3] + [math.nan]:
                assert _same(sse_at(t0), _sse(ts, ds, t0, n=n)), (case, n, t0)


def test_events_are_bit_identical_to_the_detector_before_the_optimisation() -> None:
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    got = results()
    assert list(got) == list(golden)
    for name, want in golden.items():
        have = got[name]
        assert have["counts"] == want["counts"], name
        assert have["periods"] == want["periods"], name
        assert len(have["events"]) == len(want["events"]), name
        for i, (a, b) in enumerate(zip(have["events"], want["events"], strict=True)):
            assert a == b, f"{name}: event {i} differs"
    kinds = {e.get("type") for r in golden.values() for e in r["events"]}
    assert {"ride_start", "ride_end", "dropout"} <= kinds  # the golden data exercises them


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    GOLDEN.write_text(json.dumps(results(), indent=None, sort_keys=False) + "\n", "utf-8")
