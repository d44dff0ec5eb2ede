"""Running a planned test: the real engine, fed in frame time, with no wall clock involved.

The engine starts the test flow as usual (sinks, transforms, then the inputs). Then the whole
input is emitted synchronously, item by item, in recorded order, and the inputs complete; no
other callback runs in between, so timers (e.g. ``ride_detect``'s live idle timer) never fire
and the result depends on the input only: the same input gives the same output, every time,
however loaded the machine is. Nodes then stop as usual (kept sinks flush).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from les02_flow.engine import Engine
from les02_flow.node import NodeStartError
from les02_flow.nodes.recording.formats import Problem

from .check import Failure, check_expectation
from .inputs import iter_input
from .nodes import Capture, TestInputNode
from .plan import Plan, plan_test

__all__ = ["TestResult", "run_plan", "run_plans", "share_key"]


@dataclass
class TestResult:
    """What one test did."""

    __test__ = False  # not a pytest test class

    plan: Plan
    failures: list[Failure] = field(default_factory=list)
    #: the test could not run (a node failed to start, the input cannot be read)
    error: str | None = None
    seconds: float = 0.0
    items: int = 0
    problems: list[Problem] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    updated: list[tuple[str, int]] = field(default_factory=list)
    #: what each probe captured (by expect key), for callers that want to look
    captured: dict[str, list[Any]] = field(default_factory=dict)
    #: per node: counters of the run (in, out, errors, ...)
    counters: dict[str, dict[str, int]] = field(default_factory=dict)
    #: the name of the test whose run this one shares (same input, target, overrides)
    shared: str | None = None

    @property
    def name(self) -> str:
        return self.plan.test.name

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")
        except Exception:
            self.handleError(record)


@contextmanager
def _captured_logs() -> Iterator[_Collect]:
    """Warnings and errors of the run go to the test's report, not to the terminal."""
    root = logging.getLogger()
    handler = _Collect()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    try:
        yield handler
    finally:
        root.handlers = saved_handlers
        root.setLevel(saved_level)


async def _run(plan: Plan, result: TestResult) -> None:
    engine = Engine(plan.flow, stats_interval=0.0, stop_timeout=5.0)
    try:
        await engine.start()
    except NodeStartError as exc:
        result.error = f"a node could not start: {exc}"
        return
    try:
        nodes = engine.nodes
        emitters = []
        for nid, port in plan.feeds:
            node = nodes[nid]
            assert isinstance(node, TestInputNode)
            emitters.append(node.emitter(port))
        n = 0
        spec = plan.test.input
        base = plan.file.base_dir
        if len(emitters) == 1:
            emit = emitters[0]
            for item in iter_input(spec, base, result.problems):
                emit(item)
                n += 1
        else:
            # several sources get the input: each its own copy (as if each read the file)
            streams = [
                iter_input(spec, base, result.problems if k == 0 else [])
                for k in range(len(emitters))
            ]
            for items in zip(*streams, strict=True):
                for emit, item in zip(emitters, items, strict=True):
                    emit(item)
                n += 1
        result.items = n
        for nid in plan.inputs:
            node = nodes[nid]
            assert isinstance(node, TestInputNode)
            node.complete()
        await asyncio.wait_for(engine.wait(), timeout=10.0)
    except (OSError, ValueError) as exc:
        result.error = f"cannot read the input: {exc}"
    finally:
        await engine.stop()
    for key, probe in plan.probes.items():
        cap = engine.nodes.get(probe.capture_id)
        assert isinstance(cap, Capture)
        result.captured[key] = cap.messages
    result.counters = {
        nid: c.as_dict() for nid, c in engine.counters().items() if nid in plan.original.nodes
    }


def _check(plan: Plan, result: TestResult, update: bool) -> None:
    if result.error is not None:
        return
    base = plan.file.base_dir
    for key, index, exp in plan.test.expectations():
        outcome = check_expectation(
            exp,
            plan.probes[key],
            result.captured[key],
            functools.partial(plan.expect_location, key, index),
            base,
            update=update,
        )
        result.failures.extend(outcome.failures)
        result.updated.extend((str(p), n) for p, n in outcome.updated)


def _execute(plan: Plan) -> TestResult:
    result = TestResult(plan=plan)
    t0 = time.perf_counter()
    with _captured_logs() as logs:
        try:
            asyncio.run(_run(plan, result))
        except Exception as exc:  # a node raising while being built, or a bug: report it
            result.error = f"{type(exc).__name__}: {exc}"
        result.logs = logs.lines
    result.seconds = time.perf_counter() - t0
    return result


def run_plan(plan: Plan, *, update: bool = False) -> TestResult:
    """Run one test to its end and check its expectations."""
    result = _execute(plan)
    t0 = time.perf_counter()
    _check(plan, result, update)
    result.seconds += time.perf_counter() - t0
    return result


def share_key(plan: Plan) -> str:
    """Tests with the same key get the same output: same file, flow, input, target,
    overrides and kept sinks (a run is deterministic), so one run serves them all."""
    t = plan.test
    return json.dumps(
        [
            plan.file.path,
            t.input.model_dump(mode="json"),
            t.target.model_dump(mode="json") if t.target is not None else None,
            sorted((k, repr(v)) for k, v in t.set.items()),
            sorted(t.keep),
        ],
        default=repr,
    )


def run_plans(plans: Sequence[Plan], *, update: bool = False) -> Iterator[TestResult]:
    """Run tests in order; tests that would get the same output share one run (see
    :func:`share_key`): the flow runs once with every port they look at captured."""
    groups: dict[str, list[Plan]] = {}
    for plan in plans:
        groups.setdefault(share_key(plan), []).append(plan)
    done: dict[str, TestResult] = {}
    for plan in plans:
        key = share_key(plan)
        group = groups[key]
        if len(group) == 1:
            yield run_plan(plan, update=update)
            continue
        if key not in done:
            keys = [k for p in group for k in p.test.expect]
            merged, errors = plan_test(plan.file, plan.index, also=keys)
            if merged is None:  # cannot happen: each plan of the group was valid
                raise RuntimeError("; ".join(map(str, errors)))
            done[key] = _execute(merged)
            first = True
        else:
            first = False
        run = done[key]
        result = TestResult(
            plan=plan,
            error=run.error,
            seconds=run.seconds if first else 0.0,
            items=run.items,
            problems=run.problems,
            logs=run.logs,
            captured={k: run.captured[k] for k in plan.test.expect if k in run.captured},
            counters=run.counters,
            shared=None if first else group[0].test.name,
        )
        t0 = time.perf_counter()
        _check(plan, result, update)
        result.seconds += time.perf_counter() - t0
        yield result
