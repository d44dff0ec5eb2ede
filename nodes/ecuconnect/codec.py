"""The ECUconnect Logger wire format (docs/ecuconnect.md): pure, no I/O.

One packet per CAN frame, big-endian::

    u64 timestamp_us | u32 can_id | u8 flags | u8 length | payload (length bytes)

``flags``: bit0 EXT (29-bit id), bit1 FD, bit2 BRS, bit3 ESI. ``length`` is the payload size
in bytes: 0..8 for classic CAN, one of 0..8, 12, 16, 20, 24, 32, 48, 64 for CAN FD.

:func:`encode` turns a :class:`can.Message` into one packet; :class:`Decoder` turns a byte
stream cut anywhere back into frames. Both raise :class:`EcuconnectProtocolError` (a
``ValueError``) and nothing else for bad input.
"""

from __future__ import annotations

import math
import struct

import can

__all__ = [
    "FD_LENGTHS",
    "FLAG_BRS",
    "FLAG_ESI",
    "FLAG_EXT",
    "FLAG_FD",
    "HEADER",
    "HEADER_SIZE",
    "MAX_PAYLOAD",
    "Decoder",
    "EcuconnectProtocolError",
    "encode",
]

FLAG_EXT = 0x01
FLAG_FD = 0x02
FLAG_BRS = 0x04
FLAG_ESI = 0x08
_KNOWN_FLAGS = FLAG_EXT | FLAG_FD | FLAG_BRS | FLAG_ESI

HEADER = struct.Struct(">QIBB")
_pack = HEADER.pack
#: timestamps below this take encode's short path: their µs fit in 64 bits by far
_FAST_TS_MAX = 1e13
HEADER_SIZE = HEADER.size  # 14
MAX_PAYLOAD = 64
#: payload sizes a CAN FD frame can have (the DLC steps)
FD_LENGTHS: frozenset[int] = frozenset((*range(9), 12, 16, 20, 24, 32, 48, 64))
_FD_SORTED: list[int] = sorted(FD_LENGTHS)
_STD_ID_MAX = 0x7FF
_EXT_ID_MAX = 0x1FFFFFFF
_U64_MAX = (1 << 64) - 1


class EcuconnectProtocolError(ValueError):
    """A frame cannot be encoded, or a byte stream is not a valid ECUconnect stream.

    The message says what is wrong. From :meth:`Decoder.feed`: :attr:`offset` is the stream
    offset of the bad packet and :attr:`frames` the frames decoded from the same ``feed`` call
    before it (deliver them, then drop the connection: a byte stream with a bad header cannot
    be resynchronised). For :func:`encode`, ``offset`` is -1 and ``frames`` empty.
    """

    def __init__(
        self, message: str, *, offset: int = -1, frames: list[can.Message] | None = None
    ) -> None:
        super().__init__(message)
        self.offset = offset
        self.frames: list[can.Message] = frames if frames is not None else []


def _fd_length(n: int) -> int:
    for size in _FD_SORTED:
        if size >= n:
            return size
    raise EcuconnectProtocolError(f"payload of {n} bytes is longer than {MAX_PAYLOAD}")


def encode(msg: can.Message) -> bytes:
    """One packet for ``msg`` (14 + payload bytes).

    The common frame (classic, 11-bit, data, at most 8 bytes, a float timestamp of this era)
    takes a short path with the same result as the full rules below (tests compare both).

    * timestamp: ``msg.timestamp`` (seconds) in whole microseconds, rounded;
    * flags: EXT from ``is_extended_id``; FD when ``is_fd`` or the payload is over 8 bytes;
      BRS/ESI from ``bitrate_switch``/``error_state_indicator``, only together with FD;
    * an FD payload whose size is not a DLC step (e.g. 9 bytes) is zero-padded to the next
      step (12), as a CAN FD controller would send it;
    * a remote frame goes out as a data frame with length 0 (the format has no RTR flag).

    Raises :class:`EcuconnectProtocolError` for an error frame, an id out of range for its
    format, a payload over 64 bytes, or a negative/non-finite/too large timestamp.

    >>> encode(can.Message(timestamp=1.5, arbitration_id=0x123, is_extended_id=False,
    ...                    data=[1, 2])).hex(" ")
    '00 00 00 00 00 16 e3 60 00 00 01 23 00 02 01 02'
    >>> encode(can.Message(timestamp=0, arbitration_id=0x18DAF110, is_fd=True,
    ...                    bitrate_switch=True, data=bytes(9)))[12:14].hex(" ")
    '07 0c'
    """
    if not (msg.is_extended_id or msg.is_fd or msg.is_remote_frame or msg.is_error_frame):
        can_id = msg.arbitration_id
        data = msg.data
        ts = msg.timestamp
        if (
            type(ts) is float
            and 0.0 <= ts < _FAST_TS_MAX
            and type(can_id) is int
            and 0 <= can_id <= _STD_ID_MAX
            and type(data) is bytearray
            and len(data) <= 8
        ):
            return _pack(round(ts * 1_000_000), can_id, 0, len(data)) + data
    return _encode_full(msg)


def _encode_full(msg: can.Message) -> bytes:
    """:func:`encode` by the full rules (every kind of frame, every check)."""
    if msg.is_error_frame:
        raise EcuconnectProtocolError("error frames have no ECUconnect representation")
    can_id = msg.arbitration_id
    if msg.is_extended_id:
        if not 0 <= can_id <= _EXT_ID_MAX:
            raise EcuconnectProtocolError(f"extended id 0x{can_id:X} out of range (29 bits)")
        flags = FLAG_EXT
    else:
        if not 0 <= can_id <= _STD_ID_MAX:
            raise EcuconnectProtocolError(f"standard id 0x{can_id:X} out of range (11 bits)")
        flags = 0
    data = b"" if msg.is_remote_frame else bytes(msg.data or b"")
    n = len(data)
    if n > MAX_PAYLOAD:
        raise EcuconnectProtocolError(f"payload of {n} bytes is longer than {MAX_PAYLOAD}")
    if msg.is_fd or n > 8:
        flags |= FLAG_FD
        if msg.bitrate_switch:
            flags |= FLAG_BRS
        if msg.error_state_indicator:
            flags |= FLAG_ESI
        if n not in FD_LENGTHS:
            size = _fd_length(n)
            data += bytes(size - n)
            n = size
    ts = msg.timestamp
    if not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
        raise EcuconnectProtocolError(f"timestamp {ts!r} is not a time >= 0")
    scaled = ts * 1_000_000
    if not math.isfinite(scaled) or (ts_us := round(scaled)) > _U64_MAX:
        raise EcuconnectProtocolError(f"timestamp {ts!r} does not fit in 64 bits of µs")
    return HEADER.pack(ts_us, can_id, flags, n) + data


def check_header(can_id: int, flags: int, length: int) -> str | None:
    """Why a packet header is impossible, or ``None`` when it is valid (pure).

    >>> check_header(0x123, 0, 8) is None
    True
    >>> check_header(0x123, 0, 12)
    'length 12 is not valid for a classic CAN frame (0..8; FD flag not set)'
    >>> check_header(0x123, FLAG_BRS, 2)
    'flags 0x04: BRS/ESI without FD'
    """
    if flags & ~_KNOWN_FLAGS:
        return f"flags 0x{flags:02X}: unknown bits set (only EXT, FD, BRS, ESI are defined)"
    if length > MAX_PAYLOAD:
        return f"length {length} is over {MAX_PAYLOAD}"
    if flags & FLAG_FD:
        if length not in FD_LENGTHS:
            return (
                f"length {length} is not valid for a CAN FD frame "
                "(0..8, 12, 16, 20, 24, 32, 48, 64)"
            )
    else:
        if flags & (FLAG_BRS | FLAG_ESI):
            return f"flags 0x{flags:02X}: BRS/ESI without FD"
        if length > 8:
            return f"length {length} is not valid for a classic CAN frame (0..8; FD flag not set)"
    if flags & FLAG_EXT:
        if can_id > _EXT_ID_MAX:
            return f"extended id 0x{can_id:X} is over 29 bits"
    elif can_id > _STD_ID_MAX:
        return f"standard id 0x{can_id:X} is over 11 bits (EXT flag not set)"
    return None


class Decoder:
    """Incremental decoder: bytes in, in any chunking; complete frames out.

    Call :meth:`feed` with each chunk read from the socket; it returns the frames completed by
    that chunk (possibly none) and keeps an incomplete packet for the next call. A packet with
    an impossible header (unknown flag bits, length over 64 or not valid for classic/FD,
    BRS/ESI without FD, id out of range) raises :class:`EcuconnectProtocolError`; the decoder
    is then failed for good (every further ``feed`` raises), because the stream has no marker
    to resynchronise on. Use a new decoder for a new connection. Frames carry
    ``channel=channel`` and the packet's timestamp (``timestamp_us / 1e6``).

    >>> pkt = encode(can.Message(timestamp=2.0, arbitration_id=0x80, is_extended_id=False,
    ...                          data=[0, 0, 0x90, 0]))
    >>> d = Decoder()
    >>> d.feed(pkt[:5]), d.pending
    ([], 5)
    >>> [(hex(m.arbitration_id), m.data.hex(), m.timestamp) for m in d.feed(pkt[5:] + pkt)]
    [('0x80', '00009000', 2.0), ('0x80', '00009000', 2.0)]
    >>> d.feed(bytes(12) + bytes([0x10, 0]))
    Traceback (most recent call last):
    ...
    les02_flow.nodes.ecuconnect.codec.EcuconnectProtocolError: bad packet at stream offset 36: flags 0x10: unknown bits set (only EXT, FD, BRS, ESI are defined)
    """  # noqa: E501

    def __init__(self, channel: str | None = None) -> None:
        self.channel = channel
        self._buf = bytearray()
        self._offset = 0  # stream offset of _buf[0]
        self._error: EcuconnectProtocolError | None = None
        #: frames decoded so far
        self.frames = 0

    @property
    def pending(self) -> int:
        """Bytes held for an incomplete packet."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        return self._error is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[can.Message]:
        """Add a chunk; return the frames it completed (see the class docstring)."""
        if self._error is not None:
            raise EcuconnectProtocolError(
                f"decoder failed earlier: {self._error}", offset=self._error.offset
            )
        buf = self._buf
        buf += data
        out: list[can.Message] = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        channel = self.channel
        while end - pos >= HEADER_SIZE:
            ts_us, can_id, flags, length = unpack(buf, pos)
            if (flags & ~(FLAG_EXT | FLAG_FD)) or length > 8 or can_id > _STD_ID_MAX:
                problem = check_header(can_id, flags, length)
                if problem is not None:
                    err = EcuconnectProtocolError(
                        f"bad packet at stream offset {self._offset + pos}: {problem}",
                        offset=self._offset + pos,
                        frames=out,
                    )
                    self._error = err
                    del buf[:]
                    self.frames += len(out)
                    raise err
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            out.append(
                can.Message(
                    timestamp=ts_us / 1_000_000,
                    arbitration_id=can_id,
                    is_extended_id=bool(flags & FLAG_EXT),
                    is_fd=bool(flags & FLAG_FD),
                    bitrate_switch=bool(flags & FLAG_BRS),
                    error_state_indicator=bool(flags & FLAG_ESI),
                    dlc=length,
                    data=buf[pos + HEADER_SIZE : stop],
                    channel=channel,
                    check=False,
                )
            )
            pos = stop
        if pos:
            del buf[:pos]
            self._offset += pos
        self.frames += len(out)
        return out
