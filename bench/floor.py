"""The CPU floor at 500 frames/s: what any Python asyncio server pays before doing any work.

    .venv/bin/python -m bench.floor            # about 1 minute

Issue 8 asks for <= 3 % of one core at the LES02's 500 frames/s with 10 WebSocket + 2 TCP
clients, p99 <= 2 ms. At 500 frames/s the frames are 2 ms apart, so a p99 of 2 ms leaves
nothing to batch: every frame must wake the server and be written to each of the 12 client
sockets on its own. This benchmark measures that floor with the same paced sender thread and
virtual bus as :mod:`bench.live`, and clients in another process:

* ``hand-off only``: a reader thread blocks in ``bus.recv`` and hands each frame to the loop
  with ``call_soon_threadsafe`` -- no decoding, no sockets;
* ``hand-off + 12 writes``: the same, and the loop writes one ready-made 120-byte message to
  12 TCP client sockets per frame (what the 10 WebSocket + 2 ECUconnect clients need at
  least) -- no JSON, no WebSocket framing, no parsing, no ride detection, no recording;
* ``les02-flow``: the full default-flow graph of :mod:`bench.live` at the same rate.

All three in the same run; server CPU excludes the sender thread, as in :mod:`bench.live`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import can

from bench.traffic import PacedSender, cpu_seconds, les02_traffic

RESULTS = Path(__file__).with_name("RESULTS.md")
ROOT = Path(__file__).resolve().parents[1]
RATE = 500.0
DURATION = 10.0
CLIENTS = 12
MESSAGE = b"x" * 120


def _server(rate: float, duration: float, clients: int) -> float:
    """Run one floor server; returns its CPU (fraction of one core, sender excluded)."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        transports: list[asyncio.Transport] = []

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                transports.append(transport)

        server = await loop.create_server(Proto, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client: subprocess.Popen[str] | None = None
        if clients:
            client = subprocess.Popen(  # noqa: ASYNC220 - once, before the measurement
                [sys.executable, "-m", "bench.floor", "--client", str(port), str(clients)],
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
                text=True,
            )
            while len(transports) < clients:  # noqa: ASYNC110 - a short wait for connects
                await asyncio.sleep(0.01)
        channel = f"bench-floor-{os.getpid()}"
        bus = can.Bus(interface="virtual", channel=channel)
        stop = threading.Event()

        def on_frame(_msg: can.Message) -> None:
            for t in transports:
                t.write(MESSAGE)

        def reader() -> None:
            while not stop.is_set():
                msg = bus.recv(0.2)
                if msg is not None:
                    loop.call_soon_threadsafe(on_frame, msg)

        thread = threading.Thread(target=reader, name="reader", daemon=True)
        thread.start()
        sender = PacedSender(channel, les02_traffic(rate, duration))
        c0, t0 = cpu_seconds(), time.perf_counter()
        sender.start()
        while sender.is_alive():  # noqa: ASYNC110 - poll a thread
            await asyncio.sleep(0.05)
        c1, t1 = cpu_seconds(), time.perf_counter()
        stop.set()
        thread.join()
        bus.shutdown()
        for t in transports:
            t.close()
        server.close()
        await server.wait_closed()
        if client is not None:
            await asyncio.to_thread(client.wait, 10)
        return (c1 - c0 - sender.stats.cpu) / (t1 - t0)

    return asyncio.run(main())


def _client(port: int, n: int) -> None:
    """Open ``n`` connections and read everything until the server closes them."""
    sel = selectors.DefaultSelector()
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    open_ = n
    while open_:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if not sock.recv(1 << 16):
                sel.unregister(sock)
                sock.close()
                open_ -= 1


def main(duration: float = DURATION, command: str = "") -> list[tuple[str, str]]:
    """The three measurements at 500 frames/s, same run; appends a section to RESULTS.md."""
    from bench import live

    started = time.perf_counter()
    handoff = _server(RATE, duration, 0)
    writes = _server(RATE, duration, CLIENTS)
    full = live.run_once("les02-flow", RATE, duration)
    rows = [
        (f"floor: thread hand-off only, {RATE:.0f} frames/s", f"{handoff:.1%} of one core"),
        (
            f"floor: hand-off + {CLIENTS} socket writes per frame, {RATE:.0f} frames/s",
            f"{writes:.1%} of one core",
        ),
        (
            f"les02-flow default graph, 10 WS + 2 TCP clients, {RATE:.0f} frames/s",
            f"{full.sut['cpu']:.1%} of one core ({full.sut['cpu'] / writes:.1f}x the floor)",
        ),
    ]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — CPU floor at {RATE:.0f} frames/s (issue 8)\n\n")
        f.write(
            f"Command: `{command or '.venv/bin/python -m bench.floor'}` on "
            f"{platform.python_implementation()} "
            f"{platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs; "
            f"{duration:g} s per measurement; took {time.perf_counter() - started:.0f} s.\n\n"
        )
        f.write("| measurement | result |\n|---|---|\n")
        for name, value in rows:
            f.write(f"| {name} | {value} |\n")
    return rows


def _cli() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--client", nargs=2, type=int, metavar=("PORT", "N"), help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=DURATION)
    a = p.parse_args()
    if a.client:
        _client(*a.client)
        return 0
    for name, value in main(a.duration):
        print(f"{name:<70} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
