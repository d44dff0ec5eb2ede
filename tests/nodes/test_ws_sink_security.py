"""ws_sink access control: shared token at the handshake, allowed browser origins."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from les02_flow.events import make_event
from les02_flow.node import Context, NodeStartError
from les02_flow.nodes.ws.sink import WsSink, WsSinkConfig, parse_types_query
from les02_flow.nodes.ws.tap import tap
from les02_flow.testing import wait_until


def make_sink(**cfg: Any) -> WsSink:
    config = WsSinkConfig(host="127.0.0.1", port=0, **cfg)
    return WsSink("ws", config, Context("ws", logging.getLogger("test.ws_security")))


def test_token_is_required_at_the_handshake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_WS_TOKEN", "s3cret")

    async def main() -> None:
        sink = make_sink(token_env="TEST_WS_TOKEN")
        await sink.start()
        url = f"ws://127.0.0.1:{sink.port}/"
        try:
            for bad in ({}, {"Authorization": "Bearer nope"}):
                with pytest.raises(InvalidStatus) as info:
                    await connect(url, additional_headers=bad, proxy=None)
                assert info.value.response.status_code == 401
            with pytest.raises(InvalidStatus):
                await connect(url + "?token=wrong&types=status", proxy=None)
            assert sink.counters.extra["clients_unauthorized"] == 3

            event = make_event("status", 1.0, {"channel": "master"})
            async with (
                connect(
                    url, additional_headers={"Authorization": "Bearer s3cret"}, proxy=None
                ) as a,
                connect(url + "?token=s3cret&types=status", proxy=None) as b,
            ):
                await wait_until(lambda: sink.client_count == 2, "both clients admitted")
                sink.consume(event)
                assert '"status"' in await asyncio.wait_for(a.recv(), 5)
                assert '"status"' in await asyncio.wait_for(b.recv(), 5)

            await wait_until(lambda: sink.client_count == 0, "a and b gone")
            # tap sends the token from LES02_WS_TOKEN
            monkeypatch.setenv("LES02_WS_TOKEN", "s3cret")
            out = io.StringIO()
            task = asyncio.create_task(tap(url, out=out, count=1))
            await wait_until(lambda: sink.client_count == 1 or task.done(), "tap connected")
            sink.consume(event)
            assert await asyncio.wait_for(task, 5) == 0
            assert '"status"' in out.getvalue()
        finally:
            await sink.stop()

    asyncio.run(main())


def test_token_env_must_be_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_WS_TOKEN_UNSET", raising=False)

    async def main() -> None:
        sink = make_sink(token_env="TEST_WS_TOKEN_UNSET")
        with pytest.raises(NodeStartError, match=r"\$TEST_WS_TOKEN_UNSET, which is not set"):
            await sink.start()
        await sink.stop()

    asyncio.run(main())


def test_allowed_origins() -> None:
    async def main() -> None:
        sink = make_sink(allowed_origins=["http://ui.local"])
        await sink.start()
        url = f"ws://127.0.0.1:{sink.port}/"
        try:
            with pytest.raises(InvalidStatus) as info:
                await connect(url, origin=Origin("http://evil.example"), proxy=None)
            assert info.value.response.status_code == 403
            async with connect(url, origin=Origin("http://ui.local"), proxy=None):
                pass
            async with connect(url, proxy=None):  # tools send no Origin
                pass
        finally:
            await sink.stop()

    asyncio.run(main())


def test_token_query_parameter_is_not_a_type_filter() -> None:
    assert parse_types_query("/?token=abc") is None
    assert parse_types_query("/?token=abc&types=status") == frozenset({"status"})
