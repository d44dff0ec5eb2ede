"""replay_source: completion, loops, window, filters, timestamps, tolerant reading, start-up
errors, and determinism through the default flow (speed max vs speed 1)."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import can
import pytest

from les02_flow.commands.replay import replace_sources
from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowDocument, FlowErrors, load_flow
from les02_flow.node import NodeStartError
from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim
from les02_flow.nodes.recording.formats import FORMATS, open_writer
from les02_flow.nodes.recording.replay import Timeline, read_batches
from les02_flow.registry import Registry
from les02_flow.testing import Collect, registry_with

ROOT = Path(__file__).resolve().parents[2]
RECEIVED = Collect.received


@pytest.fixture
def registry() -> Registry:
    RECEIVED.clear()
    return registry_with()


def write_log(path: Path, frames: list[can.Message]) -> Path:
    writer = open_writer(str(path), FORMATS[".log"])
    writer.write(frames)
    writer.close()
    return path


def frames_at(times: list[float], ids: list[int] | None = None) -> list[can.Message]:
    return [
        can.Message(
            timestamp=t,
            arbitration_id=(ids[i] if ids else 0x80 + (i & 1)),
            is_extended_id=False,
            data=bytes([0, 0, i & 0xFF, 0]),
        )
        for i, t in enumerate(times)
    ]


def run_replay(registry: Registry, path: Path, **config: Any) -> tuple[list[Any], Engine, float]:
    RECEIVED.pop("sink", None)
    config.setdefault("speed", "max")
    flow = compile_document(
        FlowDocument(
            path="test",
            data={
                "version": 1,
                "nodes": {
                    "rp": {
                        "type": "replay_source",
                        "path": str(path),
                        **config,
                        "wires": {"out": ["sink"], "events": ["sink"]},
                    },
                    "sink": {"type": "collect"},
                },
            },
        ),
        registry,
    )
    engine = Engine(flow)

    async def main() -> float:
        t0 = time.monotonic()
        assert await asyncio.wait_for(engine.run(), 30) == "all sources finished"
        return time.monotonic() - t0

    elapsed = asyncio.run(main())
    return RECEIVED.get("sink", []), engine, elapsed


def test_replays_everything_in_order_and_completes(registry: Registry, tmp_path: Path) -> None:
    frames = frames_at([10.0 + i * 0.001 for i in range(2500)])
    got, engine, _ = run_replay(registry, write_log(tmp_path / "a.log", frames))
    assert [(m.arbitration_id, bytes(m.data), m.timestamp) for m in got] == [
        (m.arbitration_id, bytes(m.data), pytest.approx(m.timestamp, abs=1e-6)) for m in frames
    ]
    assert engine.nodes["rp"].counters.emitted == 2500
    assert engine.nodes["rp"].counters.extra["passes"] == 1


def test_loop_window_and_id_filters(registry: Registry, tmp_path: Path) -> None:
    times = [100.0 + i * 0.5 for i in range(10)]  # 0 .. 4.5 s
    path = write_log(tmp_path / "w.log", frames_at(times, ids=[0x80, 0x81, 0x30, 0x31, 0x20] * 2))
    got, engine, _ = run_replay(registry, path, loop=3)
    assert len(got) == 30 and engine.nodes["rp"].counters.extra["passes"] == 3
    got, _, _ = run_replay(registry, path, start=1.0, end=3.0)
    assert [m.timestamp for m in got] == [101.0, 101.5, 102.0, 102.5, 103.0]
    got, _, _ = run_replay(registry, path, ids=["0x80", 0x20])
    assert [m.arbitration_id for m in got] == [0x80, 0x20, 0x80, 0x20]
    got, _, _ = run_replay(registry, path, filters=[{"can_id": 0x30, "can_mask": 0x7FE}])
    assert [m.arbitration_id for m in got] == [0x30, 0x31, 0x30, 0x31]


def test_timestamps_now_keeps_spacing_and_max_gap_shortens(
    registry: Registry, tmp_path: Path
) -> None:
    times = [50.0, 50.25, 50.5, 3650.5, 3650.75]  # an hour of silence in the middle
    path = write_log(tmp_path / "g.log", frames_at(times))
    before = time.time()
    got, _, _ = run_replay(registry, path, timestamps="now", max_gap=1.0)
    stamps = [m.timestamp for m in got]
    assert before <= stamps[0] <= time.time()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert gaps == pytest.approx([0.25, 0.25, 1.0, 0.25], abs=1e-6)
    # speed 2 halves the re-stamped spacing (the replay clock)
    got, _, _ = run_replay(registry, path, timestamps="now", max_gap=1.0, speed=2)
    stamps = [m.timestamp for m in got]
    assert stamps[-1] - stamps[0] == pytest.approx(0.875, abs=1e-6)


def test_speed_one_is_not_faster_than_the_recording(registry: Registry, tmp_path: Path) -> None:
    path = write_log(tmp_path / "s.log", frames_at([5.0 + i * 0.01 for i in range(31)]))
    got, _, elapsed = run_replay(registry, path, speed=1)
    assert len(got) == 31
    assert elapsed >= 0.3  # due times are absolute: it cannot finish early


def test_timeline_is_drift_free_over_many_items() -> None:
    tl = Timeline()
    offsets = [tl.offset(1737319234.0 + i * 0.002) for i in range(1_800_000)]
    assert offsets[-1] == pytest.approx(1_799_999 * 0.002, abs=1e-6)


def test_corrupt_and_torn_lines_are_reported_counted_and_skipped(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "bad.log"
    path.write_text(
        "(1.000000) can0 080#00000100\n"
        "(1.001000) can0 08G#00000200\n"  # line 2: bad id
        "garbage\n"  # line 3
        "(1.003000) can0 081#00000300\n"
        "(1.004000) can0 080#000004"  # torn: no newline
    )
    got, engine, _ = run_replay(registry, path)
    assert [bytes(m.data)[2] for m in got] == [1, 3]
    counters = engine.nodes["rp"].counters
    assert counters.errors == 3 and counters.extra["corrupt"] == 3
    assert f"{path}:line 2: corrupt line skipped" in caplog.text
    assert f"{path}:line 3: corrupt line skipped" in caplog.text
    assert f"{path}:line 5: unterminated last line (torn write?) skipped" in caplog.text


def test_corrupt_asc_line_keeps_the_header(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "x.asc"
    writer = open_writer(str(path), FORMATS[".asc"])
    writer.write(frames_at([1737319234.5 + i for i in range(3)]))
    writer.close()
    lines = path.read_text().splitlines(keepends=True)
    first_frame = next(i for i, ln in enumerate(lines) if " Rx " in ln)
    lines[first_frame + 1] = " 1.000000 1  ZZZ             Rx   d 4 00 00 01 00\n"
    path.write_text("".join(lines))
    got, engine, _ = run_replay(registry, path)
    assert [m.timestamp for m in got] == pytest.approx([1737319234.5, 1737319236.5], abs=1e-3)
    assert engine.nodes["rp"].counters.extra["corrupt"] == 1


def test_truncated_gzip_and_blf_are_reported_not_fatal(registry: Registry, tmp_path: Path) -> None:
    frames = frames_at([1.0 + i * 0.001 for i in range(5000)])
    for suffix in (".log.gz", ".blf"):
        path = tmp_path / f"t{suffix}"
        writer = open_writer(str(path), FORMATS[suffix])
        writer.write(frames)
        writer.close()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
        got, engine, _ = run_replay(registry, path)
        assert 0 < len(got) < 5000
        assert [m.arbitration_id for m in got] == [m.arbitration_id for m in frames[: len(got)]]
        assert engine.nodes["rp"].counters.extra["corrupt"] >= 1


def test_bad_events_lines_are_skipped(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text(
        '{"proto": 1, "type": "status", "ts": 1.0, "source": "les02", "payload": {}}\n'
        "{not json\n"
        '{"type": "status"}\n'
        '{"proto": 1, "type": "error", "ts": 2.0, "source": "les02", "payload": {}}\n'
    )
    got, engine, _ = run_replay(registry, path, types=["error", "status"])
    assert [e["type"] for e in got] == ["status", "error"]
    assert engine.nodes["rp"].counters.extra["corrupt"] == 2


def test_missing_or_foreign_files_fail_at_start(registry: Registry, tmp_path: Path) -> None:
    not_blf = tmp_path / "x.blf"
    not_blf.write_bytes(b"this is not a BLF file at all, not even close" * 4)
    for path, needle in ((tmp_path / "nope.log", "No such file"), (not_blf, "not a .blf")):
        with pytest.raises(NodeStartError) as info:
            run_replay(registry, path)
        assert f"replay_source 'rp': cannot read recording '{path}'" in str(info.value)
        assert needle in str(info.value)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"speed": 0}, "speed must be > 0"),
        ({"loop": 0}, "loop must be >= 1"),
        ({"start": 5, "end": 2}, "must be greater than start"),
        ({"ids": ["0xZZ"]}, "not a CAN id"),
        ({"path": "x.wav"}, "unknown recording format"),
    ],
)
def test_config_errors(registry: Registry, config: dict[str, Any], needle: str) -> None:
    node = {"type": "replay_source", "path": "x.log", **config}
    with pytest.raises(FlowErrors) as info:
        compile_document(
            FlowDocument(path="t", data={"version": 1, "nodes": {"rp": node}}), registry
        )
    assert needle in str(info.value)


def default_flow_on(path: Path, speed: float | str) -> FlowDocument:
    """flows/default.yaml with its can_source replaced (as `les02-flow replay --flow` does),
    the WebSocket server on a free loopback port and the events also collected."""
    doc = load_flow(ROOT / "flows" / "default.yaml")
    replace_sources(doc, {"path": str(path), "speed": speed})
    nodes = doc.data["nodes"]
    nodes["ws"].update(host="127.0.0.1", port=0)
    if "store" in nodes:  # the ride database would be written into the repository
        nodes["store"]["disabled"] = True
    nodes["events"] = {"type": "collect", "deep": True}
    wires = nodes["parse"]["wires"]
    wires["out"] = [*wires["out"], "events"]
    return doc


def test_default_flow_replay_is_deterministic_at_any_speed(
    registry: Registry, tmp_path: Path
) -> None:
    sim = ElevatorSim(ElevatorParams(seed=3, duration=1.2, dwell_min=0.2, dwell_max=0.3))
    t0 = 1737319234.0
    frames = [
        can.Message(timestamp=t0 + f.t, arbitration_id=f.can_id, is_extended_id=False, data=f.data)
        for f in sim.frames()
    ]
    frames.insert(100, can.Message(timestamp=frames[99].timestamp, arbitration_id=0x55, data=b""))
    path = write_log(tmp_path / "session.log", frames)
    runs = []
    for speed in ("max", 1):
        RECEIVED.clear()
        flow = compile_document(default_flow_on(path, speed), registry)
        assert "sim" not in [n.id for n in flow.enabled()]  # the bus feeder is off
        engine = Engine(flow)
        assert asyncio.run(asyncio.wait_for(engine.run(), 30)) == "all sources finished"
        runs.append([(e["type"], e["payload"], e["ts"]) for e in RECEIVED["events"]])
        assert engine.nodes["parse"].counters.dropped == 1  # the 0x55 frame
    fast, paced = runs
    assert len(fast) == len(frames) - 1 > 500
    assert fast == paced


def test_loop_passes_continue_in_time(registry: Registry, tmp_path: Path) -> None:
    times = [100.0 + i * 0.05 for i in range(5)]  # 0 .. 0.2 s
    path = write_log(tmp_path / "l.log", frames_at(times))
    got, _, _ = run_replay(registry, path, loop=3)
    stamps = [m.timestamp for m in got]
    # each pass starts loop_gap (1 s) after the previous pass's last frame
    expected = [t + k * (0.2 + 1.0) for k in range(3) for t in times]
    assert stamps == [pytest.approx(t, abs=1e-6) for t in expected]
    got, _, _ = run_replay(registry, path, loop=2, loop_gap=0.0, start=0.08)
    assert [m.timestamp for m in got] == [
        pytest.approx(t, abs=1e-6) for t in (100.1, 100.15, 100.2, 100.2, 100.25, 100.3)
    ]
    got, _, elapsed = run_replay(registry, path, loop=2, loop_gap=0.3, speed=1)
    assert elapsed >= 0.2 + 0.3 + 0.2 - 0.02  # the pacing waits the gap too
    assert got[5].timestamp == pytest.approx(100.5, abs=1e-6)


def test_looped_replay_through_the_default_flow_gives_one_ride_per_pass(
    registry: Registry, tmp_path: Path
) -> None:
    sim = ElevatorSim(ElevatorParams(seed=5, trips=1, dwell_min=1.0, dwell_max=1.0))
    t0 = 1737319234.0
    frames = [
        can.Message(timestamp=t0 + f.t, arbitration_id=f.can_id, is_extended_id=False, data=f.data)
        for f in sim.frames()
    ]
    path = write_log(tmp_path / "one-ride.log", frames)
    doc = default_flow_on(path, "max")
    doc.data["nodes"]["bus"]["loop"] = 3
    doc.data["nodes"]["rides"]["wires"] = [*doc.data["nodes"]["rides"]["wires"], "events"]
    RECEIVED.clear()
    engine = Engine(compile_document(doc, registry))
    assert asyncio.run(asyncio.wait_for(engine.run(), 60)) == "all sources finished"
    ends = [e["payload"] for e in RECEIVED["events"] if e["type"] == "ride_end"]
    assert len(ends) == 3 and len({e["ride_id"] for e in ends}) == 3
    assert all(e["complete"] for e in ends)
    length = frames[-1].timestamp - frames[0].timestamp + 1.0
    for k, end in enumerate(ends):
        assert end["start_ts"] == pytest.approx(t0 + sim.trips[0].start_t + k * length, abs=0.05)
    counters = engine.nodes["rides"].counters.extra
    assert "out_of_order" not in counters
    # each seam is a 1 s gap where the position jumps back: a dropout per channel
    assert counters["dropouts"] == 2 * 2


def test_batches_keep_coming_while_a_filter_skips_everything(tmp_path: Path) -> None:
    """At speed max the batches are read on the event loop: a filter or window that skips
    most of a file must not hold the loop until the end of the file."""
    path = tmp_path / "many.log"
    writer = open_writer(str(path), FORMATS[".log"])
    writer.write(frames_at([1.0 + i * 0.001 for i in range(5000)]))
    writer.close()
    batches = list(read_batches(str(path), accept=lambda m: False, batch_size=100))
    assert len(batches) >= 10 and not any(b.items for b in batches) and batches[-1].end
    taken = list(read_batches(str(path), batch_size=100))
    assert [len(b.items) for b in taken[:-1]] == [100] * 50 and not taken[-1].items
