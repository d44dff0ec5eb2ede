"""A bounded, ordered on-disk spool of outgoing MQTT messages (plain Python, no asyncio).

``mqtt_sink`` puts every QoS 1 message here before it is published and removes it when the
broker has acknowledged it (PUBACK). While the broker is down or slow the messages stay, and
they are handed out again, oldest first, after a reconnect (:meth:`Spool.rewind`).

Bounds: at most ``max_bytes`` of unacknowledged messages and none older than ``max_age``
seconds; beyond either limit the OLDEST messages are dropped and counted
(:attr:`Spool.dropped`; :meth:`Spool.take_dropped` tells the caller how many to log).

Durability: :meth:`append` only buffers in memory; :meth:`flush` (called every
``flush_interval`` by the node, from a worker thread) writes the buffer to the current segment
file and records how far the acknowledged prefix reaches. A process killed with SIGKILL
therefore loses at most what was appended since the last flush (the data written is in the
operating system's page cache); with ``fsync=True`` a flush also survives a power cut.
After a restart :meth:`Spool.__init__` reads the segments back and hands out every message
that was not acknowledged, in order. A message acknowledged after the last flush is sent once
more (MQTT QoS 1 is "at least once"; receivers drop duplicates by ``seq``).

Layout of ``directory``::

    id                        8 hex digits naming this spool (:attr:`Spool.id`; a new spool, a
                              new id: receivers tell a restarted ``seq`` from a duplicate)
    done                      16 bytes: u64 LE seq of the last acknowledged-or-dropped
                              message, u32 LE CRC-32 of those 8 bytes, 4 bytes zero
    00000000000000000001.seg  records whose seq starts at 1, then 2, ... (rotated at
    00000000000000004711.seg  segment_bytes; a segment is deleted once all its records are done)

Record: u32 LE body length, u32 LE CRC-32 of the body, body = u64 LE seq, f64 LE enqueue time
(epoch seconds), u8 qos, u8 retain, u16 LE topic length, topic (UTF-8), payload. A torn or
corrupt record (a crash in the middle of a write) ends its segment: the file is cut there and
the loss is reported by :attr:`Spool.recovery_notes`.

Thread safety: every public method takes one lock, so the loop thread may append and ack while
a worker thread flushes.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Spool", "SpoolError", "SpoolRecord"]

_FRAME = struct.Struct("<II")  # body length, crc32(body)
_BODY = struct.Struct("<QdBBH")  # seq, ts, qos, retain, topic length
_DONE = struct.Struct("<QII")  # seq, crc32(seq bytes), zero
_SUFFIX = ".seg"
#: largest body accepted when reading (a larger length field means corruption)
_MAX_BODY = 256 * 1024 * 1024


class SpoolError(Exception):
    """The spool directory cannot be used; the message names it and the reason."""


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    """One outgoing message."""

    seq: int
    ts: float
    topic: str
    payload: bytes
    qos: int
    retain: bool

    @property
    def size(self) -> int:
        """Bytes the record takes in a segment file (and in the ``max_bytes`` budget)."""
        return _FRAME.size + _BODY.size + len(self.topic.encode()) + len(self.payload)

    def encode(self) -> bytes:
        topic = self.topic.encode()
        body = (
            _BODY.pack(self.seq, self.ts, self.qos, int(self.retain), len(topic))
            + topic
            + self.payload
        )
        return _FRAME.pack(len(body), zlib.crc32(body)) + body


def _decode_body(body: bytes) -> SpoolRecord:
    seq, ts, qos, retain, tlen = _BODY.unpack_from(body)
    start = _BODY.size
    topic = body[start : start + tlen].decode()
    return SpoolRecord(seq, ts, topic, bytes(body[start + tlen :]), qos, bool(retain))


class Spool:
    """Ordered FIFO of unacknowledged messages, bounded by bytes and age.

    ``directory=None`` keeps the same bounds in memory only (nothing survives a restart).

    >>> sp = Spool(None, max_bytes=10_000, max_age=60.0, clock=lambda: 100.0)
    >>> a = sp.append("les02/s/x/ride_end", b"{}", qos=1)
    >>> b = sp.append("les02/s/x/ride_end", b"{}", qos=1)
    >>> [r.seq for r in sp.next_unsent(10)], sp.pending
    ([1, 2], 2)
    >>> sp.ack(2); sp.pending  # out of order: 1 still outstanding
    1
    >>> sp.rewind(); [r.seq for r in sp.next_unsent(10)]
    [1]
    >>> sp.ack(1); sp.pending
    0
    """

    def __init__(
        self,
        directory: str | Path | None,
        *,
        max_bytes: int,
        max_age: float,
        segment_bytes: int = 1 << 20,
        fsync: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._clock = clock
        self._lock = threading.Lock()
        self._records: deque[SpoolRecord] = deque()  # unacknowledged, in seq order
        self._acked: set[int] = set()  # acknowledged out of order, still in _records
        self._unsent = 0  # index into _records of the first not handed out
        self._bytes = 0
        self._done = 0  # every seq <= _done is acknowledged or dropped
        self._next_seq = 1
        self._buffer: list[SpoolRecord] = []  # appended, not yet written
        self._written_done = 0  # "nothing done" needs no file
        self._segments: list[tuple[int, Path]] = []  # (first seq, path), oldest first
        self._current: tuple[int, Path, int] | None = None  # (first seq, path, size)
        self._dropped_unlogged = 0
        #: messages dropped by the size or age limit since the spool was created
        self.dropped = 0
        #: what loading an existing spool found (torn records, ...); empty when all was well
        self.recovery_notes: list[str] = []
        #: messages recovered from disk when the spool was opened
        self.recovered = 0
        self.dir: Path | None = None if directory is None else Path(directory)
        #: names this spool; published with ``seq`` (a new spool numbers from 1 again)
        self.id = os.urandom(4).hex()
        if self.dir is not None:
            self._load(self.dir)

    # -- state ---------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Messages not yet acknowledged (sent or not)."""
        with self._lock:
            return len(self._records) - len(self._acked)

    @property
    def pending_bytes(self) -> int:
        with self._lock:
            return self._bytes

    @property
    def next_seq(self) -> int:
        """The seq the next :meth:`append` gets (seqs grow by one and survive restarts)."""
        with self._lock:
            return self._next_seq

    def needs_flush(self) -> bool:
        """True when :meth:`flush` has something to write (appended records, a new mark)."""
        with self._lock:
            return self.dir is not None and (bool(self._buffer) or self._done != self._written_done)

    def take_dropped(self) -> int:
        """Messages dropped by the limits since the last call (for logging)."""
        with self._lock:
            n, self._dropped_unlogged = self._dropped_unlogged, 0
            return n

    # -- producer side -----------------------------------------------------------------------

    def append(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Add a message at the end; returns its seq. Drops the oldest beyond ``max_bytes``."""
        with self._lock:
            rec = SpoolRecord(self._next_seq, self._clock(), topic, payload, qos, retain)
            self._next_seq += 1
            self._records.append(rec)
            self._bytes += rec.size
            if self.dir is not None:
                self._buffer.append(rec)
            while self._bytes > self.max_bytes and len(self._records) > 1:
                self._drop_oldest()
            return rec.seq

    def expire(self) -> int:
        """Drop messages older than ``max_age``; returns how many."""
        with self._lock:
            return self._expire()

    def _expire(self) -> int:
        limit = self._clock() - self.max_age
        n = 0
        while self._records and self._records[0].ts < limit:
            self._drop_oldest()
            n += 1
        return n

    def _drop_oldest(self) -> None:
        rec = self._records.popleft()
        self._bytes -= rec.size
        if rec.seq in self._acked:
            self._acked.discard(rec.seq)
        else:
            self.dropped += 1
            self._dropped_unlogged += 1
        if self._unsent > 0:
            self._unsent -= 1
        self._done = rec.seq

    # -- sender side -------------------------------------------------------------------------

    def next_unsent(self, limit: int) -> list[SpoolRecord]:
        """Hand out up to ``limit`` messages not handed out yet, oldest first."""
        with self._lock:
            end = min(len(self._records), self._unsent + max(0, limit))
            out = [self._records[i] for i in range(self._unsent, end)]
            self._unsent = end
            return out

    def ack(self, seq: int) -> None:
        """The broker acknowledged message ``seq`` (any order; unknown seqs are ignored)."""
        with self._lock:
            if seq <= self._done or not self._records or seq > self._records[-1].seq:
                return
            self._acked.add(seq)
            records = self._records
            while records and records[0].seq in self._acked:
                rec = records.popleft()
                self._acked.discard(rec.seq)
                self._bytes -= rec.size
                self._done = rec.seq
                if self._unsent > 0:
                    self._unsent -= 1

    def rewind(self) -> None:
        """The connection was lost: hand out every unacknowledged message again, in order."""
        with self._lock:
            self._unsent = 0
            # messages acked out of order stay acked; they are skipped when handed out again
            if self._acked:
                kept = [r for r in self._records if r.seq not in self._acked]
                self._bytes -= sum(r.size for r in self._records if r.seq in self._acked)
                self._records = deque(kept)
                self._acked.clear()

    # -- disk ----------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write appended messages and the acknowledged mark; apply ``max_age``; delete done
        segments. Returns the number of messages written. Raises ``OSError``."""
        with self._lock:
            self._expire()
            batch, self._buffer = self._buffer, []
            done = self._done
            if self.dir is None:
                return 0
            # records already dropped or acknowledged need not be written
            batch = [r for r in batch if r.seq > done]
            try:
                if batch:
                    self._write(batch)
                if done != self._written_done:
                    self._write_done(done)
                self._delete_done_segments(done)
            except OSError:
                # keep what was not written for the next flush
                self._buffer = batch + self._buffer
                raise
            return len(batch)

    def _write(self, batch: list[SpoolRecord]) -> None:
        assert self.dir is not None
        data = b"".join(r.encode() for r in batch)
        if self._current is None:
            first = batch[0].seq
            path = self.dir / f"{first:020d}{_SUFFIX}"
            self._current = (first, path, 0)
            self._segments.append((first, path))
        first, path, size = self._current
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        size += len(data)
        self._current = None if size >= self.segment_bytes else (first, path, size)

    def _write_done(self, done: int) -> None:
        assert self.dir is not None
        raw = struct.pack("<Q", done)
        tmp = self.dir / "done.tmp"
        with open(tmp, "wb") as f:
            f.write(_DONE.pack(done, zlib.crc32(raw), 0))
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.dir / "done")
        self._written_done = done

    def _delete_done_segments(self, done: int) -> None:
        segs = self._segments
        last_written = self._records[-1].seq if self._records else done
        while segs:
            path = segs[0][1]
            nxt = segs[1][0] if len(segs) > 1 else None
            if nxt is not None and nxt - 1 <= done:
                pass  # every record of this segment is done
            elif nxt is None and done >= last_written and not self._buffer:
                # the newest segment holds nothing pending: start a fresh one next time
                self._current = None
            else:
                break
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            segs.pop(0)

    def _load(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            id_path = directory / "id"
            text = id_path.read_text().strip() if id_path.exists() else ""
            if len(text) == 8 and all(c in "0123456789abcdef" for c in text):
                self.id = text
            else:
                tmp = directory / "id.tmp"
                tmp.write_text(self.id + "\n")
                os.replace(tmp, id_path)
            done_path = directory / "done"
            if done_path.exists():
                raw = done_path.read_bytes()
                if len(raw) == _DONE.size:
                    seq, crc, _ = _DONE.unpack(raw)
                    if crc == zlib.crc32(struct.pack("<Q", seq)):
                        self._done = seq
                        self._written_done = seq
                    else:
                        self.recovery_notes.append(f"{done_path}: bad checksum, ignored")
                else:
                    self.recovery_notes.append(f"{done_path}: {len(raw)} bytes, ignored")
            paths = sorted(directory.glob(f"*{_SUFFIX}"))
            last_seq = self._done
            for path in paths:
                try:
                    first = int(path.stem)
                except ValueError:
                    self.recovery_notes.append(f"{path}: not a spool segment name, ignored")
                    continue
                kept = self._read_segment(path)
                if not kept:
                    continue
                self._segments.append((first, path))
                for rec in kept:
                    last_seq = max(last_seq, rec.seq)
                    if rec.seq <= self._done or (
                        self._records and rec.seq <= self._records[-1].seq
                    ):
                        continue
                    self._records.append(rec)
                    self._bytes += rec.size
            self._next_seq = last_seq + 1
            self.recovered = len(self._records)
            while self._bytes > self.max_bytes and len(self._records) > 1:
                self._drop_oldest()
            self._expire()
            self._delete_done_segments(self._done)
            # new records go to a new segment: never append after a possibly cut tail
            self._current = None
        except OSError as exc:
            raise SpoolError(f"cannot use spool directory {str(directory)!r}: {exc}") from exc

    def _read_segment(self, path: Path) -> list[SpoolRecord]:
        data = path.read_bytes()
        out: list[SpoolRecord] = []
        pos = 0
        while pos < len(data):
            bad = None
            if len(data) - pos < _FRAME.size:
                bad = "torn record header"
            else:
                length, crc = _FRAME.unpack_from(data, pos)
                body = data[pos + _FRAME.size : pos + _FRAME.size + length]
                if length < _BODY.size or length > _MAX_BODY:
                    bad = f"bad record length {length}"
                elif len(body) < length:
                    bad = "torn record"
                elif zlib.crc32(body) != crc:
                    bad = "bad record checksum"
                else:
                    try:
                        out.append(_decode_body(body))
                    except (struct.error, UnicodeDecodeError) as exc:
                        bad = f"undecodable record ({exc})"
            if bad is not None:
                self.recovery_notes.append(
                    f"{path}: {bad} at byte {pos}; {len(data) - pos} bytes cut off"
                )
                with open(path, "r+b") as f:
                    f.truncate(pos)
                break
            pos += _FRAME.size + length
        if not out:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        return out
