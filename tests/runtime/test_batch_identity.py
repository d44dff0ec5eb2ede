"""The engine's batch path (replay at speed max) changes nothing in what a flow computes.

A recorded LES02 session -- rides, plus frames les02_parse rejects (unknown id, extended id,
wrong DLC, an error frame) -- is replayed through flows/default.yaml's graph three times:

* at speed max with batches (replay_source hands lists of frames to the engine; les02_parse
  and ride_detect take them in one call, the sinks per message);
* at speed max one by one (replay_source given no batch emitters: every frame through the
  nodes' Rx streams, as before the batch path);
* paced at a finite speed (the live-like path: one frame at a time when it is due).

Every event ride_detect emits (a .jsonl file_recorder), every row of the ride database (rides
and their samples) and every node's counters must be the same in all three.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import can
import pytest
from pydantic import Field
from reactivex import Observable

from les02_flow.commands.replay import replace_sources
from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import load_flow, load_flow_text
from les02_flow.node import Kind, Node, NodeConfig
from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim
from les02_flow.nodes.recording.replay_source import ReplaySource
from les02_flow.registry import Registry, default_registry
from les02_flow.streams import HotPort

FLOW = Path(__file__).resolve().parents[2] / "flows" / "default.yaml"
FRAMES = 12_000  # ~24 s of elevator: several rides
T0 = 1737319234.0


def _odd_frames(k: int, t: float) -> Iterator[can.Message]:
    """Frames les02_parse rejects, now and then."""
    if k % 997 == 0:
        yield can.Message(timestamp=t, arbitration_id=0x123, is_extended_id=False, data=b"\1")
    if k % 1499 == 0:
        yield can.Message(timestamp=t, arbitration_id=0x80, is_extended_id=True, data=bytes(4))
    if k % 2003 == 0:
        yield can.Message(timestamp=t, arbitration_id=0x80, is_extended_id=False, data=bytes(3))
    if k % 3001 == 0:
        yield can.Message(timestamp=t, is_error_frame=True, data=bytes(8), dlc=8)


def _recording(path: Path) -> None:
    sim = ElevatorSim(ElevatorParams(seed=3, dwell_min=1.0, dwell_max=3.0))
    with can.Logger(str(path)) as writer:
        for i, f in enumerate(sim.frames()):
            if i >= FRAMES:
                break
            t = T0 + f.t
            writer(can.Message(timestamp=t, arbitration_id=f.can_id, is_extended_id=False,
                               data=f.data, channel="les02"))  # fmt: skip
            for odd in _odd_frames(i, t):
                writer(odd)


def _run(recording: Path, out: Path, speed: float | str) -> tuple[bytes, Any, dict[str, Any]]:
    out.mkdir()
    doc = load_flow(FLOW)
    replace_sources(doc, {"path": str(recording), "speed": speed, "max_gap": None})
    nodes = doc.data["nodes"]
    nodes["ws"].update(host="127.0.0.1", port=0)
    nodes["tcp"].update(port=0)
    nodes["console"].update(port=0)
    nodes["debug"].update(stream="log", rate_limit=0)  # a rate limit counts by wall time
    nodes["store"].update(path=str(out / "rides.sqlite"))
    nodes["recorder"]["disabled"] = True
    nodes["events"] = {"type": "file_recorder", "path": str(out / "events.jsonl")}
    nodes["rides"]["wires"] = [*nodes["rides"]["wires"], "events"]
    engine = Engine(compile_document(doc, default_registry()), stop_timeout=30)
    assert asyncio.run(engine.run()) == "all sources finished"
    with sqlite3.connect(out / "rides.sqlite") as db:
        rows = (
            db.execute("SELECT * FROM rides ORDER BY 1").fetchall(),
            db.execute("SELECT * FROM ride_samples ORDER BY 1, 2, 3").fetchall(),
        )
    counters = {
        nid: c.as_dict()
        for nid, c in engine.counters().items()
        if nid in ("bus", "parse", "rides", "store", "debug")
    }
    return (out / "events.jsonl").read_bytes(), rows, counters


def test_batches_one_by_one_and_paced_replay_give_the_same_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="les02_flow")  # restored after the test
    recording = tmp_path / "session.log"
    _recording(recording)
    batches: list[int] = []
    bind = ReplaySource.bind_batches

    def counting(self: ReplaySource, emitters: Mapping[str, Callable[[list[Any]], None]]) -> None:
        def out(items: list[Any]) -> None:
            batches.append(len(items))
            emitters["out"](items)

        bind(self, {**emitters, "out": out})

    monkeypatch.setattr(ReplaySource, "bind_batches", counting)
    batched = _run(recording, tmp_path / "batched", "max")
    assert len(batches) >= 10 and max(batches) > 1, "the batch path was not taken"
    monkeypatch.setattr(ReplaySource, "bind_batches", lambda self, emitters: None)
    one_by_one = _run(recording, tmp_path / "one", "max")
    monkeypatch.undo()
    paced = _run(recording, tmp_path / "paced", 20.0)  # 24 s of recording in ~1.2 s

    events, (rides, samples), counters = batched
    assert events.count(b'"type": "position_sample"') > FRAMES * 0.9
    assert events.count(b'"type": "ride_end"') >= 2, "the session must contain rides"
    assert len(rides) >= 2 and len(samples) > 1000
    assert counters["parse"]["dropped"] > 10, "the session must contain rejected frames"
    assert counters["debug"]["in"] == counters["parse"]["dropped"]
    for other in (one_by_one, paced):
        assert other[0] == events
        assert other[1] == (rides, samples)
        assert other[2] == counters


# -- where batches may travel ----------------------------------------------------------------


class BurstConfig(NodeConfig):
    n: int = Field(default=10, description="messages")


class Burst(Node[BurstConfig]):
    """Emits 0..n-1 as one batch (or one by one without batch emitters)."""

    type_name = "burst"
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        self.port: HotPort[Any] = HotPort()
        self.emit: Callable[[list[Any]], None] | None = None
        return {"out": self.port.observable}

    def bind_batches(self, emitters: Mapping[str, Callable[[list[Any]], None]]) -> None:
        self.emit = emitters["out"]

    async def start(self) -> None:
        asyncio.get_running_loop().call_soon(self._go)

    def _go(self) -> None:
        assert self.emit is not None
        self.emit([{"type": "n", "ts": float(i), "payload": i} for i in range(self.config.n)])
        self.port.on_completed()


class Tag(Node[NodeConfig]):
    """Tags each event with its node id (one by one, through Rx)."""

    type_name = "tag"
    input_kind = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        assert source is not None

        def tag(e: dict[str, Any]) -> dict[str, Any]:
            return {**e, "via": self.node_id}

        return {"out": source.pipe(self.each(tag))}


class BatchTag(Tag):
    """Tag with a batch method."""

    type_name = "batch_tag"

    def process_batch(self, messages: list[Any]) -> Mapping[str, list[Any]]:
        return {"out": [{**e, "via": self.node_id} for e in messages]}


SEEN: dict[str, list[Any]] = {}


class Keep(Node[NodeConfig]):
    """Keeps what it gets; counts calls of its batch method."""

    type_name = "keep"
    input_kind = Kind.EVENT

    def consume(self, message: Any) -> None:
        SEEN.setdefault(self.node_id, []).append((message["via"], message["payload"]))

    def consume_batch(self, messages: list[Any]) -> None:
        SEEN.setdefault(f"{self.node_id} batches", []).append(len(messages))
        for m in messages:
            self.consume(m)


def _engine(wires: dict[str, Any]) -> Engine:
    registry = Registry([Burst, Tag, BatchTag, Keep], "tests")
    nodes: dict[str, Any] = {"src": {"type": "burst", "wires": wires["src"]}}
    for nid, (type_, targets) in wires.items():
        if nid != "src":
            nodes[nid] = {"type": type_, **({"wires": targets} if targets else {})}
    doc = load_flow_text(json.dumps({"version": 1, "name": "t", "nodes": nodes}), "t.yaml", env={})
    return Engine(compile_document(doc, registry))


def test_a_tree_takes_batches_and_fan_in_gets_one_by_one_order() -> None:
    SEEN.clear()
    tree = _engine({"src": ["a", "b"], "a": ("batch_tag", ["k"]), "b": ("tag", ["j"]),
                    "k": ("keep", None), "j": ("keep", None)})  # fmt: skip
    assert tree.live["src"].outlets["out"].batch_safe
    asyncio.run(tree.run())
    assert SEEN["k"] == [("a", i) for i in range(10)] and SEEN["k batches"] == [10]
    # b has no batch method: one by one into its stream, and so on down (j gets no batch)
    assert SEEN["j"] == [("b", i) for i in range(10)] and "j batches" not in SEEN

    SEEN.clear()
    fan_in = _engine({"src": ["a", "b"], "a": ("batch_tag", ["k"]), "b": ("batch_tag", ["k"]),
                      "k": ("keep", None)})  # fmt: skip
    assert not fan_in.live["src"].outlets["out"].batch_safe
    asyncio.run(fan_in.run())
    # what one-by-one delivery gives: each message through a, then through b
    assert SEEN["k"] == [(via, i) for i in range(10) for via in ("a", "b")]
    assert "k batches" not in SEEN
