"""Bad input never crashes (issue 9, item 1): property-based tests with hypothesis.

* random mutations of every shipped flow (text edits and structural edits) -> the loader and
  compiler either accept the flow or raise :class:`FlowErrors` whose every error has a
  location in the file; never another exception;
* random CAN frames (any id, extended, FD, 0..64 bytes, error and remote frames) through the
  ``les02_parse`` node -> nothing raises, every frame goes to exactly one port and every
  rejected one is counted;
* random byte streams, in random chunks, into the ECUconnect :class:`Decoder` -> only
  :class:`EcuconnectProtocolError` (and it stays failed);
* randomly corrupted recordings of every format -> :class:`RecordingReader` yields only
  frames/events, reports what it skips, and ``replay_source`` in a running engine completes.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from pathlib import Path
from typing import Any

import can
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from les02_flow.compiler import compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowDocument, FlowErrors, load_flow_text
from les02_flow.node import Context
from les02_flow.nodes.ecuconnect.codec import Decoder, EcuconnectProtocolError, encode
from les02_flow.nodes.les02.parse import Les02Parse, Les02ParseConfig
from les02_flow.nodes.recording.formats import FORMATS, Problem, RecordingReader, open_writer
from les02_flow.registry import default_registry
from les02_flow.testing import Collect, registry_with

ROOT = Path(__file__).resolve().parents[2]
FLOW_TEXTS = {
    p.name: p.read_text()
    for p in sorted([*ROOT.glob("flows/*.yaml"), *ROOT.glob("examples/*.yaml")])
    if not p.name.endswith("_test.yaml")  # flow test files are not flows
}
REGISTRY = default_registry()
FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


# -- flows -------------------------------------------------------------------------------------


def check_flow(text: str) -> None:
    """The property: success, or FlowErrors that all point into the file."""
    doc = load_flow_text(text, "fuzz.yaml", env={})
    try:
        compile_document(doc, REGISTRY)
    except FlowErrors as exc:
        assert exc.errors, "FlowErrors without errors"
        for err in exc.errors:
            assert err.location.file in ("fuzz.yaml",), err
            assert err.location.line >= 1, f"error without a line: {err}"
            assert err.message.strip(), err


SNIPPETS = [
    "!!python/object/apply:os.system ['echo pwned']",
    "!!python/name:os.system",
    "!custom 1",
    "&a [*a]",
    "*nope",
    "{",
    "[",
    "'unterminated",
    "- x",
    "${UNSET_VAR}",
    "${X:?must be set}",
    "$${literal}",
    "0x80",
    "-1",
    "1e400",
    "null",
    "~",
    "yes",
    "\t",
    "nodes:",
    "type: ws_sink",
    "wires: {out: [nowhere]}",
    "wires: [parse, parse]",
    "\x00",
    "\ufeff",
    "? [complex]\n: key",
    "<<: {a: 1}",
    "--- \n---",
    "%YAML 1.1",
]


@st.composite
def mutated_flow(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(FLOW_TEXTS)))
    lines = FLOW_TEXTS[name].splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "dup", "insert", "replace_value", "indent", "cut"]))
        line = lines[i]
        if op == "delete":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "insert":
            piece = draw(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=12)))
            col = draw(st.integers(0, len(line)))
            lines[i] = line[:col] + piece + line[col:]
        elif op == "replace_value" and ":" in line:
            key = line.split(":", 1)[0]
            value = draw(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=12)))
            lines[i] = f"{key}: {value}\n"
        elif op == "indent":
            lines[i] = draw(st.sampled_from(["", " ", "    ", "\t"])) + line.lstrip()
        else:
            lines[i] = line[: draw(st.integers(0, len(line)))]
    return "".join(lines)


JSONISH = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=10)
    | st.sampled_from(["virtual", "les02", "out", "invalid", "parse", "ws", "auto", "8765"]),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=6,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def restructured_flow(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(FLOW_TEXTS)))
    data = yaml.safe_load(FLOW_TEXTS[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        value = draw(JSONISH)
        if not path:
            data = value
            continue
        parent = data
        try:
            for key in path[:-1]:
                parent = parent[key]
            if draw(st.booleans()):
                parent[path[-1]] = value
            elif isinstance(parent, dict):
                del parent[path[-1]]
            else:
                parent.pop(path[-1])
        except (KeyError, IndexError, TypeError):
            continue
    return yaml.safe_dump(data, allow_unicode=True)


@FUZZ
@given(mutated_flow())
def test_text_mutations_of_flows_fail_only_with_located_errors(text: str) -> None:
    check_flow(text)


@FUZZ
@given(restructured_flow())
def test_structural_mutations_fail_only_with_located_errors(text: str) -> None:
    check_flow(text)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_is_never_a_traceback(text: str) -> None:
    check_flow(text)


def test_recursive_alias_is_a_located_error_not_a_recursion_error() -> None:
    """Found by the text mutations: ``&a [*a]`` made the loader recurse until it crashed."""
    errors = []
    for text in ("version: 1\nnodes: &a\n  x: *a\n", "version: 1\nnodes:\n  x: &a [*a]\n"):
        with pytest.raises(FlowErrors) as info:
            compile_document(load_flow_text(text, "fuzz.yaml", env={}), REGISTRY)
        errors += [str(e) for e in info.value.errors]
    assert any(e.startswith("fuzz.yaml:2:8: node 'x': recursive YAML alias") for e in errors)
    assert any(e.startswith("fuzz.yaml:3:6: node 'x': recursive YAML alias") for e in errors)


def test_every_shipped_flow_is_valid() -> None:
    """The seeds of the mutations are valid (so the mutations test something)."""
    for name, text in FLOW_TEXTS.items():
        doc = load_flow_text(text, name, env={})
        compile_document(doc, REGISTRY)


# -- CAN frames into les02_parse ------------------------------------------------------------------


@st.composite
def can_frames(draw: st.DrawFn) -> can.Message:
    kind = draw(st.sampled_from(["les02", "classic", "ext", "fd", "error", "remote", "weird"]))
    extended = kind == "ext" or (kind == "weird" and draw(st.booleans()))
    if kind == "les02":
        can_id = draw(st.sampled_from([0x10, 0x11, 0x20, 0x21, 0x30, 0x31, 0x80, 0x81, 0x180]))
    else:
        can_id = draw(st.integers(0, 0x1FFFFFFF if extended else 0x7FF))
    fd = kind == "fd" or (kind == "weird" and draw(st.booleans()))
    data = draw(st.binary(max_size=64 if fd or kind == "weird" else 8))
    msg = can.Message(
        timestamp=draw(st.floats(allow_nan=True, allow_infinity=True)),
        arbitration_id=can_id,
        is_extended_id=extended,
        is_fd=fd,
        is_error_frame=kind == "error",
        is_remote_frame=kind == "remote",
        data=data if kind != "remote" else None,
        check=False,
    )
    if kind == "weird":  # a DLC that disagrees with the data, as a broken driver may deliver
        msg.dlc = draw(st.integers(0, 64))
    return msg


@FUZZ
@given(st.lists(can_frames(), max_size=40))
def test_random_frames_never_raise_in_les02_parse(frames: list[can.Message]) -> None:
    from reactivex.subject import Subject

    node = Les02Parse(
        "parse", Les02ParseConfig(log_invalid=False), Context("parse", logging.getLogger("fuzz"))
    )
    subject: Subject[can.Message] = Subject()
    ports = node.build(subject)
    out: list[Any] = []
    invalid: list[Any] = []
    errors: list[Exception] = []
    ports["out"].subscribe(out.append, errors.append)
    ports["invalid"].subscribe(invalid.append, errors.append)
    for frame in frames:
        subject.on_next(frame)
    assert not errors
    assert node.counters.errors == 0, "a frame made the decoder raise"
    assert len(out) + len(invalid) == len(frames)
    assert node.counters.dropped == len(invalid)
    per_reason = sum(v for k, v in node.counters.extra.items() if k.startswith("invalid_"))
    assert per_reason == len(invalid)
    for event in out:
        assert event["type"] in ("position_sample", "status", "error", "system")


# -- ECUconnect byte streams -----------------------------------------------------------------------


def valid_stream(frames: list[can.Message]) -> bytes:
    """The frames the encoder accepts, encoded back to back."""
    out = []
    for m in frames:
        try:
            out.append(encode(m))
        except EcuconnectProtocolError:
            continue
    return b"".join(out)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=400),
        st.lists(can_frames(), max_size=10).map(valid_stream),
    ),
    st.lists(st.integers(0, 400), max_size=5),
    st.lists(st.tuples(st.integers(0, 399), st.integers(0, 255)), max_size=4),
)
def test_random_byte_streams_raise_only_the_protocol_error(
    data: bytes, cuts: list[int], flips: list[tuple[int, int]]
) -> None:
    buf = bytearray(data)
    for pos, value in flips:
        if pos < len(buf):
            buf[pos] = value
    bounds = sorted({0, len(buf), *(c for c in cuts if c <= len(buf))})
    decoder = Decoder(channel="fuzz")
    failed = False
    for a, b in itertools.pairwise(bounds):
        try:
            for msg in decoder.feed(bytes(buf[a:b])):
                assert isinstance(msg, can.Message)
        except EcuconnectProtocolError:
            failed = True
            break
    if failed:  # a failed decoder stays failed with the same documented error
        with pytest.raises(EcuconnectProtocolError):
            decoder.feed(b"\x00")


# -- corrupt recordings ---------------------------------------------------------------------------

SUFFIXES = [".log", ".asc", ".csv", ".trc", ".blf", ".log.gz", ".jsonl", ".db"]


def sample_frames(n: int = 60) -> list[can.Message]:
    return [
        can.Message(
            timestamp=1000.0 + i * 0.01,
            arbitration_id=0x80 + (i & 1),
            is_extended_id=False,
            data=bytes([0, 0, i & 0xFF, 0]),
        )
        for i in range(n)
    ]


def sample_events(n: int = 30) -> list[dict[str, Any]]:
    return [
        {"proto": 1, "type": "status", "ts": 1000.0 + i, "source": "les02", "payload": {"i": i}}
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def clean_recordings(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    base = tmp_path_factory.mktemp("clean")
    out: dict[str, bytes] = {}
    for suffix in SUFFIXES:
        path = base / f"r{suffix}"
        writer = open_writer(str(path), FORMATS[suffix])
        writer.write(sample_events() if suffix == ".jsonl" else sample_frames())
        writer.close()
        out[suffix] = path.read_bytes()
    return out


def read_all(path: Path) -> tuple[list[Any], list[Problem]]:
    problems: list[Problem] = []
    try:
        reader = RecordingReader(str(path), problems.append)
    except (OSError, ValueError):
        return [], problems  # documented: the file cannot be read at all
    items = list(reader)
    assert reader.problems == len(problems)
    return items, problems


@FUZZ
@given(
    st.sampled_from(SUFFIXES),
    st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=6),
    st.one_of(st.none(), st.floats(0, 1)),
    st.binary(max_size=20),
)
def test_corrupt_recordings_are_reported_and_skipped(
    clean_recordings: dict[str, bytes],
    tmp_path_factory: pytest.TempPathFactory,
    suffix: str,
    flips: list[tuple[float, int]],
    cut: float | None,
    junk: bytes,
) -> None:
    data = bytearray(clean_recordings[suffix])
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    if cut is not None:
        del data[int(cut * len(data)) :]
    data += junk
    path = tmp_path_factory.mktemp("corrupt") / f"c{suffix}"
    path.write_bytes(bytes(data))
    items, problems = read_all(path)
    for item in items:
        assert isinstance(item, dict if suffix == ".jsonl" else can.Message)
    for p in problems:
        assert str(path) in str(p)


def test_replay_source_completes_over_a_corrupted_recording(tmp_path: Path) -> None:
    """A recording with garbage spliced in at random places still replays what is intact."""
    rng = random.Random(9)
    path = tmp_path / "rec.log"
    writer = open_writer(str(path), FORMATS[".log"])
    writer.write(sample_frames(500))
    writer.close()
    lines = path.read_bytes().splitlines(keepends=True)
    for _ in range(40):
        i = rng.randrange(len(lines))
        lines[i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 30))) + b"\n"
    path.write_bytes(b"".join(lines)[:-7])  # and a torn last line
    flow = compile_document(
        FlowDocument(
            path="t",
            data={
                "version": 1,
                "nodes": {
                    "rp": {
                        "type": "replay_source",
                        "path": str(path),
                        "speed": "max",
                        "wires": ["sink"],
                    },
                    "sink": {"type": "collect"},
                },
            },
        ),
        registry_with(),
    )
    engine = Engine(flow)
    Collect.received.clear()
    assert asyncio.run(asyncio.wait_for(engine.run(), 30)) == "all sources finished"
    counters = engine.nodes["rp"].counters
    got = Collect.received["sink"]
    assert 400 < len(got) < 500
    assert counters.extra["corrupt"] >= 500 - len(got) - 1
    assert counters.errors == counters.extra["corrupt"]
