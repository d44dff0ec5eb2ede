"""What the web console costs (issue 17): the default flow at the LES02's 500 frames/s, side by
side without the console, with the console and one WebSocket client on /ws, and with the
console and a real headless Chromium showing the page; plus the page's frame rate.

    .venv/bin/python -m bench.console              # about 4 minutes (3 rounds)
    .venv/bin/python -m bench.console --rounds 1 --seconds 10

Each run is ``les02-flow run flows/default.yaml`` (the real CLI; the simulator in-process sends
500 frames/s; recorder off, store in a temporary directory, ports free). Server CPU = that
process (all threads, the simulator included in every variant) over a window after a warm-up,
from /proc. The variants alternate within each round, so the machine's load (shared with other
engineers' work) hits them alike; the figure is the median over the rounds. Chromium's own CPU
is not counted (a browser runs on the technician's laptop, not on the lift's Raspberry Pi).

The page's frame rate is counted with requestAnimationFrame in the page for the whole window
(frames per second, 95th-percentile frame interval, frames longer than 25 ms), and the main
thread's busy time comes from the DevTools Protocol (``Performance.getMetrics`` TaskDuration).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / "les02-flow")
VARIANTS = ("without console", "console + 1 WS client", "console + Chromium page")
#: the A/A pair runs the flow without the console twice: how far two identical runs differ
AA = "A/A: without console, twice (noise)"
PAIRS = (AA, *VARIANTS[1:])
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1600,1120",
)

FPS_JS = """
const done = arguments[arguments.length - 1];
const ms = arguments[0];
const t = [];
function f(now) { t.push(now); if (now - t[0] < ms) requestAnimationFrame(f); else {
  const d = []; for (let i = 1; i < t.length; i++) d.push(t[i] - t[i - 1]);
  d.sort((a, b) => a - b);
  done({frames: t.length - 1, span: t[t.length - 1] - t[0],
        p95: d[Math.floor(d.length * 0.95)] || 0, long: d.filter(x => x > 25).length,
        updates: window.__console ? window.__console.points.master.length : 0});
} }
requestAnimationFrame(f);
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start(console: bool, port: int, data: str) -> subprocess.Popen[str]:
    args = [
        CLI, "run", "flows/default.yaml", "--stats-interval", "0",
        "--set", "recorder.disabled=true", "--set", f"store.path={data}/rides.sqlite",
        "--set", "ws.host=127.0.0.1", "--set", "ws.port=0", "--set", "tcp.port=0",
        "--set", "console.host=127.0.0.1", "--set", f"console.port={port}",
    ]  # fmt: skip
    if not console:
        args += ["--set", "console.disabled=true"]
    proc = subprocess.Popen(
        args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "running" in line:
            break
    threading.Thread(target=lambda: [None for _ in proc.stderr or ()], daemon=True).start()
    return proc


def _ws_client(port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async def main() -> None:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            while not stop.is_set():
                try:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 0.5))
                except TimeoutError:
                    continue
                except ConnectionClosed:
                    return
                counts[msg["kind"]] = counts.get(msg["kind"], 0) + 1

    asyncio.run(main())


def run_pair(variant: str, seconds: float, warmup: float, driver: Any) -> dict[str, Any]:
    """The flow without the console and the flow with it (and its client), at the same time:
    both processes see the same machine load over the same window."""
    ports = _free_port(), _free_port()
    data = tempfile.mkdtemp(prefix="bench-console-")
    plain = _start(False, ports[0], data + "/a")
    proc = _start(variant != AA, ports[1], data + "/b")
    port = ports[1]
    out: dict[str, Any] = {"variant": variant}
    stop = threading.Event()
    counts: dict[str, int] = {}
    client = None
    try:
        if variant == VARIANTS[1]:
            client = threading.Thread(target=_ws_client, args=(port, stop, counts), daemon=True)
            client.start()
        elif variant == VARIANTS[2]:
            driver.get(f"http://127.0.0.1:{port}/")
        time.sleep(warmup)
        a0, c0, t0 = _proc_cpu(plain.pid), _proc_cpu(proc.pid), time.monotonic()
        n0 = sum(counts.values())
        if variant == VARIANTS[2]:
            driver.execute_cdp_cmd("Performance.enable", {})
            m0 = _metrics(driver)
            fps = driver.execute_async_script(FPS_JS, seconds * 1000)
            m1 = _metrics(driver)
            busy = (m1["TaskDuration"] - m0["TaskDuration"]) / (m1["Timestamp"] - m0["Timestamp"])
            out.update(
                fps=fps["frames"] / (fps["span"] / 1000.0),
                p95_ms=fps["p95"],
                long_frames=fps["long"],
                frames=fps["frames"],
                main_thread_busy=busy,
            )
        else:
            time.sleep(seconds)
        a1, c1, t1 = _proc_cpu(plain.pid), _proc_cpu(proc.pid), time.monotonic()
        out["cpu_without"] = (a1 - a0) / (t1 - t0)
        out["cpu"] = (c1 - c0) / (t1 - t0)
        if client is not None:
            out["ws_msgs_per_s"] = (sum(counts.values()) - n0) / (t1 - t0)
    finally:
        stop.set()
        if variant == VARIANTS[2]:
            driver.get("about:blank")
        for p in (proc, plain):
            p.terminate()
            p.wait(20)
        if client is not None:
            client.join(5)
        shutil.rmtree(data, ignore_errors=True)
    return out


def _metrics(driver: Any) -> dict[str, float]:
    got = driver.execute_cdp_cmd("Performance.getMetrics", {})
    return {m["name"]: float(m["value"]) for m in got["metrics"]}


def _browser() -> tuple[Any, str]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="bench-chromium-")
    options = webdriver.ChromeOptions()
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(
        options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    )
    driver.set_script_timeout(120)
    return driver, profile


def main(argv: list[str] | None = None) -> list[tuple[str, str]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--warmup", type=float, default=4.0)
    args = ap.parse_args(argv)
    started = time.monotonic()
    driver, profile = _browser()
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in PAIRS}
    try:
        for r in range(args.rounds):
            for variant in PAIRS:
                res = run_pair(variant, args.seconds, args.warmup, driver)
                results[variant].append(res)
                print(f"round {r + 1}: {json.dumps(res)}", flush=True)
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    rows: list[tuple[str, str]] = []
    lines = [
        "| pair (same window) | flow without console, CPU of one core | flow with console |"
        " added by the console: median (per round) | live updates received |"
        " page fps (median) | p95 frame | frames > 25 ms | page main thread busy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for variant in PAIRS:
        rs = results[variant]
        base = statistics.median(x["cpu_without"] for x in rs)
        cpu = statistics.median(x["cpu"] for x in rs)
        diffs = [x["cpu"] - x["cpu_without"] for x in rs]
        added = statistics.median(diffs)
        per = ", ".join(f"{d * 100:+.1f}" for d in diffs)
        ws = (
            f"{statistics.median(x['ws_msgs_per_s'] for x in rs):.1f}/s"
            if "ws_msgs_per_s" in rs[0]
            else "—"
        )
        if "fps" in rs[0]:
            fps = f"{statistics.median(x['fps'] for x in rs):.1f}"
            p95 = f"{statistics.median(x['p95_ms'] for x in rs):.1f} ms"
            long = ", ".join(f"{x['long_frames']}/{x['frames']}" for x in rs)
            busy = f"{statistics.median(x['main_thread_busy'] for x in rs) * 100:.1f} %"
        else:
            fps = p95 = long = busy = "—"
        lines.append(
            f"| {variant} | {base * 100:.1f} % | {cpu * 100:.1f} % | {added * 100:+.2f} % "
            f"({per}) | {ws} | {fps} | {p95} | {long} | {busy} |"
        )
        rows.append((variant, f"added {added * 100:+.2f} % of a core"))
    took = time.monotonic() - started
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — web console cost at 500 frames/s (issue 17)\n\n")
        f.write(
            f"Command: `.venv/bin/python -m bench.console --rounds {args.rounds} --seconds "
            f"{args.seconds:g}` on {platform.python_implementation()} "
            f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs shared "
            f"with other engineers' work (noisy: the variants alternate in every round); took "
            f"{took:.0f} s. Server = `les02-flow run flows/default.yaml` (simulator in-process, "
            "500 frames/s; recorder off); each pair runs the flow without and with the console "
            "AT THE SAME TIME, so both see the same load; CPU of each whole process over "
            f"{args.seconds:g} s after {args.warmup:g} s of warm-up; Chromium's CPU not counted. "
            "Page frame rate by requestAnimationFrame counting in headless Chromium while the "
            "stream runs (500 position events/s into the console, 20 updates/s to the page).\n\n"
        )
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
