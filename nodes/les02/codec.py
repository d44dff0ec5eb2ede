"""LES02 CAN frame decoder (docs/protocol.md): one ``can.Message`` in, one event
envelope or one :class:`Rejection` out. Pure: no I/O, no asyncio, no Rx.

The rules (``docs/protocol.md`` is the normative description):

* only classic CAN data frames with 11-bit ids are LES02 frames; error, remote, CAN FD and
  extended-id (29-bit) frames are rejected;
* channel: ``"master"`` when the CAN id is even, ``"slave"`` when it is odd;
* base id ``can_id & 0xFE``: ``0x80`` position (DLC 4), ``0x30`` status, ``0x20`` error,
  ``0x10`` system (DLC 8). The seed's mask also maps e.g. ``0x180``/``0x181`` to ``0x80``; that
  is the default. With ``strict_ids=True`` only the eight ids ``0x10 0x11 0x20 0x21 0x30 0x31
  0x80 0x81`` are accepted;
* the DLC must be exactly the one for the type, and the data must be exactly DLC bytes long;
* position: ``position_raw`` = bytes 0..2 as a 24-bit big-endian unsigned int, byte 3 ignored;
* status/error/system: the seed defines no fields, so the payload carries the raw bytes.

Calling rules: create one :class:`Les02Decoder` per stream and call :meth:`Les02Decoder.decode`
once per frame. ``decode`` never raises, whatever it is given, and keeps no state between
calls (a decoder may be shared). Event ``ts`` is the frame's ``timestamp``.

>>> import can
>>> dec = Les02Decoder()
>>> dec.decode(can.Message(timestamp=1.5, arbitration_id=0x81, is_extended_id=False,
...                        data=[0x00, 0x00, 0x90, 0xFF]))
{'proto': 1, 'type': 'position_sample', 'ts': 1.5, 'source': 'les02', 'payload': {'channel': 'slave', 'position_raw': 144}}
>>> dec.decode(can.Message(arbitration_id=0x30, is_extended_id=False, data=b"\\x01"))
Rejection(reason='bad_dlc', message='status frame id 0x030 needs DLC 8, got 1')
"""  # noqa: E501

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import can

from les02_flow.events import (
    PROTO_VERSION,
    Channel,
    Event,
    FramePayload,
    PositionSamplePayload,
)

__all__ = [
    "BAD_DLC",
    "BASE_IDS",
    "CHANNEL_MASTER",
    "CHANNEL_SLAVE",
    "ERROR_FRAME",
    "EXTENDED_ID",
    "FD_FRAME",
    "LENGTH_MISMATCH",
    "MALFORMED",
    "REASONS",
    "REMOTE_FRAME",
    "STRICT_IDS",
    "UNKNOWN_ID",
    "Les02Decoder",
    "Rejection",
    "parse_position",
]

CHANNEL_MASTER: Final = "master"
CHANNEL_SLAVE: Final = "slave"

#: base id (``can_id & 0xFE``) -> (event type, required DLC)
BASE_IDS: Final[dict[int, tuple[str, int]]] = {
    0x80: ("position_sample", 4),
    0x30: ("status", 8),
    0x20: ("error", 8),
    0x10: ("system", 8),
}

#: the only ids accepted with ``strict_ids=True``
STRICT_IDS: Final = frozenset(b | parity for b in BASE_IDS for parity in (0, 1))

# Rejection reasons (machine-readable; the parse node counts them as ``invalid_<reason>``).
ERROR_FRAME: Final = "error_frame"
REMOTE_FRAME: Final = "remote_frame"
FD_FRAME: Final = "fd_frame"
EXTENDED_ID: Final = "extended_id"
UNKNOWN_ID: Final = "unknown_id"
BAD_DLC: Final = "bad_dlc"
LENGTH_MISMATCH: Final = "length_mismatch"
MALFORMED: Final = "malformed"

#: every reason :meth:`Les02Decoder.decode` can give, in the order the checks run
REASONS: Final = (
    MALFORMED,
    ERROR_FRAME,
    REMOTE_FRAME,
    FD_FRAME,
    EXTENDED_ID,
    UNKNOWN_ID,
    BAD_DLC,
    LENGTH_MISMATCH,
)

_MAX_STD_ID = 0x7FF

# Per accepted id: (event type, channel, required DLC, is position)
_Entry = tuple[str, Channel, int, bool]


@dataclass(frozen=True, slots=True)
class Rejection:
    """A frame that is not a valid LES02 frame.

    ``reason`` is one of :data:`REASONS`, ``message`` says what is wrong in words, ``frame`` is
    the object that was given to :meth:`Les02Decoder.decode` (normally a ``can.Message``).
    """

    reason: str
    message: str
    frame: object = field(repr=False, compare=False)


def parse_position(data: bytes | bytearray) -> int:
    """The 24-bit big-endian position in bytes 0..2; byte 3 is ignored.

    The caller ensures ``len(data) >= 3``.

    >>> parse_position(bytes([0x01, 0x02, 0x03, 0xFF]))
    66051
    """
    return (data[0] << 16) | (data[1] << 8) | data[2]


def _build_table(strict_ids: bool) -> dict[int, _Entry]:
    table: dict[int, _Entry] = {}
    ids = sorted(STRICT_IDS) if strict_ids else range(_MAX_STD_ID + 1)
    for can_id in ids:
        base = BASE_IDS.get(can_id & 0xFE)
        if base is None:
            continue
        type_, dlc = base
        channel: Channel = CHANNEL_SLAVE if can_id & 1 else CHANNEL_MASTER
        table[can_id] = (type_, channel, dlc, type_ == "position_sample")
    return table


class Les02Decoder:
    """Decodes LES02 frames into event envelopes (see the module docstring for the rules).

    ``source`` goes into every envelope's ``source`` field; ``strict_ids`` accepts only the
    eight LES02 ids instead of every 11-bit id whose ``id & 0xFE`` is a base id.
    """

    __slots__ = ("_source", "_strict_ids", "_table")

    def __init__(self, source: str = "les02", strict_ids: bool = False) -> None:
        self._source = source
        self._strict_ids = strict_ids
        self._table = _build_table(strict_ids)

    @property
    def source(self) -> str:
        return self._source

    @property
    def strict_ids(self) -> bool:
        return self._strict_ids

    @property
    def accepted_ids(self) -> frozenset[int]:
        """Every CAN id (11-bit) this decoder turns into an event, given the right DLC."""
        return frozenset(self._table)

    def decode(self, msg: can.Message) -> Event | Rejection:
        """One frame -> an event envelope (a ``dict``) or a :class:`Rejection`. Never raises."""
        try:
            if msg.is_error_frame or msg.is_remote_frame or msg.is_fd or msg.is_extended_id:
                return self._reject_flags(msg)
            can_id = msg.arbitration_id
            entry = self._table.get(can_id)
            if entry is None:
                return self._reject_id(msg)
            type_, channel, dlc, is_position = entry
            data = msg.data
            if msg.dlc != dlc or len(data) != dlc:
                return self._reject_length(msg, type_, dlc)
            if is_position:
                payload: PositionSamplePayload | FramePayload = {
                    "channel": channel,
                    "position_raw": (data[0] << 16) | (data[1] << 8) | data[2],
                }
            else:
                payload = {"channel": channel, "can_id": can_id, "data": data.hex()}
            # make_event(type_, msg.timestamp, payload, self._source), inlined (same keys in
            # the same order: the JSON is byte for byte the same)
            return {
                "proto": PROTO_VERSION,
                "type": type_,
                "ts": msg.timestamp,
                "source": self._source,
                "payload": payload,
            }
        except Exception as exc:  # anything that is not a well-formed can.Message
            return Rejection(
                MALFORMED, f"not a well-formed CAN frame ({type(exc).__name__}: {exc})", msg
            )

    # -- rejections (the slow path: formatting only happens here) ---------------------------

    @staticmethod
    def _reject_flags(msg: can.Message) -> Rejection:
        if msg.is_error_frame:
            return Rejection(ERROR_FRAME, "CAN error frame", msg)
        if msg.is_remote_frame:
            return Rejection(
                REMOTE_FRAME,
                f"remote frame id {_fmt_id(msg)} (LES02 sends data frames only)",
                msg,
            )
        if msg.is_fd:
            return Rejection(
                FD_FRAME, f"CAN FD frame id {_fmt_id(msg)} (LES02 is classic CAN)", msg
            )
        return Rejection(
            EXTENDED_ID,
            f"extended (29-bit) id {_fmt_id(msg)} (LES02 uses 11-bit ids)",
            msg,
        )

    def _reject_id(self, msg: can.Message) -> Rejection:
        if self._strict_ids:
            why = "not one of 0x010 0x011 0x020 0x021 0x030 0x031 0x080 0x081 (strict_ids)"
        elif not 0 <= msg.arbitration_id <= _MAX_STD_ID:
            why = "out of the 11-bit range"
        else:
            why = f"id & 0xFE = 0x{msg.arbitration_id & 0xFE:02X} is not 0x10/0x20/0x30/0x80"
        return Rejection(UNKNOWN_ID, f"id {_fmt_id(msg)} is not an LES02 id: {why}", msg)

    @staticmethod
    def _reject_length(msg: can.Message, type_: str, dlc: int) -> Rejection:
        kind = "position" if type_ == "position_sample" else type_
        if msg.dlc != dlc:
            return Rejection(
                BAD_DLC, f"{kind} frame id {_fmt_id(msg)} needs DLC {dlc}, got {msg.dlc}", msg
            )
        return Rejection(
            LENGTH_MISMATCH,
            f"{kind} frame id {_fmt_id(msg)}: DLC {dlc} but {len(msg.data)} data bytes",
            msg,
        )


def _fmt_id(msg: can.Message) -> str:
    can_id: int = msg.arbitration_id
    return f"0x{can_id:08X}" if msg.is_extended_id else f"0x{can_id:03X}"
