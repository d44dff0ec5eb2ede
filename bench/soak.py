"""Soak test (issue 9, item 8; not in CI): a flow under client churn for minutes.

    .venv/bin/python -m bench.soak                  # 10 min at 500 frames/s with churn
    .venv/bin/python -m bench.soak --minutes 1      # shorter
    .venv/bin/python -m bench.soak --slow           # 60 s at 5,000 frames/s, stalled clients
    .venv/bin/python -m bench.soak --faults         # 5 min of storage and re-deploy faults

The system under test is the real CLI (``les02-flow run``) in its own process: les02_sim ->
can_source -> les02_parse -> ws_sink, and the raw frames -> ecuconnect_tcp_sink. This process
keeps one WebSocket and one TCP client connected the whole time (they must lose nothing),
and churns further clients (connect, read a little, leave; some with a reset). With --slow
it also keeps one WebSocket and one TCP client connected that never read. The server's RSS
and open file descriptors are sampled from /proc every 10 s; the final stats line of the
run gives the sinks' counters. Rows are printed and appended to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from websockets.asyncio.client import connect

RESULTS = Path(__file__).with_name("RESULTS.md")
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> tuple[int, int]:
    rss = 0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


async def _soak(seconds: float, rate_hz: float, slow: bool) -> list[tuple[str, str]]:
    ws_port, tcp_port = _free_port(), _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="les02-soak-"))
    flow = {
        "version": 1,
        "nodes": {
            "sim": {"type": "les02_sim", "channel": "soak", "rate_hz": rate_hz, "seed": 1},
            "bus": {"type": "can_source", "channel": "soak", "wires": ["parse", "tcp"]},
            "parse": {"type": "les02_parse", "wires": {"out": ["ws"]}},
            "ws": {"type": "ws_sink", "host": "127.0.0.1", "port": ws_port},
            "tcp": {"type": "ecuconnect_tcp_sink", "port": tcp_port, "zeroconf": False},
        },
    }
    path = tmp / "soak.yaml"
    path.write_text(yaml.safe_dump(flow))
    exe = Path(sys.executable).parent / "les02-flow"
    # The server's log goes to a file: a pipe nobody reads fills up after ~64 KiB of
    # connect/disconnect lines and then blocks the server's logging (the first soak runs
    # measured a server frozen after 14 s because of exactly that).
    log_path = tmp / "server.log"
    log_file = log_path.open("w", encoding="utf-8")
    proc = subprocess.Popen(  # noqa: ASYNC220 -- started once, before any client
        [str(exe), "run", str(path), "--stats-interval", "0"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
        text=True,
    )
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = loop.time() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", ws_port), 1).close()
            socket.create_connection(("127.0.0.1", tcp_port), 1).close()
            break
        except OSError:
            if loop.time() > deadline:
                proc.kill()
                raise
            await asyncio.sleep(0.1)

    state: dict[str, Any] = {
        "ws": 0,
        "ws_first": 0.0,
        "tcp": 0,
        "churn": 0,
        "churn_errors": 0,
        "stop": False,
    }
    samples: list[tuple[float, int, int]] = []

    async def keep_ws() -> None:
        async with connect(f"ws://127.0.0.1:{ws_port}/", max_queue=None) as ws:
            async for _ in ws:
                if not state["ws"]:
                    state["ws_first"] = loop.time() - started
                state["ws"] += 1

    async def keep_tcp() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
        while chunk := await reader.read(1 << 16):
            state["tcp"] += len(chunk)
        writer.close()

    async def churn() -> None:
        i = 0
        while not state["stop"]:
            i += 1
            try:
                if i % 2:
                    async with connect(f"ws://127.0.0.1:{ws_port}/", close_timeout=1) as ws:
                        await asyncio.wait_for(ws.recv(), 5.0)
                else:
                    reader, writer = await asyncio.open_connection("127.0.0.1", tcp_port)
                    await reader.readexactly(14)
                    if i % 4 == 0:
                        sock = writer.get_extra_info("socket")
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                        writer.transport.abort()
                    else:
                        writer.close()
                        await writer.wait_closed()
                state["churn"] += 1
            except Exception:
                state["churn_errors"] += 1
            await asyncio.sleep(0.05)

    stalled: list[socket.socket] = []
    if slow:
        for port in (ws_port, tcp_port):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(("127.0.0.1", port))
            if port == ws_port:
                s.sendall(
                    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                    b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n"
                )
            stalled.append(s)
    tasks = [asyncio.create_task(f()) for f in (keep_ws, keep_tcp, churn)]
    t0 = loop.time()
    while loop.time() - t0 < seconds:
        await asyncio.sleep(min(10.0, seconds / 6))
        rss, fds = _proc_stat(proc.pid)
        samples.append((loop.time() - t0, rss, fds))
    state["stop"] = True
    proc.send_signal(signal.SIGTERM)
    await asyncio.to_thread(proc.wait, 60)
    log_file.close()
    err = log_path.read_text(encoding="utf-8")
    await asyncio.wait(tasks, timeout=10)
    for t in tasks:
        t.cancel()
    for s in stalled:
        s.close()
    stats = re.findall(r"stats (.*)", err)
    final = stats[-1] if stats else "(no stats line)"
    nodes = {
        p.split()[0]: dict(kv.split("=") for kv in p.split()[1:] if "=" in kv)
        for p in final.split(" | ")
    }
    warm = samples[1] if len(samples) > 1 else samples[0]
    last = samples[-1]
    label = f"{seconds / 60:g} min at {2 * rate_hz:g} frames/s" + (
        ", stalled clients" if slow else ""
    )
    return [
        (f"soak {label}: exit code", str(proc.returncode)),
        (
            f"soak {label}: churn cycles (client errors)",
            f"{state['churn']} ({state['churn_errors']})",
        ),
        (
            f"soak {label}: persistent ws client events / tcp bytes",
            f"{state['ws']} / {state['tcp']}",
        ),
        (
            f"soak {label}: persistent ws client: events missed (= ws in - received; events "
            "before it connected)",
            f"{int(nodes.get('ws', {}).get('in', 0)) - state['ws']} "
            f"(first event {state['ws_first']:.2f} s after the server started, "
            f"= {state['ws_first'] * 2 * rate_hz:.0f} frames)",
        ),
        (
            f"soak {label}: frames the sinks dropped by policy (ws / tcp)",
            f"{nodes.get('ws', {}).get('dropped', '0')} / "
            f"{nodes.get('tcp', {}).get('dropped', '0')}",
        ),
        (f"soak {label}: ws sink counters", json.dumps(nodes.get("ws", {}))),
        (f"soak {label}: tcp sink counters", json.dumps(nodes.get("tcp", {}))),
        (
            f"soak {label}: server RSS KiB after warm-up -> end",
            f"{warm[1]} -> {last[1]} ({last[1] - warm[1]:+d})",
        ),
        (f"soak {label}: server open fds after warm-up -> end", f"{warm[2]} -> {last[2]}"),
    ]


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument(
        "--slow", action="store_true", help="60 s at 5,000 frames/s with stalled clients"
    )
    parser.add_argument(
        "--faults",
        action="store_true",
        help="storage and re-deploy faults (rm of files, full disk, hostile SIGHUP; see "
        "bench/soak_faults.py); --minutes defaults to 5 here",
    )
    args = parser.parse_args(argv)
    if args.faults:
        from bench.soak_faults import run as run_faults

        minutes = args.minutes if "--minutes" in (argv or sys.argv) else 5.0
        rows = run_faults(minutes)
    elif args.slow:
        rows = asyncio.run(_soak(60.0, 2500.0, True))
    else:
        rows = asyncio.run(_soak(args.minutes * 60, 250.0, False))
    width = max(len(n) for n, _ in rows)
    print("\n".join(f"{n:<{width}}  {v}" for n, v in rows))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m bench.soak " + " ".join(argv if argv is not None else sys.argv[1:])
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — soak\n\n")
        f.write(f"Command: `{command.strip()}` on {platform.python_implementation()} ")
        f.write(f"{platform.python_version()}, {platform.machine()}\n\n")
        f.write("| measurement | result |\n|---|---|\n")
        for name, value in rows:
            f.write(f"| {name} | {value} |\n")
    return rows


if __name__ == "__main__":
    main()
