"""The engine: turns a :class:`CompiledFlow` into live nodes and runs them.

Wiring rules (DESIGN §3, §5):

* a node's input is its upstream port, or ``merge`` of all of them (fan-in);
* a port with several consumers is ``share``d, so fan-out costs one upstream subscription;
* the runtime counts ``in`` at each node's input and ``out`` at each port, and guards the input:
  an exception that escapes a node's synchronous chain is counted, logged (rate-limited) with
  the node id, and the message skipped;
* sinks are subscribed by the runtime (``consume`` per message) before any source starts.

Lifecycle: ``start`` opens sinks, then transforms, then sources; ``stop`` goes in reverse
(sources first, sinks last so they flush what they accepted), each ``stop()`` bounded by
``stop_timeout``. A run ends on :meth:`Engine.request_stop` or when every source finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import reactivex
from reactivex import Observable, abc
from reactivex import operators as ops

from .compiler import CompiledFlow, CompiledNode
from .node import Context, Counters, Node, NodeConfig

__all__ = ["Engine", "format_stats"]

log = logging.getLogger("les02_flow.engine")


class Engine:
    """Builds and runs one flow on the running event loop.

    Use it as: ``engine = Engine(flow); await engine.start(); await engine.wait(); await
    engine.stop()`` -- or ``await engine.run()`` for all three. ``start`` raises
    :class:`NodeStartError` (after stopping what it started) when a node cannot start.
    """

    def __init__(
        self,
        flow: CompiledFlow,
        *,
        stats_interval: float = 0.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.flow = flow
        self.stats_interval = stats_interval
        self.stop_timeout = stop_timeout
        self.nodes: dict[str, Node[NodeConfig]] = {}
        self._ports: dict[tuple[str, str], Observable[Any]] = {}
        self._subscriptions: list[abc.DisposableBase] = []
        self._started: list[str] = []
        self._pending_ports: dict[str, set[str]] = {}
        self._finished: set[str] = set()
        self._stop_requested = asyncio.Event()
        self._all_finished = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self._sinks: list[tuple[Node[NodeConfig], Observable[Any]]] = []
        self._build()

    # -- building ----------------------------------------------------------------------------

    def _consumers(self, node_id: str, port: str) -> int:
        node = self.flow.nodes[node_id]
        return sum(1 for t in node.wires.get(port, []) if not self.flow.nodes[t].disabled)

    def _build(self) -> None:
        for spec in self.flow.enabled():
            ctx = Context(spec.id, logging.getLogger(f"les02_flow.node.{spec.id}"))
            node = spec.cls(spec.id, spec.config, ctx)
            self.nodes[spec.id] = node
        for spec in self.flow.enabled():  # topological order
            node = self.nodes[spec.id]
            upstream = [self._ports[key] for key in self.flow.upstream(spec.id)]
            source: Observable[Any] | None = None
            if spec.cls.input_kind is not None:
                merged = upstream[0] if len(upstream) == 1 else reactivex.merge(*upstream)
                source = _guarded(merged, node) if upstream else None
            if spec.cls.is_sink():
                if source is not None:
                    self._sinks.append((node, source))
                continue
            if spec.cls.input_kind is not None and source is None:
                continue  # a transform nobody feeds: inert
            ports = dict(node.build(source))
            missing = set(spec.cls.output_ports) - set(ports)
            if missing:
                raise TypeError(f"{spec.type_name}.build() did not return ports {sorted(missing)}")
            for port, obs in ports.items():
                counted = self._counted(obs, node, spec, port)
                if self._consumers(spec.id, port) > 1:
                    counted = counted.pipe(ops.share())
                self._ports[(spec.id, port)] = counted
            self._propagate_bus_info(spec)

    def _counted(
        self, obs: Observable[Any], node: Node[NodeConfig], spec: CompiledNode, port: str
    ) -> Observable[Any]:
        counters = node.counters
        is_source = spec.cls.is_source()
        if is_source:
            self._pending_ports.setdefault(spec.id, set()).add(port)

        def on_port_completed() -> None:
            if is_source:
                pending = self._pending_ports.get(spec.id, set())
                pending.discard(port)
                if not pending:
                    self._mark_finished(spec.id)

        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            emit = observer.on_next

            def on_next(value: Any) -> None:
                counters.emitted += 1
                emit(value)

            def on_error(err: Exception) -> None:
                counters.errors += 1
                log.error("node '%s' port '%s' failed: %s", spec.id, port, err)
                on_port_completed()
                observer.on_completed()

            def on_completed() -> None:
                on_port_completed()
                observer.on_completed()

            return obs.subscribe(on_next, on_error, on_completed, scheduler=scheduler)

        return Observable(subscribe)

    def _propagate_bus_info(self, spec: CompiledNode) -> None:
        info = getattr(self.nodes[spec.id], "bus_info", None)
        if not isinstance(info, dict) or not info:
            return
        todo = [t for targets in spec.wires.values() for t in targets]
        seen: set[str] = set()
        while todo:
            nid = todo.pop()
            if nid in seen or nid not in self.nodes:
                continue
            seen.add(nid)
            for key, value in info.items():
                self.nodes[nid].ctx.bus_info.setdefault(str(key), str(value))
            todo.extend(t for targets in self.flow.nodes[nid].wires.values() for t in targets)

    # -- lifecycle ---------------------------------------------------------------------------

    def _phase(self, spec: CompiledNode) -> int:
        if spec.cls.is_sink():
            return 0
        if spec.cls.is_source():
            return 2
        return 1

    def start_order(self) -> list[str]:
        """Node ids in start order: sinks, transforms, sources (stable within a phase)."""
        specs = self.flow.enabled()
        return [s.id for s in sorted(specs, key=self._phase)]

    async def start(self) -> None:
        """Open every node's resources and connect the graph; sources start last."""
        loop = asyncio.get_running_loop()
        order = self.start_order()
        subscribed = False
        try:
            for nid in order:
                spec = self.flow.nodes[nid]
                node = self.nodes[nid]
                node.ctx.loop = loop
                if spec.cls.is_source() and not subscribed:
                    self._subscribe_all()
                    subscribed = True
                await node.start()
                self._started.append(nid)
            if not subscribed:
                self._subscribe_all()
        except BaseException:
            await self.stop()
            raise
        for nid in order:
            spec = self.flow.nodes[nid]
            if spec.cls.is_source() and not spec.cls.output_ports:
                self._tasks.append(asyncio.create_task(self._await_finished(nid)))
        if not any(self.flow.nodes[n].cls.is_source() for n in order):
            log.warning("flow '%s' has no source node: nothing will flow", self.flow.name)
        if self.stats_interval > 0:
            self._tasks.append(asyncio.create_task(self._stats_loop()))

    def _subscribe_all(self) -> None:
        for node, source in self._sinks:
            self._subscriptions.append(_subscribe_sink(node, source))
        # Unwired source ports are driven too, so that they count and can finish.
        for spec in self.flow.enabled():
            if not spec.cls.is_source():
                continue
            for port in spec.cls.output_ports:
                if self._consumers(spec.id, port) == 0 and (spec.id, port) in self._ports:
                    self._subscriptions.append(
                        self._ports[(spec.id, port)].subscribe(on_error=lambda _e: None)
                    )

    async def _await_finished(self, nid: str) -> None:
        try:
            await self.nodes[nid].finished()
        except Exception as exc:
            log.error("node '%s' failed: %s", nid, exc)
        self._mark_finished(nid)

    def _mark_finished(self, nid: str) -> None:
        if nid in self._finished:
            return
        self._finished.add(nid)
        log.info("node '%s' finished", nid)
        sources = [s.id for s in self.flow.enabled() if s.cls.is_source()]
        if sources and all(s in self._finished for s in sources):
            self._all_finished.set()

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return (safe to call from signal handlers on the loop)."""
        self._stop_requested.set()

    async def wait(self) -> str:
        """Wait until a stop is requested or every source finished; returns which."""
        stop = asyncio.ensure_future(self._stop_requested.wait())
        done = asyncio.ensure_future(self._all_finished.wait())
        await asyncio.wait({stop, done}, return_when=asyncio.FIRST_COMPLETED)
        for f in (stop, done):
            f.cancel()
        return "stop requested" if self._stop_requested.is_set() else "all sources finished"

    async def stop(self) -> None:
        """Stop sources, then transforms, then sinks; each bounded; never raises."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for nid in reversed(self._started):
            node = self.nodes[nid]
            try:
                await asyncio.wait_for(node.stop(), self.stop_timeout)
            except TimeoutError:
                log.error("node '%s' did not stop within %.1f s", nid, self.stop_timeout)
            except Exception as exc:
                log.error("node '%s' raised while stopping: %s", nid, exc)
        for sub in self._subscriptions:
            try:
                sub.dispose()
            except Exception as exc:
                log.debug("dispose failed: %s", exc)
        self._subscriptions.clear()

    async def run(self) -> str:
        """Start, wait for the end, stop. Returns why it ended."""
        await self.start()
        try:
            return await self.wait()
        finally:
            await self.stop()

    # -- stats -------------------------------------------------------------------------------

    def counters(self) -> dict[str, Counters]:
        return {nid: node.counters for nid, node in self.nodes.items()}

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.stats_interval)
            log.info("stats %s", format_stats(self.counters()))


def format_stats(counters: dict[str, Counters]) -> str:
    """One line: ``bus out=500 | parse in=500 out=498 dropped=2 | ws in=498 out=996``.

    Zero counters are left out, except that a node with nothing at all shows ``idle``.
    """
    parts = []
    for nid, c in counters.items():
        fields = " ".join(f"{k}={v}" for k, v in c.as_dict().items() if v)
        parts.append(f"{nid} {fields or 'idle'}")
    return " | ".join(parts)


def _guarded(source: Observable[Any], node: Node[NodeConfig]) -> Observable[Any]:
    """Count ``in`` and keep a node's exceptions from travelling upstream."""
    counters = node.counters

    def subscribe(
        observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        emit = observer.on_next

        def on_next(value: Any) -> None:
            counters.received += 1
            try:
                emit(value)
            except Exception as exc:
                node.report_error(value, exc)

        return source.subscribe(on_next, observer.on_error, observer.on_completed)

    return Observable(subscribe)


def _subscribe_sink(node: Node[NodeConfig], source: Observable[Any]) -> abc.DisposableBase:
    consume: Callable[[Any], None] = node.consume

    def on_next(value: Any) -> None:
        try:
            consume(value)
        except Exception as exc:
            node.report_error(value, exc)

    def on_error(err: Exception) -> None:
        node.counters.errors += 1
        log.error("node '%s': input failed: %s", node.node_id, err)

    def on_completed() -> None:
        try:
            node.input_completed()
        except Exception as exc:
            log.error("node '%s': input_completed raised: %s", node.node_id, exc)

    return source.subscribe(on_next, on_error, on_completed)
