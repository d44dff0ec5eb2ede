"""The items of a test input, in order: frames or events from a recording or the test file.

Plain Python (blocking file reads): the runner feeds them synchronously, in frame time, as fast
as the flow takes them. The same input always gives the same items.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can

from les02_flow.events import PROTO_VERSION
from les02_flow.node import Kind
from les02_flow.nodes.recording.formats import Problem, RecordingReader, detect_format
from les02_flow.nodes.recording.replay import FrameFilter, Timeline, Window, item_timestamp

from .model import InlineFrame, TestInput

__all__ = ["input_kind", "input_path", "iter_input"]


def input_path(spec: TestInput, base_dir: Path) -> Path | None:
    return None if spec.file is None else base_dir / spec.file


def input_kind(spec: TestInput) -> Kind:
    """``frame`` or ``event``: what the input holds (the recording's format decides)."""
    if spec.file is not None:
        return Kind.EVENT if detect_format(spec.file).events else Kind.FRAME
    return Kind.FRAME if spec.frames is not None else Kind.EVENT


def _frame(f: InlineFrame, ts: float) -> can.Message:
    data = bytes.fromhex(f.data)
    extended = f.extended if f.extended is not None else f.id > 0x7FF
    return can.Message(
        timestamp=ts,
        arbitration_id=f.id,
        is_extended_id=extended,
        is_remote_frame=f.remote,
        is_error_frame=f.error,
        is_fd=f.fd,
        dlc=f.dlc if f.dlc is not None else len(data),
        data=data,
        channel=f.channel,
        check=False,
    )


def iter_input(spec: TestInput, base_dir: Path, problems: list[Problem]) -> Iterator[Any]:
    """Fresh items for one run (nothing is shared between runs); corrupt recording lines are
    appended to ``problems`` and skipped."""
    if spec.frames is not None:
        ts = 0.0
        for i, f in enumerate(spec.frames):
            ts = f.ts if f.ts is not None else (ts + spec.period if i else 0.0)
            yield _frame(f, ts)
        return
    if spec.events is not None:
        ts = 0.0
        for i, ev in enumerate(spec.events):
            given = ev.get("ts")
            ts = float(given) if given is not None else (ts + spec.period if i else 0.0)
            yield {
                "proto": ev.get("proto", PROTO_VERSION),
                "type": ev["type"],
                "ts": ts,
                "source": ev.get("source", "les02"),
                "payload": copy.deepcopy(ev.get("payload", {})),
            }
        return
    path = input_path(spec, base_dir)
    assert path is not None
    reader = RecordingReader(str(path), on_problem=problems.append)
    window = Window(spec.start, spec.end)
    events = reader.fmt.events
    frame_filter = FrameFilter(spec.ids)
    types = frozenset(spec.types)
    # the window is measured like replay_source measures it: on a monotonic timeline (a
    # timestamp stepping back counts as no time), so no item is skipped for its timestamp
    clock = Timeline()
    try:
        for item in reader:
            verdict = window.classify(clock.offset(item_timestamp(item)), 0.0)
            if verdict == "end":
                break
            if verdict == "skip":
                continue
            if events:
                if types and item.get("type") not in types:
                    continue
            elif not frame_filter.everything and not frame_filter.accepts(item):
                continue
            yield item
    finally:
        reader.close()
