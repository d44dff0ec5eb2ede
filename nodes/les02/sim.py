"""Node ``les02_sim``: a simulated LES02 elevator that sends its CAN frames onto a python-can bus.

A thin wrapper around :class:`~les02_flow.nodes.les02.elevator.ElevatorSim`: the model makes
the frames, this node paces them against the event loop's monotonic clock and sends them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar

import can
from pydantic import Field
from reactivex import Observable

from les02_flow.node import Context, Kind, Node, NodeConfig, RateLimitedLog
from les02_flow.nodes.les02.elevator import ElevatorParams, ElevatorSim
from les02_flow.nodes.simbus import open_bus, send_frame, shutdown_bus
from les02_flow.pacing import paced

__all__ = ["Les02Sim", "Les02SimConfig"]

#: frames sent in one burst before the sender yields to the event loop
_BURST = 256
#: trips kept in ``sim.trips`` during an endless run (about a day of traffic)
_KEEP_TRIPS = 10_000
#: how long stop() waits for the sender task to end after cancelling it
_STOP_TIMEOUT = 2.0


class Les02SimConfig(NodeConfig, ElevatorParams):
    """Configuration of ``les02_sim``.

    The model's fields come from :class:`ElevatorParams` (written once, there); only the bus
    and the pacing are the node's own.
    """

    interface: str = Field(
        default="virtual",
        description="python-can interface to send on (e.g. virtual, socketcan).",
    )
    channel: str = Field(
        default="les02",
        description="python-can channel (a virtual bus name, or e.g. vcan0 / can0).",
    )
    bitrate: int | None = Field(
        default=None, gt=0, description="Bus bitrate in bit/s, passed to python-can when set."
    )
    speed: float = Field(
        default=1.0, gt=0, description="Time factor: 2.0 runs the simulation twice as fast."
    )
    start_delay: float = Field(
        default=0.0, ge=0, description="Wall-clock seconds to wait after start before sending."
    )

    def params(self) -> ElevatorParams:
        """The model parameters of this config."""
        return self.elevator_params()


class Les02Sim(Node[Les02SimConfig]):
    """Simulated LES02 elevator: sends position and status frames onto a CAN bus.

    The car rides between floors with exact jerk-limited (S-curve) motion, dwells with open
    doors between trips, and reports its position as LES02 frames: 0x80 (master) and 0x81
    (slave) at 250 Hz each, interleaved one frame every 2 ms, DLC 4, 24-bit big-endian position
    in counts of ``resolution_mm``; the slave reads ``slave_offset_counts`` (+/- noise) higher.
    Status frames 0x30/0x31 (DLC 8, simulator-defined content) follow every
    ``status_interval`` seconds. This node has no output ports: read the traffic with a
    ``can_source`` on the same interface and channel, exactly as you would read hardware.

    Frames are paced against the event loop's monotonic clock without drift (each frame's due
    time is computed from the start; late frames are sent at once). ``speed`` scales time.
    With ``trips`` or ``duration`` the run is finite and the node finishes when everything is
    sent; otherwise it runs until stopped. Send errors are counted and logged (rate-limited),
    never fatal. The same ``seed`` gives the same run.
    """

    type_name: ClassVar[str] = "les02_sim"
    input_kind: ClassVar[Kind | None] = None
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    examples: ClassVar[tuple[str, ...]] = (
        "sim:\n  type: les02_sim\n  interface: virtual\n  channel: les02\n",
        "sim:\n  type: les02_sim\n  channel: les02\n  seed: 42\n  trips: 5\n  speed: 10\n"
        "  silent_when_stopped: true\n",
        "sim:\n  type: les02_sim\n  interface: socketcan\n  channel: vcan0\n"
        "  floors_mm: [0, 3000, 6000, 9000]\n  v_max: 1.0\n  resolution_mm: 0.1\n",
    )

    def __init__(self, node_id: str, config: Les02SimConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        params = config.params()
        #: the model; ``sim.trips`` is the ground truth of the trips sent so far
        self.sim = ElevatorSim(params, max_trips=None if params.finite else _KEEP_TRIPS)
        # keep the drawn seed so that a restart replays the same run
        self._params = params.model_copy(update={"seed": self.sim.seed})
        self._bus: can.BusABC | None = None
        self._task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._failure: BaseException | None = None
        self._send_log = RateLimitedLog(self.log)
        self._runs = 0

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        """No output ports: the traffic goes onto the bus."""
        return {}

    async def start(self) -> None:
        """Open the bus and start sending (from the start of the run; a running run is stopped
        first). ``NodeStartError`` when the bus cannot be opened."""
        if self._task is not None or self._bus is not None:
            await self.stop()
        cfg = self.config
        bus = open_bus("les02_sim", cfg.interface, cfg.channel, cfg.bitrate)
        if self._runs:
            # a restart replays the run from the start
            self.sim = ElevatorSim(self._params, max_trips=self.sim.max_trips)
        self._runs += 1
        self._bus = bus
        self._done = asyncio.Event()
        self._failure = None
        self._task = asyncio.get_running_loop().create_task(
            self._run(bus), name=f"les02_sim:{self.node_id}"
        )
        self.log.info(
            "sending on interface=%s channel=%s (seed %d, speed %g, %s)",
            cfg.interface,
            cfg.channel,
            self.sim.seed,
            cfg.speed,
            f"{self.sim.end_t:.3f} s simulated" if self.sim.end_t is not None else "endless",
        )

    async def _run(self, bus: can.BusABC) -> None:
        loop = asyncio.get_running_loop()
        speed = self.config.speed
        t0 = loop.time() + self.config.start_delay
        counters = self.counters
        try:
            async for frame in paced(self.sim.frames(), lambda f: f.t / speed, t0, _BURST):
                msg = can.Message(
                    arbitration_id=frame.can_id, data=frame.data, is_extended_id=False
                )
                if send_frame(bus, msg, counters, self._send_log):
                    counters.emitted += 1
        except Exception as exc:  # a model bug: report it through finished()
            self._failure = exc
            self.log.error("simulation failed: %r", exc)
        else:
            self.log.info("run complete, %d frames sent", counters.emitted)
        self._done.set()

    async def finished(self) -> None:
        """Return when a finite run has been sent completely (never for an endless run, unless
        the node is stopped). Raises the error if the simulation itself failed."""
        await self._done.wait()
        if self._failure is not None:
            raise self._failure

    async def stop(self) -> None:
        """Cancel the sender and shut the bus down: idempotent, bounded, never raises."""
        task, self._task = self._task, None
        bus, self._bus = self._bus, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=_STOP_TIMEOUT)
        if bus is not None:
            shutdown_bus(bus, self.log)
        self._done.set()
