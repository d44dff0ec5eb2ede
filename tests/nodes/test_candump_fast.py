"""The block reader of ``.log`` files gives exactly what the line-by-line reader gives.

Reference: RecordingReader's line-by-line path (python-can's ``CanutilsLogReader`` over
``_Lines``, then candump_error_frame, candump_line_problem and frame_problem per frame). The
block reader parses the common line itself and sends every other line through the same checks.
Both read the same files -- well-formed lines of every kind mixed with random mutations of
them -- and must give the same frames (every attribute, with its type) and the same problems
(line numbers and messages), also when lines straddle the reader's blocks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
import pytest

import les02_flow.nodes.recording.formats as formats
from les02_flow.nodes.recording.formats import Problem, RecordingReader

SLOTS = [s for s in can.Message.__slots__ if s != "__weakref__"]

GOOD = [
    "(1737319234.000000) les02 080#00000000 R",
    "(1737319234.001000) les02 030#0100000000000000 R",
    "(1737319234.002000) can0 7FF#0a0B T",
    "(1737319234.003000) can0 1F334455#DEADBEEF",
    "(1737319234.004000) 0 123#",
    "(1.5) vcan1 081#0000020001",
    "(1737319234.005000) can0 080#R",
    "(1737319234.006000) can0 080#R4",
    "(1737319234.007000) can0 080##1000102030405060708090A0B0C0D0E0F",
    "(1737319234.008000) can0 20000080#0000000000000000",
    "(1737319234.009000) can0 20000004#0004000000000000",
    "(1737319234.010000) can0 800#00",
    "(1737319234.011000) can0 9FFFFFFF#00",
    "(1737319234.012000) can0 080#000102030405060708",
    "(nan) can0 080#00",
    "(inf) can0 080#00",
    "(1_000.5) can0 080#00",
    "(1e3) can0 080#00 t",
]
MUTATIONS: list[Callable[[str, random.Random], str]] = [
    lambda s, r: s.replace(" ", "  ", 1),
    lambda s, r: s.replace(" ", "\t", 1),
    lambda s, r: s.replace("#00", "#00\t", 1),  # fromhex() skips whitespace between bytes
    lambda s, r: s + " ",
    lambda s, r: " " + s,
    lambda s, r: s + " X",
    lambda s, r: s + " R R",
    lambda s, r: s[: r.randrange(len(s))],
    lambda s, r: s.replace("#", "", 1),
    lambda s, r: s.replace("0", "G", 1),
    lambda s, r: s.replace("0", "+", 1),
    lambda s, r: s.replace("0", "_", 1),
    lambda s, r: s.replace("les02", "\u0661\u0662"),  # Arabic-Indic digits: isdigit()
    lambda s, r: s.replace("les02", "\u00b2"),  # superscript two: isdigit(), not int()
    lambda s, r: s.replace("08", "0x8", 1),
    lambda s, r: s.replace("(", "", 1),
    lambda s, r: s + "0",
    lambda s, r: "",
    lambda s, r: "   ",
    lambda s, r: "# a comment",
    lambda s, r: s.replace(")", ")\x00", 1),
    lambda s, r: s.lower(),
    lambda s, r: s.upper(),
]


def _lines(n: int, seed: int) -> list[str]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        line = rnd.choice(GOOD)
        if rnd.random() < 0.4:
            line = rnd.choice(MUTATIONS)(line, rnd)
        out.append(line)
    return out


def _read(path: Path, line_by_line: bool) -> tuple[list[tuple[Any, ...]], list[Problem]]:
    problems: list[Problem] = []
    reader = RecordingReader(str(path), on_problem=problems.append)
    try:
        it = reader._iter_text_lines() if line_by_line else iter(reader)
        frames = [tuple((s, type(getattr(m, s)), getattr(m, s)) for s in SLOTS) for m in it]
    finally:
        reader.close()
    return frames, problems


@pytest.mark.parametrize("block", [1 << 20, 7, 64])
@pytest.mark.parametrize("ending", ["\n", "\r\n"])
def test_block_reader_equals_line_by_line_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int, ending: str
) -> None:
    monkeypatch.setattr(formats, "_BLOCK", block)
    path = tmp_path / "mixed.log"
    lines = _lines(3000, seed=block)
    torn = "(1737319235.0) can0 080#0000"  # a torn last line (no newline)
    path.write_bytes((ending.join(lines) + ending + torn).encode("utf-8"))
    fast, fast_problems = _read(path, line_by_line=False)
    ref, ref_problems = _read(path, line_by_line=True)
    assert len(ref) > 1000 and len(ref_problems) > 300  # both kinds well represented
    assert fast == ref
    assert [str(p) for p in fast_problems] == [str(p) for p in ref_problems]
    assert "unterminated last line" in str(fast_problems[-1])


def test_common_lines_take_the_fast_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The LES02 recording's lines never need python-can's reader (or it would be slow)."""
    slow: list[str] = []
    full = RecordingReader._candump_line

    def spy(self: RecordingReader, line: str, lineno: int) -> Any:
        slow.append(line)
        return full(self, line, lineno)

    monkeypatch.setattr(RecordingReader, "_candump_line", spy)
    path = tmp_path / "les02.log"
    path.write_text("".join(line + "\n" for line in GOOD[:6]) * 50)
    frames, problems = _read(path, line_by_line=False)
    assert len(frames) == 300 and not problems and not slow
