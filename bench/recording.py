"""Recording and replay benchmarks (issue 3), compared within one run.

    .venv/bin/python -m bench.recording

* recording throughput per format: ``file_recorder`` in an engine against python-can's own
  ``Logger`` loop (``on_message_received`` per frame, then ``stop``) over the same frames;
* event-loop stall while recording: the lateness of a 1 ms heartbeat task on the loop while a
  source pushes 50,000 frames/s into a ``file_recorder`` (against a null sink);
* replay at ``speed: max`` through ``replay_source -> les02_parse -> null`` against the bare
  python-can ``LogReader`` loop that decodes each frame with the same ``Les02Decoder``;
* pacing at ``speed: 1``: arrival time of each frame against its recorded offset;
* the one-hour LES02 session (1.8 M frames) through flows/default.yaml's graph (its
  ``can_source`` replaced as ``les02-flow replay --flow`` does); generated with ElevatorSim.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import can
from pydantic import Field
from reactivex import Observable
from reactivex.subject import Subject

from les02_flow.commands.replay import replace_sources
from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowDocument, load_flow
from les02_flow.node import Kind, Node, NodeConfig
from les02_flow.nodes.les02.codec import Les02Decoder
from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim
from les02_flow.nodes.recording.formats import FORMATS, open_writer
from les02_flow.registry import Registry, default_registry

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
#: frames per recording-throughput run
N_RECORD = 100_000
#: frames per replay-throughput run
N_REPLAY = 200_000
#: one hour of LES02 traffic: 2 x 250 Hz position frames (+ status frames)
HOUR = 1_800_000
#: frames of the session actually replayed (the rest is extrapolated, and said so)
SESSION = int(os.environ.get("BENCH_SESSION_FRAMES", str(HOUR)))

FRAMES: list[can.Message] = []


class FeedConfig(NodeConfig):
    chunk: int = Field(default=0, description="frames per loop iteration (0 = all at once)")
    interval: float = Field(default=0.01, description="seconds between chunks")


class Feed(Node[FeedConfig]):
    """Emits FRAMES, all at once or in paced chunks."""

    type_name = "feed"
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.FRAME}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        self.subject: Subject[Any] = Subject()
        return {"out": self.subject}

    async def start(self) -> None:
        if not self.config.chunk:
            on_next = self.subject.on_next
            for f in FRAMES:
                on_next(f)
            self.subject.on_completed()
            return
        asyncio.get_running_loop().create_task(self._paced())

    async def _paced(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        chunk = self.config.chunk
        for k, i in enumerate(range(0, len(FRAMES), chunk)):
            delay = t0 + k * self.config.interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for f in FRAMES[i : i + chunk]:
                self.subject.on_next(f)
        self.subject.on_completed()


class NullConfig(NodeConfig):
    pass


class Null(Node[NullConfig]):
    """Discards everything."""

    type_name = "null"
    input_kind = Kind.ANY

    def consume(self, message: Any) -> None:
        pass


def registry() -> Registry:
    return default_registry().extended(Feed, Null, origin="bench")


REGISTRY = registry()


def iter_les02_frames(n: int, t0: float = 1737319234.0) -> Iterator[can.Message]:
    """``n`` frames of a simulated LES02 session (ElevatorSim, seed 1)."""
    sim = ElevatorSim(ElevatorParams(seed=1))
    for i, f in enumerate(sim.frames()):
        if i >= n:
            return
        yield can.Message(timestamp=t0 + f.t, arbitration_id=f.can_id, is_extended_id=False,
                          data=f.data, channel="les02")  # fmt: skip


def les02_frames(n: int) -> list[can.Message]:
    return list(iter_les02_frames(n))


def run_engine(nodes: dict[str, Any], heartbeat: bool = False) -> tuple[float, list[float]]:
    """Run a flow to its end; returns (seconds, heartbeat lateness samples in seconds)."""
    flow = compile_document(FlowDocument(path="bench", data={"version": 1, "nodes": nodes}),
                            REGISTRY)  # fmt: skip
    late: list[float] = []

    async def beat(stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            t = loop.time()
            await asyncio.sleep(0.001)
            late.append(loop.time() - t - 0.001)

    async def main() -> float:
        engine = Engine(flow, stop_timeout=120)
        stop = asyncio.Event()
        task = asyncio.create_task(beat(stop)) if heartbeat else None
        t0 = time.perf_counter()
        await engine.run()
        elapsed = time.perf_counter() - t0
        stop.set()
        if task is not None:
            await task
        return elapsed

    return asyncio.run(main()), late


def bench_record(tmp: Path) -> list[tuple[str, str]]:
    FRAMES[:] = les02_frames(N_RECORD)
    rows = []
    for suffix in (".log", ".log.gz", ".asc", ".blf", ".csv", ".trc", ".db", ".asc.gz"):
        path = tmp / f"rec{suffix}"
        flow_s, _ = run_engine(
            {"feed": {"type": "feed", "wires": ["rec"]},
             "rec": {"type": "file_recorder", "path": str(path)}}
        )  # fmt: skip
        bare = tmp / f"bare{suffix}"
        t0 = time.perf_counter()
        writer = can.Logger(str(bare))
        write = writer.on_message_received
        for f in FRAMES:
            write(f)
        writer.stop()
        bare_s = time.perf_counter() - t0
        kept = sum(1 for _ in can.LogReader(str(bare)))
        note = "" if kept == N_RECORD else f"; python-can's loop kept only {kept:,} frames"
        assert sum(1 for _ in can.LogReader(str(path))) == N_RECORD
        rows.append(
            (
                f"record {suffix}: file_recorder vs python-can Logger loop",
                f"{N_RECORD / flow_s:,.0f} vs {N_RECORD / bare_s:,.0f} frames/s "
                f"(ratio {flow_s / bare_s:.2f}x{note})",
            )
        )
    return rows


def bench_stall(tmp: Path) -> list[tuple[str, str]]:
    FRAMES[:] = les02_frames(100_000)  # 2 s at 50,000 frames/s: 500 frames every 10 ms
    rows = []
    for name, sink in (
        ("null sink", {"type": "null"}),
        ("file_recorder .log", {"type": "file_recorder", "path": str(tmp / "stall.log")}),
        ("file_recorder .blf", {"type": "file_recorder", "path": str(tmp / "stall.blf")}),
    ):
        _, late = run_engine(
            {"feed": {"type": "feed", "chunk": 500, "interval": 0.01, "wires": ["sink"]},
             "sink": sink},
            heartbeat=True,
        )  # fmt: skip
        late.sort()
        p99 = late[int(len(late) * 0.99)] * 1e3
        rows.append(
            (
                f"loop stall at 50k frames/s, {name}",
                f"1 ms heartbeat lateness median {statistics.median(late) * 1e3:.2f} ms, "
                f"p99 {p99:.2f} ms, max {late[-1] * 1e3:.2f} ms",
            )
        )
    return rows


def write_recording(path: Path, frames: Iterable[can.Message]) -> None:
    writer = open_writer(str(path), FORMATS["".join(path.suffixes)])
    chunk: list[can.Message] = []
    for f in frames:
        chunk.append(f)
        if len(chunk) >= 10_000:
            writer.write(chunk)
            chunk = []
    writer.write(chunk)
    writer.close()


def bench_replay(tmp: Path) -> list[tuple[str, str]]:
    frames = les02_frames(N_REPLAY)
    rows = []
    for suffix in (".log", ".blf", ".asc", ".csv"):
        path = tmp / f"replay{suffix}"
        write_recording(path, frames)
        flow_s, _ = run_engine(
            {"rp": {"type": "replay_source", "path": str(path), "speed": "max",
                    "wires": ["parse"]},
             "parse": {"type": "les02_parse", "wires": {"out": ["null"], "invalid": ["null"]}},
             "null": {"type": "null"}}
        )  # fmt: skip
        kwargs = {"relative_timestamp": False} if suffix == ".asc" else {}
        decoder = Les02Decoder()
        t0 = time.perf_counter()
        n = 0
        decode = decoder.decode
        for msg in can.LogReader(str(path), **kwargs):
            decode(msg)
            n += 1
        bare_s = time.perf_counter() - t0
        assert n == N_REPLAY
        rows.append(
            (
                f"replay {suffix} speed max -> les02_parse -> null vs LogReader+decode loop",
                f"{N_REPLAY / flow_s:,.0f} vs {N_REPLAY / bare_s:,.0f} frames/s "
                f"(ratio {flow_s / bare_s:.2f}x)",
            )
        )
    return rows


def bench_pacing(tmp: Path) -> list[tuple[str, str]]:
    frames = les02_frames(1000)  # 2 s of LES02 traffic at 500 frames/s
    path = tmp / "pace.log"
    write_recording(path, frames)
    arrivals: list[float] = []

    class Stamp(Null):
        type_name = "stamp"

        def consume(self, message: Any) -> None:
            arrivals.append(time.monotonic())

    reg = registry()
    reg.register(Stamp, "bench")
    flow = compile_document(
        FlowDocument(
            path="bench",
            data={"version": 1, "nodes": {
                "rp": {"type": "replay_source", "path": str(path), "speed": 1, "wires": ["s"]},
                "s": {"type": "stamp"}}},
        ),
        reg,
    )  # fmt: skip
    asyncio.run(Engine(flow).run())
    rec = [f.timestamp - frames[0].timestamp for f in frames]
    got = [a - arrivals[0] for a in arrivals]
    errors = sorted(abs(g - r) for g, r in zip(got, rec, strict=True))
    gaps_rec = [b - a for a, b in itertools.pairwise(rec)]
    gaps_got = [b - a for a, b in itertools.pairwise(got)]
    gap_err = sorted(abs(a - b) for a, b in zip(gaps_got, gaps_rec, strict=True))
    return [
        (
            "pacing at speed 1 (1000 frames over 2 s)",
            f"offset error median {statistics.median(errors) * 1e3:.3f} ms, "
            f"p99 {errors[int(len(errors) * 0.99)] * 1e3:.3f} ms; inter-frame gap error median "
            f"{statistics.median(gap_err) * 1e3:.3f} ms; end drift "
            f"{(got[-1] - rec[-1]) * 1e3:+.3f} ms",
        )
    ]


def bench_session(tmp: Path) -> list[tuple[str, str]]:
    n = min(SESSION, HOUR)
    t0 = time.perf_counter()
    path = tmp / "session.log"
    write_recording(path, iter_les02_frames(n))
    gen_s = time.perf_counter() - t0
    doc = load_flow(ROOT / "flows" / "default.yaml")
    replace_sources(doc, {"path": str(path), "speed": "max"})
    doc.data["nodes"]["ws"].update(host="127.0.0.1", port=0)
    flow = compile_document(doc, REGISTRY)
    engine = Engine(flow, stop_timeout=60)
    t0 = time.perf_counter()
    why = asyncio.run(engine.run())
    elapsed = time.perf_counter() - t0
    assert why == "all sources finished"
    emitted = engine.nodes["bus"].counters.emitted
    assert emitted == n, (emitted, n)
    per_frame = elapsed / n
    scope = "measured" if n == HOUR else f"measured on {n:,} frames, extrapolated x{HOUR / n:.1f}"
    return [
        (
            "one-hour LES02 session (1.8 M frames, .log) through flows/default.yaml at speed max",
            f"{per_frame * HOUR:.1f} s ({scope}; {n / elapsed:,.0f} frames/s; goal < 30 s; "
            f"generating the recording took {gen_s:.1f} s)",
        )
    ]


def main() -> list[tuple[str, str]]:
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = bench_record(tmp)
        rows += bench_stall(tmp)
        rows += bench_replay(tmp)
        rows += bench_pacing(tmp)
        rows += bench_session(tmp)
    return rows


def append_results(rows: list[tuple[str, str]], command: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — recording and replay (issue 3)\n\n")
        f.write(f"Command: `{command}` on {platform.python_implementation()} ")
        f.write(
            f"{platform.python_version()}, {platform.machine()}, python-can {can.__version__}\n\n"
        )
        f.write("| benchmark | result |\n|---|---|\n")
        for name, value in rows:
            f.write(f"| {name} | {value} |\n")


if __name__ == "__main__":
    t_all = time.perf_counter()
    results = main()
    for name, value in results:
        print(f"{name:<80} {value}")
    print(f"(total {time.perf_counter() - t_all:.0f} s)")
    append_results(results, "python -m bench.recording " + " ".join(sys.argv[1:]))
