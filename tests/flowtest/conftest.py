"""Helpers for flow-test tests: write a flow and a test file, load, plan and run them."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from les02_flow.flowfile import FlowError
from les02_flow.flowtest.load import load_test_file
from les02_flow.flowtest.plan import plan_test
from les02_flow.flowtest.run import TestResult, run_plan

ROOT = Path(__file__).resolve().parents[2]
RECORDING = ROOT / "examples" / "les02-rides.log"

#: a small flow with the real LES02 nodes; sinks are debug nodes (replaced by captures)
FLOW = """\
version: 1
name: small
nodes:
  bus: {type: can_source, interface: virtual, channel: flowtest, wires: [parse]}
  parse:
    type: les02_parse
    log_invalid: false
    wires: {out: [rides], invalid: [junk]}
  rides: {type: ride_detect, wires: [out]}
  out: {type: debug}
  junk: {type: debug}
"""


@dataclass
class Run:
    results: list[TestResult] = field(default_factory=list)
    errors: list[FlowError] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return [str(e) for e in self.errors]

    def one(self) -> TestResult:
        assert not self.errors, self.messages
        assert len(self.results) == 1
        return self.results[0]

    def report(self) -> str:
        from les02_flow.flowtest.report import format_failure

        return "\n".join(line for r in self.results for line in format_failure(r))


RunTests = Callable[..., Run]


@pytest.fixture
def run_tests(tmp_path: Path) -> RunTests:
    """``run_tests(TEST_YAML, flow=FLOW, update=False)``: write ``small.yaml`` and
    ``small_test.yaml`` into tmp_path, then load, plan and run every test."""

    def run(tests: str, flow: str = FLOW, update: bool = False) -> Run:
        (tmp_path / "small.yaml").write_text(textwrap.dedent(flow), encoding="utf-8")
        test_file = tmp_path / "small_test.yaml"
        test_file.write_text(textwrap.dedent(tests), encoding="utf-8")
        loaded = load_test_file(str(test_file))
        out = Run(errors=list(loaded.errors))
        if loaded.flow_path is None:
            return out
        plans = []
        for i in loaded.tests:
            plan, errors = plan_test(loaded, i)
            out.errors.extend(errors)
            if plan is not None:
                plans.append(plan)
        if not out.errors:  # like the command: nothing runs while a test file has errors
            out.results = [run_plan(plan, update=update) for plan in plans]
        return out

    return run
