"""The ``batch`` node: by count, by event time, both, the envelope, flush at end and stop."""

from __future__ import annotations

import asyncio
import json

import pydantic
import pytest

from les02_flow.events import encode_event
from les02_flow.nodes.ops.batch import Batch, BatchConfig
from les02_flow.testing import wait_until

from .opsutil import Harness, ev, make, run


def test_by_count() -> None:
    events = [ev(ts=float(i), n=i) for i in range(7)]
    out = run(make(Batch, count=3), events)["out"]
    assert [[e["payload"]["n"] for e in b["payload"]["events"]] for b in out] == [
        [0, 1, 2], [3, 4, 5], [6]
    ]  # fmt: skip
    assert [b["payload"]["reason"] for b in out] == ["count", "count", "end"]
    first = out[0]
    assert first == {
        "proto": 1,
        "type": "batch",
        "ts": 2.0,
        "source": "les02",
        "payload": {
            "count": 3,
            "first_ts": 0.0,
            "last_ts": 2.0,
            "reason": "count",
            "events": events[:3],
        },
    }
    json.loads(encode_event(first))  # a batch is a valid JSON envelope


def test_by_event_time_and_count() -> None:
    ts = [0.0, 0.4, 0.9, 1.0, 1.1, 1.2, 1.3, 5.0]
    out = run(make(Batch, interval=1.0, count=4, source="uplink"), [ev(ts=t) for t in ts])["out"]
    assert [(b["payload"]["count"], b["payload"]["reason"]) for b in out] == [
        (3, "interval"),  # 1.0 is at the end of the first second: it opens the next batch
        (4, "count"),
        (1, "end"),
    ]
    assert {b["source"] for b in out} == {"uplink"}
    assert [b["ts"] for b in out] == [0.9, 1.3, 5.0]


def test_stop_sends_the_open_batch() -> None:
    node = make(Batch, interval=60.0)
    h = Harness(node).push([ev(ts=1.0), ev(ts=2.0)])
    assert h.out["out"] == []
    asyncio.run(node.stop())
    assert [(b["payload"]["count"], b["payload"]["reason"]) for b in h.out["out"]] == [(2, "end")]
    asyncio.run(node.stop())  # idempotent
    assert len(h.out["out"]) == 1


def test_bad_messages_are_errors() -> None:
    node = make(Batch, count=2)
    out = run(node, ["junk", {"type": "no ts"}, ev(ts=1.0), ev(ts=2.0)])["out"]
    assert [b["payload"]["count"] for b in out] == [2]
    assert node.counters.errors == 2


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs 'count', 'interval' or both"),
        ({"count": 0}, "greater than or equal to 1"),
        ({"interval": -1}, "greater than 0"),
        ({"count": 1, "source": ""}, "at least 1 character"),
    ],
)
def test_config_errors(config: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        BatchConfig.model_validate(config)
    assert message in str(info.value)


def test_live_quiet_flush_closes_the_batch() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        node = make(Batch, interval=10.0, quiet_flush=0.1)
        node.ctx.loop = loop
        h = Harness(node).push([ev(ts=0.0), ev(ts=0.01)])
        await wait_until(lambda: bool(h.out["out"]), "the open batch sent on quiet")
        assert [(b["payload"]["count"], b["payload"]["reason"]) for b in h.out["out"]] == [
            (2, "quiet")
        ]
        await node.stop()
        assert len(h.out["out"]) == 1

    asyncio.run(main())
