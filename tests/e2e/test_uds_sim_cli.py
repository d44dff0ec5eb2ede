"""End to end: ``les02-flow uds-sim`` served over TCP, decoded from the ECUconnect wire format
and reassembled by the independent ISO-TP/UDS checker of ``tests/nodes/test_uds_generator.py``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from les02_flow.commands.uds_sim import FLOW_FILE
from les02_flow.nodes.uds.generator import UdsSimParams, UdsTrafficGenerator

ROOT = Path(__file__).resolve().parents[2]
HEADER = struct.Struct(">QIBB")  # u64 timestamp µs, u32 id, u8 flags, u8 length


def load_checker() -> ModuleType:
    """The independent reassembler (a test module; loaded by path, not imported by name)."""
    path = ROOT / "tests" / "nodes" / "test_uds_generator.py"
    spec = importlib.util.spec_from_file_location("uds_isotp_checker", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def decode_packets(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """ECUconnect Logger packets -> ``(timestamp_us, can_id, flags, payload)``."""
    out = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= HEADER.size, f"truncated header at byte {pos}"
        ts, can_id, flags, length = HEADER.unpack_from(data, pos)
        pos += HEADER.size
        assert length <= 64 and len(data) - pos >= length, f"truncated payload at byte {pos}"
        out.append((ts, can_id, flags, data[pos : pos + length]))
        pos += length
    return out


async def read_until_eof(port: int, deadline: float) -> bytes:
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            assert time.monotonic() < deadline, "the logger never accepted a connection"
            await asyncio.sleep(0.02)
    chunks = []
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), deadline - time.monotonic()):
            chunks.append(chunk)
    finally:
        writer.close()
        await writer.wait_closed()
    return b"".join(chunks)


def test_one_session_over_ecuconnect_is_valid_uds(
    cli_cmd: list[str], free_port: int, tmp_path: Path
) -> None:
    seed, blocks, speed = 7, 260, 50.0
    stdout = (tmp_path / "stdout.txt").open("w")
    proc = subprocess.Popen(
        [
            *cli_cmd,
            "uds-sim",
            "--host",
            "127.0.0.1",
            "-p",
            str(free_port),
            "--no-zeroconf",
            "--no-loop",
            "--seed",
            str(seed),
            "-s",
            str(speed),
            "--tester-id",
            "0x7E2",
            "--ecu-id",
            "0x7EA",
            "-v",
            "--set",
            f"uds.transfer_blocks={blocks}",
            "--set",
            "uds.start_delay=1.5",  # time for the client to connect before the first frame
            "--stats-interval",
            "0",
        ],
        cwd=ROOT,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        raw = asyncio.run(read_until_eof(free_port, time.monotonic() + 30))
        _, err = proc.communicate(timeout=30)  # the flow ends by itself after one session
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        stdout.close()
    assert proc.returncode == 0, err
    assert "all sources finished" in err

    packets = decode_packets(raw)
    gen = UdsTrafficGenerator(
        UdsSimParams(seed=seed, transfer_blocks=blocks, tester_id=0x7E2, ecu_id=0x7EA)
    )
    want = list(gen.frames(1))
    assert [(i, p) for _, i, _, p in packets] == [(f.can_id, f.data) for f in want]
    assert {flags for _, _, flags, _ in packets} == {0}  # standard ids, classic CAN
    # timestamps are the generator's times on the wall clock, divided by the speed
    ts0 = packets[0][0]
    assert abs(ts0 / 1e6 - time.time()) < 120
    for (ts, *_), f in zip(packets, want, strict=True):
        assert abs((ts - ts0) - (f.t_us - want[0].t_us) / speed) <= 2

    # the independent ISO-TP / UDS checker on the stream, scaled back to simulated time
    checker: Any = load_checker()
    frames = [(round((ts - ts0) * speed), i, p) for ts, i, _, p in packets]
    stats = checker.StreamStats()
    txs = checker.check_stream(frames, 0x7E2, 0x7EA, 0x7DF, stats)
    transfers = [tx.request.payload[1] for tx in txs if tx.sid == 0x36 and tx.positive]
    assert transfers == [(n + 1) & 0xFF for n in range(blocks)]
    assert any(tx.pending for tx in txs)
    assert stats.first_frames > blocks

    # -v printed every frame (candump style)
    lines = (tmp_path / "stdout.txt").read_text().splitlines()
    assert len(lines) == len(packets)
    assert lines[0].endswith(f"{want[0].can_id:03X}#{want[0].data.hex().upper()}")


def test_bad_flags_are_clear_errors(cli: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    # flags argparse rejects (exit 2): tests/e2e/test_cli.py test_value_parsers_reject_bad_...
    res = cli("uds-sim", "--host", "127.0.0.1", "--no-zeroconf", "--service-name", "Mock {port}")
    assert res.returncode == 1
    assert "--service-name: node 'tcp'" in res.stderr
    assert "ECUconnect-Logger" in res.stderr
    res = cli("uds-sim", "--no-zeroconf", "--tester-id", "0x7E8")
    assert res.returncode == 1
    assert "must differ" in res.stderr


def test_help_lists_the_seed_flags(command_help: Callable[[str], str]) -> None:
    text = command_help("uds-sim")
    for flag in ("-p", "--port", "--tester-id", "--ecu-id", "-s", "--speed", "-v",
                 "--no-loop", "--service-name", "--no-zeroconf", "--host", "--seed"):  # fmt: skip
        assert f" {flag}" in text, flag


def test_the_flow_file_is_package_data_and_valid(
    cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    assert FLOW_FILE.resolve() == (ROOT / "flows" / "uds-mock.yaml").resolve()
    tcp = yaml.safe_load(FLOW_FILE.read_text())["nodes"]["tcp"]
    assert tcp["host"] == "127.0.0.1"  # loopback by default, like every other command
    assert tcp["service_name"] == "ECUconnect-Logger Mock-UDS {hostname}:{port}"
    res = cli("validate", "flows/uds-mock.yaml")
    assert res.returncode == 0, res.stderr
