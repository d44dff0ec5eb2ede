"""Helpers for testing flows and node types (this project's tests use them; so can plugins).

* :class:`Collect` -- a sink node type (``collect``) that keeps every message it receives, per
  node id, in :attr:`Collect.received`;
* :func:`wait_until` -- poll a condition on the event loop, bounded, instead of a fixed sleep;
  :func:`poll_until` is its blocking twin for tests that drive threads or processes;
* :func:`run_nodes` -- compile a flow given as a dict of nodes (built-ins, :class:`Collect`
  and any extra types), run it until a condition holds or every source finished, and return
  what the ``collect`` nodes received.

Example (a plugin's test)::

    from les02_flow.testing import run_nodes

    def test_shout_uppercases() -> None:
        got = run_nodes(
            {
                "src": {"type": "replay_source", "path": "tests/data/x.jsonl", "speed": "max",
                        "wires": ["loud"]},
                "loud": {"type": "shout", "wires": ["out"]},
                "out": {"type": "collect"},
            },
            extra=[Shout],
        )
        assert got["out"][0]["payload"]["text"] == "HI"
"""

from __future__ import annotations

import asyncio
import copy
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import Field

from .compiler import compile_document
from .engine import Engine
from .flowfile import FlowDocument
from .node import Kind, Node, NodeConfig
from .registry import NodeType, Registry, default_registry

__all__ = ["Collect", "CollectConfig", "poll_until", "registry_with", "run_nodes", "wait_until"]

T = TypeVar("T")


async def wait_until(
    cond: Callable[[], bool],
    what: str = "the condition",
    timeout: float = 10.0,  # noqa: ASYNC109 - a bounded poll is the point of this helper
) -> None:
    """Return as soon as ``cond()`` holds; ``AssertionError`` naming ``what`` after
    ``timeout`` seconds. Polls every 5 ms on the running loop (others keep running)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.005)


def poll_until(
    cond: Callable[[], T | None],
    what: str = "the condition",
    timeout: float = 10.0,
    *,
    process: subprocess.Popen[Any] | None = None,
    detail: Callable[[], str] | None = None,
) -> T:
    """Blocking :func:`wait_until` (no event loop: threads, subprocesses): return the first
    true value of ``cond()``. ``AssertionError`` naming ``what`` after ``timeout`` seconds, or
    as soon as ``process`` has exited; ``detail()`` (e.g. the process's log) is appended to
    the message. Polls every 20 ms."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        problem = None
        if process is not None and process.poll() is not None:
            problem = f"the process exited ({process.returncode}) while waiting for {what}"
        elif time.monotonic() > deadline:
            problem = f"timed out after {timeout:g} s waiting for {what}"
        if problem is not None:
            raise AssertionError(problem + (f"\n{detail()}" if detail is not None else ""))
        time.sleep(0.02)


class CollectConfig(NodeConfig):
    """Config of ``collect``."""

    deep: bool = Field(default=False, description="Store deep copies of the messages.")


class Collect(Node[CollectConfig]):
    """Keeps every message it receives (test sink): ``Collect.received[node_id]``."""

    type_name: ClassVar[str] = "collect"
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    #: messages per node id, across every ``collect`` node of the process; cleared by
    #: :func:`run_nodes` (tests that build engines themselves clear it)
    received: ClassVar[dict[str, list[Any]]] = {}

    def consume(self, message: Any) -> None:
        kept = copy.deepcopy(message) if self.config.deep else message
        Collect.received.setdefault(self.node_id, []).append(kept)


def registry_with(*extra: NodeType) -> Registry:
    """The installed node types plus :class:`Collect` and ``extra``."""
    return default_registry().extended(Collect, *extra, origin="les02_flow.testing")


def run_nodes(
    nodes: Mapping[str, Any],
    *,
    extra: Iterable[NodeType] = (),
    until: Callable[[dict[str, list[Any]]], bool] | None = None,
    timeout: float = 10.0,
) -> dict[str, list[Any]]:
    """Run a flow made of ``nodes`` and return what its ``collect`` nodes received.

    Ends when ``until(received)`` holds, or (without ``until``) when every source finished;
    ``AssertionError`` after ``timeout`` seconds. Invalid flows raise
    :class:`~les02_flow.flowfile.FlowErrors` as ``les02-flow validate`` would report them.
    """
    Collect.received.clear()
    doc = FlowDocument(path="les02_flow.testing", data={"version": 1, "nodes": dict(nodes)})
    flow = compile_document(doc, registry_with(*extra))

    async def main() -> None:
        engine = Engine(flow)
        await engine.start()
        try:
            if until is not None:
                await wait_until(lambda: until(Collect.received), "run_nodes(until=...)", timeout)
            else:
                await asyncio.wait_for(engine.wait(), timeout)
        finally:
            await engine.stop()

    asyncio.run(main())
    return {k: list(v) for k, v in Collect.received.items()}
