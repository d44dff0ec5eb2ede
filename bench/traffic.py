"""Shared pieces of the live benchmarks: LES02 traffic, the paced sender, the SUT protocol.

python-can ``virtual`` buses exist only inside one process, so the paced sender runs as a
thread *inside* the system under test (SUT). Its CPU time is measured with
``time.thread_time()`` and subtracted from the SUT's CPU time. Each frame is stamped with its
due time on the wall clock (the sender's bus keeps timestamps), which is the frame timestamp
every event carries, so client latency = receipt time - due time on the same machine clock:
it includes any lateness of the sender itself.

SUT protocol (stdin/stdout, one JSON object per line):

1. the SUT prints ``{"ready": true, "ws_port": .., "tcp_port": ..}``;
2. the driver starts the clients, then writes a ``go`` line;
3. the SUT waits until all clients are connected, sends the traffic, waits (bounded) until
   its pipeline is drained and prints the result object (:func:`drive` measures it);
4. the driver writes a ``quit`` line and the SUT exits.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import can

from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim

__all__ = [
    "PacedSender",
    "SendStats",
    "cpu_seconds",
    "drive",
    "emit",
    "les02_traffic",
    "peak_rss_mib",
    "read_command",
    "thread_cpu",
    "thread_shares",
]


class _Frame(can.Message):
    """A :class:`can.Message` whose deep copy is a plain field-by-field copy.

    The virtual bus deep-copies every frame once per receiver inside ``send()``; the generic
    ``copy.deepcopy`` costs the in-process sender ~20 us of GIL time per frame, which then
    competes with the system under test. The copy is an ordinary ``can.Message`` with equal
    fields, so what the SUT receives is unchanged.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> can.Message:
        return can.Message(
            timestamp=self.timestamp,
            arbitration_id=self.arbitration_id,
            is_extended_id=self.is_extended_id,
            is_remote_frame=self.is_remote_frame,
            is_error_frame=self.is_error_frame,
            channel=self.channel,
            dlc=self.dlc,
            data=bytes(self.data),
            is_fd=self.is_fd,
            is_rx=self.is_rx,
            bitrate_switch=self.bitrate_switch,
            error_state_indicator=self.error_state_indicator,
            check=False,
        )


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
        (f.t, _Frame(arbitration_id=f.can_id, data=f.data, is_extended_id=False))
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
    """Sends ``traffic`` onto a virtual bus channel, drift-free: frame ``i`` is due at
    ``t0 + due[i]`` (``t0`` = :meth:`run` start) and is stamped with that due time (wall
    clock), so a frame the sender puts on the bus late counts as latency of the system under
    test, never hides it.

    Like a CAN controller's receive FIFO seen from a user process, the sender wakes at most
    every ``tick`` seconds (0.2 ms) and sends everything due by then: at 12,600 frames/s it
    takes the GIL ~5,000 times a second instead of 12,600, which would otherwise compete with
    the system under test for the interpreter. At 500 frames/s (2 ms apart) every frame goes
    out on its own, on time.

    The bus is opened in the constructor (before the SUT's clock starts) and shut down at
    the end of :meth:`run`. Read :attr:`stats` after ``join()``.
    """

    def __init__(
        self,
        channel: str,
        traffic: list[tuple[float, can.Message]],
        tick: float = 0.0002,
        bus: can.BusABC | None = None,
    ) -> None:
        super().__init__(name="paced sender", daemon=True)
        self.bus = bus or can.Bus(interface="virtual", channel=channel, preserve_timestamps=True)
        self.traffic = traffic
        self.tick = tick
        self.stats = SendStats()

    def run(self) -> None:
        send = self.bus.send
        traffic = self.traffic
        tick = self.tick
        n = len(traffic)
        perf = time.perf_counter
        c0 = time.thread_time()
        wall0, t0 = time.time(), perf()
        i = 0
        behind = 0.0
        try:
            while i < n:
                now = perf() - t0
                while i < n and traffic[i][0] <= now:
                    due, msg = traffic[i]
                    if now - due > behind:
                        behind = now - due
                    msg.timestamp = wall0 + due
                    send(msg)
                    i += 1
                if i < n:
                    wait = traffic[i][0] - (perf() - t0)
                    if wait > 0:
                        time.sleep(max(wait, tick))
        finally:
            self.stats = SendStats(i, perf() - t0, time.thread_time() - c0, behind)
            self.bus.shutdown()


async def drive(
    channel: str,
    traffic: list[tuple[float, can.Message]],
    drained: Callable[[int], bool],
    drain_timeout: float,
) -> dict[str, Any]:
    """Send ``traffic`` on ``channel`` and measure the system under test the same way for
    every system: process CPU minus the sender thread's over the sending period, per-thread
    CPU, peak RSS; then wait (at most ``drain_timeout`` s) until ``drained(frames sent)``.

    Returns the measurement part of the SUT's result object (see the module docstring).
    """
    loop = asyncio.get_running_loop()
    sender = PacedSender(channel, traffic)
    c0, t0, th0 = cpu_seconds(), time.perf_counter(), thread_cpu()
    sender.start()
    while sender.is_alive():  # noqa: ASYNC110 - poll a thread
        await asyncio.sleep(0.02)
    c1, t1 = cpu_seconds(), time.perf_counter()
    threads = thread_shares(th0, thread_cpu(), t1 - t0)
    stats = sender.stats
    threads["paced sender (not counted)"] = round(stats.cpu / (t1 - t0), 4)
    deadline = loop.time() + drain_timeout
    while not drained(stats.sent) and loop.time() < deadline:  # noqa: ASYNC110 - bounded
        await asyncio.sleep(0.01)
    return {
        "sent": stats.sent,
        "send_wall": stats.wall,
        "sender_behind_ms": stats.max_behind * 1e3,
        "cpu": (c1 - c0 - stats.cpu) / (t1 - t0),
        "cpu_with_sender": (c1 - c0) / (t1 - t0),
        "drain_s": time.perf_counter() - t1,
        "threads": threads,
        "rss_mib": peak_rss_mib(),
    }


def emit(obj: dict[str, Any]) -> None:
    """One protocol line on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def read_command() -> str:
    """The next command line from stdin (``""`` at EOF)."""
    return sys.stdin.readline().strip()
