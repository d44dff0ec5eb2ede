"""tap(): the debug client against a real ws_sink on 127.0.0.1:0."""

from __future__ import annotations

import asyncio
import io
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from les02_flow.events import Event, encode_event, make_event
from les02_flow.node import Context
from les02_flow.nodes.ws.sink import WsSink, WsSinkConfig
from les02_flow.nodes.ws.tap import EXIT_ERROR, EXIT_OK, EXIT_USAGE, run_tap, tap, tap_url
from les02_flow.testing import wait_until


def make_sink(**cfg: Any) -> WsSink:
    config = WsSinkConfig(host="127.0.0.1", port=0, **cfg)
    return WsSink("ws", config, Context("ws", logging.getLogger("test.ws_tap")))


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(main(), 15))


def event(i: int, type_: str) -> Event:
    return make_event(type_, 1737319234.5 + i, {"channel": "slave", "n": i})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_tap_url() -> None:
    assert tap_url("ws://h:1") == "ws://h:1"
    assert tap_url("ws://h:1", ["a", "b"]) == "ws://h:1/?types=a,b"
    assert tap_url("ws://h:1/x?k=v", "a, b,") == "ws://h:1/x?k=v&types=a,b"
    assert tap_url("h:1", ["a,b", "c"]) == "ws://h:1/?types=a,b,c"
    with pytest.raises(ValueError, match="not a WebSocket URL"):
        tap_url("http://h:1")
    with pytest.raises(ValueError, match="empty"):
        tap_url("ws://h:1", [" , "])
    with pytest.raises(ValueError, match="bad event type 'Ride'"):
        tap_url("ws://h:1", ["Ride"])


def test_tap_prints_count_filtered_messages() -> None:
    events = [event(i, ("position_sample", "ride_end")[i % 2]) for i in range(10)]

    async def main() -> None:
        sink = make_sink()
        await sink.start()
        out = io.StringIO()
        try:
            task = asyncio.create_task(
                tap(f"ws://127.0.0.1:{sink.port}", types=["ride_end"], out=out, count=3)
            )
            await wait_until(lambda: sink.client_count == 1 or task.done(), "tap connected")
            for e in events:
                sink.consume(e)
            assert await task == EXIT_OK
        finally:
            await sink.stop()
        wanted = [encode_event(e) for e in events if e["type"] == "ride_end"][:3]
        assert out.getvalue() == "".join(line + "\n" for line in wanted)

    run(main)


def test_tap_ends_with_0_when_the_server_shuts_down(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        sink = make_sink()
        await sink.start()
        out = io.StringIO()
        try:
            task = asyncio.create_task(tap(f"127.0.0.1:{sink.port}", out=out))
            await wait_until(lambda: sink.client_count == 1 or task.done(), "tap connected")
            sink.consume(event(1, "status"))
            sink.consume(event(2, "error"))
        finally:
            await sink.stop()
        assert await task == EXIT_OK
        assert out.getvalue().splitlines() == [
            encode_event(event(1, "status")),
            encode_event(event(2, "error")),
        ]

    run(main)
    err = capsys.readouterr().err
    assert "connected to ws://127.0.0.1:" in err
    assert "code 1001 'server shutting down'" in err


def test_tap_reconnects_when_the_sink_restarts(capsys: pytest.CaptureFixture[str]) -> None:
    """A real ws_sink stopped and started again on the same port: tap waits (backoff) and
    goes on printing (old code: it ended with the 1001 of the first sink)."""

    async def main() -> None:
        first = make_sink()
        await first.start()
        port = first.port
        out = io.StringIO()
        task = asyncio.create_task(tap(f"ws://127.0.0.1:{port}", out=out, count=2, reconnect=1))
        second: WsSink | None = None
        try:
            await wait_until(lambda: first.client_count == 1 or task.done(), "tap connected")
            first.consume(event(1, "status"))
            await wait_until(lambda: out.getvalue().count("\n") == 1, "first event printed")
            await first.stop()
            # the port is free while the sink is down: tap keeps trying, backing off
            await wait_until(lambda: "reconnecting" in capsys.readouterr().err, "retrying")
            assert not task.done()
            second = WsSink(
                "ws",
                WsSinkConfig(host="127.0.0.1", port=port),
                Context("ws", logging.getLogger("test.ws_tap")),
            )
            await second.start()
            await wait_until(lambda: second.client_count == 1 or task.done(), "reconnected", 10)
            second.consume(event(2, "status"))
            assert await asyncio.wait_for(task, 10) == EXIT_OK
        finally:
            task.cancel()
            await first.stop()
            if second is not None:
                await second.stop()
        assert out.getvalue().splitlines() == [
            encode_event(event(1, "status")),
            encode_event(event(2, "status")),
        ]

    run(main)


def test_tap_reports_a_refusal_with_1(capsys: pytest.CaptureFixture[str]) -> None:
    async def main() -> None:
        sink = make_sink(max_clients=1)
        await sink.start()
        try:
            first = asyncio.create_task(tap(f"ws://127.0.0.1:{sink.port}", out=io.StringIO()))
            await wait_until(lambda: sink.client_count == 1 or first.done(), "first tap")
            out = io.StringIO()
            assert await tap(f"ws://127.0.0.1:{sink.port}", out=out) == EXIT_ERROR
            assert out.getvalue() == ""
        finally:
            await sink.stop()
        assert await first == EXIT_OK

    run(main)
    err = capsys.readouterr().err
    assert "code 1013 'too many clients (max 1)'" in err


def test_tap_cannot_connect(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    out = io.StringIO()
    assert asyncio.run(tap(f"ws://127.0.0.1:{port}", out=out, count=1)) == EXIT_ERROR
    assert out.getvalue() == ""
    err = capsys.readouterr().err
    assert f"tap: cannot connect to ws://127.0.0.1:{port}: " in err
    assert "is `les02-flow run` running?" in err


def test_tap_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tap("ws://127.0.0.1:1", count=0) == EXIT_USAGE
    assert "--count must be at least 1, got 0" in capsys.readouterr().err
    assert run_tap("http://127.0.0.1:1") == EXIT_USAGE
    assert "not a WebSocket URL" in capsys.readouterr().err
    assert run_tap("ws://127.0.0.1:1", types=[""]) == EXIT_USAGE
    assert "empty ?types= filter" in capsys.readouterr().err


def test_run_tap_returns_the_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_tap(f"ws://127.0.0.1:{free_port()}", out=io.StringIO()) == EXIT_ERROR
    assert "cannot connect" in capsys.readouterr().err


def test_tap_401_names_the_token_variable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAP_TEST_SECRET", "s3cret")
    monkeypatch.delenv("LES02_WS_TOKEN", raising=False)

    async def main() -> None:
        sink = make_sink(token_env="TAP_TEST_SECRET")
        await sink.start()
        try:
            assert await tap(f"ws://127.0.0.1:{sink.port}", out=io.StringIO()) == EXIT_ERROR
            monkeypatch.setenv("LES02_WS_TOKEN", "wrong")
            assert await tap(f"ws://127.0.0.1:{sink.port}", out=io.StringIO()) == EXIT_ERROR
        finally:
            await sink.stop()

    run(main)
    err = capsys.readouterr().err
    assert "HTTP 401 (the sink wants a token: export LES02_WS_TOKEN=" in err
    assert "$LES02_WS_TOKEN is set but wrong" in err


def test_tap_warns_about_a_type_no_node_emits(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert run_tap(f"ws://127.0.0.1:{port}", types=["ride_strat,status"]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "no les02-flow node emits events of type 'ride_strat'" in err
    assert "(did you mean 'ride_start'?)" in err
    assert "'status'" not in err.split("warning", 1)[1].split("\n", 1)[0]
