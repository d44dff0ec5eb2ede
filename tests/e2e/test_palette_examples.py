"""The palette examples (examples/phone-10hz.yaml, route.yaml, dbc.yaml; test_cli.py validates
them with the CLI): each runs live (simulator -> virtual bus -> the example's graph), and a
replay of the recorded frames at full speed through the same example gives the same output,
message for message. A real WebSocket client gets the phone's 10 Hz stream."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import statistics
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from websockets.asyncio.client import connect

from les02_flow.commands.replay import replace_sources
from les02_flow.compiler import CompiledFlow, compile_document
from les02_flow.engine import Engine
from les02_flow.flowfile import FlowDocument, apply_sets, load_flow, load_flow_text
from les02_flow.nodes.ws.sink import WsSink
from les02_flow.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def load(name: str, sets: list[str], env: dict[str, str] | None = None) -> FlowDocument:
    doc = load_flow(EXAMPLES / name, env=env or {})
    apply_sets(doc, sets)
    assert not doc.errors, doc.errors
    return doc


def tap(doc: FlowDocument, node: str, port: str, tap_id: str, path: Path) -> None:
    """Wire ``node``'s ``port`` also into a file_recorder writing ``path``."""
    nodes = doc.data["nodes"]
    wires = nodes[node].get("wires")
    if wires is None:
        wires = {}
    if isinstance(wires, list):
        wires = {"out": wires}
    wires = {**wires, port: [*wires.get(port, []), tap_id]}
    nodes[node]["wires"] = wires
    nodes[tap_id] = {"type": "file_recorder", "path": str(path)}


def compile_doc(doc: FlowDocument) -> CompiledFlow:
    return compile_document(doc)


def live_sets(channel: str) -> list[str]:
    return [
        f"sim.channel={channel}",
        f"bus.channel={channel}",
        "sim.duration=4",
        "sim.dwell_min=0.5",
        "sim.dwell_max=1.0",
        "sim.seed=18",
        "sim.speed=8",
        "sim.start_delay=0.3",  # the bus opens after the simulator (both are sources)
    ]


async def run_live(
    flow: CompiledFlow, during: Callable[[Engine], Any] | None = None, timeout: float = 90
) -> Engine:
    """Start the flow, wait until the simulator sent everything and the bus read it, stop."""
    engine = Engine(flow, stats_interval=0)
    await engine.start()
    try:
        client = asyncio.ensure_future(during(engine)) if during else None
        await asyncio.wait_for(engine.nodes["sim"].finished(), timeout)
        counters = engine.counters()
        await wait_until(
            lambda: counters["bus"].emitted >= counters["sim"].emitted,
            "the bus reading every simulated frame",
            timeout=30,
        )
        if client is not None:
            await asyncio.wait_for(client, 30)
    finally:
        await engine.stop()
    return engine


def run_replay(doc: FlowDocument, frames: Path) -> Engine:
    """What `les02-flow replay FRAMES --flow EXAMPLE --speed max` does (recorders kept)."""
    replace_sources(doc, {"path": str(frames), "speed": "max"}, keep_recorders=True)
    flow = compile_doc(doc)

    async def main() -> Engine:
        engine = Engine(flow, stats_interval=0)
        await asyncio.wait_for(engine.run(), 90)
        return engine

    return asyncio.run(main())


def events(path: Path) -> list[tuple[Any, ...]]:
    """(type, ts rounded to the recording's µs, payload) of every event in a .jsonl file."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        out.append((e["type"], round(e["ts"], 6), json.dumps(e["payload"], sort_keys=True)))
    return out


def test_phone_10hz_live_and_replayed(tmp_path: Path) -> None:
    channel = f"phone-{uuid.uuid4().hex}"
    sets = [*live_sets(channel), "ws.host=127.0.0.1", "ws.port=0", "phone.host=127.0.0.1"]
    sets += ["phone.port=0", "sim.speed=1", "sim.duration=2.5"]  # the phone sees real time
    doc = load("phone-10hz.yaml", sets)
    frames, live_out = tmp_path / "frames.log", tmp_path / "live.jsonl"
    tap(doc, "bus", "out", "tap_frames", frames)
    tap(doc, "ten_hz", "out", "tap_phone", live_out)
    received: list[dict[str, Any]] = []

    async def phone(engine: Engine) -> None:
        sink = engine.nodes["phone"]
        assert isinstance(sink, WsSink)
        port = sink.port
        async with connect(f"ws://127.0.0.1:{port}/") as ws:
            while len(received) < 10:
                received.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))

    engine = asyncio.run(run_live(compile_doc(doc), phone))
    live = events(live_out)
    c = engine.counters()
    positions = c["positions"].emitted
    assert positions > 1000
    # 10 Hz per channel: at most one sample per 0.1 s of frame time, and every interval has one
    for ch in ("master", "slave"):
        ts = [t for (_, t, p) in live if json.loads(p)["channel"] == ch]
        span = ts[-1] - ts[0]
        assert abs(len(ts) - span * 10) <= 2, (len(ts), span)
        gaps = [b - a for a, b in itertools.pairwise(ts)]
        assert 0.09 <= statistics.median(gaps) <= 0.11, gaps
    assert {t for (t, _, _) in live} == {"position_sample"}
    # a real WebSocket client on the phone port got that stream (from where it connected)
    assert {e["type"] for e in received} == {"position_sample"}
    got = [
        (e["type"], round(e["ts"], 6), json.dumps(e["payload"], sort_keys=True)) for e in received
    ]
    start = live.index(got[0])
    assert live[start : start + len(got)] == got

    replay_out = tmp_path / "replay.jsonl"
    doc = load("phone-10hz.yaml", ["ws.host=127.0.0.1", "ws.port=0", "phone.host=127.0.0.1"])
    apply_sets(doc, ["phone.port=0"])
    tap(doc, "ten_hz", "out", "tap_phone", replay_out)
    run_replay(doc, frames)
    assert events(replay_out) == live


def test_route_live_and_replayed(tmp_path: Path) -> None:
    channel = f"route-{uuid.uuid4().hex}"
    diag_live = tmp_path / "diag-live.jsonl"
    # ride detection needs real-time frames (host stamps at 250 Hz): a short shaft at speed 1
    sets = [*live_sets(channel), "rides_ws.host=127.0.0.1", "rides_ws.port=0", "sim.speed=1"]
    sets += ["sim.dwell_min=0.6", "sim.dwell_max=0.6", "rides.stop_time=0.3", "sim.trips=2"]
    sets += ["sim.duration=null"]
    doc = load("route.yaml", sets, env={"LES02_DIAGNOSTICS": str(diag_live)})
    doc.data["nodes"]["sim"]["floors_mm"] = [0.0, 600.0]
    frames, rides_live = tmp_path / "frames.log", tmp_path / "rides-live.jsonl"
    tap(doc, "bus", "out", "tap_frames", frames)
    tap(doc, "route", "rides", "tap_rides", rides_live)
    engine = asyncio.run(run_live(compile_doc(doc)))
    rides, diag = events(rides_live), events(diag_live)
    assert {t for (t, _, _) in rides} >= {"ride_start", "ride_end"}
    assert {t for (t, _, _) in rides} <= {"ride_start", "ride_end", "relevel"}
    assert [t for (t, _, _) in rides].count("ride_end") == 2
    assert "status" in {t for (t, _, _) in diag}
    assert {t for (t, _, _) in diag} <= {"status", "error", "system", "channel_mismatch", "dropout"}
    c = engine.counters()
    # every event went to exactly one port; position samples to 'otherwise' (unwired)
    assert c["route"].received == c["route"].emitted
    assert c["route"].received == c["rides"].emitted

    diag_replay, rides_replay = tmp_path / "diag-replay.jsonl", tmp_path / "rides-replay.jsonl"
    doc = load(
        "route.yaml",
        ["rides_ws.host=127.0.0.1", "rides_ws.port=0", "rides.stop_time=0.3"],
        env={"LES02_DIAGNOSTICS": str(diag_replay)},
    )
    tap(doc, "route", "rides", "tap_rides", rides_replay)
    run_replay(doc, frames)
    assert len(events(diag_replay)) == len(diag)
    for a, b in zip(events(diag_replay), diag, strict=True):
        assert a[:2] == b[:2]
        assert close(json.loads(a[2]), json.loads(b[2])), (a, b)
    # ride payloads carry values ride_detect computes from timestamps (the recording keeps
    # them to the µs): the same rides, routed the same way, whatever the last digits
    replayed, lived = ride_keys(rides_replay), ride_keys(rides_live)
    assert [k[0::2] for k in replayed] == [k[0::2] for k in lived]
    assert all(abs(a[1] - b[1]) <= 5e-6 for a, b in zip(replayed, lived, strict=True))


def close(a: Any, b: Any) -> bool:
    """Equal, floats within 5 µs (times derived from µs-rounded recorded timestamps)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 5e-6
    return bool(a == b)


def ride_keys(path: Path) -> list[tuple[Any, ...]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        p = e["payload"]
        out.append((e["type"], e["ts"], p.get("direction")))
    return out


def test_dbc_live_and_replayed(tmp_path: Path) -> None:
    channel = f"dbc-{uuid.uuid4().hex}"
    dbc = str(EXAMPLES / "les02.dbc")
    sets = [*live_sets(channel), "ws.host=127.0.0.1", "ws.port=0"]
    doc = load("dbc.yaml", sets, env={"LES02_DBC": dbc})
    frames, live_out = tmp_path / "frames.log", tmp_path / "live.jsonl"
    tap(doc, "bus", "out", "tap_frames", frames)
    tap(doc, "decode", "out", "tap_decoded", live_out)
    engine = asyncio.run(run_live(compile_doc(doc)))
    live = events(live_out)
    names = {json.loads(p)["message"] for (_, _, p) in live}
    assert names == {
        "LES02_POSITION_MASTER",
        "LES02_POSITION_SLAVE",
        "LES02_STATUS_MASTER",
        "LES02_STATUS_SLAVE",
    }
    assert len(live) == engine.counters()["bus"].emitted
    assert engine.counters()["decode"].dropped == 0

    replay_out = tmp_path / "replay.jsonl"
    doc = load("dbc.yaml", ["ws.host=127.0.0.1", "ws.port=0"], env={"LES02_DBC": dbc})
    tap(doc, "decode", "out", "tap_decoded", replay_out)
    run_replay(doc, frames)
    assert events(replay_out) == live


def test_the_recipes_in_flows_md_work_in_the_default_flow() -> None:
    """Every YAML block of docs/flows.md's "Recipes", pasted into flows/default.yaml as the
    text says, validates (wire targets a block does not define become debug nodes)."""
    text = (ROOT / "docs" / "flows.md").read_text(encoding="utf-8")
    recipes = text.split("### Recipes", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```yaml\n(.*?)```", recipes, flags=re.S)
    assert len(blocks) == 4
    for block in blocks:
        block = block.replace("my-car.dbc", str(ROOT / "tests" / "data" / "vehicle.dbc"))
        added = yaml.safe_load(textwrap.dedent(block))
        data = yaml.safe_load((ROOT / "flows" / "default.yaml").read_text(encoding="utf-8"))
        data["nodes"].update(added)
        for node in list(added.values()):
            wires = node.get("wires") or []
            targets = wires if isinstance(wires, list) else [t for ts in wires.values() for t in ts]
            for t in targets:
                data["nodes"].setdefault(t, {"type": "debug"})
        doc = load_flow_text(yaml.safe_dump(data), "recipe.yaml", env={})
        flow = compile_document(doc)
        assert set(added) <= set(flow.nodes), block
