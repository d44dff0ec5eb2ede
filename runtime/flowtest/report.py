"""The test report: a line per test, then each failure with where it is and what differs;
and JUnit XML for CI."""

from __future__ import annotations

import shlex
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from .run import TestResult

__all__ = ["format_failure", "format_summary", "status_line", "write_junit"]

#: log lines of a failed run shown in the report
LOG_LINES = 8


def status_line(result: TestResult) -> str:
    word = "PASS" if result.passed else ("ERROR" if result.error else "FAIL")
    if result.shared is not None:
        how = f"same run as '{result.shared}'"
    else:
        how = f"{result.seconds:.2f} s, {result.items:,} input items"
    return f"  {word:<5} {result.name}  ({how})"


def rerun_command(result: TestResult) -> str:
    return f"les02-flow test {shlex.quote(result.plan.file.path)} -k {shlex.quote(result.name)}"


def format_failure(result: TestResult, verbose: bool = False) -> list[str]:
    """The block that explains one failed (or, with ``verbose``, passed) test."""
    plan = result.plan
    word = "PASS" if result.passed else ("ERROR" if result.error else "FAIL")
    lines = [f"{word}: {result.name}  ({plan.location}, flow {plan.original.path})"]
    if result.error:
        lines.append(f"  {result.error}")
    seen_probe: set[str] = set()
    for f in result.failures:
        lines.append(f"  {f.location}: expect '{f.probe.key}': {f.message}")
        if f.probe.key not in seen_probe:
            seen_probe.add(f.probe.key)
            lines.append(f"      {f.probe.where()}")
        lines.extend(f"      {d}" for d in f.details)
    for p in result.problems[:LOG_LINES]:
        lines.append(f"  input: {p}")
    if len(result.problems) > LOG_LINES:
        lines.append(f"  input: ... {len(result.problems) - LOG_LINES} more corrupt lines")
    errors = {nid: c["errors"] for nid, c in result.counters.items() if c.get("errors")}
    if errors and not result.passed:
        counted = ", ".join(f"'{nid}' {n}" for nid, n in errors.items())
        lines.append(f"  node errors counted during the run: {counted}")
    if result.logs and not verbose and not result.passed:
        n = len(result.logs)
        lines.append(f"  {n} warning/error line(s) were logged during the run (-v shows them)")
    if result.logs and verbose:
        shown = result.logs[:LOG_LINES]
        lines.append(f"  log of the run ({len(result.logs)} warning/error line(s)):")
        lines.extend(f"      {line}" for line in shown)
        if len(result.logs) > LOG_LINES:
            lines.append(f"      ... {len(result.logs) - LOG_LINES} more")
    if verbose:
        lines.extend(f"  setup: {c}" for c in plan.changes)
    if not result.passed:
        lines.append(f"  re-run: {rerun_command(result)}")
    return lines


def format_summary(results: Sequence[TestResult], seconds: float) -> str:
    passed = sum(r.passed for r in results)
    errors = sum(r.error is not None for r in results)
    failed = len(results) - passed - errors
    parts = [f"{passed} passed"]
    if failed:
        parts.append(f"{failed} failed")
    if errors:
        parts.append(f"{errors} could not run")
    return f"{len(results)} test(s): {', '.join(parts)} in {seconds:.2f} s"


def write_junit(path: str, results: Sequence[TestResult], out: TextIO | None = None) -> None:
    """JUnit XML: a testsuite per test file, a testcase per test."""
    suites = ET.Element("testsuites", name="les02-flow test")
    by_file: dict[str, list[TestResult]] = {}
    for r in results:
        by_file.setdefault(r.plan.file.path, []).append(r)
    total = {"tests": 0, "failures": 0, "errors": 0}
    for file, items in by_file.items():
        failures = sum(1 for r in items if r.failures and r.error is None)
        errors = sum(1 for r in items if r.error is not None)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=file,
            tests=str(len(items)),
            failures=str(failures),
            errors=str(errors),
            skipped="0",
            time=f"{sum(r.seconds for r in items):.3f}",
        )
        total["tests"] += len(items)
        total["failures"] += failures
        total["errors"] += errors
        for r in items:
            case = ET.SubElement(
                suite,
                "testcase",
                classname=Path(file).with_suffix("").as_posix().replace("/", "."),
                name=r.name,
                file=file,
                line=str(r.plan.location.line),
                time=f"{r.seconds:.3f}",
            )
            if r.passed:
                continue
            text = "\n".join(format_failure(r))
            if r.error is not None:
                ET.SubElement(case, "error", message=r.error).text = text
            else:
                first = r.failures[0]
                ET.SubElement(
                    case, "failure", message=f"{first.probe.key}: {first.message}"
                ).text = text
    for k, v in total.items():
        suites.set(k, str(v))
    ET.indent(suites)
    data = ET.tostring(suites, encoding="unicode", xml_declaration=True)
    Path(path).write_text(data + "\n", encoding="utf-8")
