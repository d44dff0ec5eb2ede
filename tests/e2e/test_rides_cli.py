"""``les02-flow rides`` in a subprocess, on a database written by RideDB."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from les02_flow.events import make_event
from les02_flow.nodes.rides.store import RideDB

T0 = 1_737_000_000.0
Cli = Callable[..., subprocess.CompletedProcess[str]]


def ride_end(ride_id: str, start: float, up: bool) -> dict[str, Any]:
    a, b = (0, 3500) if up else (3500, 0)
    return make_event(
        "ride_end",
        start + 7.0,
        {
            "ride_id": ride_id,
            "start_ts": start,
            "end_ts": start + 4.9,
            "duration_s": 4.9,
            "start_position_raw": a,
            "start_position_mm": float(a),
            "end_position_raw": b,
            "end_position_mm": float(b),
            "distance_raw": 3500,
            "distance_mm": 3500.0,
            "direction": "up" if up else "down",
            "max_speed_mm_s": 1427.8,
            "samples": 1225,
        },
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "rides.sqlite"
    db = RideDB.open(path)
    db.save(
        ride_end("aaaa1111-0000-5000-8000-000000000001", T0, True),
        "master",
        [(T0 + 0.004 * k, "master", k) for k in range(3)],
    )
    db.save(ride_end("bbbb2222-0000-5000-8000-000000000002", T0 + 100.0, False), "master", [])
    db.close()
    return path


def test_table_lists_rides(cli: Cli, db_path: Path) -> None:
    r = cli("rides", str(db_path))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["start", "(local", "time)"]
    assert "aaaa1111-0000-5000-8000-000000000001" in lines[2]
    assert " up " in lines[2] and "3500.0" in lines[2] and "4.900" in lines[2]
    assert "1427.8" in lines[2]
    assert " down " in lines[3] and lines[-1] == "2 rides"


def test_json_and_since(cli: Cli, db_path: Path) -> None:
    r = cli("rides", str(db_path), "--json")
    assert r.returncode == 0, r.stderr
    rides = json.loads(r.stdout)
    assert [x["direction"] for x in rides] == ["up", "down"]
    assert rides[0]["start_ts"] == T0 and rides[0]["distance_mm"] == 3500.0
    r = cli("rides", str(db_path), "--json", "--since", str(T0 + 50))
    assert [x["ride_id"][:4] for x in json.loads(r.stdout)] == ["bbbb"]
    r = cli("rides", str(db_path), "--since", "1h")  # rides are from 2025: none in the last hour
    assert r.returncode == 0 and r.stdout.strip() == "no rides since then"
    r = cli("rides", str(db_path), "--since", "yesterday-ish")
    assert r.returncode == 2 and "--since" in r.stderr


def test_export_csv_and_json(cli: Cli, db_path: Path) -> None:
    r = cli("rides", str(db_path), "--export", "aaaa1111")  # a unique prefix is enough
    assert r.returncode == 0, r.stderr
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["ts", "channel", "position_raw", "position_mm"]
    assert [row[1:3] for row in rows[1:]] == [["master", "0"], ["master", "1"], ["master", "2"]]
    assert float(rows[1][0]) == T0
    r = cli(
        "rides",
        str(db_path),
        "--export",
        "aaaa1111-0000-5000-8000-000000000001",
        "--format",
        "json",
    )
    doc = json.loads(r.stdout)
    assert doc["ride"]["direction"] == "up" and len(doc["samples"]) == 3
    assert doc["samples"][2] == {
        "ts": T0 + 0.008,
        "channel": "master",
        "position_raw": 2,
        "position_mm": 2.0,
    }


def test_errors_are_clear(cli: Cli, db_path: Path, tmp_path: Path) -> None:
    r = cli("rides", str(tmp_path / "missing.sqlite"))
    assert r.returncode == 1 and "no ride database" in r.stderr
    assert not (tmp_path / "missing.sqlite").exists()
    r = cli("rides", str(db_path), "--export", "cccc")
    assert r.returncode == 1 and "no ride 'cccc'" in r.stderr
    junk = tmp_path / "junk.sqlite"
    junk.write_text("not sqlite")
    r = cli("rides", str(junk))
    assert r.returncode == 1 and "not a readable ride database" in r.stderr


def test_site_and_source_filters(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "fleet.sqlite"
    db = RideDB.open(path)
    for i, (site, source) in enumerate(
        [("hq", "lift-1"), ("hq", "lift-2"), ("depot", "lift-1"), ("hq", "lift-1")]
    ):
        ev = ride_end(f"{i:04d}aaaa-0000-5000-8000-00000000000{i}", T0 + 10.0 * i, True)
        ev["source"], ev["site"] = source, site
        db.save(ev, "master", [])
    db.close()
    r = cli("rides", str(path), "--site", "hq", "--source", "lift-1", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert [(x["site"], x["source"], x["ride_id"][:4]) for x in got] == [
        ("hq", "lift-1", "0000"),
        ("hq", "lift-1", "0003"),
    ]
    r = cli("rides", str(path), "--source", "lift-1")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("site/source") and lines[-1] == "3 rides"
    assert lines[2].startswith("hq/lift-1") and lines[3].startswith("depot/lift-1")
    r = cli("rides", str(path), "--site", "nowhere")
    assert r.returncode == 0 and r.stdout.strip() == "no rides of site 'nowhere'"
