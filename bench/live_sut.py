"""The system under test of ``bench.live``: flows/default.yaml with the simulator replaced by a
paced sender thread (see :mod:`bench.traffic` for the protocol).

    python -m bench.live_sut --rate 12600 --duration 10 --tmp /tmp/x

Runs exactly what ``les02-flow run flows/default.yaml`` runs (can_source on a virtual bus ->
les02_parse -> ride_detect -> ws_sink and ride_store; can_source -> file_recorder and
ecuconnect_tcp_sink), with these ``--set`` overrides: ``sim.disabled=true``, a private bus
channel, ``ws.host=127.0.0.1 ws.port=0 ws.ping_interval=null``, ``tcp.port=0``, and store /
recorder paths under ``--tmp``. Started by :mod:`bench.live`; not meant to be run by hand.
With ``BENCH_DIAGNOSE=1`` it prints loop stalls and GC pauses to stderr
(:mod:`bench.diagnose`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any

from bench.diagnose import Diagnostics
from bench.traffic import (
    drive,
    emit,
    les02_traffic,
    read_command,
)
from les02_flow.clirun import compile_path, settle_heap
from les02_flow.engine import Engine

FLOW = str(Path(__file__).resolve().parent.parent / "flows" / "default.yaml")
#: seconds the SUT waits for its clients, and at most for its pipeline to drain
CONNECT_TIMEOUT = 15.0
DRAIN_TIMEOUT = 3.0


def overrides(channel: str, tmp: str) -> list[str]:
    """The ``--set`` list that turns flows/default.yaml into the benchmark's SUT."""
    return [
        "sim.disabled=true",
        "bus.interface=virtual",
        f"bus.channel={channel}",
        "ws.host=127.0.0.1",
        "ws.port=0",
        "ws.ping_interval=null",
        "tcp.port=0",
        f"store.path={tmp}/rides.sqlite",
        f"recorder.path={tmp}/bench.log",
    ]


async def _stdin_line() -> str:
    return await asyncio.get_running_loop().run_in_executor(None, read_command)


def _buffered(ws: Any, tcp: Any) -> int:
    """Bytes still queued in the sinks (0 = drained)."""
    return sum(sink.held_bytes(c) for sink in (ws, tcp) for c in sink.clients)


async def run(rate: float, duration: float, tmp: str, ws_clients: int, tcp_clients: int) -> int:
    channel = f"bench-live-{os.getpid()}"
    flow = compile_path(FLOW, overrides(channel, tmp))
    if flow is None:
        return 1
    traffic = les02_traffic(rate, duration)
    engine = Engine(flow)
    await engine.start()
    settle_heap()  # as `les02-flow run` does after start
    try:
        nodes = engine.nodes
        ws, tcp = nodes["ws"], nodes["tcp"]
        emit({"ready": True, "ws_port": ws.port, "tcp_port": tcp.port})  # type: ignore[attr-defined]
        if await _stdin_line() != "go":
            return 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECT_TIMEOUT
        while ws.client_count < ws_clients or tcp.client_count < tcp_clients:  # type: ignore[attr-defined]
            if loop.time() > deadline:
                emit({"error": "clients did not connect"})
                return 1
            await asyncio.sleep(0.01)
        counters = engine.counters()
        diagnostics = Diagnostics()
        diagnostics.start(loop)
        result = await drive(
            channel,
            traffic,
            lambda sent: counters["bus"].emitted >= sent and not _buffered(ws, tcp),
            DRAIN_TIMEOUT,
        )
        diagnostics.report()
        emit(
            {
                **result,
                "ws_expected": counters["ws"].received,
                "tcp_expected": counters["tcp"].received,
                "ws_dropped": counters["ws"].dropped,
                "tcp_dropped": counters["tcp"].dropped,
                "bus_out": counters["bus"].emitted,
            }
        )
        await _stdin_line()  # "quit": the clients have stopped counting
        emit(
            {
                "ws_expected": counters["ws"].received,
                "tcp_expected": counters["tcp"].received,
                "bus_out": counters["bus"].emitted,
            }
        )
        return 0
    finally:
        await engine.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--tmp", required=True)
    p.add_argument("--ws-clients", type=int, default=10)
    p.add_argument("--tcp-clients", type=int, default=2)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return asyncio.run(run(a.rate, a.duration, a.tmp, a.ws_clients, a.tcp_clients))


if __name__ == "__main__":
    sys.exit(main())
