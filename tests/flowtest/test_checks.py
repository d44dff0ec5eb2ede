"""Every check and every condition operator, passing and failing, on real nodes.

Events come from ``ride_detect``, which passes every input event through unchanged; frames
from ``les02_parse``'s ``invalid`` port.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from les02_flow.node import Kind

STATUS_EVENTS = """\
tests:
  - name: t
    input:
      events:
        - {type: status, ts: 10.0, payload: {channel: master, n: 5, name: alpha, flags: [1, 2]}}
        - {type: status, ts: 10.5, payload: {channel: slave, n: 7, name: beta, flags: []}}
        - {type: error, ts: 11.0, payload: {channel: master, code: 3}}
    target: {node: rides}
    expect:
      rides:
"""


def one_check(check: str) -> str:
    """A test of the three events above through ``rides`` with ``check`` (YAML at column 0)
    as the expectation on ``rides`` (line 11 of the test file)."""
    return STATUS_EVENTS + textwrap.indent(check.rstrip() + "\n", " " * 8)


# (condition on every message of type status, does it hold for both status events?)
CONDITIONS: list[tuple[str, bool]] = [
    ("{field: type, op: eq, value: status}", True),
    ("{field: payload.channel, op: eq, value: master}", False),
    ("{field: payload.channel, op: ne, value: other}", True),
    ("{field: payload.channel, op: ne, value: slave}", False),
    ("{field: payload.channel, op: in, value: [master, slave]}", True),
    ("{field: payload.channel, op: in, value: [master]}", False),
    ("{field: payload.n, op: lt, value: 8}", True),
    ("{field: payload.n, op: lt, value: 7}", False),
    ("{field: payload.n, op: le, value: 7}", True),
    ("{field: payload.n, op: le, value: 6}", False),
    ("{field: payload.n, op: gt, value: 4}", True),
    ("{field: payload.n, op: gt, value: 5}", False),
    ("{field: payload.n, op: ge, value: 5}", True),
    ("{field: payload.n, op: ge, value: 6}", False),
    ("{field: payload.n, op: range, value: [5, 7]}", True),
    ("{field: payload.n, op: range, value: [5, 6]}", False),
    ("{field: payload.name, op: regex, value: '^(alpha|beta)$'}", True),
    ("{field: payload.name, op: regex, value: '^al'}", False),
    ("{field: payload.flags, op: exists, value: true}", True),
    ("{field: 'payload.flags[0]', op: exists, value: true}", False),
    ("{field: payload.code, op: exists, value: false}", True),
    ("{field: ts, op: range, value: [10.0, 10.5]}", True),
    ("{field: source, op: eq, value: les02}", True),
]


@pytest.mark.parametrize(("condition", "holds"), CONDITIONS)
def test_every_operator(run_tests: Any, condition: str, holds: bool) -> None:
    run = run_tests(one_check(f"type: status\nevery: {condition}"))
    result = run.one()
    assert result.passed is holds, run.report()
    if not holds:
        (failure,) = result.failures
        assert failure.check == "every"
        # the 'every' value of the expectation in small_test.yaml
        assert (failure.location.line, failure.location.col) == (12, 16)
        text = run.report()
        assert "selected message(s) fail; the first:" in text
        assert "wanted" in text  # the field's actual value and the wanted one


def test_failing_condition_shows_the_value(run_tests: Any) -> None:
    run = run_tests(one_check("type: status\nevery: {field: payload.n, op: lt, value: 6}"))
    text = run.report()
    assert "every 'status' message must match payload.n lt 6" in text
    assert "1 of 2 selected message(s) fail" in text
    assert "#2: " in text and '"n": 7' in text
    assert "payload.n is 7, wanted lt 6" in text


@pytest.mark.parametrize(
    ("count", "holds"),
    [
        ("3", True),
        ("2", False),
        ("{ge: 3}", True),
        ("{gt: 3}", False),
        ("{le: 3, ge: 1}", True),
        ("{lt: 3}", False),
        ("{range: [1, 3]}", True),
        ("{range: [4, 9]}", False),
        ("{ne: 0}", True),
        ("{ne: 3}", False),
        ("{min: 3, max: 3}", True),
        ("{min: 4}", False),
        ("{max: 2}", False),
    ],
)
def test_count(run_tests: Any, count: str, holds: bool) -> None:
    run = run_tests(one_check(f"count: {count}"))
    result = run.one()
    assert result.passed is holds, run.report()
    if not holds:
        text = run.report()
        assert "got 3" in text
        assert "rides.out carried 3 message(s); by type: status 2, error 1" in text


def test_type_and_where_select(run_tests: Any) -> None:
    run = run_tests(
        one_check(
            "- {type: status, count: 2}\n"
            "- {type: [status, error], count: 3}\n"
            "- {where: {field: payload.channel, value: master}, count: 2}\n"
            "- type: status\n"
            "  where: [{field: payload.n, op: gt, value: 5}]\n"
            "  count: 1\n"
        )
    )
    assert run.one().passed, run.report()


def test_contains(run_tests: Any) -> None:
    ok = run_tests(one_check("contains: [error, [status, {field: payload.n, value: 7}]]"))
    assert ok.one().passed, ok.report()
    bad = run_tests(one_check("contains: [[status, {field: payload.name, value: gamma}]]"))
    result = bad.one()
    assert [f.check for f in result.failures] == ["contains"]
    text = bad.report()
    assert "contains[1]: no message matches type eq 'status' and payload.name eq 'gamma'" in text
    assert "closest: #1" in text
    assert 'payload.name is "alpha", wanted eq "gamma"' in text


def test_ordered(run_tests: Any) -> None:
    ok = run_tests(one_check("ordered: [status, error]"))
    assert ok.one().passed, ok.report()
    bad = run_tests(one_check("ordered: [error, status]"))
    result = bad.one()
    assert [f.check for f in result.failures] == ["ordered"]
    text = bad.report()
    assert "ordered: entry 2 of 2 ('status') not found after message #3" in text
    assert "entry 1 ('error') matched #3" in text
    assert "it does occur earlier (out of order): #1" in text
    missing = run_tests(one_check("ordered: [status, dropout]"))
    assert "no message matches it at all" in missing.report()


def test_none_of(run_tests: Any) -> None:
    ok = run_tests(one_check("none_of: [dropout, [status, {field: payload.n, gt: 1}]]"))
    # a condition with an unknown key is an error, not a silent pass
    assert ok.errors and "unknown key 'gt'" in ok.messages[0]
    ok = run_tests(one_check("none_of: [dropout, {field: payload.n, op: gt, value: 9}]"))
    assert ok.one().passed, ok.report()
    bad = run_tests(one_check("none_of: [[error, {field: payload.code, value: 3}]]"))
    text = bad.report()
    assert "none_of[1]: 1 message(s) match type eq 'error' and payload.code eq 3" in text
    assert "#3: " in text


def test_equals_file_events_update_and_diff(run_tests: Any, tmp_path: Path) -> None:
    check = "type: status\nequals_file: golden/status.jsonl"
    missing = run_tests(one_check(check))
    assert "golden file golden/status.jsonl does not exist" in missing.report()
    assert "run with --update to write it" in missing.report()

    updated = run_tests(one_check(check), update=True)
    result = updated.one()
    assert result.passed
    assert result.updated == [(str(tmp_path / "golden" / "status.jsonl"), 2)]
    golden = tmp_path / "golden" / "status.jsonl"
    lines = [json.loads(line) for line in golden.read_text().splitlines()]
    assert [e["payload"]["name"] for e in lines] == ["alpha", "beta"]
    assert run_tests(one_check(check)).one().passed

    # a changed value, a missing and an extra message: each shown, field by field
    lines[1]["payload"]["n"] = 8
    extra = {**lines[0], "ts": 9.0}
    golden.write_text("".join(json.dumps(e) + "\n" for e in [extra, lines[0], lines[1]]))
    run = run_tests(one_check(check))
    assert len(run.one().failures) == 1
    text = run.report()
    assert (
        "equals_file golden/status.jsonl: 2 difference(s) (golden 3 message(s), output 2)" in text
    )
    assert "golden line 1 is missing from the output:" in text
    assert "message #2 (status) differs from golden line 3:" in text
    assert "payload.n: golden 8, output 7" in text
    assert "run again with --update" in text


def test_equals_file_frames(run_tests: Any, tmp_path: Path) -> None:
    tests = """\
    tests:
      - name: t
        target: {node: parse}
        input:
          frames: ["(1.0) 080#0005DC00", "(1.002) 123#DEAD", "(1.004) 080#01"]
        expect:
          parse.invalid: {equals_file: bad.log}
    """
    assert run_tests(tests, update=True).one().passed
    text = (tmp_path / "bad.log").read_text()
    assert "123#DEAD" in text and "080#01" in text
    (tmp_path / "bad.log").write_text(text.replace("123#DEAD", "124#DEAD"))
    run = run_tests(tests)
    report = run.report()
    assert "message #1 differs from golden line 1:" in report
    assert "id: golden 0x124, output 0x123" in report
    assert "- golden (1.002000) 124#DEAD" in report
    assert "+ output (1.002000) 123#DEAD" in report


def test_inline_frames_default_timestamps_and_flags(run_tests: Any) -> None:
    tests = """\
    tests:
      - name: t
        target: {node: parse}
        input:
          period: 0.5
          frames:
            - "080#0005DC00"
            - {id: 0x81, data: "00 05 DE 00"}
            - "12345678#00"
            - "080#R"
        expect:
          parse:
            ordered:
              - [{field: ts, value: 0.0}, {field: payload.position_raw, value: 1500}]
              - [{field: ts, value: 0.5}, {field: payload.position_raw, value: 1502}]
          parse.invalid:
            ordered:
              - [{field: is_extended_id, value: true}, {field: timestamp, value: 1.0}]
              - [{field: is_remote_frame, value: true}, {field: dlc, value: 0}]
    """
    run = run_tests(tests)
    assert run.one().passed, run.report()
    probes = run.one().plan.probes
    assert probes["parse"].kind is Kind.EVENT
    assert probes["parse.invalid"].kind is Kind.FRAME


def test_recording_window_and_ids(run_tests: Any) -> None:
    recording = Path(__file__).resolve().parents[2] / "examples" / "les02-rides.log"
    tests = f"""\
    tests:
      - name: t
        target: {{node: parse}}
        input: {{file: "{recording}", start: 1.0, end: 2.0, ids: [0x80]}}
        expect:
          parse:
            - count: {{range: [249, 251]}}
            - every: [position_sample, {{field: payload.channel, value: master}}]
            - every: {{field: ts, op: range, value: [1767225601.0, 1767225602.0]}}
    """
    run = run_tests(tests)
    assert run.one().passed, run.report()


def test_whole_flow_replaces_sources_and_sinks(run_tests: Any) -> None:
    recording = Path(__file__).resolve().parents[2] / "examples" / "les02-rides.log"
    tests = f"""\
    tests:
      - name: t
        input: {{file: "{recording}", end: 7}}
        expect:
          out: [{{type: ride_end, count: 1}}]
          junk: {{count: 2}}
          bus: {{count: {{gt: 3000}}, every: {{field: dlc, op: in, value: [2, 4, 8]}}}}
    """
    run = run_tests(tests)
    result = run.one()
    assert result.passed, run.report()
    changes = result.plan.changes
    assert "source 'bus' (can_source) replaced by the test input" in changes
    assert "sink 'out' (debug) replaced by a capture" in changes
    # the flow that ran has no can_source and no debug node: nothing was opened
    types = {n.cls.__mro__[1].__name__ for n in result.plan.flow.nodes.values()}
    assert "CanSource" not in types and "Debug" not in types


def test_sub_graph_from_to(run_tests: Any) -> None:
    recording = Path(__file__).resolve().parents[2] / "examples" / "les02-rides.log"
    tests = f"""\
    tests:
      - name: t
        input: {{file: "{recording}", end: 7}}
        target: {{from: parse, to: rides}}
        set: {{rides.min_distance: 2000}}
        expect:
          rides: [{{type: ride_end, count: 0}}, {{type: relevel, count: 1}}]
    """
    run = run_tests(tests)
    result = run.one()
    assert result.passed, run.report()
    assert set(result.plan.flow.nodes) == {"<test input>", "parse", "rides", "<expect rides.out>"}


def test_same_result_ten_times(run_tests: Any) -> None:
    recording = Path(__file__).resolve().parents[2] / "examples" / "les02-rides.log"
    tests = f"""\
    tests:
      - name: t
        input: {{file: "{recording}", start: 2, end: 8.5}}
        target: {{from: parse, to: rides}}
        expect:
          rides: {{type: [ride_start, ride_end, relevel], count: {{ge: 2}}}}
    """
    outputs = []
    for _ in range(10):
        result = run_tests(tests).one()
        assert result.passed
        outputs.append(json.dumps(result.captured["rides"]))
    assert len(outputs[0]) > 100_000
    assert len(set(outputs)) == 1


def test_tests_with_the_same_input_share_one_run(run_tests: Any, tmp_path: Path) -> None:
    """Same input, target, overrides: one run serves them, with the same result as separate
    runs; a test with other overrides runs on its own."""
    from les02_flow.flowtest.load import load_test_file
    from les02_flow.flowtest.plan import plan_test
    from les02_flow.flowtest.run import run_plan, run_plans

    recording = Path(__file__).resolve().parents[2] / "examples" / "les02-rides.log"
    tests = f"""\
    tests:
      - name: a
        input: {{file: "{recording}", end: 9}}
        expect: {{out: {{type: ride_end, count: 1}}}}
      - name: b
        input: {{file: "{recording}", end: 9}}
        expect: {{junk: {{count: 2}}, parse: {{type: status, count: {{ge: 10}}}}}}
      - name: c
        input: {{file: "{recording}", end: 9}}
        set: {{rides.min_distance: 5000}}
        expect: {{out: {{type: ride_end, count: 0}}}}
    """
    run_tests(tests)  # writes the files
    loaded = load_test_file(str(tmp_path / "small_test.yaml"))
    plans = [plan_test(loaded, i)[0] for i in range(3)]
    assert all(p is not None for p in plans)
    shared = list(run_plans([p for p in plans if p is not None]))
    assert [r.shared for r in shared] == [None, "a", None]
    assert all(r.passed for r in shared), [f.message for r in shared for f in r.failures]
    for r in shared:
        alone = run_plan(r.plan)
        assert alone.passed
        assert json.dumps(alone.captured, default=str) == json.dumps(r.captured, default=str)


def test_keep_runs_a_real_sink_and_jsonl_input(run_tests: Any, tmp_path: Path) -> None:
    """keep: the real file_recorder writes its file (and is still observed); a .jsonl
    recording is an event input; into: names the source that gets it."""
    flow = """\
    version: 1
    nodes:
      bus: {type: can_source, interface: virtual, channel: flowtest, wires: [parse, rec]}
      parse: {type: les02_parse, log_invalid: false, wires: {out: [rides], invalid: [junk]}}
      rides: {type: ride_detect, wires: [out]}
      rec: {type: file_recorder, path: unused.log}
      out: {type: debug}
      junk: {type: debug}
    """
    recording = Path(__file__).resolve().parents[2] / "examples" / "les02-rides.log"
    written = tmp_path / "kept.log"
    tests = f"""\
    tests:
      - name: kept
        input: {{file: "{recording}", end: 2}}
        keep: [rec]
        set: {{rec.path: "{written}"}}
        expect:
          rec: {{count: {{gt: 900}}, every: {{field: dlc, op: in, value: [4, 8]}}}}
    """
    run = run_tests(tests, flow=flow)
    result = run.one()
    assert result.passed, run.report()
    lines = written.read_text().splitlines()
    assert len(lines) == len(result.captured["rec"]) > 900
    assert "sink 'rec' (file_recorder) replaced by a capture" not in result.plan.changes

    events = tmp_path / "events.jsonl"
    events.write_text(
        '{"proto": 1, "type": "status", "ts": 1.0, "source": "a", "payload": {}}\n'
        '{"proto": 1, "type": "error", "ts": 2.0, "source": "a", "payload": {"code": 1}}\n'
    )
    tests = f"""\
    tests:
      - name: events from a jsonl recording
        input: {{file: "{events}", types: [error]}}
        target: {{node: rides}}
        expect:
          rides: {{count: 1, every: [error, {{field: payload.code, value: 1}}]}}
    """
    assert run_tests(tests).one().passed
