"""Shared helpers of the MQTT tests."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from les02_flow.node import Context, Node, NodeConfig
from les02_flow.nodes.mqtt.sink import MqttSink, MqttSinkConfig
from les02_flow.nodes.mqtt.source import MqttSource, MqttSourceConfig
from les02_flow.testing import wait_until

WAIT = 20.0


async def until(cond: Callable[[], bool], what: str, wait: float = WAIT) -> None:
    await wait_until(cond, what, wait)


def ctx(name: str) -> Context:
    return Context(name, logging.getLogger(f"test.{name}"))


def sink(**kw: Any) -> MqttSink:
    kw.setdefault("site", "hq")
    kw.setdefault("backoff_min", 0.05)
    kw.setdefault("backoff_max", 0.3)
    return MqttSink("mqtt", MqttSinkConfig(**kw), ctx("mqtt"))


def source(**kw: Any) -> tuple[MqttSource, list[Any], list[Any]]:
    kw.setdefault("backoff_min", 0.05)
    kw.setdefault("backoff_max", 0.3)
    node = MqttSource(kw.pop("node_id", "fleet"), MqttSourceConfig(**kw), ctx("fleet"))
    events: list[Any] = []
    frames: list[Any] = []
    ports = node.build(None)
    ports["event"].subscribe(events.append)
    ports["frame"].subscribe(frames.append)
    return node, events, frames


def ev(type_: str, ts: float, payload: dict[str, Any], source: str = "lift-1") -> dict[str, Any]:
    return {"proto": 1, "type": type_, "ts": ts, "source": source, "payload": payload}


def ride_end(i: int, source: str = "lift-1") -> dict[str, Any]:
    return ev(
        "ride_end",
        1000.0 + i,
        {"ride_id": f"r{i:05d}", "start_ts": 990.0 + i, "end_ts": 995.0 + i, "duration_s": 5.0},
        source,
    )


async def stop_all(*nodes: Node[NodeConfig] | Node[Any]) -> None:
    for n in nodes:
        await n.stop()
