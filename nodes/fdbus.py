"""Batched, non-blocking reading of python-can buses that are sockets (udp_multicast, SocketCAN).

Plain Python on sockets (no asyncio): ``can_source`` calls :meth:`FdReader.read` from its
``add_reader`` callback and :meth:`FdReader.decode` when it emits.

Why not ``bus.recv(0)``: python-can's receive path costs a ``select()`` per frame before the
``recvmsg()``, and it cannot say when the kernel dropped frames because the socket's receive
queue was full. This reader

* reads every datagram that is ready with ``recvmsg(..., MSG_DONTWAIT)`` until ``EAGAIN``
  (:meth:`FdReader.read`), keeping only the raw bytes and the kernel receive timestamp, so the
  socket is emptied quickly and the decoding happens later, in bounded chunks;
* decodes exactly as python-can does (same msgpack fields for udp_multicast, same struct layout
  for SocketCAN, same timestamp arithmetic, same software filters): tests compare it frame by
  frame with python-can's own decoding of the same datagrams;
* turns on ``SO_RXQ_OVFL``, so every datagram carries the socket's cumulative drop counter
  (frames the kernel discarded because the receive buffer was full), and, for UDP, also reads
  the socket's ``drops`` column of ``/proc/net/udp`` (:meth:`FdReader.poll_drops`), which sees
  drops after the last datagram that got through;
* sets the socket's receive buffer (``SO_RCVBUFFORCE`` where permitted, else ``SO_RCVBUF``,
  which the kernel caps at ``net.core.rmem_max``) and reports what it got.

:func:`fd_reader` returns ``None`` for any other bus: ``can_source`` then uses python-can.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import deque
from collections.abc import Callable

import can

__all__ = [
    "SO_RXQ_OVFL",
    "FdReader",
    "SocketcanReader",
    "UdpMulticastReader",
    "fd_reader",
    "proc_udp_drops",
    "udp_frame",
]

#: ``SO_RXQ_OVFL`` (Linux ``asm-generic/socket.h``); Python names it only on some builds
SO_RXQ_OVFL: int = getattr(socket, "SO_RXQ_OVFL", 40)
#: ``SO_TIMESTAMPNS`` (python-can uses the same number)
SO_TIMESTAMPNS = 35
SO_RCVBUFFORCE: int = getattr(socket, "SO_RCVBUFFORCE", 33)

_TIMESPEC = struct.Struct("@ll")
_U32 = struct.Struct("@I")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_U32.size)
_DONTWAIT = socket.MSG_DONTWAIT
_SOL_SOCKET = socket.SOL_SOCKET
_U32_WRAP = 1 << 32

Raw = tuple[bytes, float, int]
"""A datagram as read: payload, kernel receive timestamp (s), ``recvmsg`` flags."""


def proc_udp_drops(
    inode: int, paths: tuple[str, ...] = ("/proc/net/udp", "/proc/net/udp6")
) -> int | None:
    """The ``drops`` column of the UDP socket with this inode (``None``: not found).

    >>> proc_udp_drops(-1) is None
    True
    """
    for path in paths:
        try:
            with open(path, encoding="ascii") as f:
                next(f, None)  # header
                for line in f:
                    cols = line.split()
                    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ref pointer drops
                    if len(cols) >= 13 and cols[9] == str(inode):
                        return int(cols[12])
        except (OSError, ValueError):
            continue
    return None


class FdReader:
    """What ``can_source`` needs from a socket bus: read raw datagrams, decode, count drops."""

    #: interface name, for logs
    kind = "fd"

    def __init__(self, bus: can.BusABC, sock: socket.socket) -> None:
        self.bus = bus
        self.sock = sock
        self.fd = sock.fileno()
        self.kernel_drops = 0  #: frames the kernel dropped on this socket since it was opened
        self._last_ovfl = 0  # last cumulative u32 from SO_RXQ_OVFL
        self._ovfl_base = 0  # wraps of that u32
        self.rxq_ovfl = self._enable(SO_RXQ_OVFL)
        self._recvmsg = sock.recvmsg
        filters = getattr(bus, "filters", None)
        self._filtered = not filters
        self._matches: Callable[[can.Message], bool] = bus._matches_filters

    def _enable(self, option: int) -> bool:
        try:
            self.sock.setsockopt(_SOL_SOCKET, option, 1)
        except OSError:
            return False
        return True

    # -- receive buffer ----------------------------------------------------------------------

    def rcvbuf(self) -> int:
        """The receive buffer the kernel uses (bytes, as ``getsockopt(SO_RCVBUF)`` says)."""
        return int(self.sock.getsockopt(_SOL_SOCKET, socket.SO_RCVBUF))

    def set_rcvbuf(self, size: int) -> int:
        """Ask for ``size`` bytes of receive buffer; returns what the kernel granted.

        ``SO_RCVBUFFORCE`` (needs ``CAP_NET_ADMIN``) ignores ``net.core.rmem_max``; without it
        ``SO_RCVBUF`` is capped at ``rmem_max``. Linux doubles the value for bookkeeping and
        reports the doubled size, so the granted figure is compared with ``2 * size``.
        """
        try:
            self.sock.setsockopt(_SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            self.sock.setsockopt(_SOL_SOCKET, socket.SO_RCVBUF, size)
        return self.rcvbuf()

    # -- drops -------------------------------------------------------------------------------

    def _ovfl(self, value: int) -> None:
        if value < self._last_ovfl:  # the kernel's u32 wrapped
            self._ovfl_base += _U32_WRAP
        self._last_ovfl = value
        total = self._ovfl_base + value
        if total > self.kernel_drops:
            self.kernel_drops = total

    def poll_drops(self) -> int:
        """Refresh :attr:`kernel_drops` from the kernel's socket table, where there is one."""
        return self.kernel_drops

    # -- reading -----------------------------------------------------------------------------

    def read(self, out: deque[Raw], limit: int) -> bool:
        """Append up to ``limit`` ready datagrams to ``out`` without blocking.

        Returns ``True`` when the socket is empty (``EAGAIN``), ``False`` when ``limit`` was
        reached first. Raises ``OSError`` for a real socket error.
        """
        recvmsg = self._recvmsg
        bufsize = self.bufsize
        append = out.append
        unpack_ts = _TIMESPEC.unpack_from
        unpack_u32 = _U32.unpack_from
        for _ in range(limit):
            try:
                data, anc, flags, _addr = recvmsg(bufsize, _ANC_SIZE, _DONTWAIT)
            except BlockingIOError:
                return True
            except InterruptedError:
                continue
            ts = 0.0
            for level, kind, cdata in anc:
                if level == _SOL_SOCKET:
                    if kind == SO_TIMESTAMPNS:
                        sec, nsec = unpack_ts(cdata)
                        ts = sec + nsec * 1.0e-9
                    elif kind == SO_RXQ_OVFL:
                        self._ovfl(unpack_u32(cdata)[0])
            append((data, ts, flags))
        return False

    bufsize = 4096

    def decode(self, raw: Raw) -> can.Message | None:
        """One datagram as python-can would return it, or ``None`` (filtered out).

        Raises ``ValueError`` (or another ``Exception``) for a datagram that is not a frame.
        """
        raise NotImplementedError

    def accept(self, msg: can.Message) -> bool:
        """python-can's software acceptance filter (``BusABC.recv`` applies the same)."""
        return self._filtered or self._matches(msg)


# python-can's pack_message() of a classic (non-FD) data frame, field by field in its order:
# a map of 11: the timestamp as float64 (replaced by the kernel stamp), the id (any unsigned
# int encoding), is_extended_id, is_remote_frame false, is_error_frame false, the channel (nil
# or a str of < 32 bytes), dlc 0..8, data as bin8 of dlc bytes, then is_fd, bitrate_switch and
# error_state_indicator false, and nothing after that.
_UDP_START = b"\x8b\xa9timestamp\xcb"
_UDP_ID = b"\xaearbitration_id"
_UDP_FLAGS = b"\xaeis_extended_id%c\xafis_remote_frame\xc2\xaeis_error_frame\xc2\xa7channel"
_UDP_STD = _UDP_FLAGS % 0xC2
_UDP_EXT = _UDP_FLAGS % 0xC3
_UDP_DLC = b"\xa3dlc"
_UDP_DATA = b"\xa4data\xc4"
_UDP_END = b"\xa5is_fd\xc2\xaebitrate_switch\xc2\xb5error_state_indicator\xc2"


def udp_frame(data: bytes, timestamp: float) -> can.Message | None:
    """A python-can ``udp_multicast`` datagram of a classic data frame as a ``can.Message``,
    the timestamp replaced by ``timestamp``; ``None``: anything else (decode it in full).

    The common case without msgpack's dict and ``Message(check=True, **fields)``: it accepts
    only the exact layout python-can's ``pack_message`` writes for a classic data frame that
    passes python-can's checks (id in range, dlc == len(data) <= 8, not remote, error or FD),
    so what it returns equals python-can's own decoding; tests compare the two on every kind
    of frame and on damaged datagrams.

    >>> from can.interfaces.udp_multicast.utils import pack_message
    >>> m = udp_frame(pack_message(can.Message(arbitration_id=0x80, data=b"\\x01\\x02",
    ...                                         is_extended_id=False)), 12.5)
    >>> m.arbitration_id, bytes(m.data), m.dlc, m.timestamp, m.is_extended_id, m.channel
    (128, b'\\x01\\x02', 2, 12.5, False, None)
    """
    try:
        if not (data.startswith(_UDP_START) and data.startswith(_UDP_ID, 20)):
            return None
        b = data[35]
        if b < 0x80:  # positive fixint
            arbitration_id, pos = b, 36
        elif b == 0xCC:
            arbitration_id, pos = data[36], 37
        elif b == 0xCD:
            arbitration_id, pos = (data[36] << 8) | data[37], 38
        elif b == 0xCE:
            arbitration_id, pos = int.from_bytes(data[36:40], "big"), 40
        else:
            return None
        if data.startswith(_UDP_STD, pos):
            extended = False
            if arbitration_id >= 0x800:
                return None
        elif data.startswith(_UDP_EXT, pos):
            extended = True
            if arbitration_id >= 0x20000000:
                return None
        else:
            return None
        pos += len(_UDP_STD)
        b = data[pos]
        pos += 1
        channel: str | None = None
        if b != 0xC0:  # not nil: a fixstr
            if not 0xA0 <= b <= 0xBF:
                return None
            end = pos + b - 0xA0
            channel = data[pos:end].decode()
            pos = end
        if not data.startswith(_UDP_DLC, pos):
            return None
        dlc = data[pos + 4]
        if dlc > 8 or not data.startswith(_UDP_DATA, pos + 5) or data[pos + 11] != dlc:
            return None
        start = pos + 12
        end = start + dlc
        if len(data) != end + len(_UDP_END) or not data.startswith(_UDP_END, end):
            return None
    except (IndexError, UnicodeDecodeError):
        return None
    if not 0.0 <= timestamp < _INF:  # Message._check: not negative, infinite or NaN
        return None
    return _Message(timestamp, arbitration_id, extended, False, False, channel, dlc,
                    bytearray(data[start:end]))  # fmt: skip


_INF = float("inf")
_Message = can.Message


class UdpMulticastReader(FdReader):
    """python-can's ``udp_multicast`` bus (msgpack datagrams, one frame each)."""

    kind = "udp_multicast"

    def __init__(self, bus: can.BusABC, sock: socket.socket, fd_frames: bool) -> None:
        super().__init__(bus, sock)
        import msgpack

        self._unpackb = msgpack.unpackb
        self._fd_frames = fd_frames
        multicast = bus._multicast  # type: ignore[attr-defined]
        self.bufsize = int(getattr(multicast, "max_buffer", 4096))
        self._timestamps = bool(getattr(multicast, "timestamp_nanosecond", False))
        try:
            self._inode: int | None = os.fstat(self.fd).st_ino
        except OSError:
            self._inode = None

    def poll_drops(self) -> int:
        if self._inode is not None:
            drops = proc_udp_drops(self._inode)
            if drops is not None and drops > self.kernel_drops:
                self.kernel_drops = drops
        return self.kernel_drops

    def decode(self, raw: Raw) -> can.Message | None:
        # As can.interfaces.udp_multicast.utils.unpack_message(data, replace={"timestamp":
        # ts}, check=True), then UdpMulticastBus._recv_internal's FD rule, then BusABC.recv's
        # software filters.
        if self._timestamps:
            msg = udp_frame(raw[0], raw[1])
            if msg is not None:  # a classic frame as python-can packs it (no FD: no FD rule)
                return msg if self._filtered or self._matches(msg) else None
        fields = self._unpackb(raw[0], raw=False)
        if not isinstance(fields, dict):
            raise ValueError(f"not a python-can udp_multicast frame: {type(fields).__name__}")
        if self._timestamps:
            fields["timestamp"] = raw[1]
        msg = can.Message(check=True, **fields)
        if msg.is_fd and not self._fd_frames:
            return None
        if not (self._filtered or self._matches(msg)):
            return None
        return msg


class SocketcanReader(FdReader):
    """python-can's ``socketcan`` bus (raw ``struct can_frame`` / ``canfd_frame``).

    Kept thin: decoding is python-can's own ``dissect_can_frame`` plus the fields its
    ``capture_message`` sets (this machine's kernel has no SocketCAN; tests feed the same
    bytes through a datagram socket pair).
    """

    kind = "socketcan"
    bufsize = 72  # CANFD_MTU

    def __init__(self, bus: can.BusABC, sock: socket.socket, channel: str | None) -> None:
        super().__init__(bus, sock)
        from can.interfaces.socketcan import constants
        from can.interfaces.socketcan.socketcan import dissect_can_frame

        self._dissect = dissect_can_frame
        self._c = constants
        self._channel = channel
        self._filtered = self._filtered or bool(getattr(bus, "_is_filtered", False))

    def decode(self, raw: Raw) -> can.Message | None:
        # As can.interfaces.socketcan.socketcan.capture_message + SocketcanBus._recv_internal.
        c = self._c
        frame, ts, flags = raw
        can_id, dlc, fd_flags, data = self._dissect(frame)
        extended = bool(can_id & c.CAN_EFF_FLAG)
        msg = can.Message(
            timestamp=ts,
            channel=self._channel or None,
            arbitration_id=can_id & (0x1FFFFFFF if extended else 0x7FF),
            is_extended_id=extended,
            is_remote_frame=bool(can_id & c.CAN_RTR_FLAG),
            is_error_frame=bool(can_id & c.CAN_ERR_FLAG),
            is_fd=len(frame) == c.CANFD_MTU,
            is_rx=not bool(flags & socket.MSG_DONTROUTE),
            bitrate_switch=bool(fd_flags & c.CANFD_BRS),
            error_state_indicator=bool(fd_flags & c.CANFD_ESI),
            dlc=dlc,
            data=data,
        )
        if not (self._filtered or self._matches(msg)):
            return None
        return msg


def fd_reader(bus: can.BusABC) -> FdReader | None:
    """The batched reader for ``bus``, or ``None`` when python-can's own ``recv`` must be used.

    Only python-can's own udp_multicast and SocketCAN buses qualify (their socket is reached
    through python-can's attributes; anything unexpected falls back to python-can).
    """
    try:
        from can.interfaces.udp_multicast import UdpMulticastBus

        if type(bus) is UdpMulticastBus:
            sock: object = getattr(bus._multicast, "_socket", None)
            if not isinstance(sock, socket.socket) or not bus._multicast.timestamp_nanosecond:
                return None
            fd_frames = bus.protocol is can.CanProtocol.CAN_FD
            return UdpMulticastReader(bus, sock, fd_frames)
    except (ImportError, AttributeError):
        return None
    try:
        from can.interfaces.socketcan import SocketcanBus

        if type(bus) is SocketcanBus:
            raw_sock: object = getattr(bus, "socket", None)
            if not isinstance(raw_sock, socket.socket):
                return None
            channel = bus.channel if isinstance(bus.channel, str) else None
            if channel == "":
                return None  # bound to every interface: python-can reads the channel per frame
            return SocketcanReader(bus, raw_sock, channel)
    except (ImportError, AttributeError):
        return None
    return None
