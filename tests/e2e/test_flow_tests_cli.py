"""`les02-flow test` as a user runs it: the shipped tests, a regression caught with a readable
report, --update, --junit, -k, schema --tests, and live vs test mode on the same recording."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
RECORDING = ROOT / "examples" / "les02-rides.log"

Cli = Callable[..., subprocess.CompletedProcess[str]]


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line == text)


def test_shipped_flow_tests_pass(cli: Cli) -> None:
    proc = cli("test", "flows/")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "flows/default_test.yaml  (flow flows/default.yaml)" in out
    assert "FAIL" not in out
    assert "PASS  rides and re-levelling" in out
    assert "PASS  a dropout of the master channel" in out
    assert "PASS  invalid frames go to debug, not to the detector" in out
    n = sum(1 for line in out.splitlines() if line.startswith("  PASS "))
    assert n >= 7
    assert f"{n} test(s): {n} passed" in out


def _copy_project(tmp_path: Path) -> Path:
    """flows/default.yaml, its tests and goldens, and the recording, in the same layout."""
    (tmp_path / "flows").mkdir()
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "flows" / "default.yaml", tmp_path / "flows")
    shutil.copy(ROOT / "flows" / "default_test.yaml", tmp_path / "flows")
    shutil.copytree(ROOT / "flows" / "golden", tmp_path / "flows" / "golden")
    shutil.copy(RECORDING, tmp_path / "examples")
    return tmp_path / "flows"


def test_a_regression_fails_with_a_readable_report(cli: Cli, tmp_path: Path) -> None:
    flows = _copy_project(tmp_path)
    flow = flows / "default.yaml"
    text = flow.read_text()
    # the regression: a wrong resolution halves every millimetre value of the detector
    assert "    resolution_mm: 1.0\n" in text
    flow.write_text(text.replace("    resolution_mm: 1.0\n", "    resolution_mm: 0.5\n"))
    rides_line = _line_of(flow, "  rides:")
    tests = flows / "default_test.yaml"
    junit = tmp_path / "report.xml"

    some = ("-k", "re-levelling", "-k", "golden", "-k", "dropout")
    proc = cli("test", str(flows), *some, "--junit", str(junit))
    assert proc.returncode == 1
    out = proc.stdout
    assert "FAIL  rides and re-levelling" in out
    assert "FAIL  ride events are unchanged (golden file)" in out
    assert "PASS  a dropout of the master channel" in out  # not about millimetres
    # where: the expectation in the test file and the node in the flow
    every_line = _line_of(tests, "        - type: ride_end") + 3  # the list under every:
    assert f"{tests}:{every_line}:13: expect 'rides': every 'ride_end' message must match" in out
    assert f"node 'rides' (ride_detect) at {flow}:{rides_line}:3" in out
    # what: the value, what was wanted, and the message
    assert "payload.distance_mm is 750.0, wanted range [1490, 1520]" in out
    assert "2 of 2 selected message(s) fail; the first:" in out
    # the golden file, field by field
    assert "equals_file golden/default-ride-events.jsonl: 5 difference(s)" in out
    assert "(golden 6 message(s), output 6)" in out
    assert "payload.distance_mm: golden 1500.0, output 750.0" in out
    assert "payload.position_mm: golden 0.0, output 0.0" not in out  # equal values not listed
    assert "re-run: les02-flow test" in out and "-k 'rides and re-levelling'" in out

    report = ET.parse(junit).getroot()
    assert report.get("failures") == "2" and report.get("errors") == "0"
    failed = [c.get("name") for c in report.iter("testcase") if c.find("failure") is not None]
    assert failed == ["rides and re-levelling", "ride events are unchanged (golden file)"]

    # --update accepts the new output as the golden file (on purpose, after review)
    proc = cli("test", str(tests), "--update", "-k", "golden")
    assert proc.returncode == 0, proc.stdout
    assert "updated golden file" in proc.stdout
    assert "default-ride-events.jsonl (6 message(s))" in proc.stdout
    assert "PASS  ride events are unchanged (golden file)" in proc.stdout
    golden_text = (flows / "golden" / "default-ride-events.jsonl").read_text()
    golden = [json.loads(line) for line in golden_text.splitlines()]
    assert golden[1]["payload"]["distance_mm"] == 750.0


def test_k_list_and_no_match(cli: Cli) -> None:
    proc = cli("test", "flows/default.yaml", "-k", "DROPOUT", "--list")
    assert proc.returncode == 0
    line = _line_of(ROOT / "flows/default_test.yaml", "  - name: a dropout of the master channel")
    assert proc.stdout.splitlines() == [
        "flows/default_test.yaml::a dropout of the master channel  "
        f"(flows/default_test.yaml:{line}:5)"
    ]
    proc = cli("test", "flows/", "-k", "no such test")
    assert proc.returncode == 1 and "no test matches -k no such test" in proc.stderr


def test_bad_test_file_is_reported_and_nothing_runs(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text((ROOT / "flows" / "default.yaml").read_text())
    bad = tmp_path / "f_test.yaml"
    bad.write_text(
        "tests:\n"
        "  - name: one\n"
        f"    input: {{file: {RECORDING}}}\n"
        "    expect:\n"
        "      ridez: {count: 1}\n"
        "  - name: two\n"
        f"    input: {{file: {RECORDING}}}\n"
        "    expect:\n"
        "      rides: {every: {field: payload.x, op: between, value: [1, 2]}}\n"
    )
    proc = cli("test", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stdout == ""
    err = proc.stderr.splitlines()
    assert err[0].startswith(f"{bad}:5:7: test 'one': expect 'ridez': no node 'ridez' in the flow")
    assert "(nodes: sim, bus, parse," in err[0]
    assert err[1].startswith(f"{bad}:9:45: test 'two': 'expect.rides.every.op': Input should be")
    assert err[-2:] == ["2 errors", "no test was run: fix the errors above first"]


def test_schema_of_test_files_validates_the_shipped_tests(cli: Cli) -> None:
    proc = cli("schema", "--tests")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema["title"] == "les02-flow test file"
    jsonschema.Draft202012Validator.check_schema(schema)
    data = yaml.safe_load((ROOT / "flows" / "default_test.yaml").read_text())
    jsonschema.validate(data, schema)
    bad = {"tests": [{"name": "x", "input": {"file": "a.log"}, "expect": {"a": {"cnt": 1}}}]}
    try:
        jsonschema.validate(bad, schema)
    except jsonschema.ValidationError:
        pass
    else:
        raise AssertionError("an unknown key must not validate")


def test_example_recording_is_reproducible(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_les02_rides", ROOT / "examples" / "make_les02_rides.py"
    )
    assert spec is not None and spec.loader is not None
    module: Any = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "again.log"
    module.write(out)
    assert out.read_bytes() == RECORDING.read_bytes()
    assert RECORDING.stat().st_size < 500_000


def test_live_replay_and_test_mode_agree(cli: Cli, tmp_path: Path) -> None:
    """The same recording replayed in (paced) real time through the real nodes and written
    by a real file_recorder equals what test mode captures, event for event."""
    live = tmp_path / "live.jsonl"
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "version: 1\n"
        "nodes:\n"
        "  bus: {type: can_source, interface: virtual, channel: live-vs-test, wires: [parse]}\n"
        "  parse: {type: les02_parse, log_invalid: false, wires: [rides]}\n"
        "  rides: {type: ride_detect, wires: [rec]}\n"
        f"  rec: {{type: file_recorder, path: {live}}}\n"
    )
    proc = cli(
        "replay",
        str(RECORDING),
        "--flow",
        str(flow),
        "--speed",
        "6",
        "--keep-recorders",
        "--progress",
        "0",
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    events = live.read_text().splitlines()
    assert len(events) > 9000
    assert sum('"type": "ride_end"' in e for e in events) == 2
    (tmp_path / "f_test.yaml").write_text(
        "tests:\n"
        "  - name: test mode equals the live replay\n"
        f"    input: {{file: {RECORDING}}}\n"
        "    expect:\n"
        "      rec: {equals_file: live.jsonl}\n"
        "      rides: {type: [ride_start, ride_end, relevel, dropout], count: 6}\n"
    )
    proc = cli("test", str(tmp_path / "f_test.yaml"))
    assert proc.returncode == 0, proc.stdout
