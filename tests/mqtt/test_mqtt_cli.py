"""The edge flow as a real `les02-flow run` process: SIGKILL with a spool, the last will,
and the documented layout read by mosquitto_sub; the central flow's console listing the lifts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from les02_flow.nodes.mqtt.broker import Mosquitto, free_port
from les02_flow.testing import poll_until

ROOT = Path(__file__).resolve().parents[2]
FLUSH = 0.05


def les02_flow() -> list[str]:
    exe = Path(sys.executable).parent / "les02-flow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "les02_flow.cli"]


def edge_flow(tmp: Path, url: str) -> Path:
    """bus -> parse -> mqtt_sink; every position sample is one QoS 1 message (with seq)."""
    path = tmp / "edge.yaml"
    path.write_text(
        f"""version: 1
nodes:
  sim: {{type: les02_sim, interface: virtual, channel: kill, rate_hz: 100}}
  bus: {{type: can_source, interface: virtual, channel: kill, wires: [parse]}}
  parse: {{type: les02_parse, source: lift-1, wires: {{out: [mqtt]}}}}
  mqtt:
    type: mqtt_sink
    url: {url}
    site: hq
    source: lift-1
    spool_dir: {tmp / "spool"}
    flush_interval: {FLUSH}
    qos: {{position_sample: 1}}
    batch_types: []
    backoff_min: 0.05
    backoff_max: 0.2
"""
    )
    return path


def lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def test_sigkilled_edge_loses_at_most_the_flush_window(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "broker")  # not started: the edge runs offline first
    flow = edge_flow(tmp_path, broker.url)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    files = contextlib.ExitStack()
    log_a = files.enter_context((tmp_path / "edge-a.log").open("w"))
    edge = subprocess.Popen(
        [*les02_flow(), "run", str(flow)], cwd=tmp_path, stdout=log_a, stderr=log_a, env=env
    )
    spool = tmp_path / "spool"
    procs: list[subprocess.Popen[bytes]] = [edge]
    try:
        # the edge accepts samples into its spool while the broker is unreachable
        poll_until(
            lambda: sum(p.stat().st_size for p in spool.glob("*.seg")) > 20_000,
            "spooled",
            timeout=30,
        )
        killed_at = time.time()
        edge.send_signal(signal.SIGKILL)
        edge.wait(10)
        broker.start()
        out = tmp_path / "sub.txt"
        sub = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-v",
             "-i", "collector", "-t", "les02/#"],
            stdout=files.enter_context(out.open("w")), stderr=subprocess.STDOUT,
        )  # fmt: skip
        procs.append(sub)
        poll_until(lambda: "as collector" in broker.log(), "collector subscribed", timeout=30)
        log_b = files.enter_context((tmp_path / "edge-b.log").open("w"))
        restarted_at = time.time()
        edge_b = subprocess.Popen(
            [*les02_flow(), "run", str(flow)], cwd=tmp_path, stdout=log_b, stderr=log_b, env=env
        )
        procs.append(edge_b)

        def samples() -> list[dict[str, Any]]:
            """Every spooled (QoS 1) event: position samples and the status frames"""
            docs = []
            for line in lines(out):
                topic, _, payload = line.partition(" ")
                if topic.startswith("les02/hq/lift-1/") and payload.startswith("{"):
                    doc = json.loads(payload)
                    if "seq" in doc:
                        docs.append(doc)
            return docs

        # everything from the spool, then fresh samples from the restarted edge
        poll_until(
            lambda: any(s["ts"] > restarted_at + 0.5 for s in samples()),
            "fresh samples",
            timeout=30,
        )
        poll_until(lambda: "les02/hq/lift-1/edge/status online" in lines(out), "online", timeout=30)
        # SIGKILL again: the broker publishes the last will
        edge_b.send_signal(signal.SIGKILL)
        edge_b.wait(10)
        poll_until(
            lambda: lines(out).count("les02/hq/lift-1/edge/status offline") >= 1, "will", timeout=30
        )
        got = samples()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        broker.stop()
        files.close()
    assert {s["type"] for s in got} >= {"position_sample"}
    before = [s for s in got if s["ts"] < killed_at]
    after = [s for s in got if s["ts"] >= restarted_at]
    assert before and after
    seqs = [s["seq"] for s in got]
    # in order, no gap, no duplicate, starting at the spool's first message
    assert seqs == list(range(1, len(seqs) + 1)), (seqs[:10], sorted(seqs)[:10], len(seqs))
    assert before[0]["seq"] == 1
    # the restarted edge kept its spool, so its spool id: one sequence across the restart
    assert len({s["spool"] for s in got}) == 1
    lost = killed_at - before[-1]["ts"]
    # at most the flush window (plus the time a frame takes from the simulator to the sink on
    # this loaded machine) was lost
    assert lost <= FLUSH + 0.5, f"{lost:.3f} s of samples lost at SIGKILL"
    assert all(s["site"] == "hq" and s["source"] == "lift-1" for s in got)
    edge_log = (tmp_path / "edge-a.log").read_text()
    assert "cannot connect" in edge_log and "messages are kept in the spool" in edge_log
    assert "unacknowledged message(s) from before" in (tmp_path / "edge-b.log").read_text()


def test_edge_flow_file_is_valid() -> None:
    r = subprocess.run(
        [*les02_flow(), "validate", "flows/edge-mqtt.yaml", "flows/fleet-central.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr


def test_fleet_central_console_lists_lifts_online_then_offline(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """flows/fleet-central.yaml as a process: retained edge statuses on a real broker show in
    its web console's /api/lifts (a real HTTP client)."""
    port = free_port()
    env = {**os.environ, "LES02_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
           "LES02_CONSOLE_PORT": str(port), "LES02_DATA_DIR": str(tmp_path),
           "LES02_CENTRAL_ID": f"central-{os.getpid()}"}  # fmt: skip
    log = (tmp_path / "central.log").open("wb")
    central = subprocess.Popen(
        [*les02_flow(), "run", "flows/fleet-central.yaml", "--set", "ws.port=0"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def pub(source: str, state: str) -> None:
        subprocess.run(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(broker.port), "-r", "-q", "1",
             "-t", f"les02/hq/{source}/edge/status", "-m", state],
            check=True, timeout=20,
        )  # fmt: skip

    def lifts() -> dict[str, Any]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/lifts", timeout=5) as r:
                doc = json.load(r)
        except OSError:
            return {}
        return {row["source"]: row["online"] for row in doc["lifts"] if row["site"] == "hq"}

    try:
        pub("lift-1", "online")  # retained before the central flow subscribes
        pub("lift-2", "online")
        poll_until(
            lambda: lifts() == {"lift-1": True, "lift-2": True}, "both lifts online", timeout=30
        )
        pub("lift-1", "offline")
        poll_until(
            lambda: lifts() == {"lift-1": False, "lift-2": True}, "lift-1 offline", timeout=30
        )
    finally:
        central.send_signal(signal.SIGINT)
        try:
            central.wait(30)
        except subprocess.TimeoutExpired:
            central.kill()
            central.wait(10)
        log.close()


pytestmark = pytest.mark.timeout(120)
