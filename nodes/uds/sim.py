"""Node ``uds_sim``: simulated UDS diagnostic traffic (ECU reprogramming sessions) as CAN frames.

A thin wrapper around :class:`~les02_flow.nodes.uds.generator.UdsTrafficGenerator`: the
generator makes the frames with their times, this node paces them against the event loop's
monotonic clock (without drift, like ``les02_sim``), emits them on ``out`` and optionally sends
them onto a python-can bus too.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import can
from pydantic import Field, model_validator
from reactivex import Observable
from reactivex.subject import Subject

from les02_flow.node import Context, Kind, Node, NodeConfig, RateLimitedLog
from les02_flow.nodes.simbus import open_bus, send_frame, shutdown_bus
from les02_flow.nodes.uds.generator import Frame, UdsSimParams, UdsTrafficGenerator
from les02_flow.pacing import paced

__all__ = ["UdsSim", "UdsSimConfig"]

#: frames emitted in one burst before the sender yields to the event loop
_BURST = 256
#: how long stop() waits for the sender task to end after cancelling it
_STOP_TIMEOUT = 2.0
#: the bus speed the generator's frame times assume (reported to sinks that advertise it)
SIMULATED_BITRATE = 500_000


class UdsSimConfig(NodeConfig, UdsSimParams):
    """Configuration of ``uds_sim``.

    The generator's fields (ids, padding, transfer blocks, seed) come from
    :class:`UdsSimParams` (written once, there); only the pacing and the bus are the node's own.
    """

    speed: float = Field(
        default=1.0, gt=0, description="Time factor: 2.0 plays the traffic twice as fast."
    )
    loop: bool = Field(
        default=True,
        description="true: session after session until stopped; false: one session (OBD-II "
        "polling, then one reprogramming session), then the node completes.",
    )
    interface: str | None = Field(
        default=None,
        description="Also send every frame onto this python-can interface (e.g. virtual, "
        "socketcan); null = only emit on 'out'.",
    )
    channel: str | None = Field(
        default=None,
        description="python-can channel for 'interface' (e.g. vcan0); also set as the frames' "
        "channel.",
    )
    bitrate: int | None = Field(
        default=None, gt=0, description="Bus bitrate in bit/s, passed to python-can when set."
    )
    start_delay: float = Field(
        default=0.0, ge=0, description="Wall-clock seconds to wait after start before sending."
    )

    @model_validator(mode="after")
    def _check(self) -> UdsSimConfig:
        if self.interface is not None and self.channel is None:
            raise ValueError("interface needs a channel")
        return self

    def params(self) -> UdsSimParams:
        """The generator parameters of this config."""
        return self.uds_params()


class UdsSim(Node[UdsSimConfig]):
    """Simulated UDS diagnostic traffic: ECU reprogramming sessions and OBD-II polling.

    A mock of the CANcorder ``mock_uds_canlogger.py``: one tester (``tester_id``, default
    0x7E0) and one ECU (``ecu_id``, 0x7E8) on 11-bit classic CAN, every message valid ISO-TP
    (padded 8-byte frames, first-frame lengths, flow control from the receiver, consecutive
    frames that honour the announced block size and STmin). Each session is a stretch of
    OBD-II polling on the functional id (0x7DF; mode 01 PIDs, now and then modes 03, 07 and
    09) followed by a reprogramming sequence: extended session, identification reads (VIN
    F190 and more), DTC reads (0x19), check preconditions, DTC setting off, communication
    control, programming session, security access (sometimes a wrong key → NRC 0x35 and a
    retry), fingerprint, erase memory (several response-pending 0x78), request download,
    transfer data with block sequence counters 1..255, 0, .. (sometimes NRC 0x71-0x73 and the
    block again), transfer exit, check memory and dependencies, ECU reset, clear DTCs.

    Frames are emitted on ``out`` as ``can.Message`` (standard ids, DLC 8) with timestamps on
    the wall clock: ``start time + t / speed``, where ``t`` is the generator's time; they are
    paced against the event loop's monotonic clock without drift (late frames are sent at
    once). With ``interface``/``channel`` each frame is also sent onto that python-can bus
    (send errors are counted as ``send_errors`` and logged, never fatal). With ``loop: false``
    one session is played and ``out`` completes (a flow whose sources all completed ends). The
    same ``seed`` gives the same frames.
    """

    type_name: ClassVar[str] = "uds_sim"
    input_kind: ClassVar[Kind | None] = None
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.FRAME}
    examples: ClassVar[tuple[str, ...]] = (
        "uds:\n  type: uds_sim\n  wires: [tcp]\n",
        "uds:\n  type: uds_sim\n  loop: false\n  seed: 42\n  speed: 10\n  transfer_blocks: 300\n",
        "uds:\n  type: uds_sim\n  tester_id: 0x7E2\n  ecu_id: 0x7EA\n  interface: virtual\n"
        "  channel: uds\n",
    )

    def __init__(self, node_id: str, config: UdsSimConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        #: the generator; ``generator.seed`` is the seed in use (drawn once when unset)
        self.generator = UdsTrafficGenerator(config.params())
        self._subject: Subject[can.Message] = Subject()
        self._bus: can.BusABC | None = None
        self._task: asyncio.Task[None] | None = None
        self._completed = False
        self._send_log = RateLimitedLog(self.log)

    @property
    def bus_info(self) -> dict[str, str]:
        """What sinks that advertise the bus see: the simulated interface and bitrate."""
        return {
            "interface": self.config.interface or "uds_sim",
            "channel": self.config.channel or "mock-uds",
            "bitrate": str(self.config.bitrate or SIMULATED_BITRATE),
        }

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        return {"out": self._subject}

    async def start(self) -> None:
        """Open the bus (if configured) and start playing from the beginning; a running run is
        stopped first. ``NodeStartError`` when the bus cannot be opened."""
        if self._completed:
            self.log.warning("already completed; not restarted")
            return
        await self._halt()
        cfg = self.config
        if cfg.interface is not None:
            self._bus = open_bus("uds_sim", cfg.interface, cfg.channel, cfg.bitrate)
        sessions = None if cfg.loop else 1
        self._task = asyncio.get_running_loop().create_task(
            self._run(self.generator.frames(sessions), self._bus), name=f"uds_sim:{self.node_id}"
        )
        self.log.info(
            "tester 0x%03X, ECU 0x%03X, functional 0x%03X (seed %d, speed %g, %s)%s",
            cfg.tester_id,
            cfg.ecu_id,
            cfg.functional_id,
            self.generator.seed,
            cfg.speed,
            "looping" if cfg.loop else "one session",
            f", also on interface={cfg.interface} channel={cfg.channel}" if self._bus else "",
        )

    async def _run(self, frames: Iterator[Frame], bus: can.BusABC | None) -> None:
        loop = asyncio.get_running_loop()
        speed = self.config.speed
        channel = self.config.channel
        await asyncio.sleep(self.config.start_delay)
        t0 = loop.time()
        wall0 = time.time()
        emit = self._subject.on_next
        sent = 0

        def offset(frame: Frame) -> float:
            return frame.t_us / 1_000_000 / speed

        try:
            async for frame in paced(frames, offset, t0, _BURST):
                msg = can.Message(
                    timestamp=wall0 + offset(frame),
                    arbitration_id=frame.can_id,
                    is_extended_id=False,
                    data=frame.data,
                    channel=channel,
                )
                try:
                    emit(msg)  # ``out`` is counted by the runtime at the port
                except Exception as exc:  # a downstream bug must not end the simulation
                    self.report_error(msg, exc)
                sent += 1
                if bus is not None:
                    self._send(bus, msg)
        except Exception as exc:  # a generator bug: report it and end the port
            self.counters.errors += 1
            self.log.error("simulation failed: %r", exc)
        else:
            self.log.info("run complete, %d frames", sent)
        self._complete()

    def _send(self, bus: can.BusABC, msg: can.Message) -> None:
        send_frame(bus, msg, self.counters, self._send_log)

    def _complete(self) -> None:
        if not self._completed:
            self._completed = True
            self._subject.on_completed()

    async def _halt(self) -> None:
        task, self._task = self._task, None
        bus, self._bus = self._bus, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=_STOP_TIMEOUT)
        if bus is not None:
            shutdown_bus(bus, self.log)

    async def stop(self) -> None:
        """Cancel the sender, shut the bus down, complete ``out``: idempotent, bounded, never
        raises."""
        try:
            await self._halt()
        except Exception as exc:  # never raise from stop
            self.log.warning("error while stopping: %s", exc)
        self._complete()
