"""ECUconnect broadcast benchmark: ``ecuconnect_tcp_sink`` against the seed's broadcaster.

    .venv/bin/python -m bench.ecuconnect

Sends N classic 8-byte frames to 1, 10 and 50 TCP clients, and to 10 clients plus one stalled
client (connected, never reads, 64 KiB receive buffer), and reports the rate at which every
non-stalled client received every frame (frames/s) and the server's CPU time per frame
(user+sys of this process, which also produces the frames). Clients run in separate
processes on 127.0.0.1 and read as fast as they can.

* les02-flow: :class:`EcuconnectTcpSink` fed in bursts of 512 frames (as ``can_source``
  hands them over), one loop iteration per burst. To measure the *sustainable* rate (no loss)
  the feeder waits while a non-stalled client has a backlog; the stalled client is left to
  its buffer policy (drop_oldest).
* seed: the seed's ``canlogger.py`` way, in a thread: pack each frame, then under one lock
  ``sendall`` it to each client in turn (blocking sockets). With a stalled client it blocks
  once the socket buffers fill; the rate is measured over the last 2 s of
  :data:`STALL_WINDOW` seconds (0 when it is blocked by then).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import platform
import resource
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import can

from les02_flow.node import Context
from les02_flow.nodes.ecuconnect.sink import EcuconnectTcpSink, EcuconnectTcpSinkConfig

RESULTS = Path(__file__).with_name("RESULTS.md")
PACKET = 22  # classic frame with 8 data bytes
BURST = 512
#: seconds the seed broadcaster runs with a stalled client before it is measured
STALL_WINDOW = 6.0
#: longest a run may take (seconds)
RUN_CAP = 20.0

CLIENT = r"""
import socket, sys, time
port, expected, stall = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
s = socket.socket()
if stall:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
s.connect(("127.0.0.1", port))
print("ready", flush=True)
if stall:
    sys.stdin.read()
    sys.exit(0)
got = 0
while got < expected:
    b = s.recv(1 << 20)
    if not b:
        break
    got += len(b)
print("done", got, time.time(), flush=True)
sys.stdin.read()
"""


def _frames(n: int) -> list[can.Message]:
    return [
        can.Message(
            timestamp=1.0 + i * 1e-4,
            arbitration_id=0x100 + (i & 0xFF),
            is_extended_id=False,
            data=i.to_bytes(8, "big"),
        )
        for i in range(n)
    ]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Clients:
    """Client processes: ``n`` readers (each expecting ``expected`` bytes), optional stalled."""

    def __init__(self, port: int, n: int, expected: int, stalled: bool) -> None:
        self.procs: list[subprocess.Popen[str]] = []
        self.stalled: subprocess.Popen[str] | None = None
        if stalled:
            self.stalled = self._spawn(port, 0, True)
            self._ready(self.stalled)
        for _ in range(n):
            self.procs.append(self._spawn(port, expected, False))
        for p in self.procs:
            self._ready(p)

    @staticmethod
    def _spawn(port: int, expected: int, stall: bool) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", CLIENT, str(port), str(expected), "1" if stall else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    @staticmethod
    def _ready(p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"client did not start: {line!r}")

    def wait_done(self) -> float:
        """Wall time (time.time) when the last reader had everything."""
        last = 0.0
        for p in self.procs:
            assert p.stdout is not None
            parts = p.stdout.readline().split()
            if not parts or parts[0] != "done":
                raise RuntimeError(f"client failed: {parts}")
            last = max(last, float(parts[2]))
        return last

    def close(self) -> None:
        for p in [*self.procs, *([self.stalled] if self.stalled else [])]:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout):
                if f is not None:
                    f.close()


# -- les02-flow --------------------------------------------------------------------------------


async def _flow_run(
    n_clients: int, stalled: bool, frames: list[can.Message]
) -> tuple[float, float]:
    cfg = EcuconnectTcpSinkConfig(host="127.0.0.1", port=0, zeroconf=False, max_clients=64)
    sink = EcuconnectTcpSink("tcp", cfg, Context("tcp", logging.getLogger("bench")))
    await sink.start()
    assert sink.port is not None
    loop = asyncio.get_running_loop()
    clients = await loop.run_in_executor(
        None, Clients, sink.port, n_clients, len(frames) * PACKET, stalled
    )
    try:
        want = n_clients + int(stalled)
        deadline = loop.time() + RUN_CAP
        while sink.client_count < want:
            if loop.time() > deadline:
                raise RuntimeError(f"only {sink.client_count} of {want} clients connected")
            await asyncio.sleep(0.01)
        stalled_client = next(iter(sink.clients)) if stalled else None
        readers = [c for c in sink.clients if c is not stalled_client]
        done = loop.run_in_executor(None, clients.wait_done)
        t0, c0 = time.time(), _cpu()
        consume = sink.consume
        for start in range(0, len(frames), BURST):
            for f in frames[start : start + BURST]:
                consume(f)
            await asyncio.sleep(0)
            while any(c.queue.queued_bytes for c in readers):  # noqa: ASYNC110 - pace
                await asyncio.sleep(0.0005)
        c1 = _cpu()
        t_end = await asyncio.wait_for(done, RUN_CAP)
        lost = sum(c.queue.dropped for c in readers)
        if lost:
            raise RuntimeError(f"readers lost {lost} frames")
        return len(frames) / (t_end - t0), (c1 - c0) / len(frames) * 1e6
    finally:
        await sink.stop()
        clients.close()


# -- the seed's way ----------------------------------------------------------------------------


def _pack(msg: can.Message) -> bytes:
    flags = 1 if msg.is_extended_id else 0
    ts = int(msg.timestamp * 1_000_000)
    return struct.pack(">QIBB", ts, msg.arbitration_id, flags, len(msg.data)) + bytes(msg.data)


def _seed_run(n_clients: int, stalled: bool, frames: list[can.Message]) -> tuple[float, float]:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    port = server.getsockname()[1]
    conns: list[socket.socket] = []
    lock = threading.Lock()
    want = n_clients + int(stalled)

    def accept() -> None:
        while len(conns) < want:
            c, _ = server.accept()
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with lock:
                conns.append(c)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    clients = Clients(port, n_clients, len(frames) * PACKET, stalled)
    acceptor.join(10)
    sent = [0]
    stop = threading.Event()

    def broadcast() -> None:  # the seed: blocking sendall per frame per client under a lock
        for msg in frames:
            if stop.is_set():
                return
            pkt = _pack(msg)
            with lock:
                for c in list(conns):
                    try:
                        c.sendall(pkt)
                    except OSError:
                        conns.remove(c)
            sent[0] += 1

    try:
        t0, c0 = time.time(), _cpu()
        thread = threading.Thread(target=broadcast, daemon=True)
        thread.start()
        if stalled:  # rate over the last 2 s of the window (steady state)
            thread.join(STALL_WINDOW - 2.0)
            t0, c0, n0 = time.time(), _cpu(), sent[0]
            thread.join(2.0)
            t1, c1, n = time.time(), _cpu(), sent[0] - n0
            stop.set()
            if clients.stalled is not None:
                clients.stalled.kill()  # unblocks sendall
            thread.join(10)
            return n / (t1 - t0), (c1 - c0) / max(n, 1) * 1e6
        thread.join(RUN_CAP)
        c1 = _cpu()
        t_end = clients.wait_done()
        return len(frames) / (t_end - t0), (c1 - c0) / len(frames) * 1e6
    finally:
        stop.set()
        clients.close()
        for c in conns:
            c.close()
        server.close()


def main() -> list[tuple[str, str]]:
    logging.disable(logging.INFO)
    rows: list[tuple[str, str]] = []
    cases = [(1, False, 200_000), (10, False, 100_000), (50, False, 40_000), (10, True, 100_000)]
    for n_clients, stalled, n_frames in cases:
        frames = _frames(n_frames)
        label = f"{n_clients} clients" + (" + 1 stalled" if stalled else "")
        ours, ours_cpu = asyncio.run(_flow_run(n_clients, stalled, frames))
        seed, seed_cpu = _seed_run(n_clients, stalled, frames)
        rows.append(
            (
                f"ECUconnect broadcast, {label} ({n_frames} frames)",
                f"les02-flow {ours:,.0f} frames/s, {ours_cpu:.2f} µs CPU/frame; seed "
                f"{seed:,.0f} frames/s, {seed_cpu:.2f} µs CPU/frame; ratio {ours / seed:.1f}x",
            )
        )
        print(f"{rows[-1][0]:<58} {rows[-1][1]}", flush=True)
    return rows


def _append(rows: list[tuple[str, str]]) -> None:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    with RESULTS.open("a", encoding="utf-8") as f:
        f.write(f"\n## {stamp} — ECUconnect broadcast (issue 4)\n\n")
        f.write("Command: `.venv/bin/python -m bench.ecuconnect` on ")
        f.write(f"{platform.python_implementation()} {platform.python_version()}, ")
        f.write(f"{platform.machine()}, clients in separate processes on 127.0.0.1\n\n")
        f.write("| case | result |\n|---|---|\n")
        for name, value in rows:
            f.write(f"| {name} | {value} |\n")


if __name__ == "__main__":
    _append(main())
