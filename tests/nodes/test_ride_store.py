"""The ``ride_store`` node and RideDB on real SQLite files."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

from les02_flow.events import Event, make_event
from les02_flow.node import Context
from les02_flow.nodes.rides.store import SCHEMA_VERSION, RideDB, RideStore, RideStoreConfig
from les02_flow.testing import wait_until

T0 = 1_737_000_000.0


def make_node(path: Path, **config: Any) -> RideStore:
    return RideStore(
        "store",
        RideStoreConfig(path=str(path), **config),
        Context("store", logging.getLogger("test.ride_store")),
    )


def ride_events(ride_id: str, start: float, source: str = "les02") -> list[Event]:
    """Samples from start-2 s to start+4 s (both channels), a ride from start to start+2 s."""
    out: list[Event] = []
    for k in range(1500):
        t = start - 2.0 + k * 0.004
        pos = 100 + round(min(max(t - start, 0.0), 2.0) * 500)
        for ch, off in (("master", 0), ("slave", 2)):
            out.append(
                make_event("position_sample", t, {"channel": ch, "position_raw": pos + off}, source)
            )
        if k == 625:
            out.append(
                make_event(
                    "ride_start",
                    t,
                    {
                        "ride_id": ride_id,
                        "channel": "master",
                        "position_raw": 100,
                        "position_mm": 100.0,
                        "direction": "up",
                        "start_ts": start,
                    },
                    source,
                )
            )
    out.append(
        make_event(
            "ride_end",
            start + 4.0,
            {
                "ride_id": ride_id,
                "start_ts": start,
                "end_ts": start + 2.0,
                "duration_s": 2.0,
                "start_position_raw": 100,
                "start_position_mm": 100.0,
                "end_position_raw": 1100,
                "end_position_mm": 1100.0,
                "distance_raw": 1000,
                "distance_mm": 1000.0,
                "direction": "up",
                "max_speed_mm_s": 500.0,
                "samples": 500,
            },
            source,
        )
    )
    return out


async def run_node(node: RideStore, events: list[Event]) -> None:
    await node.start()
    try:
        for e in events:
            node.consume(e)
    finally:
        await node.stop()


def test_rides_are_stored_once_with_their_samples(tmp_path: Path) -> None:
    path = tmp_path / "data" / "rides.sqlite"  # the directory is created
    events = ride_events("ride-a", T0 + 10.0) + ride_events("ride-b", T0 + 30.0)
    node = make_node(path, margin=0.5)
    asyncio.run(run_node(node, events + events))  # the same session twice
    assert node.counters.extra == {"rides_saved": 2, "duplicates": 2}
    assert node.counters.errors == 0
    db = RideDB.open_readonly(path)
    try:
        rides = db.rides()
        assert [r["ride_id"] for r in rides] == ["ride-a", "ride-b"]
        assert rides[0]["channel"] == "master" and rides[0]["source"] == "les02"
        assert rides[0]["distance_raw"] == 1000 and rides[0]["direction"] == "up"
        samples = db.samples("ride-a")
        assert {ch for _, ch, _ in samples} == {"master", "slave"}
        ts = [t for t, _, _ in samples]
        assert min(ts) >= T0 + 10.0 - 0.5 and max(ts) <= T0 + 12.0 + 0.5
        assert min(ts) < T0 + 9.6 and max(ts) > T0 + 12.4  # the margin is there
        assert len(samples) == len(set(samples))
        assert [r["ride_id"] for r in db.rides(since=T0 + 20.0)] == ["ride-b"]
        assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    # a second node on the same database (a replay) adds nothing
    again = make_node(path)
    asyncio.run(run_node(again, events))
    assert again.counters.extra == {"duplicates": 2}
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM rides").fetchone()[0] == 2


def test_unwritable_database_is_an_error_and_the_node_keeps_going(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    node = make_node(blocker / "rides.sqlite")
    events = ride_events("ride-a", T0 + 10.0) + ride_events("ride-b", T0 + 30.0)
    asyncio.run(run_node(node, events))  # start does not raise, consume never raises
    # each ride failed at least once, was kept for retrying and is dropped (counted) at stop
    assert node.counters.extra.get("write_errors", 0) >= 2
    assert node.counters.extra.get("retry_dropped") == 2 and node.counters.dropped == 2
    assert "rides_saved" not in node.counters.extra


def test_locked_database_fails_the_ride_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "rides.sqlite"
    RideDB.open(path).close()
    node = make_node(path, busy_timeout=0.05)

    async def main() -> None:
        await node.start()
        try:
            locker = sqlite3.connect(path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            for e in ride_events("ride-a", T0 + 10.0):
                node.consume(e)
            await wait_until(lambda: bool(node.counters.extra.get("write_errors")), "a write error")
            locker.execute("ROLLBACK")
            locker.close()
            for e in ride_events("ride-b", T0 + 30.0):
                node.consume(e)
        finally:
            await node.stop()

    asyncio.run(main())
    # ride-a failed once while locked, was retried and saved: nothing lost
    assert node.counters.extra.get("write_errors", 0) >= 1
    assert node.counters.extra.get("rides_saved") == 2 and node.counters.dropped == 0
    assert node.counters.extra.get("retried", 0) >= 1
    db = RideDB.open_readonly(path)
    try:
        assert [r["ride_id"] for r in db.rides()] == ["ride-a", "ride-b"]
    finally:
        db.close()


def test_malformed_ride_end_is_counted_not_fatal(tmp_path: Path) -> None:
    node = make_node(tmp_path / "r.sqlite")
    bad = make_event("ride_end", T0, {"ride_id": "x", "start_ts": T0, "end_ts": T0 + 1})
    asyncio.run(run_node(node, [bad, *ride_events("ok", T0 + 5.0)]))
    assert node.counters.extra.get("write_errors") == 1
    assert node.counters.extra.get("rides_saved") == 1


_V1_SCHEMA = """
CREATE TABLE rides (
    ride_id TEXT PRIMARY KEY, source TEXT NOT NULL, channel TEXT, start_ts REAL NOT NULL,
    end_ts REAL NOT NULL, duration_s REAL NOT NULL, start_position_raw INTEGER,
    start_position_mm REAL, end_position_raw INTEGER, end_position_mm REAL,
    distance_raw INTEGER, distance_mm REAL, direction TEXT, max_speed_mm_s REAL,
    samples INTEGER, event_json TEXT NOT NULL
);
CREATE INDEX rides_by_start ON rides(start_ts);
CREATE TABLE ride_samples (
    ride_id TEXT NOT NULL REFERENCES rides(ride_id) ON DELETE CASCADE, ts REAL NOT NULL,
    channel TEXT NOT NULL, position_raw INTEGER NOT NULL, PRIMARY KEY (ride_id, channel, ts)
) WITHOUT ROWID;
INSERT INTO rides VALUES ('old-ride', 'les02', 'master', 1.0, 3.0, 2.0, 0, 0.0, 10, 10.0, 10,
    10.0, 'up', 5.0, 500, '{}');
PRAGMA user_version = 1;
"""


def test_old_database_gets_the_missing_columns_and_keeps_its_rides(tmp_path: Path) -> None:
    path = tmp_path / "v1.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(_V1_SCHEMA)
    # read-only before the migration: old rows read as complete rides
    db = RideDB.open_readonly(path)
    try:
        (old,) = db.rides()
        assert old["complete"] is True and old["reason"] is None
    finally:
        db.close()
    # a writer (the node) migrates: columns added, old rows complete, a cut-off ride keeps its flag
    cut = ride_events("ride-cut", T0 + 10.0)
    cut[-1]["payload"].update(complete=False, reason="stopped")
    node = make_node(path)
    asyncio.run(run_node(node, cut + ride_events("ride-ok", T0 + 30.0)))
    assert node.counters.extra == {"rides_saved": 2}
    with sqlite3.connect(path) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(rides)")]
        assert "complete" in cols and "reason" in cols
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        rows = conn.execute("SELECT ride_id, complete, reason FROM rides ORDER BY start_ts")
        assert rows.fetchall() == [
            ("old-ride", 1, None),
            ("ride-cut", 0, "stopped"),
            ("ride-ok", 1, None),  # an event without the field (older producer): complete
        ]
    db = RideDB.open_readonly(path)
    try:
        flags = {r["ride_id"]: (r["complete"], r["reason"]) for r in db.rides()}
        assert flags["ride-cut"] == (False, "stopped")
    finally:
        db.close()
    # opening again is a no-op (idempotent migration)
    RideDB.open(path).close()


def _with_site(events: list[Event], site: str) -> list[Event]:
    return [dict(e, site=site) for e in events]


def test_fleet_rides_keep_site_and_source_and_filter(tmp_path: Path) -> None:
    """Two sites with a lift of the same name: their samples never mix, both columns kept."""
    path = tmp_path / "fleet.sqlite"
    a = _with_site(ride_events("ride-a", T0 + 10.0, source="lift-1"), "hq")
    b = _with_site(ride_events("ride-b", T0 + 10.5, source="lift-1"), "depot")
    for e in b:  # the depot's lift stands 10,000 counts higher
        if e["type"] == "position_sample":
            e["payload"] = dict(e["payload"], position_raw=e["payload"]["position_raw"] + 10_000)
    c = ride_events("ride-c", T0 + 40.0, source="lift-2")  # a local bus: no site
    # interleave a and b sample by sample, as a central flow receives them
    merged = [e for pair in zip(a, b, strict=False) for e in pair] + c
    node = make_node(path, margin=0.5)
    asyncio.run(run_node(node, merged))
    assert node.counters.extra == {"rides_saved": 3}
    db = RideDB.open_readonly(path)
    try:
        lifts = {r["ride_id"]: (r["site"], r["source"]) for r in db.rides()}
        assert lifts == {
            "ride-a": ("hq", "lift-1"),
            "ride-b": ("depot", "lift-1"),
            "ride-c": ("", "lift-2"),
        }
        assert [r["ride_id"] for r in db.rides(site="hq")] == ["ride-a"]
        assert [r["ride_id"] for r in db.rides(source="lift-1")] == ["ride-a", "ride-b"]
        assert [r["ride_id"] for r in db.rides(site="depot", source="lift-1")] == ["ride-b"]
        assert db.rides(site="hq", source="lift-2") == []
        assert [r["ride_id"] for r in db.rides(site="")] == ["ride-c"]
        # each ride's samples are its own lift's only
        sa, sb = db.samples("ride-a"), db.samples("ride-b")
        assert sa and all(raw < 10_000 for _t, _c, raw in sa)
        assert sb and all(raw >= 10_000 for _t, _c, raw in sb)
    finally:
        db.close()


_V2_SCHEMA = (
    _V1_SCHEMA.replace(
        "samples INTEGER, event_json TEXT NOT NULL\n);",
        "samples INTEGER, event_json TEXT NOT NULL,\n"
        "    complete INTEGER NOT NULL DEFAULT 1, reason TEXT\n);",
    )
    .replace("    10.0, 'up', 5.0, 500, '{}');", "    10.0, 'up', 5.0, 500, '{}', 1, NULL);")
    .replace("PRAGMA user_version = 1;", "PRAGMA user_version = 2;")
)


def test_version_2_database_gets_site_and_the_lift_index(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(_V2_SCHEMA)
    db = RideDB.open_readonly(path)  # before migrating: site reads as "" and filters work
    try:
        (old,) = db.rides()
        assert old["site"] == "" and db.rides(site="hq") == []
        assert [r["ride_id"] for r in db.rides(site="")] == ["old-ride"]
    finally:
        db.close()
    node = make_node(path)
    asyncio.run(run_node(node, _with_site(ride_events("new", T0 + 10.0), "hq")))
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        rows = conn.execute("SELECT ride_id, site, source FROM rides ORDER BY start_ts").fetchall()
        assert rows == [("old-ride", "", "les02"), ("new", "hq", "les02")]
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(rides)")]
        assert "rides_by_lift" in indexes
