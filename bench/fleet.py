"""Fleet over MQTT (issue 20): 100 simulated lifts -> one mosquitto -> one central les02-flow.

    python -m bench.fleet                 # 100 lifts, 30 s, plus the edge CPU comparison
    python -m bench.fleet --lifts 20 --seconds 10 --no-edge

**Fleet run.** A private mosquitto (generated config, free 127.0.0.1 port). The central is
``les02-flow run flows/fleet-central.yaml`` (mqtt_source -> ride_store + filter -> ws_sink) in
its own process. The load generator (this process, aiomqtt, one connection per lift) speaks
exactly what ``mqtt_sink`` publishes with flows/edge-mqtt.yaml (docs/fleet.md): per lift a
JSON batch of 25 position samples on ``les02/{site}/{source}/position_sample`` every 50 ms
(the LES02 rate, 500 samples/s, QoS 1), a ride (``ride_start`` + ``ride_end``, QoS 1 with
``seq``) every ``ride_every`` seconds, and ``online`` on ``edge/status``.

Measured: events/s the central's mqtt_source emitted (its counters, from the stats line),
end-to-end latency of every ``ride_end`` (its ``ts`` is the generator's publish time; a
WebSocket client of the central's ws_sink takes the arrival time), CPU of the central process
(``/proc/PID/stat``) and of the broker, and nothing lost: rides in the central database ==
rides sent, samples emitted == samples sent.

**Edge CPU.** flows/edge-mqtt.yaml (simulator at 500 frames/s -> can_source -> les02_parse ->
ride_detect -> mqtt_sink) against a broker, and the same flow with ``mqtt.disabled=true``;
the difference of process CPU is what mqtt_sink adds at 500 frames/s. A third run also wires
the raw frames to mqtt_sink (binary frame batches).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
from websockets.asyncio.client import connect

from les02_flow.nodes.mqtt.broker import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).with_name("RESULTS.md")
Rows = list[tuple[str, str]]

SAMPLES_PER_BATCH = 25  # 500 samples/s in 50 ms batches
BATCH_INTERVAL = 0.05


def les02_flow() -> list[str]:
    exe = Path(sys.executable).parent / "les02-flow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "les02_flow.cli"]


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


_STATS = re.compile(r"stats (.*)$")


def last_stats(log: str, node: str) -> dict[str, int]:
    """Counters of one node from the last stats line of a les02-flow log."""
    found: dict[str, int] = {}
    for line in log.splitlines():
        m = _STATS.search(line)
        if not m:
            continue
        for part in m.group(1).split(" | "):
            name, _, fields = part.partition(" ")
            if name == node:
                found = {
                    k: int(v) for k, v in (f.split("=", 1) for f in fields.split() if "=" in f)
                }
    return found


# -- load generator ------------------------------------------------------------------------------


class Lift:
    def __init__(
        self, site: str, source: str, ride_every: float, offset: float, with_samples: bool = True
    ) -> None:
        self.site, self.source = site, source
        self.with_samples = with_samples
        self.ride_every = ride_every
        self.next_ride = time.time() + offset
        self.seq = 0
        self.samples = 0
        self.rides = 0
        self.pos = 1000
        self.topic = f"les02/{site}/{source}"

    def batch(self, now: float) -> bytes:
        docs = []
        for k in range(SAMPLES_PER_BATCH):
            ch = "master" if k % 2 == 0 else "slave"
            docs.append(
                {
                    "proto": 1,
                    "type": "position_sample",
                    "ts": now - (SAMPLES_PER_BATCH - k) * 0.002,
                    "source": self.source,
                    "payload": {"channel": ch, "position_raw": self.pos + (k % 2) * 2},
                    "site": self.site,
                }
            )
        self.samples += len(docs)
        return json.dumps(docs, separators=(",", ":")).encode()

    def ride(self, now: float) -> list[tuple[str, bytes]]:
        self.rides += 1
        rid = f"{self.site}-{self.source}-{self.rides:05d}"
        start = now - 2.0

        def msg(type_: str, payload: dict[str, Any]) -> tuple[str, bytes]:
            self.seq += 1
            doc = {"proto": 1, "type": type_, "ts": now, "source": self.source,
                   "payload": payload, "site": self.site, "seq": self.seq}  # fmt: skip
            return f"{self.topic}/{type_}", json.dumps(doc, separators=(",", ":")).encode()

        begin = msg("ride_start", {"ride_id": rid, "channel": "master", "position_raw": self.pos,
                                   "position_mm": float(self.pos), "direction": "up",
                                   "start_ts": start})  # fmt: skip
        end = msg(
            "ride_end",
            {"ride_id": rid, "start_ts": start, "end_ts": now - 0.1, "duration_s": 1.9,
             "start_position_raw": self.pos, "start_position_mm": float(self.pos),
             "end_position_raw": self.pos + 3000, "end_position_mm": float(self.pos + 3000),
             "distance_raw": 3000, "distance_mm": 3000.0, "direction": "up",
             "max_speed_mm_s": 1500.0, "samples": 475, "complete": True, "reason": None},
        )  # fmt: skip
        self.pos = (self.pos + 3000) % 100_000
        return [begin, end]


async def run_lift(lift: Lift, port: int, until: float, start_evt: asyncio.Event) -> None:
    async with aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"les02-{lift.site}-{lift.source}",
        will=aiomqtt.Will(f"{lift.topic}/edge/status", b"offline", qos=1, retain=True),
        max_inflight_messages=100,
    ) as client:
        client.pending_calls_threshold = 1000
        await client.publish(f"{lift.topic}/edge/status", b"online", qos=1, retain=True)
        await start_evt.wait()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        k = 0
        pending: set[asyncio.Task[None]] = set()
        while time.time() < until:
            now = time.time()
            msgs = [(f"{lift.topic}/position_sample", lift.batch(now))] if lift.with_samples else []
            if now >= lift.next_ride:
                lift.next_ride += lift.ride_every
                msgs += lift.ride(now)
            for topic, payload in msgs:
                t = asyncio.ensure_future(client.publish(topic, payload, qos=1))
                pending.add(t)
                t.add_done_callback(pending.discard)
            k += 1
            await asyncio.sleep(max(0.0, t0 + k * BATCH_INTERVAL - loop.time()))
        if pending:
            await asyncio.wait(pending, timeout=30)
        await client.publish(f"{lift.topic}/edge/status", b"offline", qos=1, retain=True)


async def ws_latencies(port: int, out: list[float], stop: asyncio.Event) -> None:
    async with connect(f"ws://127.0.0.1:{port}/?types=ride_end", max_size=None) as ws:
        while not stop.is_set():
            try:
                text = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            now = time.time()
            doc = json.loads(text)
            out.append(now - float(doc["ts"]))


def fleet_run(lifts: int, seconds: float, ride_every: float, with_samples: bool = True) -> Rows:
    tmp = Path(tempfile.mkdtemp(prefix="les02-fleet-"))
    broker = Mosquitto(tmp / "broker", autosave=30)
    broker.start()
    assert broker.proc is not None
    bpid = broker.proc.pid
    ws_port = free_port()
    db = tmp / "fleet-rides.sqlite"
    log_path = tmp / "central.log"
    env = {**os.environ, "LES02_MQTT_URL": broker.url, "LES02_DATA_DIR": str(tmp)}
    # an independent subscriber stamps each ride_end's arrival at the broker's side
    at_broker = tmp / "ride_end-at-broker.txt"
    with at_broker.open("w") as out:
        probe = subprocess.Popen(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
             "-t", "les02/+/+/ride_end", "-F", "%U %p"],
            stdout=out, stderr=subprocess.DEVNULL,
        )  # fmt: skip
    with log_path.open("w") as log:
        central = subprocess.Popen(
            [*les02_flow(), "run", str(ROOT / "flows/fleet-central.yaml"),
             "--set", f"ws.port={ws_port}", "--set", "ws.host=127.0.0.1",
             "--stats-interval", "1"],
            cwd=tmp, stdout=log, stderr=log, env=env,
        )  # fmt: skip
    lift_objs = [
        Lift(
            f"site-{i // 10:02d}",
            f"lift-{i % 10}",
            ride_every,
            offset=1.0 + ride_every * i / lifts,
            with_samples=with_samples,
        )
        for i in range(lifts)
    ]
    lat: list[float] = []
    try:
        deadline = time.monotonic() + 30
        while "subscribed to" not in log_path.read_text():
            if time.monotonic() > deadline or central.poll() is not None:
                raise RuntimeError(f"central did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.05)

        async def drive() -> tuple[float, float, float, float]:
            stop = asyncio.Event()
            start_evt = asyncio.Event()
            wsd = time.monotonic() + 20
            while True:
                try:
                    lat_task = asyncio.create_task(ws_latencies(ws_port, lat, stop))
                    await asyncio.sleep(0.3)
                    if lat_task.done():
                        lat_task.result()
                    break
                except OSError:
                    if time.monotonic() > wsd:
                        raise
                    await asyncio.sleep(0.2)
            until = time.time() + seconds + 0.5
            tasks = [
                asyncio.create_task(run_lift(lift, broker.port, until, start_evt))
                for lift in lift_objs
            ]
            await asyncio.sleep(0.5)  # all connected
            cpu0, bcpu0, gcpu0 = proc_cpu(central.pid), proc_cpu(bpid), time.process_time()
            t0 = time.monotonic()
            start_evt.set()
            await asyncio.gather(*tasks)
            wall = time.monotonic() - t0
            cpu1, bcpu1, gcpu1 = proc_cpu(central.pid), proc_cpu(bpid), time.process_time()
            sent_rides = sum(lf.rides for lf in lift_objs)
            d = time.monotonic() + 30
            while len(lat) < sent_rides and time.monotonic() < d:  # noqa: ASYNC110
                await asyncio.sleep(0.1)  # bounded wait for the last rides
            await asyncio.sleep(2.5)  # two stats lines, rides written
            stop.set()
            await lat_task
            return wall, cpu1 - cpu0, bcpu1 - bcpu0, gcpu1 - gcpu0

        wall, cpu, bcpu, gcpu = asyncio.run(drive())
    finally:
        probe.kill()
        probe.wait(10)
        central.send_signal(signal.SIGINT)
        try:
            central.wait(30)
        except subprocess.TimeoutExpired:
            central.kill()
            central.wait(10)
        broker.stop()
    log_text = log_path.read_text()
    stats = last_stats(log_text, "fleet")
    store = last_stats(log_text, "store")
    sent_samples = sum(lf.samples for lf in lift_objs)
    sent_rides = sum(lf.rides for lf in lift_objs)
    sent_events = sent_samples + 2 * sent_rides
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = conn.execute("SELECT count(*) FROM rides").fetchone()[0]
        lifts_seen = conn.execute(
            "SELECT count(DISTINCT site || '/' || source) FROM rides"
        ).fetchone()[0]
        with_samples = conn.execute("SELECT count(DISTINCT ride_id) FROM ride_samples").fetchone()[
            0
        ]
    emitted = stats.get("out", 0)
    edge_status = emitted - sent_events
    batches = sent_samples // SAMPLES_PER_BATCH
    lost = "yes" if emitted >= sent_events and stored == sent_rides else "NO"
    ms = [x * 1000 for x in lat]
    probe_ms = []
    for line in at_broker.read_text().splitlines():
        stamp, _, payload = line.partition(" ")
        with contextlib.suppress(ValueError, KeyError):
            probe_ms.append((float(stamp) - json.loads(payload)["ts"]) * 1000)
    rows: Rows = [
        (
            "lifts, seconds",
            f"{lifts} lifts x {wall:.1f} s, "
            + ("500 position samples/s per lift (20 batches/s)" if with_samples else "no samples")
            + f", a ride every {ride_every:g} s per lift",
        ),
        (
            "sent",
            f"{sent_samples:,} samples in {batches:,} batches + {2 * sent_rides:,} ride "
            f"events ({(batches + 2 * sent_rides) / wall:,.0f} messages/s)",
        ),
        (
            "central events/s",
            f"{sent_events / wall:,.0f} events/s ({emitted:,} emitted by mqtt_source, "
            f"{edge_status} of them edge_status)",
        ),
        (
            "nothing lost",
            f"{lost}: rides stored {stored}/{sent_rides} ({lifts_seen} lifts, {with_samples} "
            f"with samples), events {emitted - edge_status:,}/{sent_events:,}, duplicates "
            f"{stats.get('duplicates', 0)}, store errors {store.get('errors', 0)}",
        ),
        (
            "end-to-end ride_end latency",
            f"p50 {pct(ms, 0.5):.1f} ms, p99 {pct(ms, 0.99):.1f} ms, max {max(ms or [0]):.1f} ms "
            f"({len(ms)} rides; generator -> mosquitto -> central -> WebSocket client)",
        ),
        (
            "ride_end latency to a plain subscriber",
            f"p50 {pct(probe_ms, 0.5):.1f} ms, p99 {pct(probe_ms, 0.99):.1f} ms "
            f"({len(probe_ms)} rides; generator -> mosquitto -> mosquitto_sub, for comparison)",
        ),
        (
            "central CPU",
            f"{cpu / wall * 100:.0f}% of a core ({cpu / max(1, sent_events) * 1e6:.1f} µs "
            "per event)",
        ),
        ("broker CPU (mosquitto)", f"{bcpu / wall * 100:.0f}% of a core"),
        ("generator CPU", f"{gcpu / wall * 100:.0f}% of a core (same machine)"),
    ]
    return rows


# -- edge CPU ------------------------------------------------------------------------------------


def edge_cpu(seconds: float, repeats: int) -> Rows:
    tmp = Path(tempfile.mkdtemp(prefix="les02-edge-"))
    broker = Mosquitto(tmp / "broker", persistence=False)
    broker.start()
    sub = subprocess.Popen(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1", "-t", "les02/#"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    frames_flow = tmp / "edge-frames.yaml"
    text = (ROOT / "flows/edge-mqtt.yaml").read_text()
    frames_flow.write_text(text.replace("    wires: [parse]\n", "    wires: [parse, mqtt]\n", 1))
    variants = [
        ("without mqtt_sink", ROOT / "flows/edge-mqtt.yaml", ["--set", "mqtt.disabled=true"]),
        ("with mqtt_sink (events)", ROOT / "flows/edge-mqtt.yaml", []),
        ("with mqtt_sink (events + frame batches)", frames_flow, []),
    ]
    results: dict[str, list[float]] = {name: [] for name, _f, _a in variants}
    published: dict[str, int] = {}
    try:
        for _ in range(repeats):
            for name, flow, extra in variants:
                env = {**os.environ, "LES02_MQTT_URL": broker.url, "LES02_DATA_DIR": str(tmp),
                       "LES02_CAN_CHANNEL": f"edge-bench-{free_port()}"}  # fmt: skip
                log_path = tmp / "edge.log"
                with log_path.open("w") as log:
                    p = subprocess.Popen(
                        [*les02_flow(), "run", str(flow), *extra, "--stats-interval", "5"],
                        cwd=tmp, stdout=log, stderr=log, env=env,
                    )  # fmt: skip
                try:
                    time.sleep(4.0)  # start-up and the first rides
                    c0, t0 = proc_cpu(p.pid), time.monotonic()
                    time.sleep(seconds)
                    c1, t1 = proc_cpu(p.pid), time.monotonic()
                    results[name].append((c1 - c0) / (t1 - t0))
                finally:
                    p.send_signal(signal.SIGINT)
                    try:
                        p.wait(20)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait(10)
                counts = last_stats(log_path.read_text(), "mqtt")
                published[name] = counts.get("published", 0)
    finally:
        sub.kill()
        sub.wait(10)
        broker.stop()
    base = min(results[variants[0][0]])
    rows: Rows = []
    for name, _f, _a in variants:
        best = min(results[name])
        note = (
            ""
            if name == variants[0][0]
            else f"; added by mqtt_sink {(best - base) * 100:+.2f}% of a core"
        )
        rows.append(
            (f"edge at 500 frames/s, {name}",
             f"{best * 100:.2f}% of a core (best of {repeats} x {seconds:.0f} s; runs "
             + ", ".join(f"{v * 100:.2f}" for v in results[name]) + f"){note}")
        )  # fmt: skip
    return rows


def append(rows: Rows, command: str) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — fleet over MQTT (issue 20)\n\n")
        f.write(f"Command: `{command}` on {platform.python_implementation()} ")
        f.write(f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores ")
        f.write("shared with other work (figures are noisy: compare within this section)\n\n")
        f.write("| measurement | result |\n|---|---|\n")
        for name, value in rows:
            f.write(f"| {name} | {value} |\n")


def main(argv: list[str] | None = None) -> Rows:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--lifts", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--ride-every", type=float, default=10.0, help="seconds between rides per lift")
    ap.add_argument("--edge-seconds", type=float, default=15.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-edge", action="store_true")
    ap.add_argument("--no-fleet", action="store_true")
    ap.add_argument("--no-samples", action="store_true", help="lifts publish rides and status only")
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args(argv)
    rows: Rows = []
    if not args.no_fleet:
        rows += fleet_run(args.lifts, args.seconds, args.ride_every, not args.no_samples)
        for name, value in rows:
            print(f"{name}: {value}", flush=True)
    if not args.no_edge:
        edge = edge_cpu(args.edge_seconds, args.repeats)
        for name, value in edge:
            print(f"{name}: {value}", flush=True)
        rows += edge
    if not args.no_append:
        append(
            rows, "python -m bench.fleet " + " ".join(argv if argv is not None else sys.argv[1:])
        )
    return rows


if __name__ == "__main__":
    main()
