"""Command-line logging: records are formatted on the loop and written by one thread.

:func:`les02_flow.cli.main` makes one :class:`CliLog` per run and installs it (it replaces the
root logger's handlers: a process-wide change, made only by the command line, never by a node
or a library call) and closes it when the command ends; no module global holds it.
:func:`flush_logs` waits until what was logged is written.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
from typing import TextIO

__all__ = [
    "LOG_CLOSE_TIMEOUT",
    "LOG_QUEUE_SIZE",
    "CliLog",
    "emergency_message",
    "flush_logs",
    "installed_log",
    "setup_logging",
]


#: log records waiting for the log writer thread before further ones are dropped (counted)
LOG_QUEUE_SIZE = 10_000
#: seconds the log writer may take at exit to write what is queued
LOG_CLOSE_TIMEOUT = 2.0


class _QueueingHandler(logging.Handler):
    """Formats a record in the caller's thread and queues it for the log writer thread.

    Never blocks: when the writer is stuck (stderr is a pipe nobody reads, a slow SD card) and
    :data:`LOG_QUEUE_SIZE` records are waiting, further records are dropped and counted; the
    next record that gets through is preceded by a warning with the count.
    """

    def __init__(
        self, records: queue.Queue[logging.LogRecord | None], owner: CliLog | None = None
    ) -> None:
        super().__init__()
        self.records = records
        self.dropped = 0
        #: the log output this handler feeds (closed with it)
        self.owner = owner

    def flush(self) -> None:
        if self.owner is not None:
            self.owner.flush()

    def close(self) -> None:
        """Closing the handler (``logging.basicConfig(force=True)``, ``logging.shutdown``)
        closes its log output."""
        super().close()
        if self.owner is not None:
            self.owner.close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.message = record.getMessage()
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.msg, record.args, record.exc_info = record.message, None, None
            if self.dropped:
                note = logging.makeLogRecord(
                    {
                        "name": "les02_flow",
                        "levelno": logging.WARNING,
                        "levelname": "WARNING",
                        "msg": f"{self.dropped} log record(s) dropped: the log output was "
                        "blocked (is stderr a pipe nobody reads?)",
                    }
                )
                self.records.put_nowait(note)
                self.dropped = 0
            self.records.put_nowait(record)
        except queue.Full:
            self.dropped += 1
        except Exception:
            self.handleError(record)


class _LogWriter(threading.Thread):
    """Writes queued records to the real handlers (stderr, the log file) off the event loop."""

    def __init__(
        self, records: queue.Queue[logging.LogRecord | None], handlers: list[logging.Handler]
    ) -> None:
        super().__init__(name="log writer", daemon=True)
        self.records = records
        self.handlers = handlers

    def run(self) -> None:
        records = self.records
        while (record := records.get()) is not None:
            try:
                for handler in self.handlers:
                    if record.levelno >= handler.level:
                        handler.handle(record)
            finally:
                records.task_done()

    def flush(self, timeout: float = LOG_CLOSE_TIMEOUT) -> bool:
        """Wait (at most ``timeout`` s) until every queued record is written."""
        records = self.records
        with records.all_tasks_done:
            done = records.all_tasks_done.wait_for(lambda: not records.unfinished_tasks, timeout)
        self._flush_handlers()
        return done

    def _flush_handlers(self) -> None:
        for handler in self.handlers:
            # a closed or broken stream: nothing more can be written
            with contextlib.suppress(OSError, ValueError):
                handler.flush()

    def close(self) -> None:
        """Write what is queued (at most :data:`LOG_CLOSE_TIMEOUT` s), then stop."""
        try:
            self.records.put(None, timeout=LOG_CLOSE_TIMEOUT)
        except queue.Full:
            return
        self.join(LOG_CLOSE_TIMEOUT)
        self._flush_handlers()


class CliLog:
    """The log output of one command-line run: a :class:`_LogWriter` thread writing to stderr
    (and ``log_file``, rotated at 10 MiB x 5) and the handler that queues records for it.

    :func:`les02_flow.cli.main` makes one per run, installs it on the root logger (the one
    process-wide logging change, made there and nowhere else) and closes it when the command
    ends. Nothing keeps it in a module global: :func:`flush_logs` and
    :func:`emergency_message` find the installed one on the root logger. The event loop only
    formats and queues a record; a blocked stderr or a slow disk can never stall the stream
    (records beyond :data:`LOG_QUEUE_SIZE` are dropped and counted).
    """

    def __init__(
        self, level: str = "INFO", log_file: str | None = None, stream: TextIO | None = None
    ) -> None:
        self.level = getattr(logging, level.upper())
        fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
        if log_file:
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
                )
            )
        for handler in handlers:
            handler.setFormatter(fmt)
        records: queue.Queue[logging.LogRecord | None] = queue.Queue(LOG_QUEUE_SIZE)
        self.writer = _LogWriter(records, handlers)
        self.handler = _QueueingHandler(records, owner=self)
        self._closed = False

    def install(self) -> CliLog:
        """Start the writer and make it the root logger's only handler, at ``level`` (a log
        output installed before is closed)."""
        self.writer.start()
        logging.basicConfig(level=self.level, handlers=[self.handler], force=True)
        return self

    def flush(self, timeout: float = LOG_CLOSE_TIMEOUT) -> None:
        """Wait (at most ``timeout`` s) until every queued record is written."""
        if self.writer.is_alive():
            self.writer.flush(timeout)

    def close(self) -> None:
        """Write what is queued (bounded), stop the writer and leave the root logger (later
        records go to Python's last-resort handler). Idempotent."""
        if self._closed:
            return
        self._closed = True
        logging.getLogger().removeHandler(self.handler)
        if self.writer.is_alive():
            self.writer.close()
        if self.writer.is_alive():
            return  # still stuck on a blocked stream: closing would wait for its lock
        for handler in self.writer.handlers:  # closes the log file (stderr stays open)
            handler.close()


def installed_log() -> CliLog | None:
    """The :class:`CliLog` installed on the root logger, if any (a library user's own logging
    configuration has none: then nothing here does anything)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _QueueingHandler) and handler.owner is not None:
            return handler.owner
    return None


def flush_logs() -> None:
    """Wait (bounded) until the installed log output has written every queued record."""
    output = installed_log()
    if output is not None:
        output.flush()


def setup_logging(level: str, log_file: str | None) -> CliLog:
    """Make and install a :class:`CliLog` (the caller owns it: close it at the end)."""
    return CliLog(level, log_file).install()


def emergency_message(message: str) -> None:
    """Say ``message`` on stderr without locks (from a signal handler or a watchdog); let the
    installed log writer finish what is queued if it can within half a second."""
    output = installed_log()
    writer = output.writer if output is not None else None
    if writer is not None and writer.is_alive():
        mutex = writer.records.mutex
        if mutex.acquire(timeout=0.5):  # not held by the code the signal interrupted
            mutex.release()
            writer.flush(0.5)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.suppress(OSError):
        os.write(2, f"{stamp} WARNING les02_flow: {message}\n".encode())
