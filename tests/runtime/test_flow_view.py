"""The read-only flow view the engine gives every node (``ctx.flow``): graph, counters,
statuses, and re-deploys."""

from __future__ import annotations

import asyncio
import json
import textwrap
from typing import Any

from les02_flow.compiler import CompiledFlow, compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import load_flow_text
from les02_flow.registry import Registry
from les02_flow.testing import wait_until

BASE = """\
version: 1
name: view-test
nodes:
  tick: {type: ticker, wires: [plus]}
  plus:
    type: add
    n: 7
    wires: [out]
  out: {type: collect}
"""


def flow_of(text: str, registry: Registry) -> CompiledFlow:
    return compile_document(load_flow_text(textwrap.dedent(text), "v.yaml", env={}), registry)


def test_every_node_sees_the_same_graph_counters_and_redeploys(
    registry: Registry, received: dict[str, list[Any]]
) -> None:
    async def main() -> None:
        engine = Engine(flow_of(BASE, registry))
        view = engine.nodes["out"].ctx.flow
        assert view is not None and all(n.ctx.flow is view for n in engine.nodes.values())
        graph = view.graph()
        json.dumps(graph)  # JSON-ready
        assert graph["name"] == "view-test" and graph["revision"] == 0
        assert graph["disabled"] == []
        by_id = {n["id"]: n for n in graph["nodes"]}
        assert list(by_id) == ["tick", "plus", "out"]
        assert by_id["tick"]["role"] == "source" and by_id["tick"]["input"] is None
        assert by_id["plus"] == {
            "id": "plus",
            "type": "add",
            "label": None,
            "summary": "Adds n (test transform).",
            "role": "transform",
            "input": "event",
            "outputs": {"out": "event"},
            "wires": {"out": ["out"]},
            "location": "v.yaml:5:3",
            "config": {"n": 7, "fail_on": None},
        }
        assert by_id["out"]["role"] == "sink" and by_id["out"]["outputs"] == {}
        type_name, config = view.node_config("plus") or ("", None)
        assert type_name == "add" and getattr(config, "n", None) == 7
        assert view.node_config("nope") is None

        changes: list[int] = []
        unsubscribe = view.on_change(lambda: changes.append(view.revision))
        await engine.start()
        try:
            await wait_until(lambda: view.counters()["out"]["in"] > 5, "out receives")
            counters = view.counters()
            assert counters["tick"]["out"] >= counters["plus"]["in"] >= counters["out"]["in"]
            # a copy: changing it changes nothing in the engine
            counters["out"]["in"] = -1
            assert view.counters()["out"]["in"] > 0
            statuses = view.statuses()
            assert statuses["tick"] == {
                "state": "ok",
                "text": "",
                "role": "source",
                "started": True,
                "finished": False,
            }

            engine.nodes["tick"].ctx.set_status("error", "bus gone")
            assert view.statuses()["tick"]["state"] == "error"
            assert view.statuses()["tick"]["text"] == "bus gone"

            # a re-deploy that adds a node: the view shows it, listeners are told once
            added = BASE.replace("wires: [plus]", "wires: [plus, extra]")
            added += "  extra: {type: collect}\n"
            await engine.apply(flow_of(added, registry))
            assert changes == [1]
            graph = view.graph()
            assert graph["revision"] == 1
            assert sorted(n["id"] for n in graph["nodes"]) == ["extra", "out", "plus", "tick"]
            assert graph["nodes"][0]["wires"] == {"out": ["plus", "extra"]}
            await wait_until(lambda: view.counters()["extra"]["in"] > 0, "extra receives")
            # the added node's context holds the same view
            assert engine.nodes["extra"].ctx.flow is view

            # removing it: gone from graph, counters and statuses
            unsubscribe()
            await engine.apply(flow_of(BASE, registry))
            assert changes == [1] and view.revision == 2
            assert "extra" not in view.counters() and "extra" not in view.statuses()
            assert [n["id"] for n in view.graph()["nodes"]] == ["tick", "plus", "out"]
        finally:
            await engine.stop()

    asyncio.run(main())


def test_a_listener_that_raises_is_logged_and_kept(registry: Registry) -> None:
    async def main() -> None:
        engine = Engine(flow_of(BASE, registry))
        view = engine.view
        calls: list[int] = []

        def bad() -> None:
            calls.append(1)
            raise RuntimeError("listener bug")

        view.on_change(bad)
        await engine.start()
        try:
            await engine.apply(flow_of(BASE.replace("n: 7", "n: 8"), registry))
            await engine.apply(flow_of(BASE, registry))
        finally:
            await engine.stop()
        assert calls == [1, 1]

    asyncio.run(main())
