"""Golden files and how messages are shown: events as JSON lines, frames as candump lines.

Events are compared as JSON values (what a ``.jsonl`` line holds); frames by timestamp (to the
microsecond a candump line keeps), id, flags, DLC and data (the channel name is not compared).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import can

from les02_flow.events import encode_event
from les02_flow.nodes.recording.formats import Problem, RecordingReader, detect_format, open_writer

__all__ = [
    "brief",
    "frame_key",
    "frame_line",
    "message_key",
    "read_golden",
    "show",
    "summarize",
    "write_golden",
]


def frame_line(msg: can.Message) -> str:
    """``(12.004000) 080#000DAC00`` (candump style, without the channel)."""
    ts = f"({msg.timestamp:.6f}) "
    if msg.is_error_frame:
        return f"{ts}{msg.arbitration_id:08X}#ERROR {bytes(msg.data).hex().upper()}"
    ident = f"{msg.arbitration_id:08X}" if msg.is_extended_id else f"{msg.arbitration_id:03X}"
    if msg.is_remote_frame:
        return f"{ts}{ident}#R{msg.dlc if msg.dlc else ''}"
    data = bytes(msg.data).hex().upper()
    if msg.is_fd:
        flags = (1 if msg.bitrate_switch else 0) | (2 if msg.error_state_indicator else 0)
        return f"{ts}{ident}##{flags:X}{data}"
    extra = f" (dlc {msg.dlc})" if msg.dlc != len(msg.data) else ""
    return f"{ts}{ident}#{data}{extra}"


def frame_key(msg: can.Message) -> tuple[Any, ...]:
    return (
        round(float(msg.timestamp), 6),
        msg.arbitration_id,
        bool(msg.is_extended_id),
        bool(msg.is_remote_frame),
        bool(msg.is_error_frame),
        bool(msg.is_fd),
        bool(msg.bitrate_switch),
        bool(msg.error_state_indicator),
        msg.dlc if not msg.is_error_frame else 0,
        bytes(msg.data) if not msg.is_remote_frame else b"",
    )


def _canonical(value: Any) -> Any:
    """JSON values as compared: numbers as floats (``1 == 1.0``), lists and mappings inside."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return repr(value)


def message_key(message: Any) -> Any:
    """What equality of two messages means (hashable): frames by :func:`frame_key`, events as
    JSON values (key order and ``1`` vs ``1.0`` do not matter)."""
    if isinstance(message, can.Message):
        return frame_key(message)
    try:
        return json.dumps(_canonical(message), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        return repr(message)


def show(message: Any, limit: int = 220) -> str:
    """One line for a report."""
    if isinstance(message, can.Message):
        text = frame_line(message)
    else:
        try:
            text = encode_event(message)
        except (TypeError, ValueError):
            text = repr(message)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def brief(message: Any, limit: int = 200) -> str:
    """A message in a listing: ``ride_end, ts 1767225608.132: {payload...}`` for an event
    (``source`` too when it is not ``les02``), the candump line for a frame."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return show(message, limit)
    head = f"{message['type']}, ts {message.get('ts')!r}"
    if message.get("source", "les02") != "les02":
        head += f", source {message.get('source')!r}"
    try:
        body = json.dumps(message.get("payload"), ensure_ascii=False)
    except (TypeError, ValueError):
        body = repr(message.get("payload"))
    text = f"{head}: {body}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def summarize(messages: Sequence[Any], limit: int = 8) -> str:
    """``position_sample 9,940, status 40, ride_end 3`` (events by type, frames by id)."""
    counts: Counter[str] = Counter()
    for m in messages:
        if isinstance(m, can.Message):
            counts[f"0x{m.arbitration_id:03X}"] += 1
        elif isinstance(m, dict):
            counts[str(m.get("type"))] += 1
        else:
            counts[type(m).__name__] += 1
    parts = [f"{name} {n:,}" for name, n in counts.most_common(limit)]
    if len(counts) > limit:
        parts.append(f"{len(counts) - limit} more kinds")
    what = "by id" if messages and isinstance(messages[0], can.Message) else "by type"
    return f"{what}: {', '.join(parts)}" if parts else "none"


def read_golden(path: Path) -> tuple[list[Any], list[Problem]]:
    """The messages of a golden file (events from .jsonl, frames from other formats)."""
    problems: list[Problem] = []
    reader = RecordingReader(str(path), on_problem=problems.append)
    try:
        items = list(reader)
    finally:
        reader.close()
    return items, problems


def write_golden(path: Path, messages: Sequence[Any]) -> None:
    """(Re)write a golden file with ``messages`` (a temporary file renamed over it)."""
    fmt = detect_format(str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".tmp-" + path.name)
    tmp.unlink(missing_ok=True)
    writer = open_writer(str(tmp), fmt, flush_interval=3600.0)
    try:
        writer.write(list(messages))
    finally:
        writer.close()
    os.replace(tmp, path)


def event_differences(expected: Any, actual: Any, prefix: str = "") -> list[str]:
    """Field paths where two JSON values differ: ``payload.distance_raw: 3500 -> 3490``."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out: list[str] = []
        for k in list(expected) + [k for k in actual if k not in expected]:
            path = f"{prefix}.{k}" if prefix else str(k)
            if k not in actual:
                out.append(f"{path}: {_j(expected[k])} in the golden file, missing in the output")
            elif k not in expected:
                out.append(f"{path}: not in the golden file, {_j(actual[k])} in the output")
            else:
                out.extend(event_differences(expected[k], actual[k], path))
        return out
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        out = []
        for i, (a, b) in enumerate(zip(expected, actual, strict=True)):
            out.extend(event_differences(a, b, f"{prefix}[{i}]"))
        return out
    if expected == actual and type(expected) is type(actual):
        return []
    if (
        isinstance(expected, int | float)
        and isinstance(actual, int | float)
        and not isinstance(expected, bool)
        and not isinstance(actual, bool)
        and expected == actual
    ):
        return []
    return [f"{prefix or 'message'}: golden {_j(expected)}, output {_j(actual)}"]


def frame_differences(expected: can.Message, actual: can.Message) -> list[str]:
    names = ("timestamp", "id", "extended", "remote", "error", "fd", "brs", "esi", "dlc", "data")
    out = []
    for name, a, b in zip(names, frame_key(expected), frame_key(actual), strict=True):
        if a != b:
            if name == "id":
                a, b = f"0x{a:03X}", f"0x{b:03X}"
            elif name == "data":
                a, b = a.hex().upper() or "(none)", b.hex().upper() or "(none)"
            out.append(f"{name}: golden {a}, output {b}")
    return out


def _j(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."
