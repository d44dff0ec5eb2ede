"""Micro-benchmarks: µs per message for the hot paths, compared as ratios within one run.

    python -m bench.micro            # or: make bench

Measures LES02 decoding, ride detection (one channel of a simulated LES02 with trips), event
JSON encoding, ECUconnect packet encoding, the operator nodes (filter, switch, change,
deadband, throttle: their build() chain fed directly, minus the bare feed loop), and the
engine's per-node overhead: a chain of N pass-through nodes against a bare reactivex chain of
N ``map`` operators fed the same way.
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


def per_message_us(
    fn: Callable[[], None], n: int, repeat: int = 3, clock: Callable[[], float] = time.perf_counter
) -> float:
    """Best of ``repeat`` runs of ``fn`` (which handles ``n`` messages), in µs per message."""
    best = float("inf")
    for _ in range(repeat):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
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


#: the operator nodes measured by bench_ops: (name, node type, config, input kind)
OPS: tuple[tuple[str, str, dict[str, Any], str], ...] = (
    ("filter (events: type + channel condition)", "filter",
     {"types": ["position_sample"],
      "when": [{"field": "payload.channel", "op": "eq", "value": "master"}]}, "event"),
    ("filter (frames: id list)", "filter", {"ids": [0x80, 0x30]}, "frame"),
    ("filter (frames: id mask + extended flag)", "filter",
     {"masks": [{"id": 0x0, "mask": 0x1}], "extended": False}, "frame"),
    ("switch (2 rules of 'in' conditions, first match)", "switch",
     {"rules": [
         {"port": "rides", "when": [{"field": "type", "op": "in",
                                     "value": ["ride_start", "ride_end", "relevel"]}]},
         {"port": "diagnostics", "when": [{"field": "type", "op": "in",
                                           "value": ["status", "error", "system"]}]}]},
     "event"),
    ("change (scale to a new field, delete, set)", "change",
     {"rules": [{"scale": "payload.position_raw", "factor": 0.001, "to": "payload.position_m"},
                {"delete": "payload.position_raw"},
                {"set": "payload.site", "value": "shaft-a"}]}, "event"),
    ("deadband (position_raw, 10 counts, per channel)", "deadband",
     {"field": "payload.position_raw", "deadband": 10, "key": ["payload.channel"]}, "event"),
    ("throttle (0.1 s latest, per channel)", "throttle",
     {"interval": 0.1, "key": ["payload.channel"]}, "event"),
    ("throttle (0.1 s first, per channel)", "throttle",
     {"interval": 0.1, "mode": "first", "key": ["payload.channel"]}, "event"),
)  # fmt: skip


def bench_ops() -> list[tuple[str, float, float]]:
    """(name, µs/msg through the node's build() chain, µs/msg of the bare feed loop) for each
    operator node, fed N messages (LES02 positions at 500 frames/s, both channels).

    The node is fed by calling its upstream observer directly (no Subject, whose own cost of
    about 1 µs would hide the node's), and its ports end in no-op subscribers. Node and bare
    loop are measured alternately, best of 5 each, in CPU time of this process, so a shared
    machine moves both alike.
    """
    from reactivex.disposable import Disposable

    from les02_flow.node import Context
    from les02_flow.registry import default_registry

    registry = default_registry()
    events = [
        make_event(
            "position_sample",
            1.0 + i * 0.002,
            {"channel": "master" if i % 2 == 0 else "slave", "position_raw": i * 3},
        )
        for i in range(N)
    ]
    frames = les02_frames(N)
    inputs: dict[str, list[Any]] = {"event": events, "frame": frames}
    cpu = time.process_time

    def feed_loop(on_next: Callable[[Any], None], messages: list[Any]) -> float:
        t0 = cpu()
        for m in messages:
            on_next(m)
        return cpu() - t0

    rows = []
    for name, type_name, config, kind in OPS:
        cls = registry.get(type_name)
        assert cls is not None, type_name
        messages = inputs[kind]
        best_node = best_bare = float("inf")
        for _ in range(5):
            node = cls(
                "n", cls.config_model.model_validate(config), Context("n", logging.getLogger("b"))
            )
            targets: list[Callable[[Any], None]] = []

            def subscribe(observer: Any, scheduler: Any = None, targets: Any = targets) -> Any:
                targets.append(observer.on_next)
                return Disposable()

            for port in node.build(Observable(subscribe)).values():
                port.subscribe(lambda _x: None)
            assert len(targets) == 1, f"{type_name}: one upstream subscription"
            best_node = min(best_node, feed_loop(targets[0], messages))
            best_bare = min(best_bare, feed_loop(lambda _x: None, messages))
        rows.append((name, best_node / N * 1e6, best_bare / N * 1e6))
    return rows


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
    for name, us, bare in bench_ops():
        rows.append(
            (
                f"operator {name}",
                f"{us - bare:.3f} µs/msg (goal ≤ 2; {us:.3f} through the node, "
                f"{bare:.3f} for the bare feed loop)",
            )
        )
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
