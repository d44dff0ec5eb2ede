"""Make the README's screenshot (docs/web-console.png) from flows/default.yaml.

    make screenshot                                 # writes docs/web-console.png
    .venv/bin/python -m tests.web.screenshot OUT.png [--rides N] [--seed S]

Runs ``les02-flow run flows/default.yaml`` as a user would (the simulator drives the lift;
WebSocket and ECUconnect ports picked free, the ride database in a temporary directory, no
recording), waits until the store has ``--rides`` rides and the car is on its way again,
opens the console in the same headless Chromium the browser tests use (tests/web/conftest.py),
selects the latest ride for its chart and saves the whole page (1600 x 1660). Takes about a
minute with the default flow's door dwells; not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from .conftest import ROOT, get_json, start_chromium, wait_for

#: the page, whole: the README shows all of it
WINDOW = (1600, 1660)


def run_default_flow(data_dir: Path, seed: int) -> tuple[subprocess.Popen[str], str]:
    """``les02-flow run flows/default.yaml``; the process and the console's URL."""
    exe = Path(sys.executable).parent / "les02-flow"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "les02_flow.cli"]
    proc = subprocess.Popen(
        [
            *cmd, "run", "flows/default.yaml", "--stats-interval", "0",
            "--set", f"sim.seed={seed}", "--set", "ws.port=0", "--set", "tcp.port=0",
            "--set", "recorder.disabled=true", "--set", "console.port=0",
        ],
        cwd=ROOT,
        env={**os.environ, "LES02_DATA_DIR": str(data_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stderr is not None
    threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True).start()

    def console_url() -> str | None:
        if proc.poll() is not None:
            raise RuntimeError("les02-flow run exited:\n" + "".join(lines[-20:]))
        for line in lines:
            if m := re.search(r"web_console 'console': open (http://\S+:\d+/)", line):
                return m.group(1)
        return None

    url: str = wait_for(console_url, "the console's URL in the log", 60)
    return proc, url


def moving(driver: Any) -> bool:
    """A ride in progress and the car well under way (the lift view shows it)."""
    state: list[str] = driver.execute_script(
        "return [document.getElementById('ride-now').textContent,"
        " document.getElementById('speed').textContent];"
    )
    ride, speed = state
    digits = re.sub(r"[^0-9]", "", speed)
    return ride.startswith(("▲", "▼")) and bool(digits) and int(digits) > 500


def shoot(out: Path, rides: int, seed: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="les02-screenshot-"))
    proc, url = run_default_flow(data_dir, seed)
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    driver: Any = None
    profile = ""
    try:
        # the store has the rides, and the next one is under way (the lift view shows it)
        wait_for(
            lambda: len(get_json(port, f"/api/rides?limit={rides}")["rides"]) >= rides,
            f"{rides} stored rides",
            60 + 30 * rides,
        )
        driver, profile = start_chromium()
        driver.set_window_size(*WINDOW)
        driver.get(url)
        wait_for(
            lambda: driver.find_element("id", "conn").get_attribute("data-state") == "live",
            "the page to be live",
        )
        stored = "#rides-body tr[data-ride] a[href$='export.csv']"  # a live one has no links
        wait_for(lambda: driver.find_elements("css selector", stored), "the stored rides listed")
        driver.execute_script("document.querySelector(arguments[0]).closest('tr').click();", stored)
        wait_for(
            lambda: int(driver.find_element("id", "ride-chart").get_attribute("data-samples")),
            "the ride's chart",
        )
        wait_for(lambda: moving(driver), "the car on its way", 90)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
    finally:
        if driver is not None:
            driver.quit()
        if profile:
            shutil.rmtree(profile, ignore_errors=True)
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path, nargs="?", default=ROOT / "docs" / "web-console.png")
    parser.add_argument("--rides", type=int, default=3, help="stored rides to wait for")
    parser.add_argument("--seed", type=int, default=7, help="the simulator's seed")
    args = parser.parse_args(argv)
    shoot(args.out, args.rides, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
