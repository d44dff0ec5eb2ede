"""Replay never drops frames silently (issue 14, items 2 and 11).

Policy (docs/flows.md, ``replay_source``): items are replayed in file order; one stamped
earlier than its predecessor is replayed right after it and counted in ``out_of_order`` with a
warning; gaps longer than ``max_gap`` (default 60 s) are shortened, counted in
``gaps_capped`` and logged; frames no bus can carry (python-can misreadings like ``080#ABC``,
64 data bytes on a classic frame, a non-finite timestamp) are reported with file and line,
counted in ``corrupt`` and skipped.

On the code before issue 14: a bogus first timestamp (1e15) dropped every frame after it, a
clock stepping back halfway dropped half, ``inf`` first dropped almost all (all with no
counter and no log line); a 1e15 s gap waited forever; ``080#ABC`` came out as data AB 0C and
a 64-byte classic frame went straight through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import can
import pytest

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowDocument
from les02_flow.registry import Registry


def _line(ts: float, can_id: int, data: str) -> str:
    return f"({ts:.6f}) vcan0 {can_id:03X}#{data}\n"


def _replay(
    registry: Registry, collected: dict[str, list[Any]], path: Path, **cfg: Any
) -> tuple[list[can.Message], dict[str, int]]:
    nodes = {
        "rp": {"type": "replay_source", "path": str(path), "speed": "max", **cfg, "wires": ["c"]},
        "c": {"type": "collect"},
    }
    flow = compile_document(FlowDocument("rp", {"version": 1, "nodes": nodes}), registry)
    engine = Engine(flow)

    async def main() -> None:
        await engine.start()
        try:
            await asyncio.wait_for(engine.wait(), 30)
        finally:
            await engine.stop()

    asyncio.run(main())
    return collected.get("c", []), engine.counters()["rp"].as_dict()


def _data(k: int) -> str:
    return f"{k & 0xFFFFFF:06X}00"


def test_bogus_first_timestamp_drops_nothing(
    tmp_path: Path,
    registry: Registry,
    collected: dict[str, list[Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "bogus.log"
    lines = [_line(1e15, 0x80, _data(0))]
    lines += [_line(1000.0 + k * 0.002, 0x80, _data(k + 1)) for k in range(5000)]
    path.write_text("".join(lines))
    with caplog.at_level(logging.WARNING):
        got, counters = _replay(registry, collected, path)
    assert len(got) == 5001  # before: 1 (the 5000 frames "before the first" were skipped)
    assert [m.data[2] for m in got[:4]] == [0, 1, 2, 3]  # file order
    assert counters["out_of_order"] == 1
    assert "stamped earlier than the item before them" in caplog.text


def test_clock_stepping_back_halfway_and_a_window_drop_nothing(
    tmp_path: Path, registry: Registry, collected: dict[str, list[Any]]
) -> None:
    path = tmp_path / "stepback.log"
    first = [_line(2000.0 + k * 0.002, 0x80, _data(k)) for k in range(2000)]  # 2000..2004 s
    second = [_line(1000.0 + k * 0.002, 0x80, _data(2000 + k)) for k in range(2000)]
    path.write_text("".join(first + second))
    got, counters = _replay(registry, collected, path)
    assert len(got) == 4000 and counters["out_of_order"] == 1  # before: 2000, no counter
    collected.clear()
    # the window is measured on the replay timeline (8 s, the step back counts 0): 1..6 s
    got, _ = _replay(registry, collected, path, start=1.0, end=6.0)
    assert 2500 <= len(got) <= 2502  # before: the 2000 frames after the step were skipped
    assert sum(1 for m in got if m.timestamp < 2000) > 1000


def test_infinite_first_timestamp_is_reported_and_the_rest_replayed(
    tmp_path: Path,
    registry: Registry,
    collected: dict[str, list[Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "inf.log"
    lines = ["(inf) vcan0 080#00000000\n"]
    lines += [_line(1000.0 + k * 0.002, 0x80, _data(k)) for k in range(5000)]
    path.write_text("".join(lines))
    with caplog.at_level(logging.WARNING):
        got, counters = _replay(registry, collected, path)
    assert len(got) == 5000 and counters["corrupt"] == 1
    assert f"{path}:line 1: invalid frame skipped: timestamp inf is not a finite" in caplog.text


def test_huge_gap_is_capped_and_logged_by_default(
    tmp_path: Path,
    registry: Registry,
    collected: dict[str, list[Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "gap.log"
    lines = [_line(10.0, 0x80, _data(0)), _line(10.01, 0x80, _data(1))]
    lines += [_line(1e15, 0x80, _data(2)), _line(1e15 + 0.01, 0x80, _data(3))]
    path.write_text("".join(lines))
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING):
        # speed 1000: the 60 s default cap is 0.06 s; before, 1e15 s / 1000 = forever
        got, counters = _replay(registry, collected, path, speed=1000)
    assert len(got) == 4 and counters["gaps_capped"] == 1
    assert time.monotonic() - t0 < 30
    assert "shortened to max_gap 60 s" in caplog.text


def test_frames_no_bus_can_carry_are_reported_and_skipped(
    tmp_path: Path,
    registry: Registry,
    collected: dict[str, list[Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = tmp_path / "misread.log"
    lines = [
        _line(1.000, 0x80, "00000A00"),
        _line(1.002, 0x80, "ABC"),  # python-can: data AB 0C
        _line(1.004, 0x80, "00" * 64),  # 64 bytes on a classic frame
        _line(1.006, 0x80, "XYZ1"),  # not hex
        "(1.008000) vcan0 1234#00\n",  # a 4-digit id: neither standard nor extended
        _line(1.010, 0x81, "00000B00"),
        "(1.012000) vcan0 0C0##1" + "00" * 12 + "\n",  # a valid FD frame (12 bytes)
    ]
    path.write_text("".join(lines))
    with caplog.at_level(logging.WARNING):
        got, counters = _replay(registry, collected, path)
    assert [(m.arbitration_id, len(m.data)) for m in got] == [(0x80, 4), (0x81, 4), (0xC0, 12)]
    assert counters["corrupt"] == 4
    log = caplog.text
    assert f"{path}:line 2: invalid frame skipped: odd number of hex digits" in log
    assert f"{path}:line 3: invalid frame skipped: classic CAN frame with 64 data bytes" in log
