"""The ``throttle`` node: first/latest by message time, per key, time going back, flush at
the end and at stop, a 250 Hz stream to 10 Hz."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pydantic
import pytest

from les02_flow.node import Kind
from les02_flow.nodes.ops.throttle import Throttle, ThrottleConfig
from les02_flow.testing import wait_until

from .opsutil import Harness, ev, fr, make, run


def stream(
    n: int, rate: float = 250.0, channels: tuple[str, ...] = ("master", "slave")
) -> list[Any]:
    return [
        ev(channel=channels[i % len(channels)], position_raw=i, ts=100.0 + (i // 2) / rate)
        for i in range(n)
    ]


def test_latest_turns_250_hz_into_10_hz_per_channel() -> None:
    events = stream(2 * 250 * 3)  # 3 s of both channels at 250 Hz
    node = make(Throttle, interval=0.1, key=["payload.channel"])
    out = run(node, events)["out"]
    for channel in ("master", "slave"):
        times = [e["ts"] for e in out if e["payload"]["channel"] == channel]
        assert 30 <= len(times) <= 31
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # the leading message, then one per interval: the newest inside it
        assert all(0.09 < g < 0.11 for g in gaps[1:]), gaps
    assert len(out) + node.counters.dropped == len(events)
    # every emitted message is an input message, unchanged, in input order per channel
    ids = [id(e) for e in events]
    assert all(id(e) in ids for e in out)


def test_latest_emits_the_newest_of_each_interval() -> None:
    ts = [0.0, 0.03, 0.06, 0.09, 0.12, 0.15, 0.21, 0.5]
    out = run(make(Throttle, interval=0.1), [ev(ts=t) for t in ts])["out"]
    assert [e["ts"] for e in out] == [0.0, 0.09, 0.15, 0.21, 0.5]


def test_first_drops_inside_the_window() -> None:
    ts = [0.0, 0.03, 0.06, 0.09, 0.12, 0.15, 0.21, 0.5]
    node = make(Throttle, interval=0.1, mode="first")
    out = run(node, [ev(ts=t) for t in ts])["out"]
    assert [e["ts"] for e in out] == [0.0, 0.12, 0.5]
    assert node.counters.dropped == 5


def test_a_quiet_key_is_flushed_by_other_traffic_in_time_order() -> None:
    msgs = [ev(channel="a", ts=0.0), ev(channel="a", ts=0.05)]
    msgs += [ev(channel="b", ts=0.02 + 0.01 * i) for i in range(20)]
    out = run(make(Throttle, interval=0.1, key=["payload.channel"]), msgs)["out"]
    got = [(e["payload"]["channel"], e["ts"]) for e in out]
    assert got[:3] == [("a", 0.0), ("b", 0.02), ("a", 0.05)]  # a's held 0.05 at a's end, 0.1


def test_time_going_back_resets_the_key() -> None:
    ts = [10.0, 10.05, 0.0, 0.01, 0.2]
    out = run(make(Throttle, interval=0.1, mode="first"), [ev(ts=t) for t in ts])["out"]
    assert [e["ts"] for e in out] == [10.0, 0.0, 0.2]
    out = run(make(Throttle, interval=0.1), [ev(ts=t) for t in ts])["out"]
    assert [e["ts"] for e in out] == [10.0, 10.05, 0.0, 0.01, 0.2]


def test_frames_keyed_by_id() -> None:
    frames = [fr(0x80 + (i % 2), ts=i * 0.01) for i in range(40)]
    node = make(Throttle, interval=0.1, mode="first", key=["arbitration_id"])
    out = run(node, frames)["out"]
    assert [(f.arbitration_id, round(f.timestamp, 2)) for f in out] == [
        (0x80, 0.0), (0x81, 0.01), (0x80, 0.1), (0x81, 0.11), (0x80, 0.2), (0x81, 0.21),
        (0x80, 0.3), (0x81, 0.31),
    ]  # fmt: skip
    assert Throttle.input_kind_for(node.config) is Kind.FRAME


def test_message_without_time_is_an_error_and_the_stream_goes_on() -> None:
    node = make(Throttle, interval=0.1)
    out = run(node, [{"type": "x"}, "junk", ev(ts=1.0)])["out"]
    assert [e["ts"] for e in out] == [1.0]
    assert node.counters.errors == 2


def test_stop_sends_the_held_message() -> None:
    node = make(Throttle, interval=1.0)
    h = Harness(node).push([ev(ts=0.0), ev(ts=0.5)])
    assert [e["ts"] for e in h.out["out"]] == [0.0]
    asyncio.run(node.stop())
    assert [e["ts"] for e in h.out["out"]] == [0.0, 0.5]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"interval": 0}, "greater than 0"),
        ({}, "Field required"),
        ({"interval": 1, "mode": "last"}, "'first' or 'latest'"),
        ({"interval": 1, "key": ["payload"]}, None),
        ({"interval": 1, "key": ["chanel"]}, "did you mean 'channel'"),
    ],
)
def test_config(config: dict[str, object], message: str | None) -> None:
    if message is None:
        ThrottleConfig.model_validate(config)
        return
    with pytest.raises(pydantic.ValidationError) as info:
        ThrottleConfig.model_validate(config)
    assert message in str(info.value)


def test_live_quiet_flush_sends_the_held_message_after_quiet_seconds() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        node = make(Throttle, interval=0.1, quiet_flush=0.1)
        node.ctx.loop = loop
        h = Harness(node).push([ev(ts=0.0), ev(ts=0.02), ev(ts=0.05)])
        held_since = loop.time()
        assert [e["ts"] for e in h.out["out"]] == [0.0]
        await wait_until(lambda: len(h.out["out"]) >= 2, "the held message sent on quiet")
        assert loop.time() - held_since >= 0.1 - 0.002  # not before one quiet interval
        assert [e["ts"] for e in h.out["out"]] == [0.0, 0.05]
        # the next window started where the old one ended (0.1): 0.15 is held, 0.21 flushes it
        h.push([ev(ts=0.15), ev(ts=0.21)])
        assert [e["ts"] for e in h.out["out"]] == [0.0, 0.05, 0.15]
        await node.stop()
        assert [e["ts"] for e in h.out["out"]] == [0.0, 0.05, 0.15, 0.21]

    asyncio.run(main())


def test_by_default_the_wall_clock_never_sends_anything() -> None:
    async def main() -> None:
        node = make(Throttle, interval=0.05)
        node.ctx.loop = asyncio.get_running_loop()
        h = Harness(node).push([ev(ts=0.0), ev(ts=0.01)])
        await asyncio.sleep(0.3)  # six intervals of wall-clock quiet
        assert [e["ts"] for e in h.out["out"]] == [0.0]
        await node.stop()
        assert [e["ts"] for e in h.out["out"]] == [0.0, 0.01]

    asyncio.run(main())


def test_busy_input_is_not_flushed_by_the_wall_clock() -> None:
    async def main() -> None:
        node = make(Throttle, interval=0.5, quiet_flush=0.5)
        node.ctx.loop = asyncio.get_running_loop()
        h = Harness(node)
        # frame time advances far slower than wall time here: without quiet periods the
        # output must follow frame time only (one message per 0.5 s of *message* time)
        for i in range(30):
            h.push([ev(ts=i * 0.001)])
            await asyncio.sleep(0.004)
        assert [e["ts"] for e in h.out["out"]] == [0.0]
        await node.stop()

    asyncio.run(main())
