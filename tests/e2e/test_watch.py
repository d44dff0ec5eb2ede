"""`run --watch`: edits are re-deployed live; connected clients and kept nodes never notice."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A `les02-flow` subprocess whose stderr lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.lines.append(raw.decode(errors="replace").rstrip())

    async def wait_for(self, pattern: str, after: int = 0, timeout: float = 20) -> str:
        rx = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                for line in self.lines[after:]:
                    if rx.search(line):
                        return line
                await asyncio.sleep(0.05)


async def count_events(url: str, seen: dict[str, Any]) -> None:
    async with connect(url) as ws:
        seen["connected"] = True
        async for raw in ws:
            event = json.loads(raw)
            seen["count"] = seen.get("count", 0) + 1
            seen.setdefault("types", set()).add(event["type"])
            if event["type"] in ("ride_start", "ride_end"):
                seen.setdefault(event["type"], []).append(event["payload"])
        seen["close"] = ws.close_code


async def count_packets(port: int, seen: dict[str, Any]) -> None:
    """An ECUconnect client: count whole packets (14-byte header + length) until EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buf = b""
    try:
        while chunk := await reader.read(65536):
            buf += chunk
            while len(buf) >= 14 and len(buf) >= 14 + buf[13]:
                buf = buf[14 + buf[13] :]
                seen["packets"] = seen.get("packets", 0) + 1
        seen["eof"] = True
    finally:
        writer.close()
        await writer.wait_closed()


def _other_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_live_edits_keep_clients_and_apply_diffs(
    cli_cmd: list[str], free_port: int, tmp_path: Path
) -> None:
    flow = tmp_path / "flow.yaml"
    original = (ROOT / "flows" / "default.yaml").read_text()
    flow.write_text(original)

    def edit(text: str) -> None:
        # write via rename, as many editors do
        tmp = tmp_path / ".flow.yaml.swp"
        tmp.write_text(text)
        tmp.replace(flow)

    tcp_port = _other_port()

    async def main() -> tuple[dict[str, Any], list[str], int]:
        proc = Proc(
            await asyncio.create_subprocess_exec(
                *cli_cmd,
                "run",
                str(flow),
                "--watch",
                "--set",
                f"ws.port={free_port}",
                "--set",
                "ws.host=127.0.0.1",
                "--set",
                f"store.path={tmp_path}/rides.sqlite",
                "--set",
                f"recorder.path={tmp_path}/rec.log",
                "--set",
                f"tcp.port={tcp_port}",
                "--set",
                "sim.dwell_min=0.5",
                "--set",
                "sim.dwell_max=1.0",
                "--stats-interval",
                "0",
                cwd=ROOT,
                stderr=asyncio.subprocess.PIPE,
            )
        )
        seen: dict[str, Any] = {}
        try:
            await proc.wait_for("watching .* for changes")
            client = asyncio.create_task(count_events(f"ws://127.0.0.1:{free_port}", seen))
            tcp = asyncio.create_task(count_packets(tcp_port, seen))
            async with asyncio.timeout(10):
                while seen.get("count", 0) < 50 or seen.get("packets", 0) < 50:
                    await asyncio.sleep(0.05)

            # 1. add a node and a wire
            mark = len(proc.lines)
            added = original.replace("out: [rides]", "out: [rides, extra]")
            added += "  extra:\n    type: debug\n    stream: log\n    rate_limit: 1\n"
            edit(added)
            line = await proc.wait_for("flow re-deployed", mark)
            assert "added 1 (extra)" in line and "rewired 1 (parse)" in line, line

            # 2. change one node's config
            mark = len(proc.lines)
            edit(added.replace("rate_limit: 1\n", "rate_limit: 2\n"))
            line = await proc.wait_for("flow re-deployed", mark)
            assert "restarted 1 (extra)" in line and "removed 0" in line, line

            # 3. remove a node
            mark = len(proc.lines)
            edit(original)
            line = await proc.wait_for("flow re-deployed", mark)
            assert "removed 1 (extra)" in line, line

            # 4. a broken file changes nothing
            mark = len(proc.lines)
            edit(original.replace("type: les02_parse", "type: les02_prase"))
            await proc.wait_for("flow edit rejected", mark)
            err = await proc.wait_for(r"unknown node type 'les02_prase'", mark)
            assert re.search(r"flow\.yaml:\d+:\d+: node 'parse'", err), err

            # 5. restore
            mark = len(proc.lines)
            edit(original)
            line = await proc.wait_for("flow re-deployed", mark)
            assert "kept 10, added 0, removed 0, restarted 0, rewired 0" in line, line
            before = seen["count"]
            async with asyncio.timeout(10):
                while seen["count"] < before + 50:
                    await asyncio.sleep(0.05)
            assert "close" not in seen, "the client was disconnected by an edit"
            assert "eof" not in seen, "the TCP client was disconnected by an edit"
        finally:
            proc.proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.proc.wait(), 20)
            await proc.reader
        await asyncio.wait_for(client, 10)
        await asyncio.wait_for(tcp, 10)
        return seen, proc.lines, code

    seen, lines, code = asyncio.run(main())

    def counter(pattern: str, stats: str) -> int:
        m = re.search(pattern, stats)
        assert m is not None, f"{pattern} not in {stats}"
        return int(m.group(1))

    assert code == 0, "\n".join(lines)
    assert seen["close"] == 1001  # closed only by the final shutdown
    stats = next(line for line in reversed(lines) if " stats " in line)
    ws_in = counter(r"\| ws in=(\d+)", stats)
    ws_out = counter(r"\| ws in=\d+ out=(\d+)", stats)
    rides_out = counter(r"\| rides in=\d+ out=(\d+)", stats)
    # nothing lost across five re-deploys: every event rides passed on reached ws and the client
    assert ws_in == rides_out
    assert seen["count"] == ws_out
    assert "dropped" not in stats.split("| ws ")[1].split("|")[0]
    # the recorder stayed through every edit: one file, every frame the bus delivered
    bus_out = counter(r"\| bus out=(\d+)", stats)
    recordings = list(tmp_path.glob("rec*.log"))
    assert len(recordings) == 1, recordings
    lines = recordings[0].read_text().splitlines()
    assert len(lines) == bus_out
    stamps = [float(line.split(")")[0].lstrip("(")) for line in lines]
    assert stamps == sorted(stamps)
    # the TCP client got every frame too, and was only closed by the shutdown
    tcp_out = counter(r"\| tcp in=\d+ out=(\d+)", stats)
    assert seen["eof"] and seen["packets"] == tcp_out > 0
    assert "dropped" not in stats.split("| tcp ")[1].split("|")[0]
    # rides in progress across edits completed with consistent data (the detector stayed)
    starts = {p["ride_id"] for p in seen.get("ride_start", [])}
    for end in seen.get("ride_end", []):
        assert end["distance_raw"] == abs(end["end_position_raw"] - end["start_position_raw"])
        if end["start_ts"] > min(stamps):
            assert end["ride_id"] in starts, "a ride lost its start across an edit"


def test_sighup_redeploys_without_watch(cli_cmd: list[str], free_port: int, tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    shutil.copy(ROOT / "flows" / "default.yaml", flow)

    async def main() -> tuple[str, int]:
        proc = Proc(
            await asyncio.create_subprocess_exec(
                *cli_cmd,
                "run",
                str(flow),
                "--set",
                f"ws.port={free_port}",
                "--set",
                "store.disabled=true",
                "--set",
                "recorder.disabled=true",
                "--stats-interval",
                "0",
                cwd=ROOT,
                stderr=asyncio.subprocess.PIPE,
            )
        )
        try:
            await proc.wait_for("flow 'les02-default' running")
            flow.write_text(flow.read_text().replace("rate_limit: 10", "rate_limit: 3"))
            proc.proc.send_signal(signal.SIGHUP)
            line = await proc.wait_for("flow re-deployed")
        finally:
            proc.proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(proc.proc.wait(), 20)
            await proc.reader
        return line, code

    line, code = asyncio.run(main())
    assert "restarted 1 (debug)" in line
    assert code == 0
