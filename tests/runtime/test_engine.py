"""The engine: fan-in, fan-out, named ports, per-message errors, lifecycle, finite runs."""

from __future__ import annotations

import asyncio
import textwrap
from typing import Any

from les02_flow.compiler import CompiledFlow, compile_document
from les02_flow.engine import Engine, format_stats
from les02_flow.flowfile import load_flow_text
from les02_flow.registry import Registry


def compile_text(text: str, registry: Registry) -> CompiledFlow:
    return compile_document(load_flow_text(textwrap.dedent(text), "t.yaml", env={}), registry)


def run(flow: CompiledFlow) -> tuple[str, Engine]:
    async def main() -> tuple[str, Engine]:
        engine = Engine(flow)
        why = await asyncio.wait_for(engine.run(), 5)
        return why, engine

    return asyncio.run(main())


def test_chain_and_finite_run_ends(registry: Registry, received: dict[str, list[Any]]) -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          src: {type: numbers, values: [1, 2, 3], wires: [plus]}
          plus: {type: add, n: 10, wires: [sink]}
          sink: {type: collect}
        """,
        registry,
    )
    why, engine = run(flow)
    assert why == "all sources finished"
    assert received["sink"] == [11, 12, 13]
    c = engine.counters()
    assert (c["src"].emitted, c["plus"].received, c["plus"].emitted) == (3, 3, 3)
    assert c["sink"].received == 3
    assert format_stats(c) == "src out=3 | plus in=3 out=3 | sink in=3"


def test_fan_out_shares_one_upstream_subscription(
    registry: Registry, received: dict[str, list[Any]], subscriptions: dict[str, int]
) -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          src: {type: numbers, values: [1, 2], wires: [a, b, c]}
          a: {type: collect}
          b: {type: collect}
          c: {type: add, wires: [d]}
          d: {type: collect}
        """,
        registry,
    )
    _, engine = run(flow)
    assert subscriptions["src"] == 1
    assert received["a"] == received["b"] == [1, 2]
    assert received["d"] == [2, 3]
    assert engine.counters()["src"].emitted == 2


def test_fan_in_merges(registry: Registry, received: dict[str, list[Any]]) -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          one: {type: numbers, values: [1, 2], wires: [sink]}
          two: {type: numbers, values: [100], wires: [sink]}
          sink: {type: collect}
        """,
        registry,
    )
    why, engine = run(flow)
    assert why == "all sources finished"
    assert sorted(received["sink"]) == [1, 2, 100]
    assert engine.counters()["sink"].received == 3


def test_named_ports(registry: Registry, received: dict[str, list[Any]]) -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          src: {type: numbers, values: [1, 2, 3, 4], wires: [r]}
          r:
            type: route
            wires: {even: [evens], odd: [odds, all]}
          evens: {type: collect}
          odds: {type: collect}
          all: {type: collect}
        """,
        registry,
    )
    _, engine = run(flow)
    assert received["evens"] == [2, 4]
    assert received["odds"] == received["all"] == [1, 3]
    assert engine.counters()["r"].received == 4


def test_a_raising_node_skips_the_message_and_goes_on(
    registry: Registry, received: dict[str, list[Any]], caplog: Any
) -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          src: {type: numbers, values: [1, 2, 3, 4, 5], wires: [plus]}
          plus: {type: add, n: 0, fail_on: 2, wires: [sink]}
          sink: {type: collect, fail_on: 4}
        """,
        registry,
    )
    _, engine = run(flow)
    assert received["sink"] == [1, 3, 5]
    c = engine.counters()
    assert (c["plus"].errors, c["sink"].errors) == (1, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("add 'plus': ValueError on 2: cannot take 2" in w for w in warnings)
    assert any("collect 'sink': RuntimeError on 4: sink refuses" in w for w in warnings)


def test_lifecycle_order(registry: Registry, lifecycle: list[str]) -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          src: {type: numbers, values: [1], wires: [plus]}
          plus: {type: add, wires: [sink]}
          sink: {type: collect}
        """,
        registry,
    )
    run(flow)
    assert lifecycle == [
        "start sink",
        "start plus",
        "start src",
        "stop src",
        "stop plus",
        "stop sink",
    ]


def test_stop_request_ends_an_endless_flow(registry: Registry, lifecycle: list[str]) -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          src: {type: numbers, values: [7], complete: false, wires: [sink]}
          sink: {type: collect}
        """,
        registry,
    )

    async def main() -> str:
        engine = Engine(flow)
        await engine.start()
        asyncio.get_running_loop().call_later(0.05, engine.request_stop)
        why = await asyncio.wait_for(engine.wait(), 5)
        assert not any(n.ctx.stopping for n in engine.nodes.values())
        await engine.stop()
        await engine.stop()  # idempotent
        # every node was told before any stopped (ride_detect marks cut-off rides "stopped")
        assert all(n.ctx.stopping for n in engine.nodes.values())
        return why

    assert asyncio.run(main()) == "stop requested"
    assert lifecycle.count("stop sink") == 1


def test_disabled_node_is_not_built(registry: Registry, received: dict[str, list[Any]]) -> None:
    flow = compile_text(
        """\
        version: 1
        nodes:
          src: {type: numbers, values: [1], wires: [plus, sink]}
          plus: {type: add, disabled: true, wires: [sink2]}
          sink: {type: collect}
          sink2: {type: collect}
        """,
        registry,
    )
    _, engine = run(flow)
    assert "plus" not in engine.nodes
    assert received["sink"] == [1]
    assert "sink2" not in received
