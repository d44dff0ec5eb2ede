"""The node contract: what every node type declares and implements.

A node type is one subclass of :class:`Node`. Its class attributes are the declaration from
which validation, ``les02-flow nodes``, ``docs/nodes.md`` and ``les02-flow schema`` derive:

* ``type_name`` -- snake_case, unique across built-ins and plugins;
* ``config_model`` -- a :class:`NodeConfig` subclass (pydantic v2, ``extra="forbid"``,
  every field with a description and a default or marked required). It is derived from the
  base class: ``class MyNode(Node[MyConfig])`` sets ``config_model = MyConfig``; setting it
  explicitly still works (it must then agree with the type argument);
* ``input_kind`` -- the :class:`Kind` it accepts, or ``None`` for a source;
* ``output_ports`` -- ``{port name: Kind}``; empty for a sink. A port of kind ``any`` on a node
  whose input is ``any`` passes on what it receives: the compiler resolves it to the kind wired
  into the node, so a mismatch further down is still an error before start. A node type whose
  ports depend on its config (``switch``: one port per rule) overrides :meth:`Node.ports_for`
  (and may narrow its input with :meth:`Node.input_kind_for`); ``output_ports`` then lists the
  ports every instance has;
* the class docstring -- the first line is the summary, the rest the documentation;
* ``bus_info`` -- nodes that own a bus (``can_source``, simulators) return its interface,
  channel and bitrate; the runtime copies it into ``ctx.bus_info`` of every node downstream.

Calling rules (the runtime keeps them; nodes may rely on them):

1. ``__init__(node_id, config, ctx)`` does no I/O.
2. Transforms and sources implement ``build(source)``, returning ``{port: Observable}`` for
   every declared output port, made of reactivex operators only: no subscribing, no I/O, no
   wall clock. ``source`` is ``None`` for a source node. ``build`` is called once.
3. Sinks (an ``input_kind`` and no output ports) implement ``consume(message)``; the runtime
   subscribes the sink's input and calls it once per message, on the event-loop thread.
4. ``await start()`` opens resources (sinks first, then transforms, then sources) and raises
   :class:`NodeStartError` with a clear message when it cannot. ``await stop()`` is idempotent,
   bounded in time and never raises; sinks flush in it.
5. Everything that enters the graph is emitted on the event-loop thread.
6. Batches (optional; replay at ``speed: max``): a source may keep the per-port batch
   emitters the runtime hands to :meth:`Node.bind_batches` and emit a list of messages in one
   call. A transform may implement :meth:`Node.process_batch`, a sink
   :meth:`Node.consume_batch`: the runtime then may hand it such a list instead of the
   messages one by one. The result must be exactly what one-by-one delivery gives (same
   messages on each port, same order, same counters); per-message exceptions are the node's
   to count and skip (:meth:`Node.report_error`). Nodes without them get every message one
   by one, batches or not.
7. Per-message exceptions never end a stream: use :meth:`Node.each` (and :meth:`Node.split`),
   which count, log (rate-limited) and skip the message. The runtime's input guard does the same
   for exceptions that escape synchronously from a node's chain.
7. Log through ``self.log``: it adds ``TYPE 'ID': `` to every message (a
   :class:`NodeLogAdapter`, :meth:`Context.node_log`), so a message is written without it;
   ``self.log.prefix`` is the same text for exception messages (``NodeStartError``).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar, get_args, get_origin

import reactivex
from pydantic import BaseModel, ConfigDict
from reactivex import Observable, abc
from reactivex.disposable import Disposable

__all__ = [
    "DEFAULT_PORT",
    "Context",
    "Counters",
    "FlowView",
    "Kind",
    "LibraryLog",
    "Logger",
    "Node",
    "NodeConfig",
    "NodeLogAdapter",
    "NodeStartError",
    "NodeStatus",
    "RateLimitedLog",
]

DEFAULT_PORT = "out"

T = TypeVar("T")
U = TypeVar("U")
ConfigT = TypeVar("ConfigT", bound="NodeConfig")


class Kind(enum.StrEnum):
    """What travels on a wire.

    ``frame`` is a :class:`can.Message`; ``event`` is an event envelope dict
    (``docs/protocol.md``); ``any`` is accepted by nodes that take either (only as an input).
    """

    FRAME = "frame"
    EVENT = "event"
    ANY = "any"

    def accepts(self, other: Kind) -> bool:
        """True when an input of this kind may be wired from an output of kind ``other``."""
        return self is Kind.ANY or other is Kind.ANY or self is other


class NodeConfig(BaseModel):
    """Base of every node config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class NodeStartError(Exception):
    """A node could not open its resources; the message says which and why."""


@dataclass
class Counters:
    """Per-node message counters, read by the periodic stats line."""

    received: int = 0
    emitted: int = 0
    dropped: int = 0
    errors: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def bump(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a node-specific counter (shown in the stats line)."""
        self.extra[name] = self.extra.get(name, 0) + n

    def as_dict(self) -> dict[str, int]:
        return {
            "in": self.received,
            "out": self.emitted,
            "dropped": self.dropped,
            "errors": self.errors,
            **self.extra,
        }


#: a logger, or the node-prefixed adapter of one
Logger = logging.Logger | logging.LoggerAdapter[Any]


class NodeLogAdapter(logging.LoggerAdapter[logging.Logger]):
    """A node's logger that starts every message with ``TYPE 'ID': `` (see
    :meth:`Context.node_log`), so call sites do not format the prefix by hand."""

    def __init__(self, logger: logging.Logger, prefix: str) -> None:
        super().__init__(logger, {})
        self.prefix = prefix

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"{self.prefix}: {msg}", kwargs


class LibraryLog(logging.LoggerAdapter[logging.Logger]):
    """The logger handed to a library a node drives (``websockets``): it passes only warnings
    and errors while ``logger`` has no level of its own (``NOTSET``), everything its level
    allows once one is configured. It changes no logger's level (see :meth:`Context.library_log`).
    """

    def isEnabledFor(self, level: int) -> bool:
        logger = self.logger
        if logger.level == logging.NOTSET and level < logging.WARNING:
            return False
        return logger.isEnabledFor(level)


class RateLimitedLog:
    """Logs the first occurrence at once, then at most one line per ``interval`` seconds,
    saying how many were suppressed in between."""

    def __init__(self, logger: Logger, interval: float = 5.0) -> None:
        self._logger = logger
        self._interval = interval
        self._next = 0.0
        self._suppressed = 0

    def __call__(self, level: int, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            msg += f" ({self._suppressed} similar suppressed)"
            self._suppressed = 0
        self._next = now + self._interval
        self._logger.log(level, msg, *args, exc_info=exc_info)


StatusState = Literal["ok", "warning", "error"]


@dataclass(frozen=True)
class NodeStatus:
    """A node's own word on its health, like Node-RED's node status: ``ok``, ``warning`` or
    ``error`` plus a short text (``"cannot open CAN bus: ..."``). Set it with
    :meth:`Context.set_status`; the runtime only reports it (``web_console`` shows it as the
    status dot, and a source in ``error`` makes ``/healthz`` answer 503)."""

    state: StatusState = "ok"
    text: str = ""


class FlowView:
    """A read-only view of the running flow, given to every node as ``ctx.flow``.

    The engine implements it; it follows live re-deploys (:attr:`revision` grows by one per
    applied edit and :meth:`on_change` callbacks run, on the loop, after the new graph is in
    place). Everything returned is a fresh copy made of plain JSON-ready values (or frozen
    config models): a node can look at the flow but cannot change it. Nothing here knows
    about HTTP or any other transport.
    """

    @property
    def revision(self) -> int:
        """0 for the flow as started, +1 for each applied re-deploy."""
        raise NotImplementedError

    def graph(self) -> dict[str, Any]:
        """``{"name", "path", "revision", "nodes": [...], "disabled": [ids]}``, nodes in flow
        order (sources first); ``disabled`` lists the ids of the flow's disabled nodes.

        Each node: ``id``, ``type``, ``label``, ``summary``, ``role`` (``source``,
        ``transform``, ``sink``), ``input`` (kind or ``None``), ``outputs`` ``{port: kind}``,
        ``wires`` ``{port: [node ids]}``, ``location`` (``FILE:LINE:COL`` of the node in the
        flow file), ``config`` (the validated config as JSON values)."""
        raise NotImplementedError

    def counters(self) -> dict[str, dict[str, int]]:
        """Every running node's counters (``Counters.as_dict()``) by node id."""
        raise NotImplementedError

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Every running node's ``{"state", "text", "role", "started", "finished"}`` by id."""
        raise NotImplementedError

    def node_config(self, node_id: str) -> tuple[str, NodeConfig] | None:
        """``(type name, frozen config)`` of a running node, ``None`` if there is none."""
        raise NotImplementedError

    def on_change(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback()`` after every applied re-deploy; returns the unsubscribe
        function. A callback that raises is logged and kept."""
        raise NotImplementedError


@dataclass
class Context:
    """What the runtime gives a node: its logger, counters and the event loop.

    ``bus_info`` is filled by the runtime for sinks that advertise the bus that feeds them:
    interface, channel and bitrate of the upstream ``can_source`` where known. ``flow`` is the
    read-only :class:`FlowView` of the running flow (``None`` outside an engine). ``status`` is
    the node's current :class:`NodeStatus`.
    """

    node_id: str
    logger: logging.Logger
    counters: Counters = field(default_factory=Counters)
    loop: asyncio.AbstractEventLoop | None = None
    bus_info: dict[str, str] = field(default_factory=dict)
    flow: FlowView | None = None
    status: NodeStatus = field(default_factory=NodeStatus)
    #: set by the engine when the run is being stopped (SIGINT/SIGTERM, ``Engine.stop``)
    #: before any node stops, so a node completing then can tell a stop from an input's end
    stopping: bool = False

    def get_loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop (valid in ``start`` and later)."""
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        return self.loop

    def node_log(self, type_name: str) -> NodeLogAdapter:
        """This node's logger with the ``TYPE 'ID': `` prefix on every message.

        >>> import logging
        >>> Context("sim", logging.getLogger("doc")).node_log("les02_sim").process("up", {})
        ("les02_sim 'sim': up", {})
        """
        return NodeLogAdapter(self.logger, f"{type_name or 'node'} '{self.node_id}'")

    def library_log(self, name: str) -> LibraryLog:
        """The logger to hand to a library this node drives (``websockets``): the child
        ``name`` of this node's logger, quiet below WARNING unless that child has a level
        configured. (Setting the level instead would be a process-wide change made by a node.)
        """
        return LibraryLog(self.logger.getChild(name), {})

    def set_status(self, state: StatusState, text: str = "") -> None:
        """Set this node's status (cheap: call it on changes, not per message)."""
        self.status = NodeStatus(state, text)


class Node(Generic[ConfigT]):
    """Base class of every node type. See the module docstring for the calling rules."""

    type_name: ClassVar[str] = ""
    config_model: ClassVar[type[NodeConfig]] = NodeConfig
    input_kind: ClassVar[Kind | None] = None
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    #: flow snippets (YAML, one node) that ``tests/runtime/test_node_examples.py`` validates
    examples: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared = _config_type_argument(cls)
        if declared is None:
            return
        if "config_model" not in cls.__dict__:
            cls.config_model = declared
        elif not issubclass(cls.config_model, declared):
            raise TypeError(
                f"{cls.__qualname__}: config_model {cls.config_model.__name__} does not match "
                f"Node[{declared.__name__}]; drop the config_model line (it is derived)"
            )

    def __init__(self, node_id: str, config: ConfigT, ctx: Context) -> None:
        self.node_id = node_id
        self.config = config
        self.ctx = ctx
        #: the node's logger: every message starts with ``TYPE 'ID': `` (:meth:`Context.node_log`);
        #: log through it (or a :class:`RateLimitedLog` of it), never format the prefix by hand
        self.log: NodeLogAdapter = ctx.node_log(self.type_name)
        self.counters = ctx.counters
        self._error_log = RateLimitedLog(self.log)

    # -- declaration helpers ---------------------------------------------------------------

    @classmethod
    def summary(cls) -> str:
        """First line of the docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    @classmethod
    def ports_for(cls, config: NodeConfig) -> Mapping[str, Kind]:
        """The output ports of an instance with ``config`` (default: ``output_ports``).

        Called by the compiler once the config is valid; ``validate`` checks wires and kinds
        against it and :meth:`build` must return exactly these ports.
        """
        return cls.output_ports

    @classmethod
    def input_kind_for(cls, config: NodeConfig) -> Kind | None:
        """The input kind of an instance with ``config`` (default: ``input_kind``); may only
        narrow ``any`` to ``frame`` or ``event`` (e.g. a filter on CAN ids takes frames)."""
        return cls.input_kind

    @classmethod
    def is_source(cls) -> bool:
        return cls.input_kind is None

    @classmethod
    def is_sink(cls) -> bool:
        return cls.input_kind is not None and not cls.output_ports

    @property
    def bus_info(self) -> Mapping[str, str]:
        """The bus this node reads or simulates (``interface``, ``channel``, ``bitrate``, ...)
        for sinks downstream that advertise it; empty for nodes that own no bus."""
        return {}

    # -- graph -----------------------------------------------------------------------------

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        """Return ``{port: Observable}`` for every output port (see the calling rules)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build()")

    def consume(self, message: Any) -> None:
        """Sinks: handle one message (on the loop thread, must not block)."""
        raise NotImplementedError(f"{type(self).__name__} must implement consume()")

    def input_completed(self) -> None:
        """Sinks: the input stream completed (all upstream sources finished)."""

    # -- batches (optional, see calling rule 6) ----------------------------------------------

    def process_batch(self, messages: list[Any]) -> Mapping[str, list[Any]]:
        """Transforms: handle ``messages`` in one call; returns ``{port: [messages out]}``,
        each port's list in the order one-by-one delivery emits them. Not implemented by
        default (the runtime then feeds the messages one by one into :meth:`build`'s
        stream)."""
        raise NotImplementedError

    def consume_batch(self, messages: list[Any]) -> None:
        """Sinks: :meth:`consume` for each of ``messages``, in one call. Not implemented by
        default (the runtime then calls :meth:`consume` per message)."""
        raise NotImplementedError

    def bind_batches(self, emitters: Mapping[str, Callable[[list[Any]], None]]) -> None:
        """Sources (and any node with ports): called once before :meth:`start` with, per
        output port, a function that emits a list of messages at once (the same as emitting
        each through the port's observable, in order). Ignored by default."""

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open resources. Raise :class:`NodeStartError` with a clear message on failure."""

    async def stop(self) -> None:
        """Release resources: idempotent, bounded in time, never raises."""

    async def finished(self) -> None:
        """Sources without output ports: return when the source has nothing more to do.

        Sources with ports finish when all their ports complete; the default never returns.
        """
        await asyncio.Event().wait()

    # -- per-message error handling ----------------------------------------------------------

    def report_error(self, message: Any, exc: BaseException) -> None:
        """Count a per-message failure and log it (rate-limited) with the node id."""
        self.counters.errors += 1
        self._error_log(
            logging.WARNING,
            "%s on %s: %s -- message skipped",
            type(exc).__name__,
            _short(message),
            exc,
        )

    def each(self, fn: Callable[[T], U | None]) -> Callable[[Observable[T]], Observable[U]]:
        """Operator: apply ``fn`` to each message; ``None`` drops it; an exception is counted,
        logged and the message skipped (the stream goes on).

        >>> import reactivex
        >>> from les02_flow.node import Context, Node
        >>> import logging
        >>> n = Node("n", None, Context("n", logging.getLogger("doc")))  # type: ignore[arg-type]
        >>> out = []
        >>> _ = reactivex.of(1, 0, 2).pipe(n.each(lambda x: 10 // x)).subscribe(out.append)
        >>> out, n.counters.errors
        ([10, 5], 1)
        """

        def operator(source: Observable[T]) -> Observable[U]:
            def subscribe(
                observer: abc.ObserverBase[U], scheduler: abc.SchedulerBase | None = None
            ) -> abc.DisposableBase:
                emit = observer.on_next

                def on_next(value: T) -> None:
                    try:
                        result = fn(value)
                    except Exception as exc:
                        self.report_error(value, exc)
                        return
                    if result is not None:
                        emit(result)

                return source.subscribe(
                    on_next, observer.on_error, observer.on_completed, scheduler=scheduler
                )

            return Observable(subscribe)

        return operator

    def split(
        self,
        source: Observable[T],
        fn: Callable[[T], tuple[str, Any] | None],
        ports: tuple[str, ...],
    ) -> dict[str, Observable[Any]]:
        """Route each message to one named port: ``fn`` returns ``(port, value)`` or ``None``.

        One upstream subscription feeds every port (however many subscribe); exceptions in
        ``fn`` are counted and skipped like in :meth:`each`.
        """
        return split_stream(source.pipe(self.each(fn)), ports)


def config_ports(cls: type[Node[Any]]) -> bool:
    """True when the node type names output ports from its config (overrides ``ports_for``)."""
    return getattr(cls.ports_for, "__func__", None) is not getattr(Node.ports_for, "__func__", None)


def split_stream(
    routed: Observable[tuple[str, Any]], ports: tuple[str, ...]
) -> dict[str, Observable[Any]]:
    """Fan one stream of ``(port, value)`` pairs out to per-port observables.

    The upstream is subscribed once, when the first port is subscribed, and disposed when the
    last one is disposed.
    """
    observers: dict[str, list[abc.ObserverBase[Any]]] = {p: [] for p in ports}
    state: dict[str, abc.DisposableBase | None] = {"sub": None}
    active = [0]

    def on_next(item: tuple[str, Any]) -> None:
        port, value = item
        for obs in observers.get(port, ()):
            obs.on_next(value)

    def on_error(err: Exception) -> None:
        for lst in observers.values():
            for obs in list(lst):
                obs.on_error(err)

    def on_completed() -> None:
        for lst in observers.values():
            for obs in list(lst):
                obs.on_completed()

    def make(port: str) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            observers[port].append(observer)
            active[0] += 1
            if state["sub"] is None:
                state["sub"] = routed.subscribe(on_next, on_error, on_completed)

            def dispose() -> None:
                if observer in observers[port]:
                    observers[port].remove(observer)
                    active[0] -= 1
                if active[0] == 0 and state["sub"] is not None:
                    state["sub"].dispose()
                    state["sub"] = None

            return Disposable(dispose)

        return Observable(subscribe)

    return {p: make(p) for p in ports}


def _config_type_argument(cls: type) -> type[NodeConfig] | None:
    """``MyConfig`` for ``class X(Node[MyConfig])`` (directly or through a generic base)."""
    for base in cls.__dict__.get("__orig_bases__", ()):
        origin = get_origin(base)
        if isinstance(origin, type) and issubclass(origin, Node):
            for arg in get_args(base):
                if isinstance(arg, type) and issubclass(arg, NodeConfig):
                    return arg
    return None


def _short(message: Any, limit: int = 160) -> str:
    text = repr(message)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# Re-exported so node modules need only this module for the contract.
empty = reactivex.empty
