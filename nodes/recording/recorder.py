"""The recorder's plain logic: path templates, rotation, and the writer thread.

No asyncio and no Rx here. :class:`RecordingFiles` writes batches into a sequence of files
(rotating by size and/or duration, never overwriting anything) and is testable with lists;
:class:`WriterThread` runs it in a dedicated thread fed by a bounded queue of batches, so the
event loop only ever appends to a list and hands a batch over (``put_nowait``).

Path templates
    ``path`` is formatted with ``{start:FMT}`` (local time the recording started, strftime
    ``FMT``), ``{time:FMT}`` (local time this file was opened) and ``{n}`` (file number, 1 for
    the first; format specs like ``{n:03d}`` work). With rotation on and neither ``{n}`` nor
    ``{time}`` in the template, ``-{n:03d}`` is put before the suffix so every file gets its own
    name (``rec.log`` -> ``rec-001.log``, ``rec-002.log``, ...). Whatever the template gives, an
    existing file is never overwritten: ``_1``, ``_2``, ... is added before the suffix until the
    name is free (files are created exclusively).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from string import Formatter
from typing import Any, Protocol

from les02_flow.nodes.recording.formats import Format, detect_format, open_writer

__all__ = [
    "RecordingFiles",
    "Rotation",
    "WriterStats",
    "WriterThread",
    "check_template",
    "render_path",
]

_FIELDS = ("start", "time", "n")


def check_template(template: str) -> Format:
    """Validate a path template; returns its format or raises ``ValueError`` saying why.

    >>> check_template("recordings/les02-{start:%Y%m%d-%H%M%S}.log").suffix
    '.log'
    >>> check_template("rec-{day}.log")
    Traceback (most recent call last):
    ValueError: unknown placeholder {day} in 'rec-{day}.log' (allowed: {start:FMT}, {time:FMT}, {n})
    """
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"bad path template {template!r}: {exc} (use {{{{ for a brace)") from None
    for _, name, _, _ in parsed:
        if name is not None and name not in _FIELDS:
            raise ValueError(
                f"unknown placeholder {{{name}}} in {template!r} "
                "(allowed: {start:FMT}, {time:FMT}, {n})"
            )
    now = dt.datetime.now()
    try:
        render_path(template, now, now, 1, numbered=False)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"bad path template {template!r}: {exc}") from None
    return detect_format(template)


def _uses(template: str, name: str) -> bool:
    return any(f == name for _, f, _, _ in Formatter().parse(template))


def render_path(
    template: str, start: dt.datetime, opened: dt.datetime, n: int, *, numbered: bool
) -> str:
    """The file name for file number ``n`` (pure).

    >>> t = dt.datetime(2025, 1, 19, 20, 40, 34)
    >>> render_path("rec/les02-{start:%Y%m%d-%H%M%S}.log", t, t, 1, numbered=False)
    'rec/les02-20250119-204034.log'
    >>> render_path("rec/les02.log.gz", t, t, 2, numbered=True)
    'rec/les02-002.log.gz'
    >>> render_path("rec/{n:02d}.asc", t, t, 3, numbered=True)
    'rec/03.asc'
    """
    if numbered and not (_uses(template, "n") or _uses(template, "time")):
        suffix = detect_format(template).suffix
        cut = len(template) - len(suffix)
        template = template[:cut] + "-{n:03d}" + template[cut:]
    return template.format(start=start, time=opened, n=n)


def _with_tag(path: str, tag: int) -> str:
    suffix = detect_format(path).suffix
    cut = len(path) - len(suffix)
    return f"{path[:cut]}_{tag}{path[cut:]}"


@dataclass(frozen=True)
class Rotation:
    """When to start a new file: ``max_bytes`` on disk and/or ``max_seconds`` open.

    >>> r = Rotation(max_bytes=1000, max_seconds=60.0)
    >>> r.due(size=999, age=59.0), r.due(size=1000, age=0.0), r.due(size=0, age=60.0)
    (False, True, True)
    >>> Rotation().enabled
    False
    """

    max_bytes: int | None = None
    max_seconds: float | None = None

    @property
    def enabled(self) -> bool:
        return self.max_bytes is not None or self.max_seconds is not None

    def due(self, size: int, age: float) -> bool:
        if self.max_bytes is not None and size >= self.max_bytes:
            return True
        return self.max_seconds is not None and age >= self.max_seconds


class _Writer(Protocol):
    unsupported: int
    frames: int
    path: str

    def write(self, batch: list[Any]) -> int: ...
    def flush(self) -> None: ...
    def size(self) -> int: ...
    def close(self) -> None: ...
    def lost(self) -> str | None: ...
    def abandon(self, *, remove_if_empty: bool = True) -> bool: ...


@dataclass
class WriterStats:
    """What the writer has done; updated only by the thread that writes."""

    frames: int = 0  #: frames/events in the files (whole records, after the last flush)
    bytes: int = 0  #: bytes on disk over all files (after the last flush)
    files: int = 0  #: files opened (and kept: files left empty by a write error are removed)
    unsupported: int = 0  #: frames the format cannot hold (skipped)
    lost_files: int = 0  #: files deleted or replaced by someone else while being written
    lost_frames: int = 0  #: frames that were in those files (not counted in ``frames``)
    paths: list[str] = field(default_factory=list)
    #: things to tell the operator (file lost, reopened), taken by the node and logged
    notices: list[str] = field(default_factory=list)


class RecordingFiles:
    """Writes batches into one file after another (rotation), never overwriting a file.

    Calling rules: from one thread; :meth:`open` first (raises ``OSError`` when the first
    file cannot be created: the start-up error), then :meth:`write` per batch (writes, flushes
    to the operating system, rotates when due -- so a file may exceed ``max_bytes`` by one
    batch; the next file is created by the next batch, so none is left empty), :meth:`close`
    at the end. ``clock`` gives wall-clock seconds (tests replace it).
    """

    def __init__(
        self,
        template: str,
        rotation: Rotation | None = None,
        *,
        flush_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
        opener: Callable[[str, Format, float], _Writer] = open_writer,
    ) -> None:
        self.template = template
        self.fmt = check_template(template)
        self.rotation = rotation or Rotation()
        self.flush_interval = flush_interval
        self.clock = clock
        self.opener = opener
        self.stats = WriterStats()
        self._writer: _Writer | None = None
        self._opened_at = 0.0
        self._closed_bytes = 0
        self._unsupported_closed = 0
        self._start: dt.datetime | None = None

    @property
    def current(self) -> str | None:
        """The file being written, if any."""
        return self.stats.paths[-1] if self._writer is not None else None

    def open(self) -> str:
        """Create the next file (and its directories); returns its path."""
        now = self.clock()
        opened = dt.datetime.fromtimestamp(now)
        if self._start is None:
            self._start = opened
        n = self.stats.files + 1
        path = render_path(self.template, self._start, opened, n, numbered=self.rotation.enabled)
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        candidate, tag = path, 0
        while True:
            try:
                writer = self.opener(candidate, self.fmt, self.flush_interval)
                break
            except FileExistsError:
                tag += 1
                if tag > 10_000:
                    raise
                candidate = _with_tag(path, tag)
        try:
            writer.flush()  # the header (ASC, CSV, TRC) is on disk, or this fails now
        except BaseException:
            writer.abandon()
            raise
        self._writer = writer
        self._opened_at = now
        self.stats.files += 1
        self.stats.paths.append(candidate)
        return candidate

    def check(self) -> bool:
        """Is the current file still the one at its path? When it was deleted or replaced
        (``rm``, log rotation by someone else), everything in it is gone: its frames move from
        ``frames`` to ``lost_frames``, a notice is queued and a new file is opened at once.
        Returns False when that happened. Raises ``OSError`` when the new file cannot be
        created (handled like a write error)."""
        writer = self._writer
        if writer is None:
            return True
        why = writer.lost()
        if why is None:
            return True
        self._writer = None
        with contextlib.suppress(Exception):
            writer.close()
        self.stats.lost_files += 1
        self.stats.lost_frames += writer.frames
        self.stats.frames -= writer.frames
        self.stats.unsupported = self._unsupported_closed
        self.stats.bytes = self._closed_bytes
        what = (
            f"recording {writer.path} was {why} while being written: the {writer.frames} "
            "message(s) in it are lost"
        )
        try:
            new = self.open()
        except Exception as exc:
            self.stats.notices.append(f"{what}; cannot start a new file: {exc}")
            raise
        self.stats.notices.append(f"{what}; recording goes on in {new}")
        return False

    def write(self, batch: list[Any]) -> None:
        """Write one batch, flush it to the OS, rotate if due."""
        if self._rotation_due():  # e.g. max_seconds passed while nothing came
            self._close_current()
        self.check()
        if self._writer is None:
            self.open()
        writer = self._writer
        assert writer is not None
        if batch:
            n = writer.write(batch)
            writer.flush()
            self.stats.frames += n  # counted once flushed: what the file holds
        self.stats.unsupported = self._unsupported_closed + writer.unsupported
        size = writer.size()
        self.stats.bytes = self._closed_bytes + size
        if self._rotation_due(size):
            self._close_current()  # the next file is created by the next write

    def _rotation_due(self, size: int | None = None) -> bool:
        writer = self._writer
        if writer is None or not self.rotation.enabled:
            return False
        if size is None:
            size = writer.size()
        return self.rotation.due(size, self.clock() - self._opened_at)

    def _close_current(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.close()
        except BaseException:
            self._abandoned(writer)
            raise
        finally:
            self._unsupported_closed += writer.unsupported
            self._closed_bytes += writer.size()
            self.stats.bytes = self._closed_bytes
            self.stats.unsupported = self._unsupported_closed

    def close(self) -> None:
        """Finalise the current file (idempotent)."""
        self._close_current()

    def abandon(self) -> None:
        """After a write error: close the current file as well as possible, ignoring errors
        (a full disk cannot take the rest), cut it back to its last whole record and remove
        it if it holds none; the next :meth:`write` starts a new file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._abandoned(writer)
            self._unsupported_closed += writer.unsupported
            self._closed_bytes += writer.size()
            self.stats.bytes = self._closed_bytes
            self.stats.unsupported = self._unsupported_closed

    def _abandoned(self, writer: _Writer) -> None:
        flushed = writer.frames
        if writer.abandon():  # it held nothing: removed, so retries leave no empty files
            self.stats.files -= 1
            if self.stats.paths and self.stats.paths[-1] == writer.path:
                self.stats.paths.pop()
        elif flushed != writer.frames:
            self.stats.frames -= flushed - writer.frames


_STOP = object()
#: seconds between attempts to write again after a write error (doubling up to the max)
RETRY_INITIAL = 0.5
RETRY_MAX = 5.0


class WriterThread:
    """Runs :class:`RecordingFiles` in a dedicated thread fed by a bounded queue of batches.

    Calling rules: :meth:`submit` never blocks (returns ``False`` when the queue is full: the
    caller counts the batch as dropped); :meth:`close` hands over the end marker, waiting for
    room if needed, and returns at once; :meth:`join` waits (bounded) until every batch already
    submitted is written and the file closed. The thread is not a daemon: the process does not
    exit before what was accepted is on disk.

    A write error (disk full, file system gone read-only, file size limit) is kept in
    :attr:`error` and counted in :attr:`failures`; the failed batch and the batches that arrive
    before the next attempt are discarded (counted in :attr:`discarded`). The current file is
    closed as well as possible and, after ``RETRY_INITIAL`` seconds doubling up to
    ``RETRY_MAX``, the next batch is written to a NEW file (the template's next name); when
    that works :attr:`error` is cleared and :attr:`recoveries` counts it. The abandoned file
    is cut back to its last whole record (a file that holds none is removed), so
    ``stats.frames`` is exactly what the files hold.

    When idle for a flush interval (at most 1 s) the thread checks that the current file is
    still at its path (:meth:`RecordingFiles.check`); a deleted or replaced file is noticed
    within that time even when nothing is being recorded.
    """

    def __init__(self, files: RecordingFiles, max_batches: int, name: str = "recorder") -> None:
        self.files = files
        self.error: BaseException | None = None
        self.discarded = 0
        self.failures = 0
        self.recoveries = 0
        self._retry_at = 0.0
        self._delay = RETRY_INITIAL
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, max_batches))
        self._thread = threading.Thread(target=self._run, name=name, daemon=False)
        self._closing = False

    @property
    def stats(self) -> WriterStats:
        return self.files.stats

    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: list[Any]) -> bool:
        """Queue one batch without blocking; ``False`` when the queue is full."""
        try:
            self._queue.put_nowait(batch)
        except queue.Full:
            return False
        return True

    def submit_wait(self, batch: list[Any], timeout: float) -> bool:
        """Queue one batch, waiting up to ``timeout`` for room (for stop, off the loop)."""
        try:
            self._queue.put(batch, timeout=timeout)
        except queue.Full:
            return False
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Ask the thread to finish after the batches already queued (blocks for room)."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread; ``True`` when it has finished."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _failed(self, exc: BaseException, lost: int) -> None:
        self.error = exc
        self.failures += 1
        self.discarded += lost
        self.files.abandon()
        self._retry_at = time.monotonic() + self._delay
        self._delay = min(self._delay * 2, RETRY_MAX)

    def _run(self) -> None:
        files = self.files
        get = self._queue.get
        idle = min(1.0, max(0.05, files.flush_interval))
        try:
            while True:
                try:
                    batch = get(timeout=idle)
                except queue.Empty:
                    # nothing to write: still notice a deleted or replaced file at once
                    if self.error is None:
                        try:
                            files.check()
                        except Exception as exc:
                            self._failed(exc, 0)
                    continue
                if batch is _STOP:
                    break
                if self.error is not None and time.monotonic() < self._retry_at:
                    self.discarded += len(batch)
                    continue
                try:
                    files.write(batch)
                except Exception as exc:
                    self._failed(exc, len(batch))
                else:
                    if self.error is not None:
                        self.error = None
                        self.recoveries += 1
                    self._delay = RETRY_INITIAL
        finally:
            try:
                files.close()
            except Exception as exc:
                if self.error is None:
                    self.error = exc
