"""file_recorder: every format round-trips through replay_source; templates, rotation,
never overwriting, start-up errors, kind checks, the writer thread's bounded queue."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import can
import pytest
from pydantic import Field
from reactivex import Observable
from reactivex.subject import Subject

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.events import make_event
from les02_flow.flowfile import FlowDocument, FlowErrors
from les02_flow.node import Kind, Node, NodeConfig, NodeStartError
from les02_flow.nodes.recording.file_recorder import FileRecorder
from les02_flow.nodes.recording.formats import FORMATS, Format, RecordingReader
from les02_flow.nodes.recording.recorder import RecordingFiles, Rotation, WriterThread
from les02_flow.nodes.recording.replay_source import ReplaySource
from les02_flow.registry import Registry
from les02_flow.testing import Collect

#: what the test sources emit, by key; what the test sinks received, by node id
SOURCES: dict[str, list[Any]] = {}


class ListSourceConfig(NodeConfig):
    key: str = Field(description="key into SOURCES")
    kind: str = Field(default="frame", description="port to emit on: frame or event")


class ListSource(Node[ListSourceConfig]):
    """Emits SOURCES[key] on start, then completes (test source)."""

    type_name = "list_source"
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.ANY}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        self.subject: Subject[Any] = Subject()
        return {"out": self.subject}

    async def start(self) -> None:
        for item in SOURCES[self.config.key]:
            self.subject.on_next(item)
        self.subject.on_completed()


@pytest.fixture
def registry() -> Registry:
    SOURCES.clear()
    Collect.received.clear()
    return Registry([ListSource, Collect, FileRecorder, ReplaySource], "tests")


def run(registry: Registry, nodes: dict[str, Any]) -> Engine:
    flow = compile_document(
        FlowDocument(path="test", data={"version": 1, "nodes": nodes}), registry
    )
    engine = Engine(flow, stop_timeout=10)

    async def main() -> None:
        why = await asyncio.wait_for(engine.run(), 30)
        assert why == "all sources finished"

    asyncio.run(main())
    return engine


def record(registry: Registry, frames: list[Any], path: Path, **config: Any) -> Engine:
    SOURCES["frames"] = frames
    return run(
        registry,
        {
            "src": {"type": "list_source", "key": "frames", "wires": ["rec"]},
            "rec": {"type": "file_recorder", "path": str(path), **config},
        },
    )


def replay(registry: Registry, path: Path, port: str = "out", **config: Any) -> list[Any]:
    Collect.received.pop("sink", None)
    run(
        registry,
        {
            "rp": {
                "type": "replay_source",
                "path": str(path),
                "speed": "max",
                **config,
                "wires": {port: ["sink"]},
            },
            "sink": {"type": "collect"},
        },
    )
    return Collect.received.get("sink", [])


def sample_frames(fmt: Format) -> list[can.Message]:
    """Standard and extended ids, empty to 8 bytes, CAN FD (where the format keeps it)."""
    t0 = 1737319234.567891
    frames = [
        can.Message(
            timestamp=t0 + i * 0.0012345,
            arbitration_id=(0x18DAF100 + i) if i % 3 == 1 else (0x80 + i),
            is_extended_id=i % 3 == 1,
            data=bytes((i * 7 + k) & 0xFF for k in range(i % 9)),
            channel=0,
        )
        for i in range(30)
    ]
    if fmt.fd:
        frames.append(
            can.Message(
                timestamp=t0 + 0.05, arbitration_id=0x123, is_extended_id=False, is_fd=True,
                bitrate_switch=True, data=bytes(range(12)), channel=0,
            )
        )  # fmt: skip
        frames.append(
            can.Message(
                timestamp=t0 + 0.06, arbitration_id=0x1ABCDE, is_extended_id=True, is_fd=True,
                error_state_indicator=True, data=bytes(range(64)), channel=0,
            )
        )  # fmt: skip
    return frames


#: how exactly each format keeps absolute timestamps (see formats.py)
RESOLUTION = {".asc": 1e-3, ".log": 1e-6, ".trc": 1e-6, ".blf": 1e-6, ".csv": 1e-9, ".db": 1e-9}

FRAME_SUFFIXES = [s for s, f in FORMATS.items() if not f.events]


@pytest.mark.parametrize("suffix", FRAME_SUFFIXES)
def test_round_trip_every_format(registry: Registry, tmp_path: Path, suffix: str) -> None:
    fmt = FORMATS[suffix]
    frames = sample_frames(fmt)
    path = tmp_path / f"rec{suffix}"
    engine = record(registry, frames, path)
    rec = engine.nodes["rec"]
    assert rec.counters.extra["written"] == len(frames)
    assert rec.counters.extra["files"] == 1
    assert rec.counters.extra["bytes"] == path.stat().st_size > 0
    got = replay(registry, path)
    assert len(got) == len(frames)
    resolution = RESOLUTION[fmt.base]
    for sent, back in zip(frames, got, strict=True):
        assert isinstance(back, can.Message)
        assert back.arbitration_id == sent.arbitration_id
        assert back.is_extended_id == sent.is_extended_id
        assert bytes(back.data) == bytes(sent.data)
        assert (back.is_fd, back.bitrate_switch, back.error_state_indicator) == (
            sent.is_fd,
            sent.bitrate_switch,
            sent.error_state_indicator,
        )
        assert back.timestamp == pytest.approx(sent.timestamp, abs=resolution)
    # the spacing is kept to 1 µs in every format
    for a, b, x, y in zip(frames, frames[1:], got, got[1:], strict=False):
        assert (y.timestamp - x.timestamp) == pytest.approx(b.timestamp - a.timestamp, abs=2e-6)


def test_trc_counts_frames_it_cannot_hold(registry: Registry, tmp_path: Path) -> None:
    frames = sample_frames(FORMATS[".log"])  # with two CAN FD frames
    engine = record(registry, frames, tmp_path / "x.trc")
    counters = engine.nodes["rec"].counters.extra
    assert counters["unsupported"] == 2
    assert counters["written"] == len(frames) - 2
    assert len(replay(registry, tmp_path / "x.trc")) == len(frames) - 2


@pytest.mark.parametrize("suffix", [".csv", ".db", ".csv.gz"])
def test_csv_and_db_count_the_fd_flags_they_lose(
    registry: Registry, tmp_path: Path, suffix: str
) -> None:
    """python-can's .csv/.db writers cannot keep a CAN FD frame's flags: such frames are
    counted as ``unsupported`` and skipped, as in .trc (old code: written without the flags,
    ``unsupported`` absent, and the replay rejected them as classic frames > 8 bytes)."""
    frames = sample_frames(FORMATS[".log"])  # with two CAN FD frames
    path = tmp_path / f"x{suffix}"
    engine = record(registry, frames, path)
    counters = engine.nodes["rec"].counters.extra
    assert counters["unsupported"] == 2
    assert counters["written"] == len(frames) - 2
    back = replay(registry, path)
    classic = [m for m in frames if not m.is_fd]
    assert [(m.arbitration_id, bytes(m.data)) for m in back] == [
        (m.arbitration_id, bytes(m.data)) for m in classic
    ]


def test_candump_error_frames_replay_as_error_frames(registry: Registry, tmp_path: Path) -> None:
    """candump writes every SocketCAN error class with CAN_ERR_FLAG in the id; python-can's
    reader keeps only bus errors (0x80) as error frames, so ``20000004#...`` (controller
    problems) read as an extended data frame of id 0x4. It stays an error frame (old code:
    is_error_frame False, is_extended_id True)."""
    path = tmp_path / "errors.log"
    path.write_text(
        "(1737319234.000001) can0 080#00000000\n"
        "(1737319234.000002) can0 20000004#0004000000000000\n"
        "(1737319234.000003) can0 20000080#0000000000000000\n"
        "(1737319234.000004) can0 00000004#0102\n"
    )
    got = replay(registry, path)
    assert len(got) == 4
    data, ctrl, bus, ext = got
    assert not data.is_error_frame and data.arbitration_id == 0x80
    assert ctrl.is_error_frame and not ctrl.is_extended_id
    assert ctrl.arbitration_id == 0x4 and bytes(ctrl.data) == bytes([0, 4, 0, 0, 0, 0, 0, 0])
    assert bus.is_error_frame
    # an extended data frame with the same low bits is still a data frame
    assert not ext.is_error_frame and ext.is_extended_id and ext.arbitration_id == 0x4
    assert ctrl.channel == "can0"


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_events_round_trip_as_jsonl(registry: Registry, tmp_path: Path, suffix: str) -> None:
    events = [
        make_event("position_sample", 100.0 + i * 0.002, {"channel": "master", "position_raw": i})
        for i in range(50)
    ]
    SOURCES["frames"] = events
    path = tmp_path / f"events{suffix}"
    record(registry, events, path)
    assert replay(registry, path, port="events") == events
    assert replay(registry, path, port="out") == []  # no frames in an event recording


def test_template_creates_directories_and_names_by_start_time(
    registry: Registry, tmp_path: Path
) -> None:
    template = tmp_path / "a" / "b" / "les02-{start:%Y%m%d-%H%M%S}.log"
    record(registry, sample_frames(FORMATS[".log"]), template)
    (made,) = list((tmp_path / "a" / "b").iterdir())
    assert made.name.startswith("les02-20") and made.suffix == ".log"
    assert len(made.name) == len("les02-YYYYmmdd-HHMMSS.log")


def test_existing_files_are_never_overwritten(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_text("keep me\n")
    record(registry, sample_frames(FORMATS[".log"]), path)
    record(registry, sample_frames(FORMATS[".log"]), path)
    assert path.read_text() == "keep me\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.log", "x_1.log", "x_2.log"]
    assert len(list(RecordingReader(str(tmp_path / "x_2.log")))) == 32


def test_rotation_by_size_splits_without_losing_or_overwriting(tmp_path: Path) -> None:
    frames = sample_frames(FORMATS[".log"])
    files = RecordingFiles(str(tmp_path / "r.log"), Rotation(max_bytes=300))
    files.open()
    for i in range(0, len(frames), 4):
        files.write(frames[i : i + 4])
    files.close()
    paths = files.stats.paths
    assert len(paths) > 3
    assert [Path(p).name for p in paths[:3]] == ["r-001.log", "r-002.log", "r-003.log"]
    back = [m for p in paths for m in RecordingReader(p)]
    assert [m.arbitration_id for m in back] == [m.arbitration_id for m in frames]
    assert all(os.path.getsize(p) > 0 for p in paths)
    assert files.stats.bytes == sum(os.path.getsize(p) for p in paths)


def test_rotation_by_time_with_time_stamped_names(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    frames = sample_frames(FORMATS[".csv"])
    files = RecordingFiles(
        str(tmp_path / "t-{time:%H%M%S}.csv"), Rotation(max_seconds=10), clock=lambda: now[0]
    )
    files.open()
    for i in range(3):
        files.write(frames[i * 10 : (i + 1) * 10])
        now[0] += 10.0
    files.close()
    names = [Path(p).name for p in files.stats.paths]
    assert len(names) == 3 and len(set(names)) == 3
    assert all(n.startswith("t-") and n.endswith(".csv") for n in names)
    assert sum(len(list(RecordingReader(p))) for p in files.stats.paths) == 30


def test_unwritable_path_is_a_clear_start_error(registry: Registry, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    SOURCES["frames"] = []
    flow = compile_document(
        FlowDocument(
            path="test",
            data={
                "version": 1,
                "nodes": {
                    "src": {"type": "list_source", "key": "frames", "wires": ["rec"]},
                    "rec": {"type": "file_recorder", "path": str(blocker / "sub" / "x.log")},
                },
            },
        ),
        registry,
    )
    with pytest.raises(NodeStartError) as info:
        asyncio.run(Engine(flow).run())
    text = str(info.value)
    assert "file_recorder 'rec'" in text and str(blocker) in text


@pytest.mark.parametrize(
    ("path", "needle"),
    [
        ("x.mp3", "unknown recording format"),
        ("x.blf.gz", "cannot gzip .blf"),
        ("x-{day}.log", "unknown placeholder {day}"),
        ("x-{start:%Y.log", "bad path template"),
    ],
)
def test_bad_paths_are_config_errors(registry: Registry, path: str, needle: str) -> None:
    doc = FlowDocument(
        path="test",
        data={"version": 1, "nodes": {"rec": {"type": "file_recorder", "path": path}}},
    )
    with pytest.raises(FlowErrors) as info:
        compile_document(doc, registry)
    assert needle in str(info.value)


def test_wrong_kind_is_counted_and_reported(
    registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    frames = sample_frames(FORMATS[".log"])[:3]
    mixed: list[Any] = [frames[0], make_event("status", 1.0, {}), frames[1], "junk", frames[2]]
    engine = record(registry, mixed, tmp_path / "x.log")
    counters = engine.nodes["rec"].counters
    assert counters.errors == 2
    assert counters.extra["written"] == 3
    assert "records frames but received an event (type 'status')" in caplog.text
    events_engine = record(registry, mixed, tmp_path / "e.jsonl")
    assert events_engine.nodes["rec"].counters.extra["written"] == 1
    assert events_engine.nodes["rec"].counters.errors == 4


@pytest.mark.parametrize("suffix", [".blf", ".db"])
def test_everything_accepted_is_written_on_stop(
    registry: Registry, tmp_path: Path, suffix: str
) -> None:
    """BLF buffers containers; python-can's SqliteWriter drops its queue on stop()."""
    t0 = 1000.0
    frames = [
        can.Message(timestamp=t0 + i * 1e-4, arbitration_id=0x80 | (i & 1), data=b"\0\0\0\0")
        for i in range(25_000)
    ]
    engine = record(registry, frames, tmp_path / f"big{suffix}")
    rec = engine.nodes["rec"]
    assert isinstance(rec, FileRecorder)
    assert rec.accepted == 25_000 and rec.counters.dropped == 0
    back = list(RecordingReader(str(tmp_path / f"big{suffix}")))
    assert len(back) == 25_000
    assert [m.arbitration_id for m in back[:4]] == [0x80, 0x81, 0x80, 0x81]


class _BlockingWriter:
    """A writer whose write() waits for a gate (a disk that cannot keep up)."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.unsupported = 0
        self.frames = 0
        self.path = "blocking"
        self.written: list[Any] = []

    def write(self, batch: list[Any]) -> int:
        self.gate.wait(10)
        self.written.extend(batch)
        return len(batch)

    def flush(self) -> None:
        pass

    def size(self) -> int:
        return len(self.written)

    def close(self) -> None:
        pass

    def lost(self) -> str | None:
        return None

    def abandon(self, *, remove_if_empty: bool = True) -> bool:
        return False


def test_full_queue_refuses_without_blocking_and_keeps_what_it_took(tmp_path: Path) -> None:
    gate = threading.Event()
    writer = _BlockingWriter(gate)
    files = RecordingFiles(str(tmp_path / "q.log"), opener=lambda p, f, i: writer)
    files.open()
    thread = WriterThread(files, max_batches=1)
    thread.start()
    assert thread.submit([1])  # the thread takes it and blocks in write
    accepted = 1
    refused = 0
    for n in range(2, 6):
        if thread.submit([n]):
            accepted += 1
        else:
            refused += 1
    assert refused >= 3  # the one-batch queue filled; submit returned at once
    gate.set()
    thread.close()
    assert thread.join(10)
    assert len(writer.written) == accepted
    assert files.stats.frames == accepted
