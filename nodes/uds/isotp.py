"""ISO-TP (ISO 15765-2) segmentation helpers for classic CAN with normal addressing (pure).

Every frame is 8 bytes: unused bytes are filled with the padding byte (default ``0xAA``,
:data:`DEFAULT_PADDING`). The protocol control information (PCI) in byte 0:

=========  ===================================  ============================================
frame      bytes                                meaning
=========  ===================================  ============================================
single     ``0L d1..dL``                        L = 1..7 payload bytes
first      ``1H LL d1..d6``                     12-bit total length 8..4095, 6 payload bytes
consec.    ``2N d1..d7``                        N = sequence number: 1, 2, .. 15, 0, 1, ..
flow ctl   ``3S BS ST``                         S: 0 continue, 1 wait, 2 overflow;
                                                BS: block size (0 = no further flow control);
                                                ST: STmin (see :func:`st_min_us`)
=========  ===================================  ============================================

Only the segmentation lives here; who sends what when (flow control, block size, STmin pacing)
is :mod:`les02_flow.nodes.uds.generator`'s job.

>>> single_frame(bytes([0x10, 0x03])).hex()
'021003aaaaaaaaaa'
>>> [f.hex() for f in segment(bytes(range(10)))]
['100a000102030405', '2106070809aaaaaa']
>>> flow_control(FC_CONTINUE, 8, 0x0A).hex()
'30080aaaaaaaaaaa'
>>> st_min_us(0x0A), st_min_us(0xF5), st_min_us(0x80)
(10000, 500, 127000)
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_PADDING",
    "FC_CONTINUE",
    "FC_OVERFLOW",
    "FC_WAIT",
    "FRAME_LEN",
    "MAX_LENGTH",
    "SF_MAX",
    "consecutive_frames",
    "first_frame",
    "flow_control",
    "segment",
    "single_frame",
    "st_min_us",
]

#: classic CAN frame length used for every ISO-TP frame (padded)
FRAME_LEN = 8
#: padding byte for unused frame bytes (a common tester choice; ECUs often use 0x55 or 0xCC)
DEFAULT_PADDING = 0xAA
#: the largest payload that fits a single frame
SF_MAX = 7
#: the largest payload a classic first frame can announce (12-bit length)
MAX_LENGTH = 4095
#: flow status values
FC_CONTINUE = 0
FC_WAIT = 1
FC_OVERFLOW = 2

_FF_DATA = 6
_CF_DATA = 7


def _pad(raw: bytes, padding: int) -> bytes:
    return raw + bytes([padding]) * (FRAME_LEN - len(raw))


def _check_padding(padding: int) -> None:
    if not 0 <= padding <= 0xFF:
        raise ValueError(f"padding must be a byte (0..255), got {padding}")


def single_frame(payload: bytes, padding: int = DEFAULT_PADDING) -> bytes:
    """The single frame carrying ``payload`` (1..7 bytes), padded to 8 bytes."""
    _check_padding(padding)
    if not 1 <= len(payload) <= SF_MAX:
        raise ValueError(f"a single frame carries 1..{SF_MAX} bytes, got {len(payload)}")
    return _pad(bytes([len(payload)]) + payload, padding)


def first_frame(payload: bytes) -> tuple[bytes, bytes]:
    """The first frame of a multi-frame ``payload`` (8..4095 bytes) and the bytes left over.

    >>> ff, rest = first_frame(bytes(20))
    >>> ff.hex(), len(rest)
    ('1014000000000000', 14)
    """
    n = len(payload)
    if not SF_MAX < n <= MAX_LENGTH:
        raise ValueError(f"a first frame announces {SF_MAX + 1}..{MAX_LENGTH} bytes, got {n}")
    return bytes([0x10 | (n >> 8), n & 0xFF]) + payload[:_FF_DATA], payload[_FF_DATA:]


def consecutive_frames(rest: bytes, padding: int = DEFAULT_PADDING) -> list[bytes]:
    """The consecutive frames that carry ``rest`` (what follows the first frame).

    Sequence numbers start at 1 and wrap from 15 to 0; the last frame is padded.

    >>> [f[0] for f in consecutive_frames(bytes(7 * 17))][-3:]
    [47, 32, 33]
    """
    _check_padding(padding)
    frames = []
    for i, pos in enumerate(range(0, len(rest), _CF_DATA)):
        sn = (i + 1) & 0x0F
        frames.append(_pad(bytes([0x20 | sn]) + rest[pos : pos + _CF_DATA], padding))
    return frames


def segment(payload: bytes, padding: int = DEFAULT_PADDING) -> list[bytes]:
    """All frames of one message: ``[single]`` or ``[first, consecutive...]``."""
    if len(payload) <= SF_MAX:
        return [single_frame(payload, padding)]
    ff, rest = first_frame(payload)
    return [ff, *consecutive_frames(rest, padding)]


def flow_control(
    status: int, block_size: int, st_min: int, padding: int = DEFAULT_PADDING
) -> bytes:
    """A flow control frame: ``status`` (FC_*), ``block_size`` 0..255, raw ``st_min`` byte."""
    _check_padding(padding)
    if status not in (FC_CONTINUE, FC_WAIT, FC_OVERFLOW):
        raise ValueError(f"flow status must be 0, 1 or 2, got {status}")
    if not 0 <= block_size <= 0xFF or not 0 <= st_min <= 0xFF:
        raise ValueError(f"block size and STmin are bytes, got {block_size}, {st_min}")
    return _pad(bytes([0x30 | status, block_size, st_min]), padding)


def st_min_us(st_min: int) -> int:
    """The separation time an STmin byte asks for, in microseconds.

    0x00..0x7F are milliseconds, 0xF1..0xF9 are 100..900 µs; reserved values are treated as
    0x7F (127 ms), as ISO 15765-2 tells the sender to.
    """
    if 0 <= st_min <= 0x7F:
        return st_min * 1000
    if 0xF1 <= st_min <= 0xF9:
        return (st_min - 0xF0) * 100
    return 127_000
