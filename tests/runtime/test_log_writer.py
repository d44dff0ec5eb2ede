"""The CLI's log path: records are queued for a writer thread and never block the caller."""

from __future__ import annotations

import io
import logging
import os
import queue
from collections.abc import Iterator
from pathlib import Path

import pytest

from les02_flow import clilog
from les02_flow.cli import quiet_closed_pipes
from les02_flow.clilog import CliLog, _LogWriter, _QueueingHandler, flush_logs, installed_log


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


@pytest.fixture
def root_restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers, root.level = handlers, level


@pytest.mark.usefixtures("root_restored")
def test_the_log_output_is_an_object_owned_by_the_run_not_a_module_global() -> None:
    first, second = io.StringIO(), io.StringIO()
    a = CliLog("INFO", stream=first).install()
    assert installed_log() is a and a.writer.is_alive()
    logging.getLogger("les02_flow.node.x").info("one %d", 1)
    flush_logs()
    assert first.getvalue().endswith("INFO    les02_flow.node.x: one 1\n")
    assert not [v for v in vars(clilog).values() if isinstance(v, (CliLog, _LogWriter))]

    b = CliLog("WARNING", stream=second).install()  # a second run replaces (and closes) the first
    assert installed_log() is b
    assert not a.writer.is_alive()
    logging.getLogger("les02_flow").info("not at WARNING")
    logging.getLogger("les02_flow").warning("two")
    flush_logs()
    assert second.getvalue().endswith("WARNING les02_flow: two\n")
    assert "two" not in first.getvalue()

    b.close()
    b.close()  # idempotent
    assert installed_log() is None and not b.writer.is_alive()
    assert b.handler not in logging.getLogger().handlers
    flush_logs()  # nothing installed: nothing to do


@pytest.mark.usefixtures("root_restored")
def test_the_log_file_gets_what_stderr_gets(tmp_path: Path) -> None:
    path, err = tmp_path / "run.log", io.StringIO()
    output = CliLog("INFO", str(path), stream=err).install()
    logging.getLogger("les02_flow").info("to both")
    output.close()
    assert path.read_text(encoding="utf-8").endswith("les02_flow: to both\n")
    assert err.getvalue().endswith("les02_flow: to both\n")


def test_the_cli_end_quiets_a_stdout_whose_reader_went_away(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        stream.write("a line nobody reads\n")
        os.close(read_end)  # `| head` exited
        monkeypatch.setattr("sys.stdout", stream)
        quiet_closed_pipes()
        stream.write("more\n")
        stream.flush()  # no BrokenPipeError any more: the descriptor is /dev/null now
        assert os.fstat(write_end).st_rdev == os.stat(os.devnull).st_rdev
    finally:
        stream.close()
