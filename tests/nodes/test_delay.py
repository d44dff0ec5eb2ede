"""The ``delay`` node: held for at least the delay, order kept, completion after the last
release, flush at stop, bounded memory, and through the engine from a replay."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pydantic
import pytest

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import load_flow_text
from les02_flow.nodes.ops.delay import Delay, DelayConfig
from les02_flow.testing import wait_until

from .opsutil import Harness, ev, make


class _Stamped(list[Any]):
    """A list that also notes the loop time of each append."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stamps: list[float]) -> None:
        super().__init__()
        self.loop = loop
        self.stamps = stamps

    def append(self, item: Any) -> None:
        self.stamps.append(self.loop.time())
        super().append(item)


def test_held_for_the_delay_in_order_then_completes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        node = make(Delay, seconds=0.15)
        node.ctx.loop = loop
        h = Harness(node)
        released: list[float] = []
        h.out["out"] = _Stamped(loop, released)
        sent_at = loop.time()
        h.push([ev(n=1), ev(n=2)])
        await asyncio.sleep(0.05)
        h.push([ev(n=3)])
        third_at = loop.time()
        h.complete()
        assert h.out["out"] == []
        await wait_until(lambda: "out" in h.completed, "'out' in h.completed")
        assert [m["payload"]["n"] for m in h.out["out"]] == [1, 2, 3]
        assert released[0] - sent_at >= 0.15 - 0.002
        assert released[2] - third_at >= 0.15 - 0.002

    asyncio.run(main())


def test_stop_sends_what_is_held_at_once() -> None:
    async def main() -> None:
        node = make(Delay, seconds=60)
        node.ctx.loop = asyncio.get_running_loop()
        h = Harness(node).push([ev(n=1), ev(n=2)])
        await asyncio.sleep(0)
        assert h.out["out"] == []
        await node.stop()
        assert [m["payload"]["n"] for m in h.out["out"]] == [1, 2]
        await node.stop()

    asyncio.run(main())


def test_max_pending_releases_the_oldest_early() -> None:
    async def main() -> None:
        node = make(Delay, seconds=60, max_pending=2)
        node.ctx.loop = asyncio.get_running_loop()
        h = Harness(node).push([ev(n=i) for i in range(5)])
        assert [m["payload"]["n"] for m in h.out["out"]] == [0, 1, 2]
        assert node.counters.extra == {"early": 3}
        await node.stop()
        assert [m["payload"]["n"] for m in h.out["out"]] == [0, 1, 2, 3, 4]

    asyncio.run(main())


def test_through_the_engine_nothing_is_lost(tmp_path: Path) -> None:
    log = tmp_path / "in.log"
    log.write_text(
        "".join(f"({1.0 + i * 0.004:.6f}) can0 080#000000{i:02X}\n" for i in range(50)),
        encoding="utf-8",
    )
    out = tmp_path / "out.log"
    text = (
        "version: 1\nnodes:\n"
        f"  src: {{type: replay_source, path: '{log}', speed: max, wires: [later]}}\n"
        "  later: {type: delay, seconds: 0.2, wires: [rec]}\n"
        f"  rec: {{type: file_recorder, path: '{out}'}}\n"
    )
    flow = compile_document(load_flow_text(text, "d.yaml", env={}))

    async def main() -> Engine:
        engine = Engine(flow)
        await asyncio.wait_for(engine.run(), 20)
        return engine

    engine = asyncio.run(main())
    assert engine.counters()["rec"].received == 50
    lines = [ln for ln in out.read_text(encoding="utf-8").splitlines() if "080#" in ln]
    assert [ln.split("#")[1].split()[0] for ln in lines] == [f"000000{i:02X}" for i in range(50)]


@pytest.mark.parametrize("config", [{}, {"seconds": 0}, {"seconds": 1e6}, {"seconds": 1, "x": 1}])
def test_config_errors(config: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        DelayConfig.model_validate(config)
