"""Node ``file_recorder``: write frames (python-can formats) or events (``.jsonl``) to files.

A thin wrapper around :class:`~les02_flow.nodes.recording.recorder.WriterThread`: on the
event loop ``consume`` only appends to a list; a full batch (or the flush tick) is handed to the
writer thread with a non-blocking ``put_nowait``. All file I/O happens in that thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import can
from pydantic import Field, field_validator
from reactivex import Observable

from les02_flow.node import Context, Kind, Node, NodeConfig, NodeStartError, RateLimitedLog
from les02_flow.nodes.recording.recorder import (
    RecordingFiles,
    Rotation,
    WriterThread,
    check_template,
)

__all__ = ["BATCH_SIZE", "FileRecorder", "FileRecorderConfig"]

#: most messages in one batch handed to the writer thread
BATCH_SIZE = 1000
#: seconds stop() waits for the writer thread before leaving it to finish on its own
STOP_WAIT = 4.0


class FileRecorderConfig(NodeConfig):
    """Config of ``file_recorder``."""

    path: str = Field(
        default="recordings/les02-{start:%Y%m%d-%H%M%S}.log",
        min_length=1,
        description="File to write; the suffix picks the format: .log (candump -L), .asc, "
        ".blf, .csv, .trc, .db, .jsonl (events), and .gz variants of .log/.asc/.csv/.trc/.jsonl. "
        "Placeholders: {start:FMT} (recording start, local time, strftime FMT), {time:FMT} "
        "(when this file was opened), {n} (file number). Missing directories are created; an "
        "existing file is never overwritten (_1, _2, ... is added).",
    )
    flush_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between hand-overs to the writer thread, which writes and flushes "
        "to the operating system: after a crash (kill -9) the file holds everything accepted "
        "up to the last flush.",
    )
    max_bytes: int | None = Field(
        default=None,
        gt=0,
        description="Start a new file when the current one reaches this size (bytes on disk; "
        "checked after each batch). Unset = no size rotation.",
    )
    max_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Start a new file after this many seconds. Unset = no time rotation.",
    )
    max_buffered: int = Field(
        default=200_000,
        ge=BATCH_SIZE,
        description="Most messages waiting for the writer thread (in batches of up to 1000). "
        "When the disk cannot keep up and this is full, new batches are dropped and counted "
        "in 'dropped' (the event loop is never blocked).",
    )

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str) -> str:
        check_template(value)
        return value

    @property
    def events(self) -> bool:
        """True when the path records events (.jsonl)."""
        return check_template(self.path).events


class FileRecorder(Node[FileRecorderConfig]):
    """Record frames or events to files (candump .log, .asc, .blf, .csv, .trc, .db, .jsonl).

    The format follows the file suffix (python-can's writers for frames; ``.jsonl`` writes one
    event envelope per line; ``.gz`` compresses the text formats). Frames go to frame formats,
    events to ``.jsonl``; anything else is counted in ``errors`` and reported (rate-limited).

    Writes never stall the event loop: messages are handed in batches to a dedicated writer
    thread through a bounded queue (``max_buffered``); if the disk cannot keep up and the queue
    is full, whole batches are dropped and counted in ``dropped`` -- the loop never waits.
    The writer flushes every batch to the operating system, and batches are handed over at
    least every ``flush_interval`` seconds, so after ``kill -9`` a text recording holds every
    message accepted up to the last flush (the reader skips a torn last line). On stop,
    everything accepted is written and the file is finalised (BLF header, ASC end marker); the
    process does not exit before that.

    A write error while recording (disk full, read-only file system) is logged (rate-limited)
    and counted (``errors``, ``write_errors``; the lost messages in ``dropped``); the rest of
    the flow keeps running, and the recorder retries with backoff (0.5 s doubling up to 5 s)
    in a NEW file (the path's next name, e.g. ``rec_1.log``) -- recording resumes by itself
    when space returns (``recoveries``).

    Files that disappear: the writer checks on every batch and at least once a second that the
    path still names the file being written. When it was deleted or replaced (``rm``, a
    rename), an error is logged, the messages that were in it are counted in ``lost`` (and no
    longer in ``written``), ``lost_files`` counts it, and recording goes on at once in a new
    file at the path (or its next free name). After a write error the abandoned file is cut
    back to its last whole record, so every file ends on a complete line/record, ``written``
    is exactly what the files hold, and a retry that writes nothing leaves no empty file.

    Rotation: ``max_bytes`` and/or ``max_seconds`` start a new file, numbered
    (``rec-001.log``, ``rec-002.log``, or ``{n}`` in the path) or time-stamped (``{time:...}``
    in the path). An unwritable path fails at start with a clear error.

    Counters: ``written`` (messages in the files), ``bytes``, ``files``, ``unsupported``
    (frames the format cannot hold, skipped: CAN FD and remote frames in .trc, CAN FD frames
    in .csv and .db, whose FD/BRS/ESI flags python-can cannot write; record CAN FD to .log,
    .asc or .blf), ``dropped``, ``errors``,
    ``write_errors``, ``recoveries``, ``lost_files`` and ``lost`` (files deleted or replaced
    while being written, and the messages that were in them).
    """

    type_name: ClassVar[str] = "file_recorder"
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    examples: ClassVar[tuple[str, ...]] = (
        "recorder:\n  type: file_recorder\n  path: recordings/les02-{start:%Y%m%d-%H%M%S}.log\n",
        "recorder:\n  type: file_recorder\n  path: recordings/bus.blf\n  max_seconds: 3600\n",
        "events:\n  type: file_recorder\n  path: recordings/events-{time:%Y%m%d-%H%M}.jsonl.gz\n"
        "  max_bytes: 100000000\n  flush_interval: 0.5\n",
    )

    def __init__(self, node_id: str, config: FileRecorderConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self._events = config.events
        self._pending: list[Any] = []
        self._thread: WriterThread | None = None
        self._tick: asyncio.Task[None] | None = None
        self._accepting = False
        self._stopped = False
        self.accepted = 0  #: messages handed to the writer thread
        self._drop_log = RateLimitedLog(self.log)
        self._kind_log = RateLimitedLog(self.log)
        self._write_log = RateLimitedLog(self.log)
        self._discarded_seen = 0

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        return {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Create the first file (and its directories) and start the writer thread."""
        if self._thread is not None:
            return
        cfg = self.config
        files = RecordingFiles(
            cfg.path,
            Rotation(cfg.max_bytes, cfg.max_seconds),
            flush_interval=cfg.flush_interval,
        )
        try:
            path = await asyncio.to_thread(files.open)
        except OSError as exc:
            where = exc.filename or cfg.path
            reason = exc.strerror or str(exc)
            raise NodeStartError(
                f"{self.log.prefix}: cannot create recording '{where}': {reason}"
            ) from exc
        except Exception as exc:
            raise NodeStartError(
                f"{self.log.prefix}: cannot create recording from '{cfg.path}': "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        thread = WriterThread(
            files, cfg.max_buffered // BATCH_SIZE, name=f"file_recorder {self.node_id}"
        )
        thread.start()
        self._thread = thread
        self._accepting = True
        self._tick = asyncio.get_running_loop().create_task(
            self._ticker(), name=f"file_recorder {self.node_id} flush"
        )
        self.log.info("recording %ss to %s", files.fmt.kind, path)

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.config.flush_interval)
            self._handover()
            self._update_counters()

    def consume(self, message: Any) -> None:
        """Take one message (on the loop; never blocks)."""
        if not self._accepting:
            self.counters.dropped += 1
            return
        ok = isinstance(message, dict) if self._events else isinstance(message, can.Message)
        if not ok:
            self.counters.errors += 1
            self._kind_log(
                logging.ERROR,
                "%s records %ss but received %s; wire %s here "
                "(use a .jsonl path for events, .log/.asc/.blf/... for frames) -- skipped",
                self.config.path,
                "event" if self._events else "frame",
                _describe(message),
                "events" if self._events else "frames",
            )
            return
        pending = self._pending
        pending.append(message)
        if len(pending) >= BATCH_SIZE:
            self._handover()

    def input_completed(self) -> None:
        self._handover()

    def _handover(self) -> None:
        batch = self._pending
        if not batch or self._thread is None:
            return
        self._pending = []
        if self._thread.submit(batch):
            self.accepted += len(batch)
        else:
            self._dropped(len(batch))

    def _dropped(self, n: int) -> None:
        self.counters.dropped += n
        self._drop_log(
            logging.WARNING,
            "writer cannot keep up (%d messages buffered): %d dropped",
            self.config.max_buffered,
            n,
        )

    def _update_counters(self) -> None:
        thread = self._thread
        if thread is None:
            return
        stats = thread.stats
        extra = self.counters.extra
        extra["written"] = stats.frames
        extra["bytes"] = stats.bytes
        extra["files"] = stats.files
        if stats.unsupported:
            extra["unsupported"] = stats.unsupported
        if stats.lost_files:
            extra["lost_files"] = stats.lost_files
            extra["lost"] = stats.lost_frames
        notices = stats.notices
        while notices:
            self.counters.errors += 1
            self.log.error("%s", notices.pop(0))
        failures = thread.failures
        if failures > extra.get("write_errors", 0):
            self.counters.errors += failures - extra.get("write_errors", 0)
            extra["write_errors"] = failures
            error = thread.error
            self._write_log(
                logging.ERROR,
                "writing %s failed: %s -- messages are dropped (counted) "
                "and the recorder retries in a new file",
                (thread.stats.paths or [self.config.path])[-1],
                error if error is not None else "error",
            )
        discarded = thread.discarded
        if discarded > self._discarded_seen:
            self.counters.dropped += discarded - self._discarded_seen
            self._discarded_seen = discarded
        if thread.recoveries > extra.get("recoveries", 0):
            extra["recoveries"] = thread.recoveries
            self.log.warning(
                "recording again, to %s (%d message(s) lost meanwhile)",
                thread.files.current or self.config.path,
                discarded,
            )

    async def stop(self) -> None:
        """Write everything accepted, finalise the file. Idempotent, bounded, never raises."""
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False
        try:
            tick, self._tick = self._tick, None
            if tick is not None:
                tick.cancel()
                await asyncio.gather(tick, return_exceptions=True)
            thread = self._thread
            if thread is None:
                return
            batch, self._pending = self._pending, []
            if batch:
                if await asyncio.to_thread(thread.submit_wait, batch, STOP_WAIT):
                    self.accepted += len(batch)
                else:
                    self._dropped(len(batch))
            await asyncio.to_thread(thread.close, STOP_WAIT)
            done = await asyncio.to_thread(thread.join, STOP_WAIT)
            self._update_counters()
            stats = thread.stats
            if not done:
                self.log.warning(
                    "still writing %d accepted messages; the process exits when they are on disk",
                    self.accepted - stats.frames,
                )
                return
            self.log.info(
                "stopped: %d accepted, %d written, %d dropped, %d file(s), %d bytes: %s",
                self.accepted,
                stats.frames,
                self.counters.dropped,
                stats.files,
                stats.bytes,
                ", ".join(stats.paths),
            )
        except Exception as exc:  # never raise from stop
            self.log.error("error while stopping: %s", exc)


def _describe(message: Any) -> str:
    if isinstance(message, dict):
        return f"an event (type {message.get('type')!r})"
    if isinstance(message, can.Message):
        return f"a frame (id 0x{message.arbitration_id:X})"
    return f"a {type(message).__name__}"
