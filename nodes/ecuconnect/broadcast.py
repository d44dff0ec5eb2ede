"""Broadcast bookkeeping for the ECUconnect sink: plain Python, no asyncio, no sockets.

The sink encodes each frame once (:func:`~.codec.encode`) and collects the packets of one
event-loop iteration in a :class:`PacketBatch`; at the end of the iteration the batch is joined
into ONE ``bytes`` and offered to every client's :class:`ClientBacklog`. A client whose socket
keeps up gets the batch written at once; a client that fell behind (its transport paused
writing) has it queued, bounded in bytes; when it drains, the whole backlog goes out as one
coalesced write. Packets are never split: a queue entry is a whole batch of whole packets.
"""

from __future__ import annotations

from collections import deque
from typing import Literal

__all__ = ["ClientBacklog", "PacketBatch", "Policy"]

Policy = Literal["drop_oldest", "disconnect"]


class PacketBatch:
    """Packets waiting for the next flush (one loop iteration's worth).

    >>> b = PacketBatch()
    >>> b.add(b"ab"); b.add(b"c"); len(b)
    2
    >>> b.take()
    (b'abc', 2)
    >>> b.take()
    (b'', 0)
    """

    def __init__(self) -> None:
        self._packets: list[bytes] = []

    def __len__(self) -> int:
        return len(self._packets)

    def add(self, packet: bytes) -> None:
        self._packets.append(packet)

    def take(self) -> tuple[bytes, int]:
        """All queued packets joined, and how many they were; the batch is empty afterwards."""
        packets = self._packets
        if not packets:
            return b"", 0
        self._packets = []
        return b"".join(packets), len(packets)


class ClientBacklog:
    """What one client still has to receive beyond its socket buffers (bounded in bytes).

    Protocol (the sink keeps it): :meth:`offer` each batch; write what it returns. Call
    :meth:`pause` when the transport says its write buffer is full and :meth:`resume` when it
    drained; ``resume`` returns the whole backlog as one ``bytes`` to write. While paused,
    batches are queued; when the queued bytes would exceed ``capacity``:

    * ``drop_oldest``: the oldest queued batches are dropped (their packets counted in
      :attr:`dropped`) until the new one fits; a single batch larger than ``capacity`` is
      still kept alone, so the client resumes with the newest data;
    * ``disconnect``: everything queued is discarded (counted), :attr:`overflowed` is set and
      ``offer`` returns ``None`` from then on: the caller must close the client.

    >>> c = ClientBacklog(capacity=4, policy="drop_oldest")
    >>> c.offer(b"aa", 1)
    b'aa'
    >>> c.pause(); [c.offer(p, 1) for p in (b"bb", b"cc", b"dd")]
    [b'', b'', b'']
    >>> c.queued_bytes, c.dropped
    (4, 1)
    >>> c.resume()
    b'ccdd'
    >>> d = ClientBacklog(capacity=2, policy="disconnect"); d.pause()
    >>> d.offer(b"xx", 1), d.offer(b"y", 1), d.overflowed, d.dropped
    (b'', None, True, 2)
    """

    def __init__(self, capacity: int, policy: Policy) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1 byte")
        self.capacity = capacity
        self.policy = policy
        self.paused = False
        self.overflowed = False
        #: packets this client did not get because of the policy
        self.dropped = 0
        #: packets handed to the transport
        self.sent = 0
        self._queue: deque[tuple[bytes, int]] = deque()
        self._bytes = 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def queued_packets(self) -> int:
        return sum(n for _, n in self._queue)

    def offer(self, data: bytes, packets: int) -> bytes | None:
        """A batch for this client: returns the bytes to write now (``b""`` = queued or
        dropped), or ``None`` when the client overflowed under ``disconnect``."""
        if self.overflowed:
            self.dropped += packets
            return None
        if not self.paused and not self._queue:
            self.sent += packets
            return data
        queue = self._queue
        if self._bytes + len(data) > self.capacity:
            if self.policy == "disconnect":
                self.dropped += packets + sum(n for _, n in queue)
                queue.clear()
                self._bytes = 0
                self.overflowed = True
                return None
            while queue and self._bytes + len(data) > self.capacity:
                old, n = queue.popleft()
                self._bytes -= len(old)
                self.dropped += n
        queue.append((data, packets))
        self._bytes += len(data)
        return b""

    def pause(self) -> None:
        """The transport's write buffer went above its high-water mark."""
        self.paused = True

    def resume(self) -> bytes:
        """The transport drained below its low-water mark: the backlog, joined, to write."""
        self.paused = False
        if not self._queue:
            return b""
        data = b"".join(chunk for chunk, _ in self._queue)
        self.sent += sum(n for _, n in self._queue)
        self._queue.clear()
        self._bytes = 0
        return data
