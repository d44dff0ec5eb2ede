"""Helpers for the operator-node tests: build a node, push messages, collect every port."""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import can
from reactivex.subject import Subject

from les02_flow.events import make_event
from les02_flow.node import Context, Node, NodeConfig


def make(cls: type[Node[Any]], node_id: str = "n", **config: Any) -> Node[Any]:
    model: type[NodeConfig] = cls.config_model
    ctx = Context(node_id, logging.getLogger(f"test.ops.{node_id}"))
    return cls(node_id, model.model_validate(config), ctx)


class Harness:
    """A node built on a Subject with every port subscribed."""

    def __init__(self, node: Node[Any]) -> None:
        self.node = node
        self.source: Subject[Any] = Subject()
        self.ports = node.build(self.source)
        self.out: dict[str, list[Any]] = {p: [] for p in self.ports}
        self.completed: set[str] = set()
        for port, obs in self.ports.items():
            obs.subscribe(
                functools.partial(self._received, port),
                on_completed=functools.partial(self.completed.add, port),
            )

    def _received(self, port: str, message: Any) -> None:
        self.out[port].append(message)  # looked up per message: a test may swap the list

    def push(self, messages: Iterable[Any]) -> Harness:
        for m in messages:
            self.source.on_next(m)
        return self

    def complete(self) -> Harness:
        self.source.on_completed()
        return self


def run(node: Node[Any], messages: Iterable[Any]) -> dict[str, list[Any]]:
    h = Harness(node).push(messages).complete()
    assert h.completed == set(h.ports), "every port completes with the input"
    return h.out


def ev(
    type_: str = "position_sample", ts: float = 1.0, source: str = "les02", **payload: Any
) -> Any:
    return make_event(type_, ts, dict(payload), source)


def fr(can_id: int, data: bytes = bytes(4), ts: float = 1.0, **flags: Any) -> can.Message:
    flags.setdefault("is_extended_id", can_id > 0x7FF)
    return can.Message(timestamp=ts, arbitration_id=can_id, data=data, **flags)
