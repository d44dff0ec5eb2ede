"""Command-line logging: records are formatted on the loop and written by one thread.

:func:`setup_logging` is called once by :func:`les02_flow.cli.main` (it replaces the root
logger's handlers: a process-wide change, made only by the command line, never by a node or a
library call). :func:`flush_logs` waits until what was logged is written.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time

__all__ = [
    "LOG_CLOSE_TIMEOUT",
    "LOG_QUEUE_SIZE",
    "emergency_message",
    "flush_logs",
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

    def __init__(self, records: queue.Queue[logging.LogRecord | None]) -> None:
        super().__init__()
        self.records = records
        self.dropped = 0

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


_writer: _LogWriter | None = None


def flush_logs() -> None:
    """Wait (bounded) until the log writer has written every queued record."""
    if _writer is not None and _writer.is_alive():
        _writer.flush()


def setup_logging(level: str, log_file: str | None) -> None:
    """Log to stderr (and ``log_file``, rotated at 10 MiB x 5) from a writer thread.

    The event loop only formats and queues a record; a blocked stderr or a slow disk can
    never stall the stream (records beyond :data:`LOG_QUEUE_SIZE` are dropped and counted).
    """
    global _writer
    fmt = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
            )
        )
    for handler in handlers:
        handler.setFormatter(fmt)
    if _writer is not None:
        _writer.close()
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(LOG_QUEUE_SIZE)
    _writer = _LogWriter(records, handlers)
    _writer.start()
    atexit.register(_writer.close)
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        handlers=[_QueueingHandler(records)],
        force=True,
    )


def emergency_message(message: str) -> None:
    """Say ``message`` on stderr without locks (from a signal handler or a watchdog); let the
    log writer finish what is queued if it can within half a second."""
    writer = _writer
    if writer is not None and writer.is_alive():
        mutex = writer.records.mutex
        if mutex.acquire(timeout=0.5):  # not held by the code the signal interrupted
            mutex.release()
            writer.flush(0.5)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with contextlib.suppress(OSError):
        os.write(2, f"{stamp} WARNING les02_flow: {message}\n".encode())
