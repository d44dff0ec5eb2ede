"""web_console's HTTP API, live WebSocket, health and metrics, with real HTTP and WebSocket
clients against the real engine (in a thread of its own)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from les02_flow.node import NodeStartError
from les02_flow.nodes.rides.store import RideDB

from .conftest import RunningFlow, get, get_json, wait_for

T0 = 1_737_000_000.0


def sim_flow(channel: str, extra: str = "", console: str = "") -> str:
    return f"""\
    version: 1
    name: api-test
    nodes:
      sim: {{type: les02_sim, interface: virtual, channel: {channel}, seed: 1}}
      bus:
        type: can_source
        interface: virtual
        channel: {channel}
        wires: [parse]
      parse:
        type: les02_parse
        wires: {{out: [rides]}}
      rides: {{type: ride_detect, wires: [console]}}
      console:
        type: web_console
        host: 127.0.0.1
        port: 0
    {console}
    {extra}
    """


@pytest.fixture(scope="module")
def live() -> Iterator[RunningFlow]:
    channel = f"api{os.getpid()}"
    flow = RunningFlow(
        sim_flow(channel, console="    token_env: CONSOLE_TOKEN\n"), env={"CONSOLE_TOKEN": "s3cret"}
    )
    os.environ["CONSOLE_TOKEN"] = "s3cret"
    try:
        flow.start()
        yield flow
    finally:
        flow.stop()
        os.environ.pop("CONSOLE_TOKEN", None)


AUTH = {"Authorization": "Bearer s3cret"}


def test_flow_api_lists_every_node_and_counters_grow(live: RunningFlow) -> None:
    port = live.node("console").port
    doc = get_json(port, "/api/flow", AUTH)
    ids = [n["id"] for n in doc["graph"]["nodes"]]
    assert sorted(ids) == ["bus", "console", "parse", "rides", "sim"]
    parse = next(n for n in doc["graph"]["nodes"] if n["id"] == "parse")
    assert parse["type"] == "les02_parse" and parse["wires"] == {"out": ["rides"]}
    assert parse["location"].startswith("console-test.yaml:")
    first = doc["counters"]["parse"]["in"]
    wait_for(
        lambda: get_json(port, "/api/flow", AUTH)["counters"]["parse"]["in"] > first + 100,
        "parse counters to grow",
    )
    assert doc["statuses"]["bus"]["state"] == "ok"


def test_token_is_required_except_for_healthz(live: RunningFlow) -> None:
    port = live.node("console").port
    for path in ("/api/flow", "/metrics", "/api/rides", "/api/rides/x/samples"):
        status, _, body = get(port, path)
        assert status == 401, path
        assert b"token" in body
        assert get(port, path, {"Authorization": "Bearer wrong"})[0] == 401
    assert get(port, "/api/flow?token=wrong")[0] == 401
    assert get(port, "/api/flow?token=s3cret")[0] == 200
    status, headers, body = get(port, "/", AUTH)
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert b"app.js" in body
    # no token needed for the health check and the page's own files (they hold no data)
    for path in ("/healthz", "/", "/app.js", "/style.css"):
        assert get(port, path)[0] == 200, path
    assert live.node("console").counters.extra["http_refused"] >= 9

    async def ws_status(query: str) -> int:
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws{query}"):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(ws_status("")) == 401
    assert asyncio.run(ws_status("?token=wrong")) == 401
    assert asyncio.run(ws_status("?token=s3cret")) == 101


def test_foreign_origin_and_host_are_refused(live: RunningFlow) -> None:
    port = live.node("console").port
    foreign = {**AUTH, "Origin": "http://evil.example"}
    assert get(port, "/api/flow", foreign)[0] == 403
    own = {**AUTH, "Origin": f"http://127.0.0.1:{port}", "Host": f"127.0.0.1:{port}"}
    assert get(port, "/api/flow", own)[0] == 200
    # DNS rebinding: a loopback-only console answers only loopback Host names
    assert get(port, "/api/flow", {**AUTH, "Host": f"attacker.example:{port}"})[0] == 403

    async def ws_foreign() -> int:
        try:
            async with connect(
                f"ws://127.0.0.1:{port}/ws",
                origin=Origin("http://evil.example"),
                additional_headers=AUTH,
            ):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    assert asyncio.run(ws_foreign()) == 403


def test_metrics_parse_with_the_prometheus_parser(live: RunningFlow) -> None:
    port = live.node("console").port
    status, headers, body = get(port, "/metrics", AUTH)
    assert status == 200 and headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    received = {s.labels["node"]: s.value for s in families["les02_flow_node_received"].samples}
    assert set(received) == {"sim", "bus", "parse", "rides", "console"}
    assert received["parse"] > 0
    assert families["les02_flow_node_received"].type == "counter"
    status_samples = families["les02_flow_node_status"].samples
    assert {(s.labels["node"], s.labels["state"]) for s in status_samples} >= {("bus", "ok")}
    assert "les02_flow_web_console_clients" in families
    assert "les02_flow_loop_lag_seconds" in families
    extra = {
        (s.labels["node"], s.labels["name"]) for s in families["les02_flow_node_counter"].samples
    }
    assert ("console", "http_requests") in extra


def test_ws_is_downsampled_and_carries_the_latest_sample(live: RunningFlow) -> None:
    port = live.node("console").port
    console = live.node("console")

    def sent() -> tuple[float, int, int]:
        """On the flow's loop: its clock, the messages handed to our client (written or
        queued), the events the console got. Counted at the server, so a test process that
        is slow to read (a loaded machine) cannot crowd a backlog into the window."""
        (client,) = list(console.clients)
        return live.loop.time(), client.queue.sent + len(client.queue), console.counters.received

    async def main() -> tuple[float, int, int, dict[str, Any]]:
        async with connect(f"ws://127.0.0.1:{port}/ws?token=s3cret") as ws:
            hello = json.loads(await ws.recv())
            assert hello["kind"] == "hello" and hello["graph"]["nodes"]
            assert hello["stats"]["floors_from"] == "les02_sim"
            t0, messages0, events0 = live.on_loop(sent)
            last_tick: dict[str, Any] = {}
            loop = asyncio.get_running_loop()
            end = loop.time() + 1.5
            while loop.time() < end:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                if msg["kind"] == "tick":
                    last_tick = msg
            t1, messages1, events1 = live.on_loop(sent)
            return t1 - t0, messages1 - messages0, events1 - events0, last_tick

    span, messages, events, tick = asyncio.run(main())
    # update_rate 20 + one stats message per second: never one message per event
    assert messages <= span * (20 + 1) + 3, (messages, span)
    assert events > 5 * messages, (events, messages)
    assert set(tick["samples"]) <= {"master", "slave"} and tick["samples"]
    assert tick["counts"]["position_sample"] > 0


def test_healthz_fails_while_a_source_fails() -> None:
    flow = RunningFlow(
        """\
        version: 1
        nodes:
          bus:
            type: can_source
            interface: nonexistent_iface
            channel: nowhere
            retry_initial: 5
            retry_max: 5
            wires: [parse]
          parse: {type: les02_parse, wires: {out: [console]}}
          console: {type: web_console, host: 127.0.0.1, port: 0}
        """
    ).start()
    try:
        status, _, body = get(flow.node("console").port, "/healthz")
        assert status == 503
        doc = json.loads(body)
        assert doc["status"] == "failing" and doc["failing"][0]["id"] == "bus"
        assert "cannot open CAN bus" in doc["failing"][0]["text"]
    finally:
        flow.stop()


def test_port_in_use_names_the_node_and_its_flow_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        flow = RunningFlow(
            f"""\
            version: 1
            nodes:
              sim: {{type: les02_sim, channel: inuse{os.getpid()}}}
              bus: {{type: can_source, channel: inuse{os.getpid()}, wires: [parse]}}
              parse: {{type: les02_parse, wires: {{out: [console]}}}}
              console: {{type: web_console, host: 127.0.0.1, port: {port}}}
            """
        )
        try:
            with pytest.raises(NodeStartError) as err:
                flow.start()
        finally:
            flow.loop.call_soon_threadsafe(flow.loop.stop)
            flow.thread.join(5)
            flow.loop.close()
    text = str(err.value)
    assert "web_console 'console' (console-test.yaml:6:3)" in text
    assert f"127.0.0.1:{port}" in text and "in use" in text and "--set console.port=" in text


def test_store_must_name_a_ride_store() -> None:
    flow = RunningFlow(
        """\
        version: 1
        nodes:
          sim: {type: les02_sim, channel: nostore}
          bus: {type: can_source, channel: nostore, wires: [parse]}
          parse: {type: les02_parse, wires: {out: [console]}}
          console: {type: web_console, host: 127.0.0.1, port: 0, store: parse}
        """
    )
    try:
        with pytest.raises(NodeStartError, match="store 'parse' is a les02_parse; it must name"):
            flow.start()
    finally:
        flow.loop.call_soon_threadsafe(flow.loop.stop)
        flow.thread.join(5)
        flow.loop.close()


# -- rides from the store --------------------------------------------------------------------


def _ride(ride_id: str, start: float, up: bool = True) -> tuple[dict[str, Any], list[Any]]:
    a, b = (0, 3500) if up else (3500, 0)
    end = {
        "ride_id": ride_id,
        "start_ts": start,
        "end_ts": start + 5.0,
        "duration_s": 5.0,
        "start_position_raw": a,
        "start_position_mm": float(a),
        "end_position_raw": b,
        "end_position_mm": float(b),
        "distance_raw": 3500,
        "distance_mm": 3500.0,
        "direction": "up" if up else "down",
        "max_speed_mm_s": 1427.8,
        "samples": 20,
    }
    event = {"proto": 1, "type": "ride_end", "ts": start + 7, "source": "les02", "payload": end}
    samples = [
        (start + i * 0.25, ch, a + (b - a) * i // 20)
        for i in range(21)
        for ch in ("master", "slave")
    ]
    return event, samples


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningFlow, Path]]:
    db_path = tmp_path_factory.mktemp("rides") / "rides.sqlite"
    db = RideDB.open(db_path)
    for i, rid in enumerate(["aaaa1111-0000", "bbbb2222-0000", "bbbb3333-0000"]):
        event, samples = _ride(rid, T0 + 100 * i, up=i % 2 == 0)
        db.save(event, "master", samples)
    db.close()
    flow = RunningFlow(
        f"""\
        version: 1
        nodes:
          sim: {{type: les02_sim, channel: store{os.getpid()}, floors_mm: [0, 3500]}}
          bus: {{type: can_source, channel: store{os.getpid()}, wires: [parse]}}
          parse: {{type: les02_parse, wires: {{out: [rides]}}}}
          rides: {{type: ride_detect, wires: [store, console]}}
          store: {{type: ride_store, path: "{db_path}"}}
          console: {{type: web_console, host: 127.0.0.1, port: 0, store: store}}
        """
    ).start()
    try:
        yield flow, db_path
    finally:
        flow.stop()


def test_rides_api_lists_newest_first_with_details(stored: tuple[RunningFlow, Path]) -> None:
    flow, _ = stored
    port = flow.node("console").port
    rides = get_json(port, "/api/rides")["rides"]
    assert [r["ride_id"] for r in rides] == ["bbbb3333-0000", "bbbb2222-0000", "aaaa1111-0000"]
    assert rides[0]["direction"] == "up" and rides[1]["direction"] == "down"
    assert "complete" in rides[0] and "event_json" not in rides[0]
    assert [r["ride_id"] for r in get_json(port, "/api/rides?limit=1")["rides"]] == [
        "bbbb3333-0000"
    ]
    assert get(port, "/api/rides?limit=0")[0] == 400
    assert get(port, "/api/rides?limit=x")[0] == 400
    one = get_json(port, "/api/rides/aaaa")  # a unique prefix is enough
    assert one["ride_id"] == "aaaa1111-0000" and one["distance_mm"] == 3500.0
    status, _, body = get(port, "/api/rides/bbbb")
    assert status == 404 and b"matches 2 rides" in body
    assert get(port, "/api/rides/nope")[0] == 404
    assert get(port, "/api/nothing")[0] == 404
    samples = get_json(port, "/api/rides/aaaa1111-0000/samples")
    assert len(samples["samples"]) == 42
    assert samples["samples"][0] == {
        "ts": T0,
        "channel": "master",
        "position_raw": 0,
        "position_mm": 0.0,
    }


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_downloads_equal_the_cli_export(stored: tuple[RunningFlow, Path], fmt: str) -> None:
    flow, db_path = stored
    port = flow.node("console").port
    status, headers, body = get(port, f"/api/rides/bbbb2222-0000/export.{fmt}")
    assert status == 200
    assert headers["content-disposition"] == f'attachment; filename="ride-bbbb2222-0000.{fmt}"'
    exe = Path(sys.executable).parent / "les02-flow"
    cli = subprocess.run(
        [str(exe), "rides", str(db_path), "--export", "bbbb2222-0000", "--format", fmt],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert body.decode() == cli.stdout


def test_console_without_store_says_so() -> None:
    flow = RunningFlow(sim_flow(f"nostore{os.getpid()}")).start()
    try:
        port = flow.node("console").port
        status, _, body = get(port, "/api/rides")
        assert status == 404 and b"no store configured" in body
        assert get(port, "/ws")[0] == 426  # plain GET on the WebSocket
        t0 = time.monotonic()
        wait_for(lambda: get_json(port, "/healthz")["status"] == "ok", "healthy")
        assert time.monotonic() - t0 < 20
    finally:
        flow.stop()


def test_floors_are_learned_from_stored_rides_without_a_simulator(
    stored: tuple[RunningFlow, Path],
) -> None:
    _, db_path = stored
    flow = RunningFlow(
        f"""\
        version: 1
        nodes:
          bus: {{type: can_source, channel: quiet{os.getpid()}, wires: [parse]}}
          parse: {{type: les02_parse, wires: {{out: [store, console]}}}}
          store: {{type: ride_store, path: "{db_path}"}}
          console: {{type: web_console, host: 127.0.0.1, port: 0, store: store}}
        """
    ).start()
    try:
        port = flow.node("console").port

        async def stats() -> dict[str, Any]:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    if msg["kind"] == "hello":
                        msg = msg["stats"]
                    if msg["kind"] == "stats" and msg["floors_from"] is not None:
                        return dict(msg)

        got = asyncio.run(asyncio.wait_for(stats(), 10))
        assert got["floors_from"] == "rides" and got["floors_mm"] == [0.0, 3500.0]
    finally:
        flow.stop()


def test_lifts_api_and_ws_follow_edge_status() -> None:
    flow = RunningFlow(
        """\
        version: 1
        name: lifts-test
        nodes:
          console: {type: web_console, host: 127.0.0.1, port: 0, update_rate: 20}
        """
    ).start()
    try:
        console = flow.node("console")
        port = console.port
        assert get_json(port, "/api/lifts")["lifts"] == []

        def feed(site: str, source: str, state: str, ts: float) -> None:
            ev = {
                "proto": 1,
                "type": "edge_status",
                "ts": ts,
                "source": source,
                "site": site,
                "payload": {"state": state},
            }
            flow.on_loop(lambda: console.consume(ev))

        async def watch() -> list[dict[str, Any]]:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                hello = json.loads(await ws.recv())
                assert hello["kind"] == "hello" and hello["live"]["lifts"] == []
                await asyncio.to_thread(feed, "hq", "lift-1", "online", T0)
                await asyncio.to_thread(feed, "hq", "lift-2", "online", T0 + 1)
                await asyncio.to_thread(feed, "hq", "lift-1", "offline", T0 + 2)
                seen: dict[str, dict[str, Any]] = {}
                async with asyncio.timeout(20):
                    while not (seen.get("lift-1", {}).get("online") is False and "lift-2" in seen):
                        m = json.loads(await ws.recv())
                        for row in m.get("lifts", []) if m["kind"] == "tick" else []:
                            seen[row["source"]] = row
                return list(seen.values())

        rows = asyncio.run(watch())
        assert {(r["source"], r["online"]) for r in rows} == {("lift-1", False), ("lift-2", True)}
        doc = get_json(port, "/api/lifts")
        assert [(r["site"], r["source"], r["online"], r["last_seen"]) for r in doc["lifts"]] == [
            ("hq", "lift-1", False, T0 + 2),
            ("hq", "lift-2", True, T0 + 1),
        ]
        assert doc["count"] == 2 and doc["evicted"] == 0
    finally:
        flow.stop()
