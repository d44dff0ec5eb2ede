"""Flow tests: ``les02-flow test`` runs recordings (or frames/events written in a test file)
through a flow, in frame time and deterministically, and checks what its nodes emit.

Modules: :mod:`.model` (the test file models and JSON Schema), :mod:`.load` (finding and
reading test files, errors at FILE:LINE:COL), :mod:`.plan` (the flow that runs: target
sub-graph, input, captures), :mod:`.run` (running it), :mod:`.check` (expectations and their
explanations), :mod:`.golden` (golden files), :mod:`.report` (text report, JUnit XML).
``docs/testing-flows.md`` is the user guide.
"""

from __future__ import annotations

from .load import LoadedTestFile, find_test_files, load_test_file
from .model import TestFile, tests_schema
from .plan import Plan, plan_test
from .run import TestResult, run_plan

__all__ = [
    "LoadedTestFile",
    "Plan",
    "TestFile",
    "TestResult",
    "find_test_files",
    "load_test_file",
    "plan_test",
    "run_plan",
    "tests_schema",
]
