"""ride_detect's batch path (process_batch) emits what its Rx stream emits, message for message.

A session of position samples (with rides) and status events, mixed with every kind of bad
input (not a dict, no/bool/non-finite ts, an unhashable or non-string source, a payload that is
not an object, a bad channel or position), goes through one node one by one (its ``build()``
stream) and through another in batches; outputs and counters must be equal.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from reactivex.subject import Subject

from les02_flow.events import make_event
from les02_flow.node import Context
from les02_flow.nodes.les02.elevator import (
    POSITION_MASTER_ID,
    POSITION_SLAVE_ID,
    ElevatorParams,
    ElevatorSim,
)
from les02_flow.nodes.rides.detect import RideDetect, RideDetectConfig

BAD: list[Any] = [
    "not an event",
    {"type": "position_sample", "payload": {"channel": "master", "position_raw": 1}},
    {"type": "position_sample", "ts": True, "payload": {"channel": "master", "position_raw": 1}},
    {"type": "position_sample", "ts": math.nan, "payload": {}},
    {"type": "position_sample", "ts": 1.0, "source": ["x"], "payload": {}},
    {"type": "position_sample", "ts": 1.0, "source": 7, "payload": {}},
]


def _events() -> list[Any]:
    out: list[Any] = []
    sim = ElevatorSim(ElevatorParams(seed=5, dwell_min=1.0, dwell_max=2.0))
    for i, f in enumerate(sim.frames()):
        if i >= 20000:
            break
        ts = 1737319234.0 + f.t
        if f.can_id in (POSITION_MASTER_ID, POSITION_SLAVE_ID):
            channel = "master" if f.can_id == POSITION_MASTER_ID else "slave"
            raw = int.from_bytes(f.data[:3], "big")
            out.append(make_event("position_sample", ts, {"channel": channel, "position_raw": raw}))
        else:
            out.append(make_event("status", ts, {"channel": "master", "data": f.data.hex()}))
        if i % 500 == 7:
            out.append(BAD[(i // 500) % len(BAD)])
            last = out[-2]["ts"]
            out.append(make_event("position_sample", last, {"channel": "left", "position_raw": 1}))
            out.append(
                make_event("position_sample", last, {"channel": "master", "position_raw": -1})
            )
            out.append({**make_event("position_sample", last, {}), "payload": "x"})
        if i == 4000:
            out.append(
                make_event("position_sample", ts, {"channel": "master", "position_raw": 5}, "b")
            )
    return out


def _node(name: str) -> RideDetect:
    return RideDetect(name, RideDetectConfig(), Context(name, logging.getLogger(f"test.{name}")))


def test_batches_emit_what_one_by_one_emits() -> None:
    events = _events()
    one, batched = _node("one"), _node("batched")
    got_one: list[Any] = []
    subject: Subject[Any] = Subject()
    one.build(subject)["out"].subscribe(got_one.append)
    for ev in events:
        subject.on_next(ev)
    subject.on_completed()
    got_batched: list[Any] = []
    b_subject: Subject[Any] = Subject()
    batched.build(b_subject)["out"].subscribe(got_batched.append)  # the engine's subscription
    for k in range(0, len(events), 333):
        got_batched += batched.process_batch(events[k : k + 333])["out"]
    b_subject.on_completed()  # the flush at the end comes through the stream, as in a flow
    assert sum(1 for e in got_one if isinstance(e, dict) and e.get("type") == "ride_end") >= 2
    assert one.counters.extra.get("bad_input", 0) > 20
    assert got_batched == got_one
    assert batched.counters.as_dict() == one.counters.as_dict()
