"""Shared pieces of the live benchmarks: LES02 traffic, the paced sender, the SUT protocol.

python-can ``virtual`` buses exist only inside one process, so the paced sender runs as a
thread *inside* the system under test (SUT). Its CPU time is measured with
``time.thread_time()`` and subtracted from the SUT's CPU time; the virtual bus stamps each
frame with ``time.time()`` when it is sent (``preserve_timestamps`` is off), which is the
frame timestamp every event carries, so client latency = receipt time - event ``ts`` on the
same machine clock.

SUT protocol (stdin/stdout, one JSON object per line):

1. the SUT prints ``{"ready": true, "ws_port": .., "tcp_port": ..}``;
2. the driver starts the clients, then writes a ``go`` line;
3. the SUT waits until all clients are connected, sends the traffic, waits (bounded) until
   its pipeline is drained and prints the result object (:func:`sut_result`);
4. the driver writes a ``quit`` line and the SUT exits.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import can

from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim

__all__ = [
    "PacedSender",
    "SendStats",
    "cpu_seconds",
    "emit",
    "les02_traffic",
    "peak_rss_mib",
    "read_command",
    "thread_cpu",
    "thread_shares",
]


def les02_traffic(rate: float, duration: float, seed: int = 1) -> list[tuple[float, can.Message]]:
    """``(due, frame)`` pairs of a simulated LES02 at ``rate`` position frames/s in total.

    ``due`` is seconds from the start; status frames (1/s per channel) come on top.

    >>> pairs = les02_traffic(500.0, 0.1)
    >>> len(pairs), [hex(m.arbitration_id) for _, m in pairs[:4]], pairs[2][0]
    (52, ['0x80', '0x30', '0x81', '0x31'], 0.002)
    """
    params = ElevatorParams(
        rate_hz=rate / 2.0, duration=duration, seed=seed, dwell_min=1.0, dwell_max=2.0
    )
    return [
        (f.t, can.Message(arbitration_id=f.can_id, data=f.data, is_extended_id=False))
        for f in ElevatorSim(params).frames()
    ]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) per live Python thread, by thread name (Linux ``/proc``;
    empty elsewhere). Resolution is one clock tick (10 ms)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = t.name if t is not threading.main_thread() else "event loop (main thread)"
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_shares(
    before: dict[str, float], after: dict[str, float], wall: float
) -> dict[str, float]:
    """Per-thread CPU as a fraction of one core between two :func:`thread_cpu` snapshots."""
    return {k: round((v - before.get(k, 0.0)) / wall, 4) for k, v in after.items()}


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclass
class SendStats:
    """What a :class:`PacedSender` did."""

    sent: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    #: largest delay of a frame behind its due time (s): the sender itself was starved
    max_behind: float = 0.0


class PacedSender(threading.Thread):
    """Sends ``traffic`` onto a virtual bus channel, drift-free: frame ``i`` goes out at
    ``t0 + due[i]`` (``t0`` = :meth:`run` start, perf_counter), late frames at once.

    The bus is opened in the constructor (before the SUT's clock starts) and shut down at
    the end of :meth:`run`. Read :attr:`stats` after ``join()``.
    """

    def __init__(self, channel: str, traffic: list[tuple[float, can.Message]]) -> None:
        super().__init__(name="paced sender", daemon=True)
        self.bus = can.Bus(interface="virtual", channel=channel)
        self.traffic = traffic
        self.stats = SendStats()

    def run(self) -> None:
        send = self.bus.send
        traffic = self.traffic
        n = len(traffic)
        perf = time.perf_counter
        c0 = time.thread_time()
        t0 = perf()
        i = 0
        behind = 0.0
        try:
            while i < n:
                now = perf() - t0
                while i < n and traffic[i][0] <= now:
                    late = now - traffic[i][0]
                    if late > behind:
                        behind = late
                    send(traffic[i][1])
                    i += 1
                if i < n:
                    wait = traffic[i][0] - (perf() - t0)
                    if wait > 0:
                        time.sleep(wait)
        finally:
            self.stats = SendStats(i, perf() - t0, time.thread_time() - c0, behind)
            self.bus.shutdown()


def emit(obj: dict[str, Any]) -> None:
    """One protocol line on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_command() -> str:
    """The next command line from stdin (``""`` at EOF)."""
    return sys.stdin.readline().strip()
