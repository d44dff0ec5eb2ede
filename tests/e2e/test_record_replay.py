"""End to end: record with the real CLI, kill it (-9 and TERM), replay through the default flow.

Python-can's virtual bus lives inside one process, so every recording process here runs its
own simulator (les02_sim -> can_source -> file_recorder) in the same flow.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import can
import pytest
import yaml

from les02_flow.nodes.debug import format_frame
from les02_flow.nodes.les02.codec import Les02Decoder
from les02_flow.nodes.les02.elevator import ElevatorSim
from les02_flow.nodes.les02.sim import Les02SimConfig
from les02_flow.nodes.recording.formats import Problem, RecordingReader

ROOT = Path(__file__).resolve().parents[2]
SEED = 5


def recording_flow(tmp_path: Path, channel: str, *, default: bool = False) -> Path:
    """A flow that simulates 5,000 frames/s and records the raw bus to tmp_path/rec.log;
    with ``default`` it is flows/default.yaml plus that recorder and a .jsonl of the events."""
    if default:
        data = yaml.safe_load((ROOT / "flows" / "default.yaml").read_text())
        nodes = data["nodes"]
        nodes["ws"].update(host="127.0.0.1", port=0)
        if "store" in nodes:
            nodes["store"]["path"] = str(tmp_path / "rides.sqlite")
        nodes["parse"]["wires"]["out"].append("live")
        nodes["live"] = {"type": "file_recorder", "path": str(tmp_path / "live.jsonl")}
    else:
        data = {"version": 1, "name": "rec", "nodes": {}}
        nodes = data["nodes"]
        nodes["bus"] = {"type": "can_source"}
    nodes["sim"] = {"type": "les02_sim", "channel": channel, "seed": SEED, "rate_hz": 2500}
    nodes["bus"].update(interface="virtual", channel=channel)
    nodes["bus"]["wires"] = [*nodes["bus"].get("wires", []), "recorder"]
    nodes["recorder"] = {
        "type": "file_recorder",
        "path": str(tmp_path / "rec.log"),
        "flush_interval": 0.2,
    }
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start(cli_cmd: list[str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*cli_cmd, *args, "--stats-interval", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_growth(path: Path, proc: subprocess.Popen[str], min_bytes: int) -> int:
    """Wait until ``path`` holds at least ``min_bytes`` (flushed); returns the size seen."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        size = path.stat().st_size if path.exists() else 0
        if size >= min_bytes:
            return size
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"{path} did not grow: {proc.communicate()[1]}")


def read(path: Path) -> tuple[list[can.Message], list[Problem]]:
    problems: list[Problem] = []
    return list(RecordingReader(str(path), on_problem=problems.append)), problems


def sim_frames(n: int) -> list[tuple[int, bytes]]:
    sim = ElevatorSim(Les02SimConfig(seed=SEED, rate_hz=2500).params())
    out = []
    for frame in sim.frames():
        out.append((frame.can_id, frame.data))
        if len(out) >= n:
            break
    return out


def test_sigkill_leaves_a_readable_file_with_everything_flushed(
    cli_cmd: list[str], tmp_path: Path
) -> None:
    flow = recording_flow(tmp_path, "rr-kill")
    proc = start(cli_cmd, "run", str(flow))
    rec = tmp_path / "rec.log"
    try:
        flushed = wait_for_growth(rec, proc, 60_000)  # a few flushes at 5,000 frames/s
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
    frames, problems = read(rec)
    assert all("unterminated last line" in p.message for p in problems), problems
    complete_lines = rec.read_bytes()[:flushed].count(b"\n")
    assert len(frames) >= complete_lines > 1000
    assert [(m.arbitration_id, bytes(m.data)) for m in frames] == sim_frames(len(frames))


def test_sigterm_at_5000_frames_per_second_writes_every_accepted_frame(
    cli_cmd: list[str], tmp_path: Path
) -> None:
    flow = recording_flow(tmp_path, "rr-term")
    proc = start(cli_cmd, "run", str(flow))
    rec = tmp_path / "rec.log"
    try:
        wait_for_growth(rec, proc, 100_000)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    found = re.search(
        r"file_recorder 'recorder': stopped: (\d+) accepted, (\d+) written, (\d+) dropped", err
    )
    assert found, err
    accepted, written, dropped = map(int, found.groups())
    frames, problems = read(rec)
    assert problems == []
    assert len(frames) == accepted == written > 2000
    assert dropped == 0
    assert [(m.arbitration_id, bytes(m.data)) for m in frames] == sim_frames(len(frames))


def test_record_command_duration_and_errors(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    out = tmp_path / "new" / "dir" / "bus-{start:%Y%m%d}.asc"
    done = cli("record", str(out), "--channel", "rr-cli", "--duration", "0.5")
    assert done.returncode == 0, done.stderr
    assert "0.5 s elapsed (duration), stopping" in done.stderr
    (made,) = list((tmp_path / "new" / "dir").iterdir())
    assert made.name.startswith("bus-20") and made.name.endswith(".asc")
    assert read(made) == ([], [])  # a finalised, empty ASC file
    blocker = tmp_path / "plain-file"
    blocker.write_text("")
    done = cli("record", str(blocker / "x.log"), "--duration", "0.5")
    assert done.returncode == 1
    assert f"cannot create recording '{blocker}" in done.stderr
    done = cli("record", "x.wav")
    assert done.returncode == 1
    assert "unknown recording format in 'x.wav'" in done.stderr


def test_replay_command_prints_the_frames(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    path = tmp_path / "s.log"
    lines = [
        f"({1737319234 + i * 0.002:.6f}) can0 08{i & 1}#0000{i & 0xFF:02X}00\n" for i in range(300)
    ]
    path.write_text("".join(lines) + "(1737319235.000000) can0 0")  # torn last line
    done = cli("replay", str(path), "--speed", "max", "--progress", "0")
    assert done.returncode == 0, done.stderr
    frames, _ = read(path)
    assert done.stdout.splitlines() == [format_frame(m) for m in frames]
    assert len(frames) == 300
    assert "unterminated last line" in done.stderr


def test_record_kill_and_replay_through_the_default_flow(
    cli: Callable[..., subprocess.CompletedProcess[str]], cli_cmd: list[str], tmp_path: Path
) -> None:
    """The issue's check: record a live default-flow session, kill it, replay it through the
    default flow as fast as possible, compare what comes out with what went in."""
    live_flow = recording_flow(tmp_path, "rr-default", default=True)
    proc = start(cli_cmd, "run", str(live_flow))
    try:
        wait_for_growth(tmp_path / "rec.log", proc, 80_000)
        wait_for_growth(tmp_path / "live.jsonl", proc, 10_000)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=20)
    # the replay flow: flows/default.yaml, plus a .jsonl of what the parser emits
    data = yaml.safe_load((ROOT / "flows" / "default.yaml").read_text())
    data["nodes"]["parse"]["wires"]["out"].append("out")
    data["nodes"]["out"] = {"type": "file_recorder", "path": str(tmp_path / "out.jsonl")}
    replay_flow = tmp_path / "replay.yaml"
    replay_flow.write_text(yaml.safe_dump(data))
    # flows/default.yaml's own raw recorder (if any) must not write into the repository
    off = ["--set", "recorder.disabled=true"] if "recorder" in data["nodes"] else []
    if "store" in data["nodes"]:
        off += ["--set", f"store.path={tmp_path / 'replay-rides.sqlite'}"]
    done = cli(
        "replay", str(tmp_path / "rec.log"), "--flow", str(replay_flow), "--speed", "max",
        "--keep-recorders", "--set", "ws.host=127.0.0.1", "--set", "ws.port=0", *off,
        "--stats-interval", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "all sources finished" in done.stderr
    went_in, _ = read(tmp_path / "rec.log")
    decoder = Les02Decoder()
    expected = [decoder.decode(m) for m in went_in]
    came_out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert came_out == expected
    # the events the live flow produced (up to its last flush) match the replay's, in order
    live, _ = read_events(tmp_path / "live.jsonl")
    # (the two files were flushed at different moments before the kill: compare the overlap)
    assert min(len(live), len(came_out)) > 500
    for a, b in zip(live, came_out, strict=False):
        assert (a["type"], a["payload"]) == (b["type"], b["payload"])
        assert a["ts"] == pytest.approx(b["ts"], abs=1e-6)


def read_events(path: Path) -> tuple[list[dict[str, Any]], list[Problem]]:
    problems: list[Problem] = []
    return list(RecordingReader(str(path), on_problem=problems.append)), problems


def _events_file(path: Path) -> Path:
    from les02_flow.events import encode_event, make_event

    events = [make_event("status", 1.0 + i, {"channel": "master", "n": i}) for i in range(3)]
    path.write_text("".join(encode_event(e) + "\n" for e in events))
    return path


def test_replaying_events_through_a_flow_routes_them_past_the_decoder(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """Recorded events are what les02_parse produced: they go where parse sends events."""
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "version: 1\nnodes:\n"
        "  bus: {type: can_source, wires: [parse]}\n"
        "  parse: {type: les02_parse, wires: {out: [show]}}\n"
        "  show: {type: debug, stream: stdout}\n"
    )
    events = _events_file(tmp_path / "e.jsonl")
    res = cli("replay", str(events), "--flow", str(flow), "--speed", "max")
    assert res.returncode == 0, res.stderr
    assert res.stdout.count('"type": "status"') == 3, res.stdout
    assert "its events go where parse sends events: show" in res.stderr


def test_replaying_events_into_a_flow_without_an_event_path_is_refused(
    cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    flow = tmp_path / "f.yaml"
    flow.write_text(
        "version: 1\nnodes:\n"
        "  bus: {type: can_source, wires: [rec]}\n"
        "  rec: {type: file_recorder, path: out.log}\n"
    )
    events = _events_file(tmp_path / "e.jsonl")
    res = cli("replay", str(events), "--flow", str(flow), "--speed", "max", "--keep-recorders")
    assert res.returncode == 1
    assert f"{flow}:3:8: node 'bus': {events} holds events" in res.stderr, res.stderr
