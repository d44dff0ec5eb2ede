"""The CLI's log path: records are queued for a writer thread and never block the caller."""

from __future__ import annotations

import io
import logging
import queue

from les02_flow.clilog import _LogWriter, _QueueingHandler


def _record(msg: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    return logging.makeLogRecord(
        {
            "name": "t",
            "levelno": logging.INFO,
            "levelname": "INFO",
            "msg": msg,
            "args": args,
            "exc_info": (type(exc), exc, exc.__traceback__) if exc is not None else None,
        }
    )


def _take(records: queue.Queue[logging.LogRecord | None]) -> logging.LogRecord:
    record = records.get_nowait()
    assert record is not None
    return record


def test_a_full_queue_drops_and_counts_and_the_next_record_reports_it() -> None:
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(2)
    handler = _QueueingHandler(records)
    for i in range(5):
        handler.emit(_record("line %d", i))  # never blocks
    assert handler.dropped == 3
    got = [_take(records), _take(records)]
    assert [r.getMessage() for r in got] == ["line 0", "line 1"]
    handler.emit(_record("line 5"))  # room again: the count goes first, then the record
    note, last = _take(records), _take(records)
    assert note.levelno == logging.WARNING
    assert note.getMessage().startswith("3 log record(s) dropped: the log output was blocked")
    assert last.getMessage() == "line 5"
    assert handler.dropped == 0


def test_the_writer_formats_messages_and_tracebacks_from_the_queue() -> None:
    records: queue.Queue[logging.LogRecord | None] = queue.Queue(10)
    out = io.StringIO()
    stream = logging.StreamHandler(out)
    stream.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler = _QueueingHandler(records)
    try:
        raise ValueError("boom")
    except ValueError as exc:
        handler.emit(_record("failed %s", "x", exc=exc))
    handler.emit(_record("done %d%%", 100))
    writer = _LogWriter(records, [stream])
    writer.start()
    assert writer.flush(5.0)
    writer.close()
    assert not writer.is_alive()
    text = out.getvalue()
    assert text.startswith("INFO failed x\nTraceback (most recent call last):")
    assert "ValueError: boom" in text
    assert text.endswith("INFO done 100%\n")
