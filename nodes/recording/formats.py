"""Recording formats: which file suffix means what, opening writers, and tolerant readers.

Plain Python (blocking file I/O, no asyncio, no Rx): the nodes call these from their own
threads. Frames go through python-can's writer/reader classes (``CanutilsLogWriter`` for
``.log``, ``ASCWriter``, ``BLFWriter``, ``CSVWriter``, ``TRCWriter``, ``SqliteWriter`` and the
matching readers); events (``.jsonl``) are one :func:`~les02_flow.events.encode_event` line each.

What each format keeps (python-can 4.6):

========== ====== ======= ========= =====================================================
suffix     gzip   CAN FD  remote    timestamps
========== ====== ======= ========= =====================================================
``.log``   yes    yes     yes [1]_  1 µs (candump ``-L``)
``.asc``   yes    yes     yes       1 µs spacing; the absolute start is kept to 1 ms
``.blf``   no     yes     yes       exact to 1 ns
``.csv``   yes    no [2]_ yes       exact (``repr`` of the float)
``.trc``   yes    no [3]_ no [3]_   1 µs (TRC 2.1)
``.db``    no     no [2]_ yes       exact (SQLite)
``.jsonl`` yes    --      --        events: exact (JSON float)
========== ====== ======= ========= =====================================================

.. [1] the DLC of a remote frame is not kept by python-can's ``.log`` writer.
.. [2] python-can's writer would keep the data but not the FD/BRS/ESI flags (and a classic
   frame with more than 8 bytes does not replay): the recorder counts CAN FD frames as
   ``unsupported`` and skips them. Record CAN FD to ``.log``, ``.asc`` or ``.blf``.
.. [3] python-can's TRC writer cannot write such frames; the recorder counts them as
   ``unsupported`` and skips them.

Reading is tolerant: :class:`RecordingReader` reports a corrupt line (text formats) with file
and line number, counts it and goes on with the next line; an unterminated last line (a write
torn by ``kill -9``) is reported and skipped; a corrupt binary record (``.blf``, ``.db``) or a
truncated ``.gz`` stream is reported with its byte offset and ends that file (the rest cannot be
resynchronised).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final, TextIO, cast

import can
from can.io.generic import MessageReader, MessageWriter

from les02_flow.events import Event, encode_event
from les02_flow.nodes.fileid import FileIdentity, file_identity, path_lost

__all__ = [
    "FORMATS",
    "Format",
    "FrameFileWriter",
    "Problem",
    "RecordingReader",
    "detect_format",
    "open_writer",
]


@dataclass(frozen=True)
class Format:
    """One recording format, chosen by the file suffix."""

    suffix: str  #: the full suffix, e.g. ``.log.gz``
    base: str  #: the suffix without ``.gz``
    compressed: bool
    events: bool  #: True for ``.jsonl`` (event envelopes), False for frames
    text: bool  #: line-based text format
    fd: bool  #: keeps the CAN FD flags
    writer: Callable[..., MessageWriter] | None
    reader: Callable[..., MessageReader] | None

    @property
    def kind(self) -> str:
        """``event`` or ``frame``: what the file holds."""
        return "event" if self.events else "frame"


def _fmt(
    base: str,
    *,
    text: bool,
    fd: bool,
    writer: Callable[..., MessageWriter] | None,
    reader: Callable[..., MessageReader] | None,
    gz: bool,
    events: bool = False,
) -> list[Format]:
    out = [Format(base, base, False, events, text, fd, writer, reader)]
    if gz:
        out.append(Format(base + ".gz", base, True, events, text, fd, writer, reader))
    return out


FORMATS: Final[dict[str, Format]] = {
    f.suffix: f
    for f in [
        *_fmt(
            ".log", text=True, fd=True, writer=can.CanutilsLogWriter,
            reader=can.CanutilsLogReader, gz=True,
        ),
        *_fmt(".asc", text=True, fd=True, writer=can.ASCWriter, reader=can.ASCReader, gz=True),
        *_fmt(".blf", text=False, fd=True, writer=can.BLFWriter, reader=can.BLFReader, gz=False),
        *_fmt(".csv", text=True, fd=False, writer=can.CSVWriter, reader=can.CSVReader, gz=True),
        *_fmt(".trc", text=True, fd=False, writer=can.TRCWriter, reader=can.TRCReader, gz=True),
        *_fmt(".db", text=False, fd=False, writer=can.SqliteWriter, reader=can.SqliteReader,
              gz=False),
        *_fmt(".jsonl", text=True, fd=False, writer=None, reader=None, gz=True, events=True),
    ]
}  # fmt: skip


def detect_format(path: str) -> Format:
    """The format of ``path`` (or of a path template) by its suffix; ``ValueError`` otherwise.

    >>> detect_format("recordings/les02-{start:%Y%m%d-%H%M%S}.log.gz").suffix
    '.log.gz'
    >>> detect_format("x.blf.gz")
    Traceback (most recent call last):
    ValueError: unsupported recording format '.blf.gz' in 'x.blf.gz': python-can cannot gzip .blf; use .blf
    >>> detect_format("x.mp3")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: unknown recording format in 'x.mp3': the name must end in one of .log, ...
    """  # noqa: E501
    name = os.path.basename(path).lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    for base in (".blf", ".db"):
        if name.endswith(base + ".gz"):
            raise ValueError(
                f"unsupported recording format '{base}.gz' in '{path}': "
                f"python-can cannot gzip {base}; use {base}"
            )
    raise ValueError(
        f"unknown recording format in '{path}': the name must end in one of {', '.join(FORMATS)}"
    )


@dataclass(frozen=True)
class Problem:
    """A corrupt line or record: printed as ``FILE:line N: message`` or ``FILE:offset N: ...``."""

    path: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.where}: {self.message}"


# --------------------------------------------------------------------------------------------
# Writing


class FrameFileWriter:
    """One open recording file (frames through python-can, or ``.jsonl`` events).

    Calling rules: use from one thread; ``write`` a batch, then ``flush`` (pushes everything
    written so far to the operating system, so it survives ``kill -9``; BLF gets a container
    per flush); ``close`` once (finalises the file: BLF header, ASC end marker, SQLite commit).
    The file is created exclusively: an existing file is never overwritten
    (``FileExistsError``).

    Whole records only: :attr:`frames` counts the frames of every *successful* flush and
    :attr:`good_size` is the file's size after it. After a failed write or flush (disk full),
    :meth:`abandon` closes the file and cuts it back to :attr:`good_size`, so it ends on a
    whole record (no torn line a reader would reject or misread) and :attr:`frames` is
    exactly what is in it. :meth:`lost` tells whether the path still names this file (it may
    have been deleted or replaced while open).
    """

    def __init__(self, path: str, fmt: Format, *, flush_interval: float = 1.0) -> None:
        self.path = path
        self.fmt = fmt
        #: frames the format cannot hold (e.g. CAN FD in .trc), skipped
        self.unsupported = 0
        #: frames in the file after the last successful flush
        self.frames = 0
        #: bytes in the file after the last successful flush
        self.good_size = 0
        self._unflushed = 0
        #: (st_dev, st_ino) of the file created
        self.identity: FileIdentity | None = None
        self._raw: IO[bytes] | None = None
        self._text: IO[str] | None = None
        self._writer: MessageWriter | None = None
        self._gz: Any = None
        if fmt.base == ".db":
            # SqliteWriter creates the file itself; refuse to append to an existing database
            if os.path.exists(path):
                raise FileExistsError(17, "File exists", path)
            writer = can.SqliteWriter(path)
            writer.MAX_TIME_BETWEEN_WRITES = max(0.05, flush_interval)
            self._writer = writer
            with contextlib.suppress(OSError):
                st = os.stat(path)
                self.identity = file_identity(st)
            return
        raw: IO[bytes] = open(path, "xb")  # noqa: SIM115 -- closed in close()
        self._raw = raw
        st = os.fstat(raw.fileno())
        self.identity = file_identity(st)
        try:
            stream: Any = raw
            if fmt.compressed:
                stream = gzip.GzipFile(filename=path, mode="wb", fileobj=raw)
            if fmt.text:
                self._text = io.TextIOWrapper(stream, encoding="utf-8")
                if fmt.writer is not None:
                    self._writer = fmt.writer(file=self._text)
            else:
                assert fmt.writer is not None
                self._writer = fmt.writer(file=stream)
        except BaseException:
            raw.close()
            self._unlink_own()
            raise
        self._gz = stream if fmt.compressed else None

    def write(self, batch: list[Any]) -> int:
        """Write frames (or events for ``.jsonl``); returns how many were written."""
        n = self._write(batch)
        self._unflushed += n
        return n

    def _write(self, batch: list[Any]) -> int:
        if self.fmt.events:
            assert self._text is not None
            self._text.write("".join([encode_event(e) + "\n" for e in batch]))
            return len(batch)
        writer = self._writer
        assert writer is not None
        write = writer.on_message_received
        if self.fmt.base in (".trc", ".csv", ".db"):
            # .trc cannot hold CAN FD or remote frames; .csv/.db would drop the FD/BRS/ESI
            # flags (and a classic frame with > 8 bytes does not replay): skipped, counted
            trc = self.fmt.base == ".trc"
            n = 0
            for msg in batch:
                if msg.is_fd or (trc and msg.is_remote_frame):
                    self.unsupported += 1
                    continue
                write(msg)
                n += 1
            return n
        for msg in batch:
            write(msg)
        return len(batch)

    def _drain_sqlite(self) -> None:
        """Wait until python-can's SqliteWriter thread has taken every queued frame.

        Its ``stop()`` writes at most one more chunk and drops the rest of its queue
        (python-can 4.6), so the queue must be empty before ``stop()``.
        """
        writer = self._writer
        buffer = getattr(writer, "buffer", None)
        thread = getattr(writer, "_writer_thread", None)
        if buffer is None or thread is None:
            return
        while not buffer.empty() and thread.is_alive():
            time.sleep(0.002)

    def flush(self) -> None:
        """Hand everything written so far to the operating system."""
        if self.fmt.base == ".db":
            self._drain_sqlite()
        blf_flush = getattr(self._writer, "_flush", None) if self.fmt.base == ".blf" else None
        if callable(blf_flush):
            blf_flush()  # write the pending BLF container (python-can buffers up to 128 KiB)
        if self._text is not None:
            self._text.flush()
        if self._gz is not None:
            self._gz.flush()
        if self._raw is not None:
            self._raw.flush()
            self.good_size = os.fstat(self._raw.fileno()).st_size
        self.frames += self._unflushed
        self._unflushed = 0

    def lost(self) -> str | None:
        """Why the path no longer names this file (deleted, replaced), or None."""
        return path_lost(self.path, self.identity)

    def _unlink_own(self) -> None:
        """Remove the file if the path still names it (it was created here)."""
        if self.lost() is None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    def abandon(self, *, remove_if_empty: bool = True) -> bool:
        """After a write error: close as well as possible and cut the file back to its last
        whole record (:attr:`good_size`). Never raises. Returns True when the file was removed
        (it held no frame: no empty files are left behind by retries)."""
        raw = self._raw
        fd = -1
        if raw is not None and not raw.closed:
            with contextlib.suppress(OSError, ValueError):
                fd = os.dup(raw.fileno())
        with contextlib.suppress(Exception):
            self.close()
        for stream in (self._text, self._gz, self._raw):
            if stream is not None and not stream.closed:
                with contextlib.suppress(Exception):
                    stream.close()
        if fd >= 0:
            try:
                if os.fstat(fd).st_size > self.good_size:
                    os.ftruncate(fd, self.good_size)
            except OSError:
                pass
            finally:
                os.close(fd)
        self._unflushed = 0
        if remove_if_empty and self.frames == 0 and self.fmt.base != ".db":
            gone = self.lost() is None
            self._unlink_own()
            return gone
        return False

    def size(self) -> int:
        """Bytes in the file on disk (after the last flush)."""
        try:
            if self._raw is not None and not self._raw.closed:
                return os.fstat(self._raw.fileno()).st_size
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def close(self) -> None:
        """Finalise and close (idempotent)."""
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                if self.fmt.base == ".db":
                    self._writer = writer
                    self._drain_sqlite()
                    self._writer = None
                writer.stop()  # closes self._text / the gzip stream where it owns them
            if self._text is not None and not self._text.closed:
                self._text.close()
            if self._gz is not None and not self._gz.closed:
                self._gz.close()
        finally:
            for stream in (self._text, self._gz):  # after an error (disk full) above
                if stream is not None and not stream.closed:
                    with contextlib.suppress(Exception):
                        stream.close()
            if self._raw is not None and not self._raw.closed:
                self._raw.close()


def open_writer(path: str, fmt: Format, flush_interval: float = 1.0) -> FrameFileWriter:
    """Create ``path`` exclusively and return its writer (``OSError`` on failure)."""
    return FrameFileWriter(path, fmt, flush_interval=flush_interval)


# --------------------------------------------------------------------------------------------
# Reading

#: lines kept from the start of a text file to re-read the header after a corrupt line
_HEADER_LIMIT = 2000


class _Lines:
    """The line iterator a python-can text reader iterates in place of its file.

    Counts line numbers, refuses an unterminated last line (reported as torn), keeps the lines
    before the first message so a fresh reader can re-read the header after a corrupt line.
    """

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self.lineno = 0
        self.torn: tuple[int, str] | None = None
        self.broken: BaseException | None = None
        self.captured: list[str] | None = []
        self._replay: list[str] = []
        self.closed = False
        #: the line read last (the one a reader's message came from)
        self.last = ""

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._replay:
            return self._replay.pop()
        try:
            line = self._stream.readline()
        except (EOFError, OSError, ValueError) as exc:  # truncated/corrupt gzip, bad fd
            self.broken = exc
            raise StopIteration from None
        if not line:
            raise StopIteration
        if not line.endswith("\n"):
            if line.strip():
                self.torn = (self.lineno + 1, line)
            raise StopIteration
        self.lineno += 1
        self.last = line
        captured = self.captured
        if captured is not None:
            if len(captured) < _HEADER_LIMIT:
                captured.append(line)
            else:
                self.captured = None
        return line

    def header(self) -> list[str]:
        """The lines before the current one, if still known (stops capturing)."""
        captured, self.captured = self.captured, None
        return captured[:-1] if captured else []

    def replay(self, lines: list[str]) -> None:
        """Return ``lines`` (in order) before reading on."""
        self._replay = list(reversed(lines))

    # python-can readers close their file at the end; the owner closes the real stream
    def close(self) -> None:
        pass

    def readline(self) -> str:
        try:
            return next(self)
        except StopIteration:
            return ""


#: characters read per block by the ``.log`` reader
_BLOCK = 1 << 20


class _OneLine:
    """One line as the file of a python-can text reader."""

    def __init__(self, line: str) -> None:
        self._lines = [line]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lines)

    def close(self) -> None:
        pass


class _CandumpFast:
    """The common candump ``-L`` line -> the ``can.Message`` python-can's ``.log`` reader makes
    of it, or ``None`` for any other line (which then takes the full path).

    The common line: single spaces between 3 fields (or 4 with an ``R``/``T`` direction), no
    other whitespace; a 3-hex-digit standard id up to 0x7FF or an 8-digit extended id without
    the error flag; up to 8 whole data bytes in hex; a finite timestamp. For such a line the
    values are computed with python-can's own operations (``float`` of the text between the
    parentheses, ``int(id, 16)``, the channel as ``int`` when it is digits), and none of the
    checks of the full path (:func:`candump_line_problem`, :func:`frame_problem`,
    :func:`candump_error_frame`) has anything to say about it. Ids and channels are cached
    (a recording has few of them).
    """

    def __init__(self) -> None:
        self._ids: dict[str, tuple[int, bool]] = {}
        self._channels: dict[str, int | str] = {}

    def _can_id(self, text: str) -> tuple[int, bool] | None:
        n = len(text)
        if n not in (3, 8) or not set(text) <= _HEX:
            return None
        value = int(text, 16)
        if n == 3 and value > 0x7FF:  # out of range: frame_problem reports it
            return None
        if value & CAN_ERR_FLAG:  # error frames: python-can's and our own handling
            return None
        found = self._ids[text] = (value & 0x1FFFFFFF, n > 3)
        return found

    def _channel(self, text: str) -> int | str | None:
        if text.isdigit():
            if not text.isascii():
                return None
            value: int | str = int(text)
        else:
            value = text
        self._channels[text] = value
        return value

    def parse(self, line: str) -> can.Message | None:
        parts = line.split(" ")
        n = len(parts)
        if n == 3:
            is_rx = True
        elif n == 4 and parts[3] in _DIRECTIONS:
            is_rx = parts[3] in "Rr"
        else:
            return None
        if parts != line.split():  # other whitespace somewhere: the full path
            return None
        stamp, chan, frame = parts[0], parts[1], parts[2]
        text, sep, data = frame.partition("#")
        if not sep:
            return None
        ident = self._ids.get(text) or self._can_id(text)
        if ident is None:
            return None
        channel = self._channels.get(chan)
        if channel is None:
            channel = self._channel(chan)
            if channel is None:
                return None
        try:
            payload = bytearray.fromhex(data)  # raises for anything but whole hex bytes
            ts = float(stamp[1:-1])
        except ValueError:
            return None
        dlc = len(payload)
        if dlc > 8 or ts - ts != 0.0:  # more than 8 bytes; a timestamp that is not finite
            return None
        return can.Message(
            ts, ident[0], ident[1], False, False, channel, dlc, payload, False, is_rx, False, False
        )


_DIRECTIONS: Final = frozenset(("R", "r", "T", "t"))


class RecordingReader:
    """Iterate the frames (or, for ``.jsonl``, the events) of one recording, tolerantly.

    Calling rules: one iteration per instance, from one thread; ``on_problem`` is called (in
    that thread) for each corrupt line/record, which is then skipped; :attr:`problems` counts
    them. :meth:`fraction` is how much of the file has been read (0..1, by bytes), for progress
    reports. :meth:`close` may be called to stop early.

    ``OSError``/``ValueError`` from the constructor mean the file cannot be read at all
    (missing, unknown suffix, not a BLF file, ...).
    """

    def __init__(
        self,
        path: str,
        on_problem: Callable[[Problem], None] | None = None,
        fmt: Format | None = None,
    ) -> None:
        self.path = path
        self.fmt = fmt or detect_format(path)
        self.problems = 0
        self._on_problem = on_problem
        self._raw: IO[bytes] | None = None
        self._text: IO[str] | None = None
        self._total = 0
        self._rows_read = 0
        self._rows_total = 0
        self._sqlite: can.SqliteReader | None = None
        self._binary_reader: MessageReader | None = None
        if self.fmt.base == ".db":
            if not os.path.isfile(path):
                raise FileNotFoundError(2, "No such file or directory", path)
            self._sqlite = can.SqliteReader(path)
            try:
                self._rows_total = len(self._sqlite)
            except Exception as exc:  # not a database, no messages table
                self._sqlite.stop()
                raise ValueError(f"{path}: not a python-can SQLite recording: {exc}") from exc
            return
        raw: IO[bytes] = open(path, "rb")  # noqa: SIM115 -- closed in close()
        self._raw = raw
        try:
            self._total = os.fstat(raw.fileno()).st_size
            stream: Any = raw
            if self.fmt.compressed:
                stream = gzip.GzipFile(filename=path, mode="rb", fileobj=raw)
            if self.fmt.text:
                self._text = io.TextIOWrapper(
                    stream,
                    encoding="utf-8",
                    errors="replace",
                    newline=None,
                )
            else:
                assert self.fmt.reader is not None
                self._binary_reader = self.fmt.reader(file=stream)
        except OSError:
            raw.close()
            raise
        except Exception as exc:  # e.g. BLFParseError: not a BLF file
            raw.close()
            raise ValueError(f"{path}: not a {self.fmt.base} recording: {exc}") from exc

    # -- progress ------------------------------------------------------------------------------

    def fraction(self) -> float:
        """Share of the file read so far (0..1)."""
        if self._sqlite is not None:
            return min(1.0, self._rows_read / self._rows_total) if self._rows_total else 1.0
        raw = self._raw
        if raw is None or raw.closed or not self._total:
            return 1.0
        try:
            return min(1.0, raw.tell() / self._total)
        except (OSError, ValueError):
            return 1.0

    def close(self) -> None:
        """Release the file (idempotent)."""
        if self._sqlite is not None:
            self._sqlite.stop()
        if self._text is not None and not self._text.closed:
            with contextlib.suppress(Exception):
                self._text.close()
        if self._raw is not None and not self._raw.closed:
            self._raw.close()

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        try:
            if self.fmt.events:
                yield from self._iter_events()
            elif self._sqlite is not None:
                yield from self._iter_sqlite()
            elif self.fmt.text:
                yield from self._iter_text()
            else:
                yield from self._iter_binary()
        finally:
            self.close()

    def _problem(self, where: str, message: str) -> None:
        self.problems += 1
        if self._on_problem is not None:
            self._on_problem(Problem(self.path, where, message))

    def _finish_lines(self, lines: _Lines) -> None:
        self._finish(lines.torn, lines.broken, lines.lineno)

    def _finish(
        self, torn: tuple[int, str] | None, broken: BaseException | None, lineno: int
    ) -> None:
        if torn is not None:
            n, text = torn
            self._problem(
                f"line {n}",
                f"unterminated last line (torn write?) skipped: {_clip(text)}",
            )
        if broken is not None:
            self._problem(
                f"line {lineno + 1}",
                f"compressed data ends early or is corrupt ({broken}); "
                "the rest of the file is lost",
            )

    def _iter_text(self) -> Iterator[can.Message]:
        if self.fmt.base == ".log" and not self.fmt.compressed:
            yield from self._iter_candump()
        else:
            yield from self._iter_text_lines()

    def _iter_candump(self) -> Iterator[can.Message]:
        """``.log`` files, read in large blocks: the common line (what candump and python-can
        write) is parsed by :class:`_CandumpFast` with the same operations python-can's
        reader applies; any other line goes through python-can's reader and every check of
        the line-by-line path (:meth:`_candump_line`), so frames, problems and their line
        numbers are the same (tests/nodes/test_candump_fast.py)."""
        text = self._text
        assert text is not None
        fast = _CandumpFast()
        parse = fast.parse
        slow = self._candump_line
        lineno = 0
        rest = ""
        broken: BaseException | None = None
        while True:
            try:
                block = text.read(_BLOCK)
            except (EOFError, OSError, ValueError) as exc:  # a bad fd, an I/O error
                broken = exc
                break
            if not block:
                break
            lines = (rest + block).split("\n") if rest else block.split("\n")
            rest = lines.pop()
            for line in lines:
                lineno += 1
                msg = parse(line)
                if msg is None:
                    yield from slow(line + "\n", lineno)
                else:
                    yield msg
        torn = (lineno + 1, rest) if rest.strip() else None
        self._finish(torn, broken, lineno)

    def _candump_line(self, line: str, lineno: int) -> Iterator[can.Message]:
        """One candump line through python-can's reader and the checks of
        :meth:`_iter_text_lines` (what that path does with it)."""
        try:
            msgs = list(can.CanutilsLogReader(file=cast(TextIO, _OneLine(line))))
        except Exception as exc:
            self._problem(f"line {lineno}", f"corrupt line skipped ({type(exc).__name__}: {exc})")
            return
        for msg in msgs:
            msg = candump_error_frame(line, msg)
            problem = candump_line_problem(line) or frame_problem(msg)
            if problem:
                self._problem(f"line {lineno}", f"invalid frame skipped: {problem}: {_clip(line)}")
                continue
            yield msg

    def _iter_text_lines(self) -> Iterator[can.Message]:
        assert self._text is not None and self.fmt.reader is not None
        lines = _Lines(self._text)
        kwargs: dict[str, Any] = {}
        if self.fmt.base == ".asc":
            kwargs["relative_timestamp"] = False  # absolute times, as recorded
        header: list[str] | None = None
        last_error_line = -1
        candump = self.fmt.base == ".log"
        while True:
            reader = self.fmt.reader(file=lines, **kwargs)
            try:
                for msg in reader:
                    if header is None:
                        header = lines.header()
                    if candump:
                        msg = candump_error_frame(lines.last, msg)
                    problem = (candump and candump_line_problem(lines.last)) or frame_problem(msg)
                    if problem:
                        self._problem(
                            f"line {lines.lineno}",
                            f"invalid frame skipped: {problem}: {_clip(lines.last)}",
                        )
                        continue
                    yield msg
                break
            except Exception as exc:
                bad = lines.lineno
                if header is None:
                    header = lines.header()
                if bad == last_error_line:  # the header itself fails: nothing more to read
                    self._problem(f"line {bad}", f"cannot read on: {type(exc).__name__}: {exc}")
                    break
                last_error_line = bad
                self._problem(f"line {bad}", f"corrupt line skipped ({type(exc).__name__}: {exc})")
                lines.replay(header)
        self._finish_lines(lines)

    def _iter_binary(self) -> Iterator[can.Message]:
        try:
            assert self._binary_reader is not None
            for n, msg in enumerate(self._binary_reader, 1):
                problem = frame_problem(msg)
                if problem:
                    self._problem(f"frame {n}", f"invalid frame skipped: {problem}")
                    continue
                yield msg
            expected = getattr(self._binary_reader, "file_size", 0)
            if isinstance(expected, int) and expected > self._total > 0:
                self._problem(
                    f"offset {self._total}",
                    f"file is truncated: its header says {expected} bytes, it has "
                    f"{self._total}; the frames of the cut-off record are lost",
                )
        except Exception as exc:
            offset = "?"
            try:
                if self._raw is not None:
                    offset = str(self._raw.tell())
            except (OSError, ValueError):
                pass
            self._problem(
                f"offset {offset}",
                f"corrupt or truncated record ({type(exc).__name__}: {exc}); "
                "the rest of the file is skipped",
            )

    def _iter_sqlite(self) -> Iterator[can.Message]:
        assert self._sqlite is not None
        try:
            for msg in self._sqlite:
                self._rows_read += 1
                problem = frame_problem(msg)
                if problem:
                    self._problem(f"row {self._rows_read}", f"invalid frame skipped: {problem}")
                    continue
                yield msg
        except Exception as exc:
            self._problem(
                f"row {self._rows_read + 1}",
                f"cannot read on ({type(exc).__name__}: {exc})",
            )

    def _iter_events(self) -> Iterator[Event]:
        assert self._text is not None
        lines = _Lines(self._text)
        lines.captured = None
        loads = json.loads
        for line in lines:
            if not line.strip():
                continue
            try:
                event = loads(line)
            except ValueError as exc:
                self._problem(f"line {lines.lineno}", f"not JSON, skipped: {exc}")
                continue
            reason = _event_problem(event)
            if reason:
                self._problem(f"line {lines.lineno}", f"{reason}, skipped: {_clip(line)}")
                continue
            yield event
        self._finish_lines(lines)


#: the data lengths a CAN FD frame can have
FD_LENGTHS: Final = frozenset((0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 16, 20, 24, 32, 48, 64))
_HEX = frozenset("0123456789abcdefABCDEF")


def frame_problem(msg: can.Message) -> str:
    """Why a frame read from a recording is one no CAN bus can carry, or ``""``.

    Recordings are untrusted input: frames from them are checked like the kernel checks
    frames on a bus (id range, data length for classic and FD frames, DLC, a finite time).

    >>> frame_problem(can.Message(arbitration_id=0x80, data=bytes(64), is_extended_id=False))
    'classic CAN frame with 64 data bytes (at most 8)'
    >>> frame_problem(can.Message(arbitration_id=0x80, data=b"1234", is_extended_id=False))
    ''
    """
    ts = msg.timestamp
    if not isinstance(ts, int | float) or not math.isfinite(ts):
        return f"timestamp {ts!r} is not a finite number"
    limit = 0x1FFFFFFF if msg.is_extended_id else 0x7FF
    if not 0 <= msg.arbitration_id <= limit:
        kind = "extended" if msg.is_extended_id else "standard"
        return f"CAN id 0x{msg.arbitration_id:X} out of range for a {kind} frame"
    n = len(msg.data) if msg.data is not None else 0
    if msg.is_fd:
        if n not in FD_LENGTHS:
            return f"CAN FD frame with {n} data bytes (not a valid FD length)"
        return ""
    if n > 8:
        return f"classic CAN frame with {n} data bytes (at most 8)"
    if not msg.is_remote_frame and not msg.is_error_frame and msg.dlc != n:
        return f"DLC {msg.dlc} does not match its {n} data bytes"
    return ""


#: SocketCAN's error-frame flag in a candump CAN id (``linux/can.h`` ``CAN_ERR_FLAG``)
CAN_ERR_FLAG: Final = 0x20000000


def candump_error_frame(line: str, msg: can.Message) -> can.Message:
    """``msg`` as an error frame when the candump ``line`` is one (CAN id with
    ``CAN_ERR_FLAG``, e.g. ``20000004#0004000000000000``: controller problems).

    python-can 4.6's ``.log`` reader keeps only *bus* errors (class ``0x80``) as error frames;
    any other error class reads as an extended data frame of id ``0x4``. Here it stays an error
    frame, with the error class as ``arbitration_id`` and the 8 detail bytes as data, as
    python-can's SocketCAN interface receives it.

    >>> m = candump_error_frame("(1.0) can0 20000004#0004000000000000", can.Message(
    ...     arbitration_id=4, is_extended_id=True, data=bytes([0, 4, 0, 0, 0, 0, 0, 0])))
    >>> m.is_error_frame, hex(m.arbitration_id), m.is_extended_id, m.data.hex()
    (True, '0x4', False, '0004000000000000')
    """
    if msg.is_error_frame or not msg.is_extended_id:
        return msg
    parts = line.split()
    if len(parts) < 3:
        return msg
    can_id = parts[2].partition("#")[0]
    try:
        raw = int(can_id, 16)
    except ValueError:
        return msg
    if len(can_id) != 8 or not raw & CAN_ERR_FLAG:
        return msg
    return can.Message(
        timestamp=msg.timestamp,
        arbitration_id=raw & 0x1FFFFFFF,
        is_extended_id=False,
        is_error_frame=True,
        data=msg.data,
        dlc=msg.dlc,
        channel=msg.channel,
        is_rx=msg.is_rx,
    )


#: a candump line whose third field is a classic data frame with whole bytes (3 or 8 hex digit
#: id, even number of hex digits): candump_line_problem has nothing to say about it
_PLAIN_CANDUMP: Final = re.compile(
    r"\S+\s+\S+\s+[0-9A-Fa-f]{3}(?:[0-9A-Fa-f]{5})?#(?:[0-9A-Fa-f]{2})*(?:\s|$)"
)


def candump_line_problem(line: str) -> str:
    """What python-can's ``.log`` reader would silently misread in a candump ``-L`` line
    (``080#ABC`` reads as data AB 0C), or ``""``.

    >>> candump_line_problem("(1.0) can0 080#ABC\\n")
    'odd number of hex digits in the data (ABC)'
    >>> candump_line_problem("(1.0) can0 080#0A0B0C00\\n"), candump_line_problem("(1.0) c 1F334455#R")
    ('', '')
    """  # noqa: E501
    if _PLAIN_CANDUMP.match(line):
        return ""  # the common case, in one regex: a classic data frame with whole bytes
    parts = line.split()
    if len(parts) < 3:
        return ""  # python-can reports or skips it
    can_id, sep, rest = parts[2].partition("#")
    if not sep:
        return ""
    if len(can_id) not in (3, 8) or not set(can_id) <= _HEX:
        return f"CAN id {can_id!r} is not 3 or 8 hex digits"
    if rest.startswith("#"):  # CAN FD: ##<flags><data>
        flags, data = rest[1:2], rest[2:]
        if not flags or flags not in _HEX:
            return f"CAN FD flags {flags!r} are not one hex digit"
    elif rest.startswith("R"):
        return "" if len(rest) <= 2 and set(rest[1:]) <= _HEX else f"bad remote frame {rest!r}"
    else:
        data = rest
    if not set(data) <= _HEX:
        return f"data {data!r} is not hex"
    if len(data) % 2:
        return f"odd number of hex digits in the data ({data})"
    return ""


def _event_problem(event: Any) -> str:
    if not isinstance(event, dict):
        return "not an event envelope (a JSON object)"
    if not isinstance(event.get("type"), str):
        return "event has no string 'type'"
    ts = event.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not math.isfinite(ts):
        return "event has no numeric 'ts'"
    return ""


def _clip(text: str, limit: int = 80) -> str:
    text = text.rstrip("\r\n")
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")
