"""The two node types a flow test puts into a flow: the test input and the capture.

Neither is registered (a flow file cannot name them); the planner builds them into the
compiled test flow directly.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import can
from reactivex import Observable

from les02_flow.node import Context, Kind, Node, NodeConfig
from les02_flow.streams import HotPort

__all__ = ["Capture", "CaptureConfig", "InputConfig", "TestInputNode", "input_class", "snapshot"]


class InputConfig(NodeConfig):
    """No settings: the runner feeds the test input through :meth:`TestInputNode.emit`."""


class CaptureConfig(NodeConfig):
    """No settings."""


class TestInputNode(Node[NodeConfig]):
    """The test input, in place of a source (same id, same ports) or in front of a node."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    type_name: ClassVar[str] = "test_input"
    config_model: ClassVar[type[NodeConfig]] = InputConfig
    input_kind: ClassVar[Kind | None] = None
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.ANY}
    #: the node type this input stands in for ("" for an input in front of a node)
    replaces: ClassVar[str] = ""

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        self.ports: dict[str, HotPort[Any]] = {port: HotPort() for port in self.output_ports}
        return {port: hot.observable for port, hot in self.ports.items()}

    def emitter(self, port: str) -> Callable[[Any], None]:
        return self.ports[port].emit

    def complete(self) -> None:
        for hot in self.ports.values():
            hot.on_completed()


def input_class(replaced: type[Node[NodeConfig]] | None, kind: Kind) -> type[TestInputNode]:
    """A test input with the ports of ``replaced`` (a source), or one ``out`` port of ``kind``."""
    if replaced is None:
        ports: Mapping[str, Kind] = {"out": kind}
        name = "test_input"
        original = ""
    else:
        ports = dict(replaced.output_ports)
        name = replaced.type_name
        original = replaced.type_name
    attrs = {"output_ports": ports, "type_name": name, "replaces": original}
    return type(f"TestInput_{name}", (TestInputNode,), attrs)


def _copy(value: Any) -> Any:
    kind = type(value)
    if kind is dict:
        return {k: _copy(v) for k, v in value.items()}
    if kind is list:
        return [_copy(v) for v in value]
    return value


def snapshot(message: Any) -> Any:
    """A copy of a message as it was when captured (later nodes cannot change it)."""
    if isinstance(message, can.Message):
        return copy.deepcopy(message)
    if type(message) is dict:
        return _copy(message)
    return copy.deepcopy(message)


class Capture(Node[NodeConfig]):
    """In place of a sink, or on a port an expectation looks at: records what arrives."""

    type_name: ClassVar[str] = "capture"
    config_model: ClassVar[type[NodeConfig]] = CaptureConfig
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    #: the sink type this capture stands in for ("" for a probe on a port)
    replaces: ClassVar[str] = ""
    #: whether messages are kept (a replaced sink nobody looks at keeps nothing)
    keep_messages: ClassVar[bool] = True

    def __init__(self, node_id: str, config: NodeConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self.messages: list[Any] = []
        self.completed = False

    def consume(self, message: Any) -> None:
        if self.keep_messages:
            self.messages.append(snapshot(message))

    def input_completed(self) -> None:
        self.completed = True


def capture_class(replaced: type[Node[NodeConfig]] | None, keep: bool) -> type[Capture]:
    name = replaced.type_name if replaced is not None else "capture"
    attrs = {
        "type_name": name,
        "replaces": replaced.type_name if replaced is not None else "",
        "keep_messages": keep,
    }
    return type(f"Capture_{name}", (Capture,), attrs)
