"""Bad test files: every error reported at once, at FILE:LINE:COL, saying what is wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

HEAD = """\
tests:
  - name: t
    target: {node: parse}
    input: {frames: ["080#0005DC00"]}
"""


def errors_of(run_tests: Any, text: str, tmp_path: Path, **kw: Any) -> list[str]:
    run = run_tests(text, **kw)
    assert run.errors, "expected errors"
    assert not run.results, "nothing runs when a test has errors"
    prefix = str(tmp_path) + "/"
    return [m.replace(prefix, "") for m in run.messages]


def test_every_model_error_at_once_with_locations(run_tests: Any, tmp_path: Path) -> None:
    text = """\
tests:
  - name: first
    target: {node: parse}
    inptu: {frames: ["080#0005DC00"]}
    expect:
      parse: {count: "three"}
  - name: second
    input: {frames: ["not a frame"]}
    expect:
      parse:
        every: {field: payload.chanel, op: eq, value: master}
        ordered: [{field: typ, value: status}]
        none_of: [{field: type, op: matches, value: x}]
        contains: [{field: payload.name, op: regex, value: "(unclosed"}]
  - name: third
    input: {events: [{type: status}]}
    expect:
      rides: {count: {ge: 1}, equals_file: x.mp3}
      parse: {}
"""
    got = errors_of(run_tests, text, tmp_path)
    expected_fragments = [
        "small_test.yaml:2:5: test 'first': missing required key 'input'",
        "small_test.yaml:4:5: test 'first': unknown key 'inptu' (did you mean 'input'?)",
        "small_test.yaml:6:22: test 'first': 'expect.parse.count': count must be a number",
        "small_test.yaml:8:22: test 'second': 'input.frames.0': not a frame: 'not a frame'",
        "small_test.yaml:14:60: test 'second': 'expect.parse.contains.0.value': regex "
        "'(unclosed' does not compile",
        "small_test.yaml:13:37: test 'second': 'expect.parse.none_of.0.op': Input should "
        "be 'eq', 'ne'",
        "small_test.yaml:12:27: test 'second': 'expect.parse.ordered.0.field': unknown "
        "field 'typ' (did you mean 'type'?)",
        "small_test.yaml:19:14: test 'third': 'expect.parse': an expectation needs at least "
        "one check",
    ]
    for fragment in expected_fragments:
        assert any(g.startswith(fragment) for g in got), (fragment, "\n".join(got))
    # a payload field name is free (payload.chanel is valid syntax: it would not match)
    assert not any("chanel" in g for g in got)


def test_flow_related_errors(run_tests: Any, tmp_path: Path) -> None:
    text = """\
tests:
  - name: t
    input: {frames: ["080#0005DC00"], start: 2}
    target: {from: parse, to: nowhere}
    expect:
      parse: {count: 1}
  - name: u
    input: {file: missing.log}
    set: {rides.min_distanse: 5, ghost.x: 1}
    keep: [rides]
    expect:
      parse.invalid: {type: status, count: 1}
      parse.oops: {count: 1}
      junk.in: {count: 1}
      parse: {equals_file: golden.log, every: {field: dlc, value: 4}}
      bus: {count: 1}
"""
    got = errors_of(run_tests, text, tmp_path)
    expected = [
        "small_test.yaml:3:12: test 't': input: start, end, ids and types apply to a recording "
        "file only",
        "small_test.yaml:4:31: test 't': target: no node 'nowhere' in the flow (nodes: ",
        "small_test.yaml:8:19: test 'u': input: recording 'missing.log' not found",
        "small_test.yaml:9:34: test 'u': set: no node 'ghost' in the flow",
        "small_test.yaml:9:11: node 'rides': unknown config key 'min_distanse' for "
        "ride_detect (did you mean 'min_distance'?)",
        "small_test.yaml:10:12: test 'u': keep: 'rides' (ride_detect) is not a sink",
        "small_test.yaml:12:29: test 'u': expect 'parse.invalid': 'type' selects events, but "
        "'parse.invalid' carries frame messages",
        "small_test.yaml:13:7: test 'u': expect 'parse.oops': les02_parse 'parse' has no port "
        "'oops' (ports: out, invalid)",
        "small_test.yaml:14:7: test 'u': expect 'junk.in': 'junk' (debug) is a sink, it has "
        "no port 'in'; write 'junk' for what it received",
        "small_test.yaml:15:28: test 'u': expect 'parse': equals_file .log holds frames, but "
        "'parse.out' carries event messages (use .jsonl)",
        "small_test.yaml:15:47: test 'u': expect 'parse': every reads frame fields, but "
        "'parse.out' carries event messages",
    ]
    for fragment in expected:
        assert any(g.startswith(fragment) for g in got), (fragment, "\n".join(got))


def test_input_kind_must_fit_the_target(run_tests: Any, tmp_path: Path) -> None:
    text = """\
tests:
  - name: events into a frame node
    target: {node: parse}
    input: {events: [{type: status}]}
    expect: {parse: {count: 0}}
"""
    got = errors_of(run_tests, text, tmp_path)
    assert got == [
        "small_test.yaml:4:12: test 'events into a frame node': input holds events but "
        "'parse' (les02_parse) takes frame"
    ]


def test_yaml_and_file_level_errors(run_tests: Any, tmp_path: Path) -> None:
    got = errors_of(run_tests, "tests:\n  - name: t\n    input: [unclosed\n", tmp_path)
    assert len(got) == 1 and got[0].startswith("small_test.yaml:4:1: invalid YAML")
    got = errors_of(run_tests, "nodes: {}\n", tmp_path)
    assert got == [
        "small_test.yaml:1:1: a test file must be a mapping with a 'tests' list "
        "(see docs/testing-flows.md, les02-flow schema --tests)"
    ]
    got = errors_of(run_tests, "version: 2\nflow: other.yaml\ntests: []\n", tmp_path)
    assert "small_test.yaml:3:8: 'tests' is empty: add at least one test" in got
    assert any(g.startswith("small_test.yaml:1:10: 'version': Input should be 1") for g in got)
    dup = HEAD + "    expect: {parse: {count: 1}}\n" + HEAD.replace("tests:\n", "")
    dup += "    expect: {parse: {count: 1}}\n"
    got = errors_of(run_tests, dup, tmp_path)
    assert got == ["small_test.yaml:6:11: test 't': duplicate test name (first at line 2)"]


def test_a_flow_error_points_at_the_flow(run_tests: Any, tmp_path: Path) -> None:
    flow = "version: 1\nnodes:\n  parse: {type: les02_prase}\n"
    got = errors_of(run_tests, HEAD + "    expect: {parse: {count: 1}}\n", tmp_path, flow=flow)
    assert got == [
        "small.yaml:3:17: node 'parse': unknown node type 'les02_prase' "
        "(did you mean 'les02_parse'?)"
    ]


def test_valid_file_has_no_errors(run_tests: Any) -> None:
    run = run_tests(HEAD + "    expect: {parse: {count: 1}}\n")
    assert run.one().passed
