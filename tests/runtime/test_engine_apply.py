"""Live re-deploy: Engine.apply keeps unchanged nodes, adds, removes, restarts, rewires."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

import pytest

from les02_flow.compiler import CompiledFlow, compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import load_flow_text
from les02_flow.node import NodeStartError
from les02_flow.registry import Registry
from les02_flow.testing import wait_until as until

from .conftest import AddConfig

BASE = """\
version: 1
nodes:
  tick: {type: ticker, wires: [plus, rec]}
  plus: {type: add, n: 100, wires: [out]}
  rec: {type: collect}
  out: {type: collect}
"""


def flow_of(text: str, registry: Registry) -> CompiledFlow:
    return compile_document(load_flow_text(textwrap.dedent(text), "t.yaml", env={}), registry)


def assert_continuous(values: list[int]) -> None:
    assert values == list(range(values[0], values[0] + len(values))), "gap or repeat"


def test_edits_keep_unchanged_nodes_and_lose_nothing(
    registry: Registry, received: dict[str, list[Any]], lifecycle: list[str]
) -> None:
    async def main() -> None:
        engine = Engine(flow_of(BASE, registry))
        await engine.start()
        try:
            tick, rec = engine.nodes["tick"], engine.nodes["rec"]
            await until(lambda: len(received.get("out", [])) > 20, "first values")

            # 1. add a node and a wire
            added = BASE.replace("wires: [plus, rec]", "wires: [plus, rec, extra]")
            added += "  extra: {type: collect}\n"
            result = await engine.apply(flow_of(added, registry))
            assert result.added == ["extra"] and result.rewired == ["tick"]
            assert result.summary().startswith("kept 4, added 1 (extra), removed 0")
            await until(lambda: len(received.get("extra", [])) > 20, "extra receives")

            # 2. change one node's config: it restarts, the others stay
            changed = added.replace("n: 100", "n: 200")
            t_before = received["rec"][-1]
            result = await engine.apply(flow_of(changed, registry))
            assert result.restarted == ["plus"] and "rec" in result.kept
            n_out = len(received["out"])
            await until(lambda: len(received["out"]) > n_out + 20, "restarted node flows")
            later = received["out"][n_out:]
            ticks = set(received["rec"])
            assert later and all(v - 200 in ticks and v - 200 >= t_before for v in later)

            # 3. remove a node
            removed = changed.replace("wires: [plus, rec, extra]", "wires: [plus, rec]")
            removed = removed.replace("  extra: {type: collect}\n", "")
            result = await engine.apply(flow_of(removed, registry))
            assert result.removed == ["extra"]
            assert "stop extra" in lifecycle
            n_extra, n_out = len(received["extra"]), len(received["out"])
            await until(lambda: len(received["out"]) > n_out + 10, "the kept nodes flow on")
            assert len(received["extra"]) == n_extra  # while the removed one got nothing

            # the kept nodes are the same instances, and the recorder-like sink saw every value
            assert engine.nodes["tick"] is tick and engine.nodes["rec"] is rec
            assert lifecycle.count("start tick") == 1 and lifecycle.count("start rec") == 1
            assert_continuous(received["rec"])
            assert received["rec"][0] == 0
        finally:
            await engine.stop()
        assert_continuous(received["rec"])

    asyncio.run(main())


def test_a_node_that_fails_to_start_restores_the_old_graph(
    registry: Registry, received: dict[str, list[Any]], lifecycle: list[str]
) -> None:
    async def main() -> None:
        engine = Engine(flow_of(BASE, registry))
        await engine.start()
        try:
            await until(lambda: len(received.get("rec", [])) > 10, "values")
            bad = BASE.replace("wires: [plus, rec]", "wires: [plus, rec, boom]")
            bad = bad.replace("n: 100", "n: 5")  # a change that must be rolled back too
            bad += "  boom: {type: failing}\n"
            with pytest.raises(NodeStartError, match="boom: cannot start"):
                await engine.apply(flow_of(bad, registry))
            assert "boom" not in engine.nodes
            config = engine.nodes["plus"].config
            assert isinstance(config, AddConfig) and config.n == 100
            n = len(received["out"])
            await until(lambda: len(received["out"]) > n + 10, "old graph still flows")
            ticks = set(received["rec"])
            assert all(v - 100 in ticks for v in received["out"][n:])
        finally:
            await engine.stop()
        assert_continuous(received["rec"])

    asyncio.run(main())


def test_identical_flow_is_a_no_op(registry: Registry, lifecycle: list[str]) -> None:
    async def main() -> None:
        engine = Engine(flow_of(BASE, registry))
        await engine.start()
        try:
            result = await engine.apply(flow_of(BASE, registry))
            assert result.summary() == ("kept 4, added 0, removed 0, restarted 0, rewired 0")
        finally:
            await engine.stop()
        assert lifecycle.count("start plus") == 1

    asyncio.run(main())
