"""``les02-flow test PATH...``: run flow tests (docs/testing-flows.md).

PATH is a test file, a flow (its ``NAME_test.yaml`` beside it) or a directory (every
``*_test.yaml`` below it). Errors in test files are printed all at once as ``FILE:LINE:COL``
and nothing runs. Exit code 0 when every selected test passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from les02_flow.cliargs import add_command
from les02_flow.clilog import flush_logs
from les02_flow.clirun import print_errors
from les02_flow.flowfile import FlowError, FlowErrors
from les02_flow.flowtest.load import find_test_files, load_test_file
from les02_flow.flowtest.plan import Plan, plan_test
from les02_flow.flowtest.report import format_failure, format_summary, status_line, write_junit
from les02_flow.flowtest.run import TestResult, run_plans

__all__ = ["ORDER", "register", "validate_test_file"]

ORDER = 15

EXAMPLES = """\
  les02-flow test flows/                              every *_test.yaml below flows/
  les02-flow test flows/default.yaml                  the tests beside a flow (default_test.yaml)
  les02-flow test flows/default_test.yaml -k dropout  only tests whose name contains 'dropout'
  les02-flow test flows/ --update                     rewrite golden files from the output
  les02-flow test flows/ --junit build/flow-tests.xml for CI
guide: docs/testing-flows.md"""


def _selected(name: str, patterns: list[str]) -> bool:
    if not patterns:
        return True
    low = name.lower()
    return any(p.lower() in low for p in patterns)


def cmd_test(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    files, errors = find_test_files(args.paths)
    plans: list[Plan] = []
    for path in files:
        loaded = load_test_file(path)
        errors.extend(loaded.errors)
        if loaded.flow_path is None:
            continue
        for i, test in loaded.tests.items():
            if not _selected(test.name, args.k):
                continue
            plan, problems = plan_test(loaded, i)
            errors.extend(problems)
            if plan is not None:
                plans.append(plan)
    if errors:
        print_errors(FlowErrors(_unique(errors)))
        print("no test was run: fix the errors above first", file=sys.stderr)
        return 1
    if not plans:
        print(
            f"no test matches -k {' '.join(args.k)}" if args.k else "no tests found",
            file=sys.stderr,
        )
        return 1
    if args.list:
        for plan in plans:
            print(f"{plan.file.path}::{plan.test.name}  ({plan.location})")
        return 0
    results: list[TestResult] = []
    current = None
    for result in run_plans(plans, update=args.update):
        plan = result.plan
        if plan.file.path != current:
            current = plan.file.path
            print(f"{current}  (flow {plan.original.path})")
        results.append(result)
        print(status_line(result), flush=True)
        for path, n in result.updated:
            print(f"        updated golden file {path} ({n:,} message(s))", flush=True)
    shown = [r for r in results if not r.passed or args.verbose]
    for r in shown:
        print()
        print("\n".join(format_failure(r, verbose=args.verbose)))
    print()
    print(format_summary(results, time.perf_counter() - t0))
    if args.junit:
        write_junit(args.junit, results)
    flush_logs()
    return 0 if all(r.passed for r in results) else 1


def validate_test_file(path: str) -> bool:
    """``les02-flow validate`` on a test file: check it (and its flow) without running."""
    loaded = load_test_file(path)
    errors = list(loaded.errors)
    if loaded.flow_path is not None:
        for i in loaded.tests:
            errors.extend(plan_test(loaded, i)[1])
    if errors:
        print_errors(FlowErrors(_unique(errors)))
        return False
    print(f"{path}: ok ({len(loaded.tests)} tests of {loaded.flow_path})")
    return True


def _unique(errors: list[FlowError]) -> list[FlowError]:
    seen: set[str] = set()
    out = []
    for e in errors:
        if str(e) not in seen:
            seen.add(str(e))
            out.append(e)
    return out


def register(sub: Any) -> None:
    p = add_command(
        sub,
        "test",
        cmd_test,
        "run flow tests: recordings through a flow, checks on what its nodes emit",
        EXAMPLES,
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="test files, flows (their NAME_test.yaml) or directories (every *_test.yaml)",
    )
    p.add_argument(
        "-k",
        action="append",
        default=[],
        metavar="PATTERN",
        help="only tests whose name contains PATTERN (case-insensitive; repeatable: any)",
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="rewrite the equals_file golden files from the output (then review the diff)",
    )
    p.add_argument("--junit", metavar="FILE", help="also write a JUnit XML report to FILE")
    p.add_argument("--list", action="store_true", help="list the selected tests, run nothing")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also explain passing tests: what was replaced, warnings logged",
    )
