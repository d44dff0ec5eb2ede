"""The console's plain logic: the stream summarised into ticks, and learned floors (the
per-browser queues are les02_flow.broadcast's, tested there)."""

from __future__ import annotations

import json
from typing import Any

from les02_flow.nodes.web.live import MAX_TICK_EVENTS, LiveState, learn_floors


def sample(ts: float, channel: str, raw: int) -> dict[str, Any]:
    return {
        "proto": 1,
        "type": "position_sample",
        "ts": ts,
        "source": "les02",
        "payload": {"channel": channel, "position_raw": raw},
    }


def event(type_: str, ts: float, **payload: Any) -> dict[str, Any]:
    return {"proto": 1, "type": type_, "ts": ts, "source": "les02", "payload": payload}


def test_a_tick_carries_the_latest_sample_per_channel_and_every_other_event() -> None:
    s = LiveState(history=10.0, resolution_mm=2.0)
    for i in range(250):  # 0.5 s of both channels at 250 Hz
        s.add(sample(100 + i / 250, "master", 1000 + i))
        s.add(sample(100 + i / 250 + 0.001, "slave", 1002 + i))
    s.add(event("ride_start", 100.3, ride_id="r1", direction="up", position_mm=2000.0))
    s.add(event("status", 100.4, channel="master", can_id=48, data="00"))
    s.add("not an event")  # ignored
    tick = s.tick()
    assert tick is not None
    assert tick["samples"] == {
        "master": [100 + 249 / 250, 1249],
        "slave": [100 + 249 / 250 + 0.001, 1251],
    }
    assert [e["type"] for e in tick["events"]] == ["ride_start", "status"]
    assert tick["ride"]["ride_id"] == "r1"
    assert tick["counts"] == {"position_sample": 500, "ride_start": 1, "status": 1}
    assert s.tick() is None

    s.add(sample(101.2, "master", 1274))  # 25 counts (50 mm) in 0.204 s
    tick = s.tick()
    assert tick is not None and list(tick["samples"]) == ["master"]
    # speed from the history points (one per channel per tick), in mm/s
    assert tick["speed_mm_s"] == round(50 / (101.2 - (100 + 249 / 250)), 1)

    s.add(event("ride_end", 101.3, ride_id="r1", start_position_mm=2000.0))
    s.add(event("channel_mismatch", 101.1, state="begin", start_ts=101.0, end_ts=None))
    tick = s.tick()
    assert tick is not None and tick["ride"] is None and tick["mismatch"]["state"] == "begin"
    snap = s.snapshot()
    assert [m["type"] for m in snap["marks"]] == ["ride_start", "ride_end", "channel_mismatch"]
    assert snap["last_ride"]["ride_id"] == "r1"
    json.dumps(snap)


def test_events_per_tick_are_bounded_and_history_is_trimmed() -> None:
    s = LiveState(history=5.0)
    for i in range(MAX_TICK_EVENTS + 30):
        s.add(event("status", 100 + i * 0.001, channel="master"))
    tick = s.tick()
    assert tick is not None
    assert len(tick["events"]) == MAX_TICK_EVENTS and tick["skipped"] == 30
    for t in range(20):  # 20 s, one tick per second
        s.add(sample(200.0 + t, "master", t))
        s.tick()
    points = s.points["master"]
    assert points[0][0] >= 219.0 - 5.0 and points[-1] == (219.0, 19)
    s.add(sample(50.0, "master", 7))  # time went back: a replay restarted
    s.tick()
    assert list(s.points["master"]) == [(50.0, 7)]


def test_learned_floors() -> None:
    assert learn_floors([]) == []
    assert learn_floors([3500.0, 0.0, 3510.0, 3490.0, 7000.0]) == [0.0, 3500.0, 7000.0]


def lift_event(type_: str, ts: float, site: str, source: str, **payload: Any) -> dict[str, Any]:
    return {"proto": 1, "type": type_, "ts": ts, "source": source, "site": site, "payload": payload}


def test_lifts_go_online_then_offline_with_last_seen_and_position() -> None:
    s = LiveState(history=10.0)
    s.add(lift_event("edge_status", 100.0, "hq", "lift-1", state="online"))
    s.add(lift_event("ride_end", 105.0, "hq", "lift-1", end_position_mm=3500.0))
    s.add(lift_event("edge_status", 101.0, "north", "lift-1", state="online"))
    tick = s.tick()
    assert tick is not None
    assert [
        (r["site"], r["source"], r["online"], r["last_seen"], r["position_mm"])
        for r in tick["lifts"]
    ] == [
        ("hq", "lift-1", True, 105.0, 3500.0),
        ("north", "lift-1", True, 101.0, None),
    ]
    assert s.tick() is None  # nothing changed: no lifts in the next tick
    s.add(lift_event("edge_status", 110.0, "hq", "lift-1", state="offline"))
    tick = s.tick()
    assert tick is not None
    assert [(r["source"], r["online"], r["last_seen"]) for r in tick["lifts"]] == [
        ("lift-1", False, 110.0)
    ]  # only the lift that changed
    table = s.lift_table()
    assert [(r["site"], r["online"], r["position_mm"]) for r in table["lifts"]] == [
        ("hq", False, 3500.0),
        ("north", True, None),
    ]
    assert s.snapshot()["lifts"] == table["lifts"]


def test_events_without_a_site_make_no_lifts() -> None:
    s = LiveState(history=10.0)
    s.add(sample(100.0, "master", 1000))
    s.add(event("ride_end", 101.0, end_position_mm=1.0))
    tick = s.tick()
    assert tick is not None and "lifts" not in tick
    assert s.lift_table()["lifts"] == [] and s.snapshot()["lifts"] == []


def test_the_lift_table_is_bounded_least_recently_seen_evicted_and_counted() -> None:
    s = LiveState(history=10.0, max_lifts=3)
    for i in range(4):
        s.add(lift_event("edge_status", 100.0 + i, "hq", f"lift-{i}", state="online"))
    s.tick()
    s.add(lift_event("status", 110.0, "hq", "lift-1"))  # lift-1 seen again: lift-2 is oldest
    s.add(lift_event("edge_status", 111.0, "hq", "lift-9", state="online"))
    tick = s.tick()
    assert tick is not None
    table = s.lift_table()
    assert [r["source"] for r in table["lifts"]] == ["lift-1", "lift-3", "lift-9"]
    assert table["count"] == 3 and table["evicted"] == 2
    assert tick["lifts_gone"] == [["hq", "lift-2"]] and tick["lifts_evicted"] == 2
    assert [r["source"] for r in tick["lifts"]] == ["lift-1", "lift-9"]
