"""UDS-over-CAN traffic of ECU reprogramming sessions, as timestamped classic CAN frames (pure).

No I/O, no asyncio, no Rx: :class:`UdsTrafficGenerator` turns a seed into a deterministic
stream of :class:`Frame` objects (``t_us`` microseconds from the start of the run, 11-bit
``can_id``, 8 data bytes). The ``uds_sim`` node (:mod:`.sim`) paces them onto the wall clock.

One tester and one ECU: the tester sends physical requests on ``tester_id`` (default 0x7E0) and
OBD-II requests on ``functional_id`` (0x7DF); the ECU answers on ``ecu_id`` (0x7E8). Messages
are ISO-TP (ISO 15765-2, normal addressing, :mod:`.isotp`), every frame padded to 8 bytes with
``padding`` (default 0xAA):

* a message of more than 7 bytes starts with a first frame whose length is exactly the bytes
  delivered; the receiver answers with a flow control frame on *its own* id (the ECU on
  ``ecu_id`` for tester requests, the tester on ``tester_id`` for ECU responses, also for
  responses to functional OBD requests), then the sender sends the consecutive frames;
* consecutive frames are separated by at least the STmin of the flow control that allowed them
  plus one frame time (every CF, including the first after a flow control, starts at least
  ``STmin`` after the previous frame ended). With a block size ``BS > 0`` the receiver sends a
  new flow control after every ``BS`` consecutive frames; now and then the ECU first sends
  flow-control WAIT frames before continuing;
* the ECU's flow-control parameters (block size, STmin) and the tester's are drawn per session.

A *session* (the unit of ``frames(sessions=N)``) is one stretch of OBD-II polling followed by one
reprogramming sequence:

1. OBD-II polling on the functional id: mode 01 PIDs round robin (00, 04, 05, 0C, 0D, 0F, 10, 11,
   ...) every 100 ms (the schedule is computed from the phase start, so there is no drift),
   with an occasional mode 03 (stored DTCs), mode 07 (pending DTCs) and mode 09 PID 02 (VIN,
   multi-frame);
2. extended session (10 03), tester present (3E 00), identification reads (22 F190 VIN
   multi-frame, F18C, F187, F189, F191, F18A, F197; sometimes an unsupported DID → NRC 0x31),
   DTC reads (19 01, 19 02, 19 06), check programming preconditions (31 01 0203),
   control DTC setting off (85 02), communication control (28 03 01);
3. programming session (10 02; sometimes busy NRC 0x21 and a retry, or response pending 0x78),
   security access 27 01 / 27 02 (sometimes a wrong key → NRC 0x35, then a new seed and the
   right key), fingerprint write (2E F15A, a multi-frame request), erase memory
   (31 01 FF00, several response-pending 0x78 before the answer), request download (34),
   ``transfer_blocks`` transfer data blocks (36; block sequence counter 1, 2, .., 255, 0, 1, ..;
   now and then NRC 0x71/0x72/0x73 and the same block again, or 0x78 before the answer), request
   transfer exit (37), check memory (31 01 0202 with the image CRC-32), check programming
   dependencies (31 01 FF01), ECU reset (11 01) and the reboot pause;
4. default session (10 01), clear DTCs (14 FFFFFF), DTC read (19 02), software version read.

Every request gets a final answer: the positive response (SID + 0x40) or ``7F SID NRC``,
possibly after one or more ``7F SID 78`` (response pending). Timestamps are computed (integer
microseconds, from response and separation times drawn from the seeded random generator),
strictly increasing, one tester/ECU conversation at a time. The same ``seed`` gives the same
bytes and times; ``seed=None`` draws one (kept in :attr:`UdsTrafficGenerator.seed`).

>>> gen = UdsTrafficGenerator(UdsSimParams(seed=1, transfer_blocks=3))
>>> frames = list(gen.frames(sessions=1))
>>> frames[0].can_id == 0x7DF, frames[0].data.hex()
(True, '020100aaaaaaaaaa')
>>> all(len(f.data) == 8 for f in frames), frames == list(gen.frames(sessions=1))
(True, True)
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from les02_flow.configfields import HexInt

from .isotp import (
    DEFAULT_PADDING,
    FC_CONTINUE,
    FC_WAIT,
    SF_MAX,
    flow_control,
    segment,
    st_min_us,
)

__all__ = [
    "BLOCK_DATA",
    "FRAME_US",
    "NRC",
    "Frame",
    "UdsSimParams",
    "UdsTrafficGenerator",
]

#: time one 8-byte classic frame occupies a 500 kbit/s bus (with stuffing), rounded up, µs
FRAME_US = 250
#: data bytes per TransferData block (the ECU announces maxNumberOfBlockLength = this + 2)
BLOCK_DATA = 256
#: OBD-II poll period, µs
OBD_PERIOD_US = 100_000

#: negative response codes used here
NRC = {
    "busyRepeatRequest": 0x21,
    "requestOutOfRange": 0x31,
    "invalidKey": 0x35,
    "uploadDownloadNotAccepted": 0x70,
    "transferDataSuspended": 0x71,
    "generalProgrammingFailure": 0x72,
    "wrongBlockSequenceCounter": 0x73,
    "responsePending": 0x78,
}

_ID_MAX = 0x7FF
# (block size, raw STmin) choices for each side's flow control
_ECU_FC = ((0, 0x00), (8, 0x00), (16, 0x01), (0, 0xF5), (32, 0x02), (4, 0x00))
_TESTER_FC = ((0, 0x00), (8, 0x00), (0, 0x05), (2, 0x0A), (1, 0x00))
_OBD_PIDS = (0x04, 0x05, 0x0C, 0x0D, 0x0F, 0x10, 0x11, 0x0B, 0x1F, 0x2F)
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


@dataclass(frozen=True, slots=True)
class Frame:
    """One classic CAN frame: ``t_us`` µs from the start of the run, 11-bit id, 8 bytes."""

    t_us: int
    can_id: int
    data: bytes

    @property
    def t(self) -> float:
        """The time in seconds."""
        return self.t_us / 1_000_000


class UdsSimParams(BaseModel):
    """What the generator simulates; invalid values raise ``ValueError`` naming the field.

    The one definition of these fields: the ``uds_sim`` node's config model extends it, so a
    field, its default, bounds and description are written here only.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    tester_id: HexInt = Field(
        default=0x7E0,
        ge=0,
        le=_ID_MAX,
        description="11-bit id of the tester's physical requests (0x7E0).",
    )
    ecu_id: HexInt = Field(
        default=0x7E8, ge=0, le=_ID_MAX, description="11-bit id the ECU responds on (0x7E8)."
    )
    functional_id: HexInt = Field(
        default=0x7DF,
        ge=0,
        le=_ID_MAX,
        description="11-bit functional (OBD-II broadcast) id (0x7DF).",
    )
    padding: HexInt = Field(
        default=DEFAULT_PADDING,
        ge=0,
        le=0xFF,
        description="Byte that fills the unused bytes of every ISO-TP frame (default 0xAA; "
        "0x55 and 0xCC are common too).",
    )
    transfer_blocks: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description="TransferData blocks (256 bytes each) per session; null = 40..320 at "
        "random, so some sessions wrap the block sequence counter past 255.",
    )
    seed: int | None = Field(
        default=None, description="Random seed; the same seed gives the same bytes. null = random."
    )

    @model_validator(mode="after")
    def _check_ids(self) -> Self:
        if len({self.tester_id, self.ecu_id, self.functional_id}) != 3:
            raise ValueError(
                "tester_id, ecu_id and functional_id must differ, got "
                f"{self.tester_id:#x}, {self.ecu_id:#x}, {self.functional_id:#x}"
            )
        return self

    def uds_params(self) -> UdsSimParams:
        """These parameters as a plain :class:`UdsSimParams` (drops a subclass's own fields)."""
        if type(self) is UdsSimParams:
            return self
        return UdsSimParams(**{name: getattr(self, name) for name in UdsSimParams.model_fields})


@dataclass
class _Vehicle:
    """What the ECU knows about itself and the car; drifts a little over time."""

    vin: bytes
    serial: bytes
    sw_version: int
    stored_dtcs: list[int] = field(default_factory=list)  # 3-byte UDS DTCs
    pending_dtcs: list[int] = field(default_factory=list)
    speed_kmh: float = 0.0
    coolant_c: float = 40.0
    intake_c: float = 25.0
    fuel_pct: float = 60.0
    run_time_s: int = 0


# common DTCs (UDS 3-byte form: 2-byte OBD code + failure type byte)
_DTC_POOL = (0x030100, 0x042000, 0x017100, 0x013300, 0xC10000, 0x050700, 0x0A0F00, 0x044200)


class _Session:
    """Builds the frames of one session; ``t`` is the time the last frame was sent (µs)."""

    def __init__(self, params: UdsSimParams, rng: random.Random, car: _Vehicle, t_us: int) -> None:
        self.p = params
        self.rng = rng
        self.car = car
        self.t = t_us
        self.out: list[Frame] = []
        self.ecu_fc = rng.choice(_ECU_FC)
        self.tester_fc = rng.choice(_TESTER_FC)

    # -- frames and ISO-TP --------------------------------------------------------------------

    def _emit(self, at_us: int, can_id: int, data: bytes) -> None:
        at = max(at_us, self.t + FRAME_US)  # one frame at a time on the bus
        self.out.append(Frame(at, can_id, data))
        self.t = at

    def _send(
        self,
        src_id: int,
        fc_id: int,
        payload: bytes,
        delay_us: int,
        fc: tuple[int, int],
        wait_chance: float = 0.0,
    ) -> None:
        """One ISO-TP message from ``src_id``; the receiver's flow control goes on ``fc_id``."""
        rng, pad = self.rng, self.p.padding
        frames = segment(payload, pad)
        self._emit(self.t + delay_us, src_id, frames[0])
        cfs = frames[1:]
        block_size, st_min = fc
        gap = st_min_us(st_min) + FRAME_US
        pos = 0
        while pos < len(cfs):
            if rng.random() < wait_chance:
                for _ in range(rng.randint(1, 3)):
                    self._emit(
                        self.t + rng.randint(2_000, 12_000),
                        fc_id,
                        flow_control(FC_WAIT, 0, 0, pad),
                    )
            self._emit(
                self.t + rng.randint(300, 2_500),
                fc_id,
                flow_control(FC_CONTINUE, block_size, st_min, pad),
            )
            block = cfs[pos : pos + block_size] if block_size else cfs[pos:]
            for cf in block:
                self._emit(self.t + gap + rng.randint(0, 80), src_id, cf)
            pos += len(block)

    def request(self, payload: bytes, *, think_us: int | None = None) -> None:
        """A physical request from the tester (after a think time)."""
        if think_us is None:
            think_us = self.rng.randint(5_000, 40_000)
        self._send(self.p.tester_id, self.p.ecu_id, payload, think_us, self.ecu_fc)

    def functional(self, payload: bytes, at_us: int) -> None:
        """A functional (OBD-II) request: a single frame by definition."""
        assert len(payload) <= SF_MAX
        self._emit(at_us, self.p.functional_id, segment(payload, self.p.padding)[0])

    def respond(self, payload: bytes, *, delay_us: int | None = None, wait: float = 0) -> None:
        """An ECU response (after its P2 response time)."""
        if delay_us is None:
            delay_us = self.rng.randint(1_000, 20_000)
        self._send(self.p.ecu_id, self.p.tester_id, payload, delay_us, self.tester_fc, wait)

    def pending(self, sid: int, count: int, gap: tuple[int, int]) -> None:
        """``count`` response-pending NRCs, the first after P2, then every ``gap`` µs."""
        for i in range(count):
            delay = self.rng.randint(1_000, 20_000) if i == 0 else self.rng.randint(*gap)
            self.respond(bytes([0x7F, sid, NRC["responsePending"]]), delay_us=delay)

    def exchange(
        self, request: bytes, response: bytes, *, pendings: int = 0, think_us: int | None = None
    ) -> None:
        """Request, optional response-pending NRCs, final response."""
        self.request(request, think_us=think_us)
        if pendings:
            self.pending(request[0], pendings, (50_000, 300_000))
            self.respond(response, delay_us=self.rng.randint(50_000, 300_000))
        else:
            self.respond(response)

    def negative(self, request: bytes, nrc: int) -> None:
        self.request(request)
        self.respond(bytes([0x7F, request[0], nrc]))

    # -- OBD-II ------------------------------------------------------------------------------

    def obd_phase(self) -> None:
        rng, car = self.rng, self.car
        polls = rng.randint(20, 50)
        start = self.t + rng.randint(20_000, 100_000)
        pids = itertools.cycle(_OBD_PIDS)
        for k in range(polls):
            due = start + k * OBD_PERIOD_US  # computed from the phase start: no drift
            at = max(due, self.t + 5_000)
            roll = rng.random()
            if k == 0:
                req, resp = b"\x01\x00", self._supported_pids()
            elif roll < 0.04:
                req, resp = b"\x03", self._obd_dtcs(0x43, car.stored_dtcs)
            elif roll < 0.07:
                req, resp = b"\x07", self._obd_dtcs(0x47, car.pending_dtcs)
            elif roll < 0.09:
                req, resp = b"\x09\x02", b"\x49\x02\x01" + car.vin
            else:
                pid = next(pids)
                req, resp = bytes([0x01, pid]), bytes([0x41, pid]) + self._pid_value(pid)
            self._drive(0.1)
            self.functional(req, at)
            self.respond(resp, delay_us=rng.randint(1_000, 30_000))

    def _supported_pids(self) -> bytes:
        mask = 0
        for pid in _OBD_PIDS:
            if pid <= 0x20:
                mask |= 1 << (32 - pid)
        mask |= 1  # PID 0x20 (next range) supported
        return b"\x41\x00" + mask.to_bytes(4, "big")

    @staticmethod
    def _obd_dtcs(mode: int, dtcs: list[int]) -> bytes:
        body = b"".join((d >> 8).to_bytes(2, "big") for d in dtcs)
        return bytes([mode, len(dtcs)]) + body

    def _drive(self, dt_s: float) -> None:
        car, rng = self.car, self.rng
        car.speed_kmh = min(130.0, max(0.0, car.speed_kmh + rng.uniform(-1.5, 1.6)))
        car.coolant_c = min(95.0, car.coolant_c + rng.uniform(0.0, 0.4))
        car.intake_c = min(45.0, max(10.0, car.intake_c + rng.uniform(-0.2, 0.2)))
        car.fuel_pct = max(5.0, car.fuel_pct - rng.uniform(0.0, 0.01))
        car.run_time_s += 1 if rng.random() < dt_s * 10 else 0

    def _pid_value(self, pid: int) -> bytes:
        car, rng = self.car, self.rng
        rpm = 780 + car.speed_kmh * 28 + rng.uniform(-30, 30)
        if pid == 0x04:
            return bytes([min(255, int((15 + car.speed_kmh / 2) * 255 / 100))])
        if pid == 0x05:
            return bytes([int(car.coolant_c) + 40])
        if pid == 0x0B:
            return bytes([min(255, int(30 + car.speed_kmh / 1.5))])
        if pid == 0x0C:
            return int(rpm * 4).to_bytes(2, "big")
        if pid == 0x0D:
            return bytes([int(car.speed_kmh)])
        if pid == 0x0F:
            return bytes([int(car.intake_c) + 40])
        if pid == 0x10:
            return int((2.5 + car.speed_kmh / 8) * 100).to_bytes(2, "big")
        if pid == 0x11:
            return bytes([min(255, int((12 + car.speed_kmh / 3) * 255 / 100))])
        if pid == 0x1F:
            return car.run_time_s.to_bytes(2, "big")
        return bytes([int(car.fuel_pct * 255 / 100)])  # 0x2F fuel level

    # -- UDS ---------------------------------------------------------------------------------

    def maybe_tester_present(self) -> None:
        if self.rng.random() < 0.3:
            self.exchange(b"\x3e\x00", b"\x7e\x00")

    def reprogramming(self) -> None:
        rng, car = self.rng, self.car
        self.exchange(
            b"\x10\x03", b"\x50\x03\x00\x32\x01\xf4", think_us=rng.randint(200_000, 600_000)
        )
        self.maybe_tester_present()
        self.identification()
        self.read_dtcs(detail=True)
        self.exchange(b"\x31\x01\x02\x03", b"\x71\x01\x02\x03\x00")
        self.exchange(b"\x85\x02", b"\xc5\x02")
        self.exchange(b"\x28\x03\x01", b"\x68\x03")
        # programming session: the ECU may be busy first, or jump to the boot loader slowly
        if rng.random() < 0.25:
            self.negative(b"\x10\x02", NRC["busyRepeatRequest"])
            self.request(b"\x10\x02", think_us=rng.randint(50_000, 200_000))
        else:
            self.request(b"\x10\x02")
        if rng.random() < 0.5:
            self.pending(0x10, 1, (0, 0))
            self.respond(b"\x50\x02\x00\x19\x01\xf4", delay_us=rng.randint(80_000, 250_000))
        else:
            self.respond(b"\x50\x02\x00\x19\x01\xf4")
        self.security_access()
        self.maybe_tester_present()
        today = bytes([0x25, rng.randint(1, 12), rng.randint(1, 28)])
        self.exchange(b"\x2e\xf1\x5a" + today + rng.randbytes(6), b"\x6e\xf1\x5a")
        self.download()
        self.exchange(b"\x31\x01\xff\x01", b"\x71\x01\xff\x01\x00", pendings=rng.randint(0, 1))
        self.exchange(b"\x11\x01", b"\x51\x01")
        self.t += rng.randint(300_000, 800_000)  # the ECU reboots: silence on the bus
        car.sw_version += 1
        self.exchange(b"\x10\x01", b"\x50\x01\x00\x32\x01\xf4", think_us=rng.randint(5_000, 50_000))
        self.exchange(b"\x14\xff\xff\xff", b"\x54")
        car.stored_dtcs = [] if rng.random() < 0.7 else [rng.choice(_DTC_POOL)]
        car.pending_dtcs = list(car.stored_dtcs)
        self.read_dtcs(detail=False)
        self.exchange(b"\x22\xf1\x89", b"\x62\xf1\x89" + self._sw_version())

    def _sw_version(self) -> bytes:
        return f"SW{self.car.sw_version:04d}".encode()

    def identification(self) -> None:
        rng, car = self.rng, self.car
        dids: list[tuple[int, bytes]] = [
            (0xF190, car.vin),
            (0xF18C, car.serial),
            (0xF187, b"5Q0906259AB"),
            (0xF189, self._sw_version()),
            (0xF191, b"HW-H13"),
            (0xF18A, b"ACME-EL"),
            (0xF197, b"ENGINE CONTROL UNIT"),
        ]
        head, tail = dids[:1], dids[1:]
        rng.shuffle(tail)
        for did, value in head + tail[: rng.randint(3, len(tail))]:
            req = b"\x22" + did.to_bytes(2, "big")
            self.exchange(req, b"\x62" + did.to_bytes(2, "big") + value)
        if rng.random() < 0.3:
            self.negative(b"\x22\xf1\xa0", NRC["requestOutOfRange"])

    def read_dtcs(self, *, detail: bool) -> None:
        car = self.car
        n = len(car.stored_dtcs)
        self.exchange(b"\x19\x01\x0d", b"\x59\x01\x7f\x01" + n.to_bytes(2, "big"))
        records = b"".join(d.to_bytes(3, "big") + b"\x2f" for d in car.stored_dtcs)
        self.exchange(b"\x19\x02\x0d", b"\x59\x02\x7f" + records)
        if detail and car.stored_dtcs:
            dtc = car.stored_dtcs[0].to_bytes(3, "big")
            counter = bytes([self.rng.randint(1, 40)])
            self.exchange(b"\x19\x06" + dtc + b"\xff", b"\x59\x06" + dtc + b"\x2f\x01" + counter)

    def security_access(self) -> None:
        rng = self.rng
        wrong = rng.random() < 0.3
        while True:
            seed = rng.getrandbits(32) or 1
            self.exchange(b"\x27\x01", b"\x67\x01" + seed.to_bytes(4, "big"))
            key = _key_of(seed)
            if wrong:
                wrong = False
                self.negative(
                    b"\x27\x02" + (key ^ 0x00FF00FF).to_bytes(4, "big"), NRC["invalidKey"]
                )
                continue
            self.exchange(b"\x27\x02" + key.to_bytes(4, "big"), b"\x67\x02")
            return

    def download(self) -> None:
        rng = self.rng
        blocks = self.p.transfer_blocks or rng.randint(40, 320)
        size = (blocks - 1) * BLOCK_DATA + rng.randint(1, BLOCK_DATA)
        address = 0x0002_0000 + rng.randint(0, 0x3F) * 0x1000
        image = rng.randbytes(size)
        region = address.to_bytes(4, "big") + size.to_bytes(4, "big")
        # erase: the ECU keeps the tester waiting with response-pending NRCs
        erase = b"\x31\x01\xff\x00\x44" + region
        if rng.random() < 0.15:
            self.negative(erase, NRC["busyRepeatRequest"])
        self.request(erase)
        self.pending(0x31, rng.randint(2, 5), (300_000, 900_000))
        self.respond(b"\x71\x01\xff\x00\x00", delay_us=rng.randint(100_000, 600_000))
        max_len = (BLOCK_DATA + 2).to_bytes(2, "big")
        self.exchange(b"\x34\x00\x44" + region, b"\x74\x20" + max_len)
        counter = 1
        for pos in range(0, size, BLOCK_DATA):
            block = b"\x36" + bytes([counter]) + image[pos : pos + BLOCK_DATA]
            while True:
                self._send(
                    self.p.tester_id,
                    self.p.ecu_id,
                    block,
                    rng.randint(1_000, 4_000),
                    self.ecu_fc,
                    wait_chance=0.02,
                )
                roll = rng.random()
                if roll < 0.012:
                    nrc = rng.choice((0x71, 0x72, 0x73))
                    self.respond(bytes([0x7F, 0x36, nrc]))
                    self.t += rng.randint(10_000, 60_000)
                    continue  # the same block again, same counter
                if roll < 0.03:
                    self.pending(0x36, 1, (0, 0))
                    self.respond(b"\x76" + bytes([counter]), delay_us=rng.randint(20_000, 90_000))
                else:
                    self.respond(b"\x76" + bytes([counter]), delay_us=rng.randint(1_000, 8_000))
                break
            counter = (counter + 1) & 0xFF
        self.exchange(b"\x37", b"\x77")
        crc = zlib.crc32(image).to_bytes(4, "big")
        self.exchange(
            b"\x31\x01\x02\x02" + crc, b"\x71\x01\x02\x02\x00", pendings=rng.randint(0, 2)
        )


def _key_of(seed: int) -> int:
    """The simulated ECU's seed → key algorithm (arbitrary, deterministic)."""
    key = ((seed ^ 0x2C5A3B19) * 0x41C6 + 0x3039) & 0xFFFFFFFF
    return ((key << 7) | (key >> 25)) & 0xFFFFFFFF


class UdsTrafficGenerator:
    """Deterministic UDS/OBD-II traffic of one tester/ECU pair (see the module docstring).

    Calling rules: :meth:`frames` returns a fresh iterator each call; every call replays the
    same run from ``t = 0``. It is lazy: an endless run (``sessions=None``) builds one session
    at a time (a few thousand to a few tens of thousands of frames).
    """

    def __init__(self, params: UdsSimParams) -> None:
        self.params = params
        #: the seed in use (drawn once when ``params.seed`` is ``None``)
        self.seed: int = (
            params.seed if params.seed is not None else random.SystemRandom().getrandbits(32)
        )

    def frames(self, sessions: int | None = 1) -> Iterator[Frame]:
        """The frames of ``sessions`` sessions (``None`` = endless), in time order."""
        if sessions is not None and sessions < 0:
            raise ValueError(f"sessions must be >= 0 or None, got {sessions}")
        rng = random.Random(self.seed)
        car = _Vehicle(
            vin=("WVW" + "".join(rng.choice(_VIN_CHARS) for _ in range(14))).encode(),
            serial=f"SN{rng.randint(0, 10**10 - 1):010d}".encode(),
            sw_version=rng.randint(1, 50),
            stored_dtcs=rng.sample(_DTC_POOL, rng.randint(0, 4)),
        )
        car.pending_dtcs = car.stored_dtcs[: rng.randint(0, len(car.stored_dtcs))]
        t_us = 0
        counter = itertools.count() if sessions is None else range(sessions)
        for _ in counter:
            session = _Session(self.params, rng, car, t_us)
            session.obd_phase()
            session.reprogramming()
            yield from session.out
            t_us = session.t
