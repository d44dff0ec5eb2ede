"""The engine's light inlets (HotPort) change nothing in what a flow computes.

A recorded LES02 session is replayed at speed max through flows/default.yaml's graph twice: with
the engine's HotPort inlets, and with inlets that are reactivex Subjects (what the engine used
before). Every event ride_detect emits (written by a .jsonl file_recorder) and every row of the
ride database must be byte-for-byte the same.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import can
import pytest
from reactivex.subject import Subject

import les02_flow.engine as engine_module
from les02_flow.commands.replay import replace_sources
from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import load_flow
from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim
from les02_flow.registry import default_registry

FLOW = Path(__file__).resolve().parents[2] / "flows" / "default.yaml"
FRAMES = 12_000  # ~24 s of elevator: several rides


class SubjectPort:
    """The engine's old inlet: an Rx Subject behind the HotPort interface."""

    def __init__(self) -> None:
        self.subject: Subject[Any] = Subject()
        self.observable = self.subject
        self.on_next = self.subject.on_next
        self.on_error = self.subject.on_error
        self.on_completed = self.subject.on_completed


def _recording(path: Path) -> None:
    sim = ElevatorSim(ElevatorParams(seed=3, dwell_min=1.0, dwell_max=3.0))
    with can.Logger(str(path)) as writer:
        for i, f in enumerate(sim.frames()):
            if i >= FRAMES:
                break
            writer(can.Message(timestamp=1737319234.0 + f.t, arbitration_id=f.can_id,
                               is_extended_id=False, data=f.data, channel="les02"))  # fmt: skip


def _run(recording: Path, out: Path) -> tuple[bytes, list[tuple[Any, ...]], str]:
    out.mkdir()
    doc = load_flow(FLOW)
    replace_sources(doc, {"path": str(recording), "speed": "max"})
    nodes = doc.data["nodes"]
    nodes["ws"].update(host="127.0.0.1", port=0)
    nodes["tcp"].update(port=0)
    nodes["store"].update(path=str(out / "rides.sqlite"))
    nodes["recorder"]["disabled"] = True
    nodes["events"] = {"type": "file_recorder", "path": str(out / "events.jsonl")}
    nodes["rides"]["wires"] = [*nodes["rides"]["wires"], "events"]
    engine = Engine(compile_document(doc, default_registry()), stop_timeout=30)
    inlet = engine.live["rides"].inlet
    assert inlet is not None
    kind = type(inlet.subject).__name__
    assert asyncio.run(engine.run()) == "all sources finished"
    with sqlite3.connect(out / "rides.sqlite") as db:
        rows = db.execute("SELECT * FROM rides ORDER BY 1").fetchall()
    return (out / "events.jsonl").read_bytes(), rows, kind


def test_replay_output_is_identical_with_subject_inlets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="les02_flow")  # restored after the test
    recording = tmp_path / "session.log"
    _recording(recording)
    events_hot, rides_hot, kind_hot = _run(recording, tmp_path / "hot")
    monkeypatch.setattr(engine_module, "HotPort", SubjectPort)
    events_rx, rides_rx, kind_rx = _run(recording, tmp_path / "rx")
    assert (kind_hot, kind_rx) == ("HotPort", "SubjectPort")
    assert events_hot.count(b'"type": "position_sample"') > FRAMES * 0.9
    assert events_hot.count(b'"type": "ride_end"') >= 2, "the session must contain rides"
    assert rides_hot and len(rides_hot) == len(rides_rx)
    assert events_hot == events_rx
    assert rides_hot == rides_rx
