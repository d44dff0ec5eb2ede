"""ConnectTask: the background connect loop of ecuconnect_source and mqtt_source."""

from __future__ import annotations

import asyncio
import logging

import pytest

from les02_flow.nodes.background import ConnectTask


def test_started_once_stopped_once_and_finish_steps_always_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[str] = []
    done: list[str] = []

    async def forever() -> None:
        runs.append("run")
        try:
            await asyncio.sleep(3600)
        finally:
            runs.append("cancelled")

    def broken() -> None:
        raise RuntimeError("finish step failed")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bg = ConnectTask("t", timeout=1.0)
        bg.start(loop, forever)
        bg.start(loop, forever)  # already running: not a second task
        await asyncio.sleep(0)
        assert runs == ["run"] and bg.task is not None
        await bg.stop(logging.getLogger("bg"), broken, lambda: done.append("completed"))
        assert runs == ["run", "cancelled"] and bg.stopped and bg.task.done()
        await bg.stop(logging.getLogger("bg"), lambda: done.append("again"))  # idempotent
        bg.start(loop, forever)  # never after a stop
        await asyncio.sleep(0)
        assert runs == ["run", "cancelled"]

    asyncio.run(main())
    assert done == ["completed"]


def test_stop_is_bounded_for_a_task_that_ignores_cancel() -> None:
    release: asyncio.Event

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await release.wait()  # a buggy loop that does not end when cancelled

    async def main() -> float:
        nonlocal release
        release = asyncio.Event()
        loop = asyncio.get_running_loop()
        bg = ConnectTask("stubborn", timeout=0.2)
        bg.start(loop, stubborn)
        await asyncio.sleep(0)
        t0 = loop.time()
        await bg.stop(logging.getLogger("bg"))
        took = loop.time() - t0
        release.set()  # let it end so asyncio.run can close the loop
        return took

    assert asyncio.run(main()) < 2.0
