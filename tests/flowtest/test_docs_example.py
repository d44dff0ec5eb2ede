"""The worked example of docs/testing-flows.md, as a user follows it: the rewire and the test
file are taken from the page itself, so the page cannot drift from what the runner does."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from les02_flow.flowtest.load import load_test_file
from les02_flow.flowtest.plan import plan_test
from les02_flow.flowtest.report import format_failure
from les02_flow.flowtest.run import TestResult, run_plans

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "testing-flows.md").read_text()


def _block(starting: str) -> str:
    """The fenced yaml block of the page whose text starts with ``starting``."""
    for m in re.finditer(r"```yaml\n(.*?)```", DOC, re.S):
        if m.group(1).startswith(starting):
            return m.group(1)
    raise AssertionError(f"no yaml block starting with {starting!r} in docs/testing-flows.md")


def _run(test_file: Path, update: bool = False) -> list[TestResult]:
    loaded = load_test_file(str(test_file))
    assert not loaded.errors, [str(e) for e in loaded.errors]
    plans = []
    for i in loaded.tests:
        plan, errors = plan_test(loaded, i)
        assert plan is not None, [str(e) for e in errors]
        plans.append(plan)
    return list(run_plans(plans, update=update))


def test_worked_example(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (tmp_path / "examples").mkdir()
    shutil.copy(ROOT / "examples" / "les02-rides.log", tmp_path / "examples")

    # 1. rewire: the documented rides/ride_events nodes replace the default flow's rides node
    rewire = _block("  rides:\n    type: ride_detect")
    default = (ROOT / "flows" / "default.yaml").read_text()
    old = re.search(r"  rides:\n(    .*\n)+", default)
    assert old is not None
    flow = flows / "shaft-a.yaml"
    flow.write_text(default.replace(old.group(0), rewire))

    # 2. the test file as printed, then 3. the count fixed and the golden written
    tests = flows / "shaft-a_test.yaml"
    tests.write_text(_block("# Tests of flows/shaft-a.yaml"))
    first = _run(tests)
    assert [r.passed for r in first] == [False, True, True]
    assert [f.check for f in first[0].failures] == ["count", "equals_file"]
    assert "count: expected 7 message(s), got 6" in "\n".join(format_failure(first[0]))
    tests.write_text(tests.read_text().replace("count: 7", "count: 6"))
    assert all(r.passed for r in _run(tests, update=True))
    assert (flows / "golden" / "shaft-a-ws.jsonl").read_text().count("\n") == 6

    # 4. the regression: relevel typed as re_level in the filter
    good = flow.read_text()
    flow.write_text(good.replace("relevel, dropout", "re_level, dropout"))
    broken = _run(tests)
    assert [f.check for f in broken[0].failures] == ["count", "ordered", "equals_file"]
    report = "\n".join(format_failure(broken[0]))
    assert "ordered: entry 3 of 6 ('relevel') not found after message #2" in report
    assert "golden line 3 is missing from the output:" in report

    # 5. on purpose: the shaft gets a name; only the golden file fails, --update accepts it
    flow.write_text(
        good.replace("    type: les02_parse\n", "    type: les02_parse\n    source: shaft-a\n")
    )
    renamed = _run(tests)
    assert [f.check for f in renamed[0].failures] == ["equals_file"]
    assert 'source: golden "les02", output "shaft-a"' in "\n".join(format_failure(renamed[0]))
    assert all(r.passed for r in _run(tests, update=True))
    assert '"source": "shaft-a"' in (flows / "golden" / "shaft-a-ws.jsonl").read_text()
