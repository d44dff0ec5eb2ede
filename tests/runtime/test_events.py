"""The typed events (les02_flow.events): one TypedDict per event type the built-in nodes emit,
equal to docs/protocol.md's field tables and to what the nodes really emit."""

import functools
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, get_args, get_origin, get_type_hints

import can
import pytest

import les02_flow
from les02_flow import events
from les02_flow.events import KNOWN_TYPES, KnownEvent, make_event
from les02_flow.nodes.les02.codec import Les02Decoder
from les02_flow.nodes.ops.batch import batch_event
from les02_flow.nodes.rides.detector import RideDetector
from les02_flow.testing import run_nodes

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "docs" / "protocol.md"


@functools.cache
def hints_of(cls: Any) -> dict[str, Any]:
    return get_type_hints(cls)


@functools.cache
def typed_events() -> dict[str, type]:
    """event type name -> its envelope TypedDict, from the KnownEvent union."""
    out: dict[str, type] = {}
    for cls in get_args(KnownEvent):
        (name,) = get_args(get_type_hints(cls)["type"])
        out[name] = cls
    return out


def payload_of(name: str) -> Any:
    return get_type_hints(typed_events()[name])["payload"]


def problems(value: object, hint: Any, where: str) -> list[str]:
    """What in ``value`` does not fit the annotation ``hint`` (TypedDicts, Literal, unions,
    list/dict, scalars; an int fits float as in typing)."""
    origin = get_origin(hint)
    if hint is Any:
        return []
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        hints = hints_of(hint)
        out = [f"{where}: missing {k!r}" for k in hint.__required_keys__ - value.keys()]
        out += [f"{where}: unexpected {k!r}" for k in value.keys() - hints.keys()]
        for key in value.keys() & hints.keys():
            out += problems(value[key], hints[key], f"{where}.{key}")
        return out
    if origin is Literal:
        return [] if value in get_args(hint) else [f"{where}: {value!r} not in {get_args(hint)}"]
    if origin in (types.UnionType, typing.Union):
        if any(not problems(value, arm, where) for arm in get_args(hint)):
            return []
        return [f"{where}: {value!r} fits none of {hint}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {value!r} is not a list"]
        (item,) = get_args(hint)
        return [p for i, v in enumerate(value) for p in problems(v, item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {value!r} is not an object"]
        _k, item = get_args(hint)
        return [p for k, v in value.items() for p in problems(v, item, f"{where}.{k}")]
    if hint is type(None):
        return [] if value is None else [f"{where}: {value!r} is not null"]
    allowed: tuple[type, ...] = (int, float) if hint is float else (hint,)
    if isinstance(value, bool) and hint is not bool:
        return [f"{where}: {value!r} is a bool, not {hint.__name__}"]
    return [] if isinstance(value, allowed) else [f"{where}: {value!r} is not {hint.__name__}"]


def check(event: dict[str, Any]) -> None:
    cls = typed_events()[event["type"]]
    assert problems(event, cls, event["type"]) == []


def test_every_known_type_has_exactly_one_typed_event() -> None:
    assert set(typed_events()) == KNOWN_TYPES
    assert len(get_args(KnownEvent)) == len(KNOWN_TYPES)
    envelope = get_type_hints(events.EnvelopeFields)
    for cls in get_args(KnownEvent):
        hints = get_type_hints(cls)
        assert set(hints) == set(envelope) | {"type", "payload"}, cls
        assert typing.is_typeddict(hints["payload"]), cls


def test_the_typed_events_are_public() -> None:
    for name in events.__all__:
        assert hasattr(events, name), name
    for name in ("KnownEvent", "RideEndEvent", "RideEndPayload", "PositionSamplePayload"):
        assert getattr(les02_flow, name) is getattr(events, name)


def doc_tables() -> dict[str, list[list[str]]]:
    """Heading text -> the field names of each table under it (first column, backticked)."""
    out: dict[str, list[list[str]]] = {}
    heading = ""
    table: list[str] | None = None
    for line in PROTOCOL.read_text().splitlines():
        if line.startswith("#"):
            heading, table = line.lstrip("# "), None
            continue
        if not line.startswith("|"):
            table = None
            continue
        first = line.split("|")[1].strip()
        if table is None:
            table = []
            out.setdefault(heading, []).append(table)
        elif set(first) <= {"-", ":"} or first == "field":
            continue
        # a row like "`can_id`, `extended`, `dlc`" documents several fields
        table.extend(re.findall(r"`([a-z_]+)`", first))
    return out


DOC_SECTIONS = {
    "position_sample": ("`position_sample`", 0),
    "status": ("`status`, `error`, `system`", 0),
    "error": ("`status`, `error`, `system`", 0),
    "system": ("`status`, `error`, `system`", 0),
    "ride_start": ("`ride_start`", 0),
    "ride_end": ("`ride_end`", 0),
    "relevel": ("`relevel`", 0),
    "channel_mismatch": ("`channel_mismatch`", 0),
    "dropout": ("`dropout`", 0),
    "batch": ("`batch`", 0),
    "can_message": ("`can_message`, `can_invalid`", 0),
    "can_invalid": ("`can_message`, `can_invalid`", 1),
}


@pytest.mark.parametrize("name", sorted(DOC_SECTIONS))
def test_payload_fields_are_the_documented_ones(name: str) -> None:
    heading, index = DOC_SECTIONS[name]
    documented = doc_tables()[heading][index]
    assert sorted(documented) == sorted(get_type_hints(payload_of(name)))


def test_envelope_fields_are_the_documented_ones() -> None:
    (table,) = doc_tables()["Envelope"]
    declared = set(get_type_hints(events.EnvelopeFields)) - {"site"}  # site: docs/fleet.md
    assert sorted(table) == sorted(declared | {"type", "payload"})
    assert "site" in (ROOT / "docs" / "fleet.md").read_text()
    assert events.EnvelopeFields.__optional_keys__ == {"site"}


def test_the_checker_catches_what_it_should() -> None:
    """The check below is only worth something if it can fail."""

    class P(TypedDict):
        a: int
        b: Literal["x", "y"] | None
        c: NotRequired[list[float]]

    assert problems({"a": 1, "b": None, "c": [1, 2.5]}, P, "p") == []
    assert sorted(problems({"a": True, "b": "z", "d": 0}, P, "p")) == [
        "p.a: True is a bool, not int",
        "p.b: 'z' fits none of typing.Optional[typing.Literal['x', 'y']]",
        "p: unexpected 'd'",
    ]
    missing = problems({"b": "x", "c": ["1"]}, P, "p")
    assert missing == ["p: missing 'a'", "p.c[0]: '1' is not float"]
    ride_end = make_event("ride_end", 1.0, {"ride_id": "r"})
    assert problems(ride_end, events.RideEndEvent, "e")  # most fields missing


def test_events_the_nodes_emit_fit_their_types() -> None:
    """A replayed recording through les02_parse, ride_detect and dbc_decode: every event fits
    its TypedDict exactly (no missing, extra or mistyped field)."""
    got = run_nodes(
        {
            "src": {
                "type": "replay_source",
                "path": str(ROOT / "examples" / "les02-rides.log"),
                "speed": "max",
                "wires": ["parse", "dbc"],
            },
            "parse": {"type": "les02_parse", "log_invalid": False, "wires": ["rides"]},
            "rides": {"type": "ride_detect", "wires": ["batch", "out"]},
            "batch": {"type": "batch", "count": 500, "wires": ["out"]},
            "dbc": {
                "type": "dbc_decode",
                "dbc": str(ROOT / "examples" / "les02.dbc"),
                "log_invalid": False,
                "wires": {"out": ["out"], "invalid": ["out"]},
            },
            "out": {"type": "collect"},
        },
        timeout=60,
    )
    seen = {e["type"] for e in got["out"]}
    assert {"position_sample", "status", "ride_start", "ride_end", "relevel", "dropout"} <= seen
    assert {"batch", "can_message", "can_invalid"} <= seen
    for event in got["out"]:
        check(event)


def test_frame_and_mismatch_events_fit_their_types() -> None:
    decoder = Les02Decoder()
    for can_id in (0x10, 0x21, 0x30, 0x81):
        dlc = 4 if can_id & 0xFE == 0x80 else 8
        msg = can.Message(arbitration_id=can_id, is_extended_id=False, data=bytes(range(dlc)))
        event = decoder.decode(msg)
        assert isinstance(event, dict)
        check(event)
    det = RideDetector()
    out: list[dict[str, Any]] = []
    t0 = 1_737_000_000.0
    for k in range(3000):  # standing, the slave 50 counts off for 1.5 s
        t = k * 0.002
        offset = 50 if 2.0 <= t < 3.5 else 2
        out += det.feed(t0 + t, "slave" if k % 2 else "master", 1000 + (offset if k % 2 else 0))
    out += det.flush()
    mismatches = [e for e in out if e["type"] == "channel_mismatch"]
    assert [e["payload"]["state"] for e in mismatches] == ["begin", "end"]
    for event in out:
        check(event)
    check(batch_event(mismatches, "end", None))
