"""The engine: turns a :class:`CompiledFlow` into live nodes, runs them, and re-deploys edits.

Wiring. Every node with an input has an *inlet* and every output port an
*outlet*; the engine subscribes each port exactly once and the outlet hands each message to the
inlets it is wired to:

* fan-out costs one upstream subscription (the port is subscribed once, whatever its wires);
* fan-in merges (an inlet takes messages from any number of outlets and completes when all of
  them completed);
* the inlet counts ``in`` and guards the node: an exception escaping a node's synchronous chain
  is counted, logged (rate-limited) with the node id, and the message skipped; the outlet
  counts ``out``;
* batches (replay at ``speed: max``): a source that takes the runtime's batch emitters
  (:meth:`~les02_flow.node.Node.bind_batches`) hands a list of messages to an outlet in one
  call. Nodes that declare :meth:`~les02_flow.node.Node.process_batch` (transforms) or
  :meth:`~les02_flow.node.Node.consume_batch` (sinks) take the list in one call; every other
  node gets the messages one by one through its inlet, as always. An outlet sends batches
  only when every node downstream of it has exactly one upstream port (a tree): then every
  node sees exactly the messages, in exactly the order, that one-by-one delivery gives it
  (tests/runtime/test_batch_identity.py); elsewhere the batch is delivered one by one;
* because the routing tables live here and not in the nodes' observables, a flow edit can be
  applied as a diff (:meth:`Engine.apply`): nodes whose type and config are unchanged keep their
  instance, state and resources; only the routing tables change, synchronously on the loop, so
  a kept node neither loses nor repeats a message across the swap.

Lifecycle: ``start`` opens sinks, then transforms, then sources (each source's ports are
subscribed just before it starts, so nothing it emits is lost); ``stop`` goes in reverse, each
node's ``stop()`` bounded by ``stop_timeout``. A run ends on :meth:`Engine.request_stop` or
when every source finished.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from reactivex import Observable, abc

from .compiler import CompiledFlow, CompiledNode
from .node import Context, Counters, FlowView, Node, NodeConfig, NodeStartError
from .streams import HotPort

__all__ = ["ApplyResult", "Engine", "format_stats"]

log = logging.getLogger("les02_flow.engine")

PortKey = tuple[str, str]


class _Inlet:
    """A node's input: counts, guards, merges; completes when all its upstream completed."""

    def __init__(self, live: _Live) -> None:
        self.live = live
        node = live.node
        self.counters = node.counters
        self.report = node.report_error
        self.upstream: set[PortKey] = set()
        self.done: set[PortKey] = set()
        self.completed = False
        #: what a transform's ``build()`` subscribes to (``None`` for sinks)
        self.subject: HotPort[Any] | None = None
        self.consume: Callable[[Any], None] = node.consume
        cls = type(node)
        #: the node's own batch method, if it declares one
        self.batch_fn: Callable[[list[Any]], Any] | None = None
        if not live.spec.cls.is_sink():
            self.subject = HotPort()
            self.push = self._push_port  # type: ignore[method-assign]
            if cls.process_batch is not Node.process_batch:
                self.batch_fn = node.process_batch
        elif cls.consume_batch is not Node.consume_batch:
            self.batch_fn = node.consume_batch

    def push(self, value: Any) -> None:
        """Sinks: count, hand to ``consume``, guard."""
        self.counters.received += 1
        try:
            self.consume(value)
        except Exception as exc:
            self.report(value, exc)

    def _push_port(self, value: Any) -> None:
        """Transforms: count, emit into the node's input stream, guard."""
        self.counters.received += 1
        try:
            self.subject.on_next(value)  # type: ignore[union-attr]
        except Exception as exc:
            self.report(value, exc)

    def push_batch(self, values: list[Any]) -> None:
        """A batch (from a batch-safe outlet): the node's batch method, or one by one."""
        batch_fn = self.batch_fn
        self.counters.received += len(values)
        report = self.report
        if batch_fn is None:  # one by one: what push() does per message
            port = self.subject
            if port is None:
                consume = self.consume
                for value in values:
                    try:
                        consume(value)
                    except Exception as exc:
                        report(value, exc)
            else:
                for value in values:
                    try:
                        port.on_next(value)  # looked up per message: it follows (un)subscribes
                    except Exception as exc:
                        report(value, exc)
            return
        try:
            ports = batch_fn(values)
        except Exception as exc:
            report(values, exc)
            return
        if ports:
            outlets = self.live.outlets
            for port, items in ports.items():
                outlet = outlets.get(port)
                if outlet is not None and items:
                    outlet.on_batch(items)

    def upstream_completed(self, key: PortKey) -> None:
        self.done.add(key)
        if self.upstream and self.upstream <= self.done and not self.completed:
            self.completed = True
            try:
                if self.subject is not None:
                    self.subject.on_completed()
                else:
                    self.live.node.input_completed()
            except Exception as exc:
                log.error("node '%s': completing its input raised: %s", self.live.spec.id, exc)


class _Outlet:
    """One output port: counts ``out`` and hands each message to its wired inlets."""

    def __init__(self, live: _Live, port: str, engine: Engine) -> None:
        self.live = live
        self.port = port
        self.key: PortKey = (live.spec.id, port)
        self.engine = engine
        self.counters = live.node.counters
        self.targets: tuple[_Inlet, ...] = ()
        #: every node downstream has one upstream port: batches may travel as lists
        self.batch_safe = False
        self.completed = False

    def on_next(self, value: Any) -> None:
        self.counters.emitted += 1
        for target in self.targets:
            target.push(value)

    def on_batch(self, values: list[Any]) -> None:
        """Hand a list of messages on: as a list where that changes nothing, else one by one."""
        if not self.batch_safe:
            on_next = self.on_next
            for value in values:
                on_next(value)
            return
        self.counters.emitted += len(values)
        for target in self.targets:
            target.push_batch(values)

    def on_error(self, err: Exception) -> None:
        self.counters.errors += 1
        log.error("node '%s' port '%s' failed: %s", self.key[0], self.port, err)
        self.on_completed()

    def on_completed(self) -> None:
        if self.completed:
            return
        self.completed = True
        for target in self.targets:
            target.upstream_completed(self.key)
        self.engine._port_completed(self.live)


@dataclass
class _Live:
    """A running node instance with its inlet, outlets and subscriptions."""

    spec: CompiledNode
    node: Node[NodeConfig]
    inlet: _Inlet | None = None
    ports: dict[str, Observable[Any]] = field(default_factory=dict)
    outlets: dict[str, _Outlet] = field(default_factory=dict)
    subscriptions: list[abc.DisposableBase] = field(default_factory=list)
    started: bool = False
    finished: bool = False
    waiter: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass
class ApplyResult:
    """What :meth:`Engine.apply` did, by node id."""

    kept: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    rewired: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """``kept 4, added 1 (rec), removed 0, restarted 1 (ws), rewired 1 (parse)``"""

        def part(name: str, ids: list[str]) -> str:
            return f"{name} {len(ids)}" + (f" ({', '.join(ids)})" if ids else "")

        return ", ".join(
            [
                f"kept {len(self.kept)}",
                part("added", self.added),
                part("removed", self.removed),
                part("restarted", self.restarted),
                part("rewired", self.rewired),
            ]
        )


def _role(spec: CompiledNode) -> str:
    if spec.cls.is_sink():
        return "sink"
    if spec.cls.is_source():
        return "source"
    return "transform"


class _EngineView(FlowView):
    """The engine's :class:`FlowView`: copies of the running graph, counters and statuses."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._revision = 0
        self._listeners: list[Callable[[], None]] = []

    @property
    def revision(self) -> int:
        return self._revision

    def graph(self) -> dict[str, Any]:
        engine = self._engine
        flow = engine.flow
        nodes = []
        for spec in flow.enabled():
            if spec.id not in engine.live:
                continue
            cls = spec.cls
            input_kind = cls.input_kind_for(spec.config)
            nodes.append(
                {
                    "id": spec.id,
                    "type": spec.type_name,
                    "label": spec.label,
                    "summary": cls.summary(),
                    "role": _role(spec),
                    "input": None if input_kind is None else str(input_kind),
                    # per instance: switch ports come from its rules, pass-through kinds
                    # are resolved along the wires
                    "outputs": {port: str(kind) for port, kind in spec.kinds.items()},
                    "wires": {
                        port: [t for t in targets if t in engine.live]
                        for port, targets in spec.wires.items()
                    },
                    "location": str(spec.location),
                    "config": spec.config.model_dump(mode="json"),
                }
            )
        disabled = [n.id for n in flow.nodes.values() if n.disabled]
        return {
            "name": flow.name,
            "path": flow.path,
            "revision": self._revision,
            "nodes": nodes,
            "disabled": disabled,
        }

    def counters(self) -> dict[str, dict[str, int]]:
        return {nid: live.node.counters.as_dict() for nid, live in self._engine.live.items()}

    def statuses(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for nid, live in self._engine.live.items():
            status = live.node.ctx.status
            out[nid] = {
                "state": status.state,
                "text": status.text,
                "role": _role(live.spec),
                "started": live.started,
                "finished": live.finished,
            }
        return out

    def node_config(self, node_id: str) -> tuple[str, NodeConfig] | None:
        live = self._engine.live.get(node_id)
        return None if live is None else (live.spec.type_name, live.spec.config)

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def changed(self) -> None:
        self._revision += 1
        for callback in list(self._listeners):
            try:
                callback()
            except Exception as exc:
                log.error("flow view listener %r raised: %s", callback, exc)


def _phase(spec: CompiledNode) -> int:
    if spec.cls.is_sink():
        return 0
    if spec.cls.is_source():
        return 2
    return 1


def _same(a: CompiledNode, b: CompiledNode) -> bool:
    return a.cls is b.cls and a.config == b.config


class Engine:
    """Builds and runs one flow on the running event loop.

    Use: ``engine = Engine(flow); await engine.start(); await engine.wait(); await
    engine.stop()`` -- or ``await engine.run()`` for all three. ``start`` raises
    :class:`~les02_flow.node.NodeStartError` (after stopping what it started) when a node
    cannot start. ``await engine.apply(new_flow)`` re-deploys an edited flow as a diff.
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
        self.live: dict[str, _Live] = {}
        self._stop_requested = asyncio.Event()
        self._all_finished = asyncio.Event()
        self._stopped = False
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self.view = _EngineView(self)
        for spec in flow.enabled():
            self.live[spec.id] = self._instantiate(spec)
        self._connect(self.live, flow)

    @property
    def nodes(self) -> dict[str, Node[NodeConfig]]:
        """The live node instances by id."""
        return {nid: live.node for nid, live in self.live.items()}

    # -- building ----------------------------------------------------------------------------

    def _instantiate(self, spec: CompiledNode) -> _Live:
        ctx = Context(spec.id, logging.getLogger(f"les02_flow.node.{spec.id}"), flow=self.view)
        live = _Live(spec=spec, node=spec.cls(spec.id, spec.config, ctx))
        if spec.cls.input_kind is not None:
            live.inlet = _Inlet(live)
        if spec.cls.is_sink():
            return live
        port = live.inlet.subject if live.inlet is not None else None
        source = port.observable if port is not None else None
        ports = dict(live.node.build(source))
        missing = set(spec.ports) - set(ports)
        if missing:
            raise TypeError(f"{spec.type_name}.build() did not return ports {sorted(missing)}")
        live.ports = ports
        live.outlets = {port: _Outlet(live, port, self) for port in spec.ports}
        return live

    def _connect(self, lives: dict[str, _Live], flow: CompiledFlow) -> None:
        """Set every outlet's targets and every inlet's upstream set from ``flow``'s wires."""
        upstream: dict[str, set[PortKey]] = {nid: set() for nid in lives}
        for nid, live in lives.items():
            for port, outlet in live.outlets.items():
                targets = []
                for t in flow.nodes[nid].wires.get(port, []) if nid in flow.nodes else []:
                    target = lives.get(t)
                    if target is not None and target.inlet is not None:
                        targets.append(target.inlet)
                        upstream[t].add(outlet.key)
                outlet.targets = tuple(targets)
        for nid, live in lives.items():
            if live.inlet is not None:
                live.inlet.upstream = upstream[nid]
                live.inlet.done &= upstream[nid]
        tree: dict[str, bool] = {}

        def in_tree(nid: str, path: frozenset[str]) -> bool:
            """``nid`` and everything below it have exactly one upstream port."""
            known = tree.get(nid)
            if known is not None:
                return known
            if nid in path or len(upstream[nid]) != 1:
                return False  # a cycle, or fan-in: batches would change the interleaving
            live = lives[nid]
            ok = all(
                in_tree(target.live.spec.id, path | {nid})
                for outlet in live.outlets.values()
                for target in outlet.targets
            )
            tree[nid] = ok
            return ok

        for live in lives.values():
            for outlet in live.outlets.values():
                outlet.batch_safe = all(
                    in_tree(target.live.spec.id, frozenset()) for target in outlet.targets
                )
        self._propagate_bus_info(lives, flow)

    def _propagate_bus_info(self, lives: dict[str, _Live], flow: CompiledFlow) -> None:
        for nid, live in lives.items():
            info = live.node.bus_info
            if not info:
                continue
            todo = [t for targets in flow.nodes[nid].wires.values() for t in targets]
            seen: set[str] = set()
            while todo:
                tid = todo.pop()
                if tid in seen or tid not in lives:
                    continue
                seen.add(tid)
                for key, value in info.items():
                    lives[tid].node.ctx.bus_info.setdefault(str(key), str(value))
                todo.extend(t for ts in flow.nodes[tid].wires.values() for t in ts)

    # -- lifecycle ---------------------------------------------------------------------------

    def start_order(self, ids: Iterable[str] | None = None) -> list[str]:
        """Node ids in start order: sinks, transforms, sources (stable within a phase)."""
        chosen = list(self.live) if ids is None else list(ids)
        return sorted(chosen, key=lambda nid: _phase(self.live[nid].spec))

    def _subscribe(self, live: _Live) -> None:
        for port, obs in live.ports.items():
            outlet = live.outlets[port]
            live.subscriptions.append(
                obs.subscribe(outlet.on_next, outlet.on_error, outlet.on_completed)
            )

    async def _start_one(self, live: _Live) -> None:
        live.node.ctx.loop = asyncio.get_running_loop()
        self._subscribe(live)
        if live.outlets:
            live.node.bind_batches({port: o.on_batch for port, o in live.outlets.items()})
        try:
            await live.node.start()
        except NodeStartError as exc:
            # say which node of which flow line, whatever the node's own message says
            where = f"{live.spec.location}: node '{live.id}'"
            if str(exc).startswith(where):
                raise
            raise NodeStartError(f"{where}: {exc}") from exc
        live.started = True
        if live.spec.cls.is_source() and not live.spec.ports:
            live.waiter = asyncio.create_task(self._await_finished(live))

    async def start(self) -> None:
        """Open every node's resources and connect the graph; sources start last."""
        try:
            for nid in self.start_order():
                await self._start_one(self.live[nid])
        except BaseException:
            await self.stop()
            raise
        if not any(live.spec.cls.is_source() for live in self.live.values()):
            log.warning("flow '%s' has no source node: nothing will flow", self.flow.name)
        if self.stats_interval > 0:
            self._tasks.append(asyncio.create_task(self._stats_loop()))

    async def _stop_one(self, live: _Live) -> None:
        if live.waiter is not None:
            live.waiter.cancel()
        if live.started:
            live.started = False
            try:
                await asyncio.wait_for(live.node.stop(), self.stop_timeout)
            except TimeoutError:
                log.error("node '%s' did not stop within %.1f s", live.id, self.stop_timeout)
            except Exception as exc:
                log.error("node '%s' raised while stopping: %s", live.id, exc)
        for sub in live.subscriptions:
            try:
                sub.dispose()
            except Exception as exc:
                log.debug("node '%s': dispose failed: %s", live.id, exc)
        live.subscriptions.clear()

    async def _await_finished(self, live: _Live) -> None:
        try:
            await live.node.finished()
        except Exception as exc:
            log.error("node '%s' failed: %s", live.id, exc)
        self._mark_finished(live)

    def _port_completed(self, live: _Live) -> None:
        if live.spec.cls.is_source() and all(o.completed for o in live.outlets.values()):
            self._mark_finished(live)

    def _mark_finished(self, live: _Live) -> None:
        if live.finished:
            return
        live.finished = True
        if not self._stopped:
            log.info("node '%s' finished", live.id)
        self._check_all_finished()

    def _check_all_finished(self) -> None:
        sources = [lv for lv in self.live.values() if lv.spec.cls.is_source()]
        if sources and all(lv.finished for lv in sources):
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
        for live in self.live.values():
            live.node.ctx.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._lock:
            for nid in reversed(self.start_order()):
                await self._stop_one(self.live[nid])

    async def run(self) -> str:
        """Start, wait for the end, stop. Returns why it ended."""
        await self.start()
        try:
            return await self.wait()
        finally:
            await self.stop()

    # -- live re-deploy ----------------------------------------------------------------------

    async def apply(self, new: CompiledFlow) -> ApplyResult:
        """Re-deploy ``new`` as a diff against the running flow.

        Unchanged nodes (same type and config) keep running with their state; removed nodes
        stop (flushing); added nodes start; changed nodes restart (old instance stopped first,
        so it frees ports and files); wires are re-connected in one synchronous step. If a new
        or changed node fails to start, the old graph is restored and the
        :class:`~les02_flow.node.NodeStartError` re-raised.
        """
        async with self._lock:
            if self._stopped:
                raise RuntimeError("the engine is stopped")
            return await self._apply(new)

    async def _apply(self, new: CompiledFlow) -> ApplyResult:
        old_flow = self.flow
        new_specs = {s.id: s for s in new.enabled()}
        result = ApplyResult()
        for nid, spec in new_specs.items():
            if nid not in self.live:
                result.added.append(nid)
            elif _same(self.live[nid].spec, spec):
                result.kept.append(nid)
                old_wires = old_flow.nodes[nid].wires
                if {p: sorted(t) for p, t in old_wires.items() if t} != {
                    p: sorted(t) for p, t in spec.wires.items() if t
                }:
                    result.rewired.append(nid)
            else:
                result.restarted.append(nid)
        result.removed = [nid for nid in self.live if nid not in new_specs]

        fresh = {nid: self._instantiate(new_specs[nid]) for nid in result.added + result.restarted}
        changed_old = {nid: self.live[nid] for nid in result.restarted}
        removed = {nid: self.live[nid] for nid in result.removed}
        # The graph as it will be: kept instances and fresh ones.
        target = {nid: self.live[nid] for nid in result.kept}
        target.update(fresh)
        # Fresh nodes' outlets point at their targets before they start (new sources emit into
        # the new graph at once); kept nodes' routing is switched only after all started.
        for live in fresh.values():
            for port, outlet in live.outlets.items():
                wired = (target[t].inlet for t in new.nodes[live.id].wires.get(port, []))
                outlet.targets = tuple(inlet for inlet in wired if inlet is not None)

        # Changed nodes: detach and stop the old instance first (frees ports and files).
        self._detach(changed_old.values())
        for nid in reversed(self.start_order(changed_old)):
            await self._stop_one(changed_old[nid])

        started: list[_Live] = []
        try:
            for live in sorted(fresh.values(), key=lambda lv: _phase(lv.spec)):
                await self._start_one(live)
                started.append(live)
        except BaseException as exc:
            log.error("re-deploy failed, restoring the previous flow: %s", exc)
            for live in reversed(started):
                self._detach([live])
                await self._stop_one(live)
            await self._restore(old_flow, changed_old)
            raise

        # Commit: one synchronous switch of every routing table.
        self._detach(removed.values())
        self.live = target
        self.flow = new
        self._connect(self.live, new)
        self.view.changed()
        for nid in reversed(sorted(removed, key=lambda n: _phase(removed[n].spec))):
            await self._stop_one(removed[nid])
        self._check_all_finished()
        return result

    def _detach(self, lives: Iterable[_Live]) -> None:
        """Take instances out of the routing: nothing reaches them, nothing leaves them."""
        gone = {id(live.inlet) for live in lives if live.inlet is not None}
        for live in lives:
            for outlet in live.outlets.values():
                outlet.targets = ()
        for live in self.live.values():
            for outlet in live.outlets.values():
                if any(id(t) in gone for t in outlet.targets):
                    outlet.targets = tuple(t for t in outlet.targets if id(t) not in gone)

    async def _restore(self, old_flow: CompiledFlow, changed_old: dict[str, _Live]) -> None:
        """After a failed re-deploy: bring changed nodes back with their old config."""
        for nid in self.start_order(changed_old):
            live = self._instantiate(changed_old[nid].spec)
            self.live[nid] = live
        self._connect(self.live, old_flow)
        for nid in self.start_order(changed_old):
            try:
                await self._start_one(self.live[nid])
            except Exception as exc:
                log.error("node '%s' could not be restored: %s", nid, exc)

    # -- stats -------------------------------------------------------------------------------

    def counters(self) -> dict[str, Counters]:
        return {nid: live.node.counters for nid, live in self.live.items()}

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
