"""les02_flow.testing: the helpers plugin authors (and this project's tests) use."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from les02_flow.events import encode_event, make_event
from les02_flow.testing import Collect, poll_until, run_nodes, wait_until


def test_run_nodes_collects_what_a_flow_emits(tmp_path: Path) -> None:
    events = [make_event("status", 1.0 + i, {"channel": "master", "n": i}) for i in range(5)]
    path = tmp_path / "e.jsonl"
    path.write_text("".join(encode_event(e) + "\n" for e in events))
    got = run_nodes(
        {
            "src": {
                "type": "replay_source",
                "path": str(path),
                "speed": "max",
                "wires": {"events": ["out"]},
            },
            "out": {"type": "collect", "deep": True},
        }
    )
    assert [e["payload"]["n"] for e in got["out"]] == [0, 1, 2, 3, 4]
    assert Collect.received["out"] == got["out"]


def test_wait_until_is_bounded_and_names_what_it_waited_for() -> None:
    async def main() -> None:
        box: list[Any] = []
        asyncio.get_running_loop().call_later(0.01, box.append, 1)
        await wait_until(lambda: bool(box), "the box")
        with pytest.raises(AssertionError, match="waiting for nothing"):
            await wait_until(lambda: False, "nothing", timeout=0.05)

    asyncio.run(main())


def test_poll_until_returns_the_value_and_fails_on_timeout_or_an_exited_process() -> None:
    box: list[int] = []
    timer = threading.Timer(0.02, box.append, (7,))
    timer.start()
    assert poll_until(lambda: box[:1], "the box") == [7]
    with pytest.raises(AssertionError, match=r"after 0.05 s waiting for nothing\nlog text"):
        poll_until(lambda: False, "nothing", 0.05, detail=lambda: "log text")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(10)
    with pytest.raises(AssertionError, match=r"process exited \(3\) while waiting for a line"):
        poll_until(lambda: False, "a line", 30, process=proc)  # fails at once, not after 30 s
