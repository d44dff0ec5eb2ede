"""The ``dbc_decode`` node: examples/les02.dbc agrees with les02_parse sample for sample on a
recording (through the engine), a public-style DBC decodes exactly as cantools' own decoder
does, invalid frames carry their reason, and DBC problems are validation errors with
FILE:LINE:COL."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import textwrap
from pathlib import Path
from typing import Any

import can
import cantools
import pytest

from les02_flow.compiler import CompiledFlow, compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowErrors, load_flow_text
from les02_flow.nodes.dbc.decode import DbcDecode
from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim

from .opsutil import fr, make, run

ROOT = Path(__file__).resolve().parents[2]
LES02_DBC = ROOT / "examples" / "les02.dbc"
VEHICLE_DBC = ROOT / "tests" / "data" / "vehicle.dbc"


def compile_text(text: str, name: str = "dbc.yaml") -> CompiledFlow:
    return compile_document(load_flow_text(textwrap.dedent(text), name, env={}))


def run_flow(flow: CompiledFlow) -> Engine:
    async def main() -> Engine:
        engine = Engine(flow)
        await asyncio.wait_for(engine.run(), 60)
        return engine

    return asyncio.run(main())


def write_recording(path: Path) -> int:
    """A candump log of 3 s of a simulated LES02 (positions, status) plus error, system and
    invalid frames; returns the number of frames."""
    sim = ElevatorSim(ElevatorParams(duration=3.0, seed=7, dwell_min=0.5, dwell_max=1.0))
    t0 = 1_700_000_000.0
    frames = [
        can.Message(timestamp=t0 + f.t, arbitration_id=f.can_id, data=f.data, is_extended_id=False)
        for f in sim.frames()
    ]
    extra = [
        fr(0x20, bytes([0, 0, 0, 0, 0, 0, 0, 0xFF])),
        fr(0x21, bytes(range(8))),
        fr(0x10, bytes([1, 2, 3, 4, 5, 6, 7, 8])),
        fr(0x11, bytes(8)),
        fr(0x80, bytes(8)),  # bad DLC / length
        fr(0x81, bytes(2)),  # short
        fr(0x123, bytes(8)),  # unknown id
        fr(0x180, bytes(4)),  # the 0x180 rule: not in the DBC (strict_ids in les02_parse)
    ]
    for i, f in enumerate(extra):
        f.timestamp = t0 + 0.3 + 0.1 * i + 0.0005
    frames = sorted([*frames, *extra], key=lambda m: m.timestamp)
    with can.CanutilsLogWriter(str(path), channel="can0") as writer:
        for f in frames:
            writer.on_message_received(f)
    return len(frames)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_les02_dbc_agrees_with_les02_parse_sample_for_sample(tmp_path: Path) -> None:
    recording = tmp_path / "les02.log"
    n = write_recording(recording)
    out = {name: tmp_path / f"{name}.jsonl" for name in ("parsed", "decoded", "bad_dbc")}
    bad_frames = tmp_path / "bad_parse.log"
    flow = compile_text(
        f"""\
        version: 1
        nodes:
          bus: {{type: replay_source, path: '{recording}', speed: max, wires: [parse, dbc]}}
          parse:
            type: les02_parse
            strict_ids: true
            log_invalid: false
            wires: {{out: [parsed], invalid: [bad_parse]}}
          dbc:
            type: dbc_decode
            dbc: '{LES02_DBC}'
            wires: {{out: [decoded], invalid: [bad_dbc]}}
          parsed: {{type: file_recorder, path: '{out["parsed"]}'}}
          decoded: {{type: file_recorder, path: '{out["decoded"]}'}}
          bad_dbc: {{type: file_recorder, path: '{out["bad_dbc"]}'}}
          bad_parse: {{type: file_recorder, path: '{bad_frames}'}}
        """
    )
    engine = run_flow(flow)
    assert engine.counters()["bus"].emitted == n
    parsed = read_jsonl(out["parsed"])
    decoded = read_jsonl(out["decoded"])
    assert len(parsed) == len(decoded) > 1400
    types = {
        "POSITION": "position_sample",
        "STATUS": "status",
        "ERROR": "error",
        "SYSTEM": "system",
    }
    for p, d in zip(parsed, decoded, strict=True):
        _, kind, channel = d["payload"]["message"].split("_")
        assert p["ts"] == d["ts"]
        assert p["type"] == types[kind]
        assert p["payload"]["channel"] == channel.lower()
        if kind == "POSITION":
            assert d["payload"]["signals"] == {"position_raw": p["payload"]["position_raw"]}
            assert d["payload"]["units"] == {"position_raw": "counts"}
        else:
            assert d["payload"]["can_id"] == p["payload"]["can_id"]
            raw = d["payload"]["signals"]["data"]
            assert raw.to_bytes(8, "big").hex() == p["payload"]["data"]
    assert {p["type"] for p in parsed} == {"position_sample", "status", "error", "system"}
    # the frames les02_parse rejects are exactly those dbc_decode cannot decode
    rejected = [ln for ln in bad_frames.read_text(encoding="utf-8").splitlines() if "#" in ln]
    invalid = read_jsonl(out["bad_dbc"])
    assert len(rejected) == len(invalid) == 4
    assert [e["payload"]["reason"] for e in invalid] == [
        "bad_length",
        "bad_length",
        "unknown_id",
        "unknown_id",
    ]
    assert [e["payload"]["can_id"] for e in invalid] == [0x80, 0x81, 0x123, 0x180]


def vehicle_db() -> Any:
    """cantools' own database of the test DBC (loaded directly, not through the node)."""
    return cantools.database.load_file(str(VEHICLE_DBC))


def vehicle_frames() -> list[can.Message]:
    rng = random.Random(18)
    db = vehicle_db()
    frames = []
    for i in range(400):
        m = db.messages[i % len(db.messages)]
        data = bytes(rng.randrange(256) for _ in range(m.length))
        if m.name == "Diag":
            # multiplexer 1 or 2; the scaled FuelLevel hits its value table now and then
            data = bytes([1 + (i // 4) % 2]) + data[1:6] + bytes([(0, 255, 40)[i % 3]]) + data[7:]
        if m.name == "WheelSpeeds":
            data = data[:4] + struct.pack("<f", rng.uniform(-40, 60))
        frames.append(
            can.Message(
                timestamp=10.0 + i * 0.001,
                arbitration_id=m.frame_id,
                is_extended_id=m.is_extended_frame,
                data=data,
            )
        )
    return frames


def test_public_style_dbc_matches_cantools_own_decoder() -> None:
    db = vehicle_db()
    frames = vehicle_frames()
    node = make(DbcDecode, dbc=str(VEHICLE_DBC), source="car")
    out = run(node, frames)
    assert out["invalid"] == []
    assert len(out["out"]) == len(frames)
    for frame, event in zip(frames, out["out"], strict=True):
        message = db.get_message_by_frame_id(frame.arbitration_id)
        expected = message.decode(bytes(frame.data), decode_choices=False)
        names = message.decode(bytes(frame.data), decode_choices=True)
        p = event["payload"]
        assert (event["type"], event["ts"], event["source"]) == (
            "can_message",
            frame.timestamp,
            "car",
        )
        assert (p["message"], p["can_id"], p["extended"]) == (
            message.name,
            frame.arbitration_id,
            frame.is_extended_id,
        )
        assert p["signals"] == pytest.approx(expected)
        assert set(p["signals"]) == set(expected)
        choice_names = {k: str(v) for k, v in names.items() if not isinstance(v, (int, float))}
        assert p.get("choices", {}) == choice_names
        units = {s.name: s.unit for s in message.signals if s.unit and s.name in expected}
        assert p.get("units", {}) == units
        json.dumps(event, allow_nan=False)  # a valid JSON envelope
    # the multiplexer selects the signals
    diag = [e["payload"] for e in out["out"] if e["payload"]["message"] == "Diag"]
    assert {tuple(sorted(p["signals"])) for p in diag} == {
        ("BatteryVoltage", "Mux"),
        ("DoorOpen", "FuelLevel", "Mux", "OdometerKm"),
    }
    # a scaled signal with a value table: physical value in signals, the name in choices
    fuel = [(p["signals"]["FuelLevel"], p.get("choices", {}).get("FuelLevel")) for p in diag
            if "FuelLevel" in p["signals"]]  # fmt: skip
    assert {(-10.0, "Sensor_Fault"), (117.5, "Not_Available"), (10.0, None)} <= set(fuel)
    assert any(p.get("choices", {}).get("Gear") for p in (e["payload"] for e in out["out"]))


def test_messages_selects_and_the_rest_is_skipped() -> None:
    frames = vehicle_frames()[:8]
    node = make(DbcDecode, dbc=str(VEHICLE_DBC), messages=["EEC1"])
    out = run(node, frames)
    assert {e["payload"]["message"] for e in out["out"]} == {"EEC1"}
    assert out["invalid"] == []
    assert node.counters.extra == {"skipped": 6}


def test_invalid_reasons() -> None:
    frames = [
        fr(0x123, bytes(8)),
        fr(0xCF00400, bytes(8), is_extended_id=False),  # right number, wrong id kind
        fr(0x100, bytes(4)),
        fr(0x100, bytes(8), is_remote_frame=True),
        fr(0x100, bytes(8), is_error_frame=True),
    ]
    node = make(DbcDecode, dbc=str(VEHICLE_DBC))
    out = run(node, [*frames, "junk"])
    assert [e["payload"]["reason"] for e in out["invalid"]] == [
        "unknown_id",
        "unknown_id",
        "bad_length",
        "remote_frame",
        "error_frame",
        "malformed",
    ]
    first = out["invalid"][0]
    assert first["type"] == "can_invalid"
    assert first["payload"] == {
        "reason": "unknown_id",
        "detail": "11-bit id 0x123 is not in the DBC",
        "can_id": 0x123,
        "extended": False,
        "dlc": 8,
        "data": "00" * 8,
    }
    assert node.counters.dropped == 6
    assert node.counters.extra["invalid_unknown_id"] == 2
    longer = make(DbcDecode, dbc=str(VEHICLE_DBC), allow_excess=True)
    assert len(run(longer, [fr(0x300, bytes(12), is_fd=True)])["out"]) == 1


def test_dbc_problems_are_validation_errors_with_location(tmp_path: Path) -> None:
    broken = tmp_path / "broken.dbc"
    broken.write_text('VERSION ""\n\nBO_ 1 Foo: 8 ECU\n SG_ Bar : 0|8@1+ (1,0 [0|1] "" X\n')
    text = f"""\
        version: 1
        nodes:
          bus: {{type: can_source, interface: virtual, channel: x, wires: [a, b, c]}}
          a: {{type: dbc_decode, dbc: '{broken}'}}
          b: {{type: dbc_decode, dbc: '{tmp_path / "missing.dbc"}'}}
          c:
            type: dbc_decode
            dbc: '{VEHICLE_DBC}'
            messages: [EngineData, EngineDta]
        """
    with pytest.raises(FlowErrors) as info:
        compile_text(text, "d.yaml")
    errors = [str(e) for e in info.value.errors]
    assert len(errors) == 3, errors
    assert errors[0].startswith("d.yaml:4:30: node 'a': 'dbc': Value error, DBC file")
    assert "does not load" in errors[0]
    assert errors[1].startswith("d.yaml:5:30: node 'b': 'dbc': Value error, cannot read DBC file")
    assert errors[2].startswith("d.yaml:9:15: node 'c': 'messages': Value error, no message")
    assert "(did you mean 'EngineData'?)" in errors[2]


def test_kinds_are_checked() -> None:
    text = f"""\
        version: 1
        nodes:
          bus: {{type: can_source, interface: virtual, channel: x, wires: [parse]}}
          parse: {{type: les02_parse, wires: [dbc]}}
          dbc: {{type: dbc_decode, dbc: '{LES02_DBC}'}}
        """
    with pytest.raises(
        FlowErrors, match="carries event messages but 'dbc' \\(dbc_decode\\) takes frame"
    ):
        compile_text(text)
