"""End to end: `les02-flow run flows/default.yaml` (as `make run` runs it) serves the web
console and says where."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import threading
from pathlib import Path

from les02_flow.testing import poll_until

ROOT = Path(__file__).resolve().parents[2]


def test_default_flow_prints_the_console_url_and_serves_it(
    cli_cmd: list[str], free_port: int
) -> None:
    proc = subprocess.Popen(
        [
            *cli_cmd, "run", "flows/default.yaml", "--stats-interval", "0",
            "--set", "ws.host=127.0.0.1", "--set", "ws.port=0", "--set", "tcp.port=0",
            "--set", "store.disabled=true", "--set", "recorder.disabled=true",
            "--set", f"console.port={free_port}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        line = poll_until(
            lambda: next((x for x in lines if "open http://" in x), None),
            "the console's 'open http://' line",
            30,
            process=proc,
            detail=lambda: "".join(lines),
        )
        assert re.search(rf"web_console 'console': open http://localhost:{free_port}/\s*$", line)
        conn = http.client.HTTPConnection("localhost", free_port, timeout=10)
        conn.request("GET", "/api/flow")
        doc = json.loads(conn.getresponse().read())
        conn.close()
        ids = {n["id"] for n in doc["graph"]["nodes"]}
        assert {"sim", "bus", "parse", "rides", "ws", "console"} <= ids
        assert "store" not in ids and "store" in doc["graph"]["disabled"]
        # the store is disabled: the console says so and runs on (live rides only)
        assert any("store 'store' is disabled" in line for line in lines)
        conn = http.client.HTTPConnection("localhost", free_port, timeout=10)
        conn.request("GET", "/")
        page = conn.getresponse()
        assert page.status == 200 and b"les02-flow console" in page.read()
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(20)
        reader.join(5)
        proc.stderr.close()
    assert proc.returncode == 0, "".join(lines)
