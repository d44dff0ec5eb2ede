"""End to end: `les02-flow run flows/default.yaml` served to real WebSocket clients."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from les02_flow.testing import poll_until

ROOT = Path(__file__).resolve().parents[2]
#: the default flow writes files; tests keep the repository clean
NO_FILES = (
    "--set",
    "store.disabled=true",
    "--set",
    "recorder.disabled=true",
    "--set",
    "tcp.port=0",
)


async def connect_retry(url: str, deadline: float) -> Any:
    while True:
        try:
            return await connect(url, open_timeout=2)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def collect(url: str, seconds: float) -> tuple[list[dict[str, Any]], float]:
    async with await connect_retry(url, time.monotonic() + 20) as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        events = [first]
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
        return events, time.monotonic() - start


def start_flow(cli_cmd: list[str], port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*cli_cmd, "run", "flows/default.yaml", "--set", f"ws.port={port}", *NO_FILES, *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_flow(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"did not stop on SIGTERM:\n{err}") from None
    return proc.returncode, err


def test_default_flow_streams_position_samples(cli_cmd: list[str], free_port: int) -> None:
    proc = start_flow(cli_cmd, free_port, "--stats-interval", "0")
    try:
        url = f"ws://127.0.0.1:{free_port}"
        results = asyncio.run(_three_clients(url))
    finally:
        code, err = stop_flow(proc)
    assert code == 0, err
    assert "SIGTERM: stopping gracefully" in err
    events, _ = results[0]
    samples = [e for e in events if e["type"] == "position_sample"]
    assert samples, "no position_sample received"
    for e in samples:
        assert list(e) == ["proto", "type", "ts", "source", "payload"]
        assert (e["proto"], e["source"]) == (1, "les02")
        assert isinstance(e["ts"], float)
        assert list(e["payload"]) == ["channel", "position_raw"]
        assert isinstance(e["payload"]["position_raw"], int)
    channels = {e["payload"]["channel"] for e in samples}
    assert channels == {"master", "slave"}
    # timestamps are frame times, in order
    ts = [e["ts"] for e in samples]
    assert ts == sorted(ts)
    # "about 500 per second": 250 Hz per channel, interleaved (broad bounds; rates are benched),
    # over the frames' own times: a client slow to read (a loaded machine) drains a backlog
    # within its window, which says nothing about the stream
    rate = (len(samples) - 1) / (ts[-1] - ts[0])
    assert 250 < rate < 750, rate
    # every client got the same stream
    for other, _ in results[1:]:
        assert len(other) > 0.5 * len(events)


async def _three_clients(url: str) -> list[tuple[list[dict[str, Any]], float]]:
    return list(await asyncio.gather(*(collect(url, 2.0) for _ in range(3))))


def test_type_filter_and_tap(cli_cmd: list[str], free_port: int) -> None:
    proc = start_flow(cli_cmd, free_port, "--stats-interval", "0")
    try:
        url = f"ws://127.0.0.1:{free_port}"
        deadline = time.monotonic() + 20
        while True:  # wait for the server
            try:
                asyncio.run(_probe(url))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        tap = subprocess.run(
            [*cli_cmd, "tap", url, "--types", "status", "--count", "2"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        code, err = stop_flow(proc)
    assert code == 0, err
    assert tap.returncode == 0, tap.stderr
    lines = tap.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all(json.loads(line)["type"] == "status" for line in lines)


async def _probe(url: str) -> None:
    async with connect(url, open_timeout=2):
        pass


def test_sigint_stops_gracefully_and_logs_to_file(
    cli_cmd: list[str], free_port: int, tmp_path: Path
) -> None:
    log_file = tmp_path / "run.log"
    proc = start_flow(cli_cmd, free_port, "--log-file", str(log_file), "--stats-interval", "0.5")
    try:
        url = f"ws://127.0.0.1:{free_port}"
        events, _ = asyncio.run(collect(url, 0.5))
        assert events
        # a periodic stats line before the signal (a starved flow's timer may be late)
        poll_until(
            lambda: log_file.exists() and "stats sim out=" in log_file.read_text(),
            "a periodic stats line",
            20,
            process=proc,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "SIGINT: stopping gracefully" in err
    text = log_file.read_text()
    assert "flow 'les02-default' running" in text
    assert text.count("stats sim out=") >= 2  # periodic and at exit


def test_a_node_that_cannot_start_fails_the_run(cli_cmd: list[str], free_port: int) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", free_port))
        busy.listen()
        result = subprocess.run(
            [
                *cli_cmd,
                "run",
                "flows/default.yaml",
                "--set",
                f"ws.port={free_port}",
                "--set",
                "ws.host=127.0.0.1",
                *NO_FILES,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 1
    assert f"ws_sink: cannot listen on 127.0.0.1:{free_port}" in result.stderr
    # which node of which flow line: flows/default.yaml:LINE:COL: node 'ws': ...
    assert re.search(r"flows/default\.yaml:\d+:\d+: node 'ws': ws_sink: cannot", result.stderr)
