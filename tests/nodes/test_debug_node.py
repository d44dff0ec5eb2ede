"""The debug node: candump -L lines, event JSON, rate limit, streams."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import can
import pytest
from pydantic import ValidationError

from les02_flow.events import encode_event, make_event
from les02_flow.node import Context
from les02_flow.nodes.debug import (
    Debug,
    DebugConfig,
    LineRateLimiter,
    format_frame,
    format_message,
)

LOGGER = "test.debug_node"


def make_node(node_id: str = "dbg", **config: Any) -> Debug:
    return Debug(node_id, DebugConfig(**config), Context(node_id, logging.getLogger(LOGGER)))


class FakeClock:
    """A settable monotonic clock for the rate limit."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("kwargs", "line"),
    [
        (
            {"arbitration_id": 0x80, "is_extended_id": False, "data": [0, 0, 0x90, 0]},
            "(1737319234.567800) les02 080#00009000",
        ),
        (
            {"arbitration_id": 0x1, "is_extended_id": False, "data": []},
            "(1737319234.567800) les02 001#",
        ),
        (
            {"arbitration_id": 0x80, "is_extended_id": True, "data": [0xAB]},
            "(1737319234.567800) les02 00000080#AB",
        ),
        (
            {"arbitration_id": 0x7DF, "is_extended_id": False, "is_remote_frame": True, "dlc": 0},
            "(1737319234.567800) les02 7DF#R",
        ),
        (
            {"arbitration_id": 0x7DF, "is_extended_id": False, "is_remote_frame": True, "dlc": 3},
            "(1737319234.567800) les02 7DF#R3",
        ),
        (
            {"arbitration_id": 0x123, "is_extended_id": False, "is_fd": True, "data": [1, 2]},
            "(1737319234.567800) les02 123##00102",
        ),
        (
            {
                "arbitration_id": 0x1ABCDEF0,
                "is_fd": True,
                "bitrate_switch": True,
                "error_state_indicator": True,
                "data": bytes(range(12)),
            },
            "(1737319234.567800) les02 1ABCDEF0##3000102030405060708090A0B",
        ),
        (
            {"is_error_frame": True, "arbitration_id": 0x4, "data": bytes(8)},
            "(1737319234.567800) les02 20000004#0000000000000000",
        ),
        (
            {"is_error_frame": True, "data": []},
            "(1737319234.567800) les02 20000080#",
        ),
    ],
)
def test_format_frame(kwargs: dict[str, Any], line: str) -> None:
    msg = can.Message(timestamp=1737319234.5678, channel="les02", **kwargs)
    assert format_frame(msg) == line


def test_format_frame_channel_and_timestamp_fallbacks() -> None:
    msg = can.Message(timestamp=0.0, arbitration_id=0x80, is_extended_id=False, data=[1])
    assert format_frame(msg) == "(0.000000) can0 080#01"
    assert format_frame(msg, default_channel="vcan0") == "(0.000000) vcan0 080#01"
    msg.channel = 2
    assert format_frame(msg).split()[1] == "can2"
    msg.channel = "Virtual bus channel x"
    assert format_frame(msg).split()[1] == "Virtual_bus_channel_x"
    msg.timestamp = float("nan")
    assert format_frame(msg).startswith("(0.000000) ")


def test_format_message_never_raises() -> None:
    class Evil:
        def __repr__(self) -> str:
            raise RuntimeError("no")

    event = make_event("status", 2.0, {"channel": "slave"})
    assert format_message(event) == encode_event(event)
    assert format_message({"x": object()}).startswith("{'x': <object object")
    assert format_message([1, "a"]) == "[1, 'a']"
    assert format_message(None) == "None"
    assert format_message(Evil()) == "<unprintable Evil: RuntimeError>"


def test_rate_limiter() -> None:
    lim = LineRateLimiter(3)
    assert [lim.admit(t)[0] for t in (0, 0.1, 0.2, 0.3, 0.9)] == [True, True, True, False, False]
    assert lim.admit(1.0) == (True, 2)
    assert lim.admit(1.1) == (True, 0)
    unlimited = LineRateLimiter(0)
    assert all(unlimited.admit(0.0) == (True, 0) for _ in range(1000))


def test_stdout_frames_and_events(capsys: pytest.CaptureFixture[str]) -> None:
    node = make_node()
    frame = can.Message(
        timestamp=1737319234.5678,
        arbitration_id=0x80,
        is_extended_id=False,
        data=[0, 0, 0x90, 0],
        channel="les02",
    )
    event = make_event("position_sample", 1737319234.5678, {"channel": "master", "position_raw": 1})

    async def main() -> None:
        node.consume(frame)
        node.consume(event)
        node.consume(object)
        await asyncio.sleep(0)  # the flush runs once per loop iteration
        await node.stop()

    asyncio.run(main())
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "(1737319234.567800) les02 080#00009000",
        encode_event(event),
        "<class 'object'>",
    ]
    assert err == ""


def test_stderr_and_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    node = make_node(stream="stderr", prefix="[bus]")
    node.consume("hello")  # no running loop: written and flushed at once
    out, err = capsys.readouterr()
    assert (out, err) == ("", "[bus] 'hello'\n")


def test_rate_limit_drops_and_reports(capsys: pytest.CaptureFixture[str]) -> None:
    node = make_node("dbg7", rate_limit=2)
    clock = FakeClock()
    node.clock = clock
    for i in range(5):
        node.consume(i)
    assert node.counters.dropped == 3
    clock.now += 1.0
    node.consume(5)
    node.consume(6)
    node.consume(7)  # over the limit again: reported on stop
    asyncio.run(node.stop())
    assert capsys.readouterr().out.splitlines() == [
        "0",
        "1",
        "debug dbg7: 3 messages suppressed",
        "5",
        "6",
        "debug dbg7: 1 messages suppressed",
    ]
    assert node.counters.dropped == 4


def test_stream_log(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    node = make_node("probe", stream="log", prefix="p:")
    node.consume(make_event("status", 2.0, {"channel": "slave"}))
    (record,) = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.INFO
    assert record.getMessage() == (
        "debug 'probe': p: "
        '{"proto": 1, "type": "status", "ts": 2.0, "source": "les02", '
        '"payload": {"channel": "slave"}}'
    )
    assert capsys.readouterr() == ("", "")


def test_broken_stream_is_counted_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def __init__(self, exc: type[OSError]) -> None:
            self.exc = exc

        def write(self, text: str) -> int:
            raise self.exc("gone")

        def flush(self) -> None:
            raise self.exc("gone")

    monkeypatch.setattr("sys.stdout", Broken(OSError))
    node = make_node()
    node.consume(1)
    node.consume(2)
    assert node.counters.errors == 2
    # the reader of the pipe went away (| head): dropped quietly, no error per message
    monkeypatch.setattr("sys.stdout", Broken(BrokenPipeError))
    node = make_node()
    node.consume(1)
    node.consume(2)
    assert (node.counters.errors, node.counters.dropped) == (0, 2)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValidationError):
        DebugConfig(stream="file")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        DebugConfig(rate_limit=-1)
    assert DebugConfig() == DebugConfig(stream="stdout", rate_limit=0, prefix="")
