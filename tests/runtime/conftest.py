"""Small node types for runtime tests, registered in a private Registry (not the default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest
from pydantic import Field
from reactivex import Observable
from reactivex.subject import Subject

from les02_flow.node import Kind, Node, NodeConfig, NodeStartError
from les02_flow.registry import Registry

#: what the test sinks received, by sink `key`; and the lifecycle calls in order
RECEIVED: dict[str, list[Any]] = {}
LIFECYCLE: list[str] = []
SUBSCRIPTIONS: dict[str, int] = {}


class NumbersConfig(NodeConfig):
    values: list[int] = Field(default_factory=list, description="values to emit")
    complete: bool = Field(default=True, description="complete after the values")


class Numbers(Node[NumbersConfig]):
    """Emits its configured values on start (test source)."""

    type_name = "numbers"
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        self.subject: Subject[Any] = Subject()

        def subscribe(observer: Any, scheduler: Any = None) -> Any:
            SUBSCRIPTIONS[self.node_id] = SUBSCRIPTIONS.get(self.node_id, 0) + 1
            return self.subject.subscribe(observer)

        return {"out": Observable(subscribe)}

    async def start(self) -> None:
        LIFECYCLE.append(f"start {self.node_id}")
        for v in self.config.values:
            self.subject.on_next(v)
        if self.config.complete:
            self.subject.on_completed()

    async def stop(self) -> None:
        LIFECYCLE.append(f"stop {self.node_id}")


class FramesConfig(NodeConfig):
    pass


class Frames(Node[FramesConfig]):
    """A frame source that never emits (kind tests)."""

    type_name = "frames"
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.FRAME}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        return {"out": Subject()}


class AddConfig(NodeConfig):
    n: int = Field(default=1, ge=0, le=1000, description="what to add")
    fail_on: int | None = Field(default=None, description="raise on this value")


class Add(Node[AddConfig]):
    """Adds n (test transform)."""

    type_name = "add"
    input_kind = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        assert source is not None

        def add(x: int) -> int:
            if x == self.config.fail_on:
                raise ValueError(f"cannot take {x}")
            return x + self.config.n

        return {"out": source.pipe(self.each(add))}

    async def start(self) -> None:
        LIFECYCLE.append(f"start {self.node_id}")

    async def stop(self) -> None:
        LIFECYCLE.append(f"stop {self.node_id}")


class RouteConfig(NodeConfig):
    pass


class Route(Node[RouteConfig]):
    """Even numbers to `even`, odd to `odd` (test transform with named ports)."""

    type_name = "route"
    input_kind = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {"even": Kind.EVENT, "odd": Kind.EVENT}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        assert source is not None
        return self.split(source, lambda x: ("even" if x % 2 == 0 else "odd", x), ("even", "odd"))


class CollectConfig(NodeConfig):
    key: str = Field(default="", description="where in RECEIVED to store (default: node id)")
    fail_on: int | None = Field(default=None, description="raise on this value")


class Collect(Node[CollectConfig]):
    """Stores what it receives (test sink)."""

    type_name = "collect"
    input_kind = Kind.ANY

    def consume(self, message: Any) -> None:
        if message == self.config.fail_on:
            raise RuntimeError("sink refuses")
        RECEIVED.setdefault(self.config.key or self.node_id, []).append(message)

    async def start(self) -> None:
        LIFECYCLE.append(f"start {self.node_id}")

    async def stop(self) -> None:
        LIFECYCLE.append(f"stop {self.node_id}")


class FrameSinkConfig(NodeConfig):
    pass


class FrameSink(Node[FrameSinkConfig]):
    """Takes frames only (kind tests)."""

    type_name = "frame_sink"
    input_kind = Kind.FRAME

    def consume(self, message: Any) -> None:
        pass


class TickerConfig(NodeConfig):
    interval: float = Field(default=0.001, gt=0, description="seconds between values")


class Ticker(Node[TickerConfig]):
    """Emits 0, 1, 2, ... every `interval` seconds until stopped (test source)."""

    type_name = "ticker"
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        self.subject: Subject[Any] = Subject()
        self.next = 0
        self.handle: Any = None
        return {"out": self.subject}

    def _tick(self) -> None:
        self.subject.on_next(self.next)
        self.next += 1
        self.handle = self.ctx.get_loop().call_later(self.config.interval, self._tick)

    async def start(self) -> None:
        LIFECYCLE.append(f"start {self.node_id}")
        self._tick()

    async def stop(self) -> None:
        LIFECYCLE.append(f"stop {self.node_id}")
        if self.handle is not None:
            self.handle.cancel()


class FailingConfig(NodeConfig):
    fail: bool = Field(default=True, description="raise NodeStartError in start()")


class Failing(Node[FailingConfig]):
    """A sink that cannot start (test)."""

    type_name = "failing"
    input_kind = Kind.ANY

    def consume(self, message: Any) -> None:
        RECEIVED.setdefault(self.node_id, []).append(message)

    async def start(self) -> None:
        if self.config.fail:
            raise NodeStartError(f"{self.node_id}: cannot start (test)")
        LIFECYCLE.append(f"start {self.node_id}")

    async def stop(self) -> None:
        LIFECYCLE.append(f"stop {self.node_id}")


@pytest.fixture
def registry() -> Registry:
    RECEIVED.clear()
    LIFECYCLE.clear()
    SUBSCRIPTIONS.clear()
    return Registry([Numbers, Frames, Add, Route, Collect, FrameSink, Ticker, Failing], "tests")


@pytest.fixture
def received() -> dict[str, list[Any]]:
    return RECEIVED


@pytest.fixture
def lifecycle() -> list[str]:
    return LIFECYCLE


@pytest.fixture
def subscriptions() -> dict[str, int]:
    return SUBSCRIPTIONS
