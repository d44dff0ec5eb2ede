"""Micro-benchmarks: µs per message for the hot paths, compared as ratios within one run.

    python -m bench.micro            # or: make bench

Measures LES02 decoding, ride detection (one channel of a simulated LES02 with trips), event
JSON encoding, ECUconnect packet encoding, and the engine's per-node overhead: a chain of N
pass-through nodes against a bare reactivex chain of N ``map`` operators fed the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import can
from pydantic import Field
from reactivex import Observable
from reactivex import operators as ops
from reactivex.subject import Subject

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.events import encode_event, make_event
from les02_flow.flowfile import FlowDocument
from les02_flow.node import Kind, Node, NodeConfig
from les02_flow.nodes.ecuconnect.codec import encode as ecuconnect_encode
from les02_flow.nodes.les02.codec import Les02Decoder
from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim
from les02_flow.nodes.rides.detector import DetectorParams, RideDetector
from les02_flow.registry import Registry

N = 200_000


def per_message_us(fn: Callable[[], None], n: int, repeat: int = 3) -> float:
    """Best of ``repeat`` runs of ``fn`` (which handles ``n`` messages), in µs per message."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def les02_frames(n: int = N) -> list[can.Message]:
    """``n`` LES02 position frames, master and slave alternating, 2 ms apart."""
    return [
        can.Message(
            arbitration_id=0x80 | (i & 1),
            data=bytes([0, (i >> 8) & 0xFF, i & 0xFF, 0]),
            is_extended_id=False,
            timestamp=1.0 + i * 0.002,
        )
        for i in range(n)
    ]


def bench_decode() -> float:
    decoder = Les02Decoder()
    frames = les02_frames()

    def run() -> None:
        decode = decoder.decode
        for f in frames:
            decode(f)

    return per_message_us(run, N)


def bench_rides() -> tuple[float, int]:
    """(µs per sample, ride events) for RideDetector.feed on the master channel of a
    simulated LES02 (250 Hz, short dwells, so the samples include many trips)."""
    decoder = Les02Decoder()
    sim = ElevatorSim(ElevatorParams(rate_hz=250.0, duration=N / 250.0, seed=3, dwell_min=1.0,
                                     dwell_max=3.0))  # fmt: skip
    samples: list[tuple[float, str, int]] = []
    for f in sim.frames():
        if f.can_id != 0x80:
            continue
        msg = can.Message(arbitration_id=f.can_id, data=f.data, timestamp=f.t, is_extended_id=False)
        ev = decoder.decode(msg)
        if isinstance(ev, dict) and ev["type"] == "position_sample":
            samples.append((f.t, "master", int(ev["payload"]["position_raw"])))
    events = 0

    def run() -> None:
        nonlocal events
        det = RideDetector(DetectorParams(channel="master"))
        feed = det.feed
        n = 0
        for ts, ch, raw in samples:
            n += len(feed(ts, ch, raw))
        events = n

    return per_message_us(run, len(samples)), events


def bench_ecuconnect() -> float:
    frames = les02_frames()

    def run() -> None:
        for f in frames:
            ecuconnect_encode(f)

    return per_message_us(run, N)


def bench_encode() -> float:
    events = [
        make_event("position_sample", 1.0 + i * 0.002, {"channel": "master", "position_raw": i})
        for i in range(N)
    ]

    def run() -> None:
        for e in events:
            encode_event(e)

    return per_message_us(run, N)


class PassConfig(NodeConfig):
    tag: str = Field(default="", description="unused")


class Pass(Node[PassConfig]):
    """Pass-through transform."""

    type_name = "pass"
    input_kind = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        assert source is not None
        return {"out": source.pipe(self.each(lambda x: x))}


class FeedConfig(NodeConfig):
    count: int = Field(default=N, description="messages")


class Feed(Node[FeedConfig]):
    """Emits `count` integers when started."""

    type_name = "feed"
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        self.subject: Subject[Any] = Subject()
        return {"out": self.subject}

    async def start(self) -> None:
        on_next = self.subject.on_next
        for i in range(self.config.count):
            on_next(i)
        self.subject.on_completed()


class CountConfig(NodeConfig):
    pass


class Count(Node[CountConfig]):
    """Counts messages."""

    type_name = "count"
    input_kind = Kind.ANY

    def consume(self, message: Any) -> None:
        pass


def bench_chain(length: int) -> tuple[float, float]:
    """(engine µs/msg, bare reactivex µs/msg) for a chain of `length` pass-through nodes."""
    registry = Registry()
    for cls in (Pass, Feed, Count):
        registry.register(cls, "bench")
    nodes: dict[str, Any] = {"feed": {"type": "feed", "wires": ["p0" if length else "sink"]}}
    for i in range(length):
        nodes[f"p{i}"] = {"type": "pass", "wires": [f"p{i + 1}" if i + 1 < length else "sink"]}
    nodes["sink"] = {"type": "count"}
    flow = compile_document(
        FlowDocument(path="bench", data={"version": 1, "nodes": nodes}), registry
    )

    def run_engine() -> None:
        asyncio.run(Engine(flow).run())

    def run_bare() -> None:
        subject: Subject[int] = Subject()
        obs: Observable[Any] = subject
        for _ in range(length):
            obs = obs.pipe(ops.map(lambda x: x))
        obs.subscribe(lambda _x: None)
        for i in range(N):
            subject.on_next(i)

    return per_message_us(run_engine, N), per_message_us(run_bare, N)


def main() -> list[tuple[str, str]]:
    logging.disable(logging.INFO)
    rides_us, ride_events = bench_rides()
    rows = [
        ("LES02 decode (Les02Decoder.decode)", f"{bench_decode():.3f} µs/msg"),
        (
            "ride detection (RideDetector.feed, one channel)",
            f"{rides_us:.3f} µs/sample ({ride_events} ride events)",
        ),
        ("event JSON encode (encode_event)", f"{bench_encode():.3f} µs/msg"),
        ("ECUconnect packet encode (codec.encode)", f"{bench_ecuconnect():.3f} µs/msg"),
    ]
    for length in (0, 1, 5, 10):
        eng, bare = bench_chain(length)
        rows.append(
            (
                f"engine chain of {length} pass-through nodes (source+sink)",
                f"{eng:.3f} µs/msg (bare reactivex {length} maps: {bare:.3f}; "
                f"ratio {eng / bare if bare else float('nan'):.2f})",
            )
        )
    return rows


if __name__ == "__main__":
    for name, value in main():
        print(f"{name:<58} {value}")
