"""The ``can_source`` node: frames from a python-can bus into the flow.

Reading never busy-polls and everything is emitted on the event-loop thread:

* socket buses python-can implements itself (SocketCAN, udp_multicast) are read without
  python-can's ``recv``: :mod:`les02_flow.nodes.fdbus` reads every ready datagram until
  ``EAGAIN`` and decodes it as python-can would. The first frame after a quiet spell is read
  on readiness (``loop.add_reader``); while frames keep coming the socket is read on a timer
  every ``read_interval`` (default :data:`DEFAULT_READ_INTERVAL`, 5 ms), so one wake-up
  carries all the frames of that interval; frames are emitted in bounded slices
  (:data:`EMIT_BUDGET`) so sinks and timers get their turn, in an engine as lists of up to
  :data:`EMIT_LIST_CHUNK` (the engine's batch path, :meth:`CanSource.bind_batches`: every
  node downstream sees the same messages in the same order, with fewer calls per frame);
* other buses with a usable ``fileno()`` are watched with ``loop.add_reader``; each
  readiness callback drains up to :data:`BATCH_LIMIT` frames with ``bus.recv(0)``;
* every other bus gets one daemon reader thread that blocks in ``bus.recv(RECV_TIMEOUT)``,
  drains what is immediately available with ``recv(0)`` (up to :data:`BATCH_LIMIT` frames) and
  hands the whole batch to the loop with ONE ``loop.call_soon_threadsafe``. Hand-overs are
  spaced at least :data:`HANDOVER_INTERVAL` apart: a frame that arrives sooner after the
  previous hand-over waits for the rest of that interval (at most 1 ms) and goes with
  everything that came meanwhile. A quiet bus (the LES02's 500 frames/s, 2 ms apart) hands
  over every frame at once; a saturated one (12,600 frames/s) wakes the loop at most 1,000
  times a second instead of once per frame. At most
  :data:`MAX_BATCHES_IN_FLIGHT` batches wait on the loop; beyond that the thread waits and the
  frames stay in the driver's queue (backpressure instead of unbounded memory).

A bus that cannot be opened, or that fails while reading (adapter unplugged), is logged with ONE
error line and reopened with capped exponential backoff (:class:`Backoff`); the rest of the flow
keeps running and ``start()`` never raises for an unavailable bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import can
from pydantic import BaseModel, ConfigDict, Field, model_validator
from reactivex import Observable

from les02_flow.configfields import HexInt, RetryFields
from les02_flow.loopcall import post as _post
from les02_flow.node import Context, Kind, Logger, Node, NodeConfig, RateLimitedLog
from les02_flow.nodes.fdbus import FdReader, Raw, fd_reader
from les02_flow.streams import HotPort

__all__ = [
    "BATCH_LIMIT",
    "DEFAULT_READ_INTERVAL",
    "HANDOVER_INTERVAL",
    "MAX_BATCHES_IN_FLIGHT",
    "RECV_TIMEOUT",
    "Backoff",
    "CanFilter",
    "CanSource",
    "CanSourceConfig",
    "bus_kwargs",
]

#: most frames handed to the loop in one callback
BATCH_LIMIT = 512
#: least seconds between two hand-overs of the reader thread (the most latency it adds)
HANDOVER_INTERVAL = 0.001
#: seconds the reader thread blocks in ``bus.recv`` before it checks for stop
RECV_TIMEOUT = 0.2
#: batches handed over but not yet emitted before the reader thread waits
MAX_BATCHES_IN_FLIGHT = 4
#: seconds ``stop()`` waits for the reader thread / supervisor before it gives up on them
STOP_TIMEOUT = 2.0
#: seconds ``start()`` waits for the first open attempt before it returns anyway
START_TIMEOUT = 5.0
#: default ``rcvbuf``: 4 MiB (about 1 s of a saturated 1 Mbit/s bus on udp_multicast)
DEFAULT_RCVBUF = 4 * 1024 * 1024
#: socket buses: most datagrams read from the socket in one go
READ_LIMIT = 1024
#: socket buses: most frames read but not yet emitted (~16 s of a saturated 1 Mbit/s bus, at
#: most ~60 MB); beyond, the socket is left to the kernel (whose drops are counted) instead of
#: growing memory without bound
BACKLOG_LIMIT = 200_000
#: socket buses: seconds of emitting per loop iteration before the loop gets its turn back
#: (sink flushes, timers, the socket itself); the rest follows on the next iteration
EMIT_BUDGET = 0.002
#: socket buses: frames emitted between two looks at the clock
EMIT_CHUNK = 16
#: default ``read_interval`` (socket buses): at most 5 ms added latency, well inside the 10 ms
#: p99 of a saturated bus, for about half the wake-ups and client writes at 500 frames/s
DEFAULT_READ_INTERVAL = 0.005
#: socket buses in an engine: most frames handed downstream in one list
EMIT_LIST_CHUNK = 32
#: seconds between two looks at the kernel's drop count when no datagram says it
DROP_POLL_INTERVAL = 1.0

_ID_MAX = 0x1FFFFFFF
_RESERVED_OPTIONS = frozenset(
    {
        "interface",
        "channel",
        "bitrate",
        "fd",
        "data_bitrate",
        "receive_own_messages",
        "can_filters",
        "config_context",
        "ignore_config",
    }
)


class CanFilter(BaseModel):
    """One acceptance filter: a frame passes when ``id & can_mask == can_id & can_mask``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    can_id: HexInt = Field(
        description="Identifier to match (0..0x1FFFFFFF; hex like 0x80 is fine).",
        ge=0,
        le=_ID_MAX,
    )
    can_mask: HexInt = Field(
        description="Bits of the identifier that must match can_id (0..0x1FFFFFFF).",
        ge=0,
        le=_ID_MAX,
    )
    extended: bool | None = Field(
        default=None,
        description="true: only extended (29-bit) frames; false: only standard (11-bit); "
        "unset: both.",
    )


class CanSourceConfig(NodeConfig, RetryFields):
    """Config of ``can_source``."""

    interface: str = Field(
        default="virtual",
        min_length=1,
        description="python-can interface name (virtual, socketcan, pcan, kvaser, slcan, ...). "
        "An interface python-can does not know is logged and retried like an unplugged "
        "adapter (it may be a plugin that gets installed).",
    )
    channel: str | int = Field(
        default="les02",
        description="Channel of the interface (can0, PCAN_USBBUS1, /dev/ttyACM0, 0, ...).",
    )
    bitrate: int | None = Field(
        default=None, gt=0, description="Nominal bitrate in bit/s; unset = leave as configured."
    )
    fd: bool = Field(default=False, description="Open the bus in CAN FD mode.")
    data_bitrate: int | None = Field(
        default=None, gt=0, description="CAN FD data-phase bitrate in bit/s (needs fd: true)."
    )
    receive_own_messages: bool = Field(
        default=False, description="Also receive frames this bus object sends itself."
    )
    filters: list[CanFilter] = Field(
        default_factory=list,
        description="Acceptance filters ({can_id, can_mask, extended}); a frame passes when it "
        "matches any of them; empty = all frames. Applied in hardware/kernel where the "
        "interface can, in python-can otherwise.",
    )
    bus_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Extra keyword arguments for can.Bus, for interface-specific options "
        "(e.g. slcan tty_baudrate, pcan auto_reset, virtual rx_queue_size). Keys that have "
        "their own field here (interface, channel, bitrate, fd, data_bitrate, "
        "receive_own_messages, can_filters) are rejected.",
    )
    rcvbuf: int | None = Field(
        default=DEFAULT_RCVBUF,
        ge=0,
        description="Receive buffer in bytes for buses that are sockets (udp_multicast, "
        "SocketCAN): what the kernel holds while the flow is busy before it drops frames "
        "(drops are counted as kernel_drops). The kernel caps it at net.core.rmem_max "
        "(raise that with sysctl, see docs/performance.md); 0 or null = the OS default.",
    )
    read_interval: float = Field(
        default=DEFAULT_READ_INTERVAL,
        ge=0,
        le=1.0,
        description="Socket buses (udp_multicast, SocketCAN): the latency budget of reading. "
        "The first frame after a quiet spell is read at once; while frames keep coming the "
        "socket is read every read_interval seconds, so one wake-up carries all the frames "
        "of that interval and every client gets one write for them (fewer wake-ups and "
        "writes: less CPU, on a small computer about half at 500 frames/s) at the price of "
        "up to this much added latency. 0 = read every frame as it arrives (lowest latency, "
        "most CPU).",
    )
    idle_warning: float = Field(
        default=5.0,
        ge=0,
        description="On a 'virtual' bus: warn when no frame arrived this many seconds after "
        "opening it (the virtual interface only reaches this process; another process needs "
        "interface udp_multicast). 0 = never.",
    )

    @model_validator(mode="after")
    def _check(self) -> CanSourceConfig:
        if self.data_bitrate is not None and not self.fd:
            raise ValueError("data_bitrate needs fd: true")
        reserved = sorted(_RESERVED_OPTIONS.intersection(self.bus_options))
        if reserved:
            raise ValueError(
                f"bus_options may not set {', '.join(reserved)}: "
                "use the node's own config keys instead"
            )
        return self


def bus_kwargs(config: CanSourceConfig) -> dict[str, Any]:
    """Keyword arguments for ``can.Bus`` from a config (pure).

    Only what the flow says is passed (``ignore_config=True``: no ``~/.canrc`` or ``CAN_*``
    environment variables sneak in; use ``${VAR}`` in the flow instead).

    >>> cfg = CanSourceConfig(channel="can0", interface="socketcan", bitrate=500000,
    ...                       filters=[CanFilter(can_id=0x80, can_mask=0x7FE)])
    >>> sorted(bus_kwargs(cfg).items())  # doctest: +NORMALIZE_WHITESPACE
    [('bitrate', 500000), ('can_filters', [{'can_id': 128, 'can_mask': 2046}]),
     ('channel', 'can0'), ('ignore_config', True), ('interface', 'socketcan')]
    """
    kwargs: dict[str, Any] = dict(config.bus_options)
    kwargs.update(interface=config.interface, channel=config.channel, ignore_config=True)
    if config.bitrate is not None:
        kwargs["bitrate"] = config.bitrate
    if config.fd:
        kwargs["fd"] = True
    if config.data_bitrate is not None:
        kwargs["data_bitrate"] = config.data_bitrate
    if config.receive_own_messages:
        kwargs["receive_own_messages"] = True
    if config.filters:
        filters: list[dict[str, Any]] = []
        for f in config.filters:
            entry: dict[str, Any] = {"can_id": f.can_id, "can_mask": f.can_mask}
            if f.extended is not None:
                entry["extended"] = f.extended
            filters.append(entry)
        kwargs["can_filters"] = filters
    return kwargs


class Backoff:
    """Capped exponential backoff (pure): ``initial``, doubling, never above ``maximum``.

    >>> b = Backoff(0.5, 3.0)
    >>> [b.next() for _ in range(5)]
    [0.5, 1.0, 2.0, 3.0, 3.0]
    >>> b.reset(); b.next()
    0.5
    """

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def next(self) -> float:
        """The delay to wait now; the following one is doubled (capped)."""
        delay = self._next
        self._next = min(self._next * 2, self.maximum)
        return delay

    def reset(self) -> None:
        """Start again from ``initial`` (after the bus worked)."""
        self._next = self.initial


class _Closed(Exception):
    """The node was stopped while the bus was being opened."""


@dataclass(eq=False)
class _Session:
    """One open bus and its reader (fd watcher or thread)."""

    bus: can.BusABC
    failed: asyncio.Future[BaseException]
    stop: threading.Event = field(default_factory=threading.Event)
    slots: threading.BoundedSemaphore = field(
        default_factory=lambda: threading.BoundedSemaphore(MAX_BATCHES_IN_FLIGHT)
    )
    fd: int | None = None
    thread: threading.Thread | None = None
    thread_done: asyncio.Future[None] | None = None
    delivered: int = 0
    closed: bool = False
    reader: FdReader | None = None
    backlog: deque[Raw] = field(default_factory=deque)
    paused: bool = False
    pump_scheduled: bool = False
    drops_seen: int = 0
    drop_timer: asyncio.TimerHandle | None = None
    rest_timer: asyncio.TimerHandle | None = None
    idle_timer: asyncio.TimerHandle | None = None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _shutdown_quietly(bus: can.BusABC, log: Logger) -> None:
    try:
        bus.shutdown()
    except Exception as exc:
        log.debug("bus shutdown failed: %s: %s", type(exc).__name__, exc)


def _usable_fileno(bus: can.BusABC) -> int | None:
    try:
        fd = bus.fileno()
    except Exception:  # NotImplementedError for most interfaces
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class CanSource(Node[CanSourceConfig]):
    """Read CAN frames from a python-can bus (virtual, SocketCAN, PCAN, ...).

    Emits each received ``can.Message`` unchanged (with the bus timestamp) on port ``out``,
    always on the event-loop thread. SocketCAN-like buses with a file descriptor are read with
    ``loop.add_reader``; other buses by one daemon thread that hands frames over in batches.

    A bus that cannot be opened at start, or that fails while running (adapter unplugged, bus
    shut down), is logged once as an error naming interface, channel and cause, then reopened
    with capped exponential backoff (``retry_initial`` doubling up to ``retry_max``); a line
    is logged when it is back. Meanwhile the rest of the flow keeps running. An interface name
    python-can does not know is treated the same way (logged and retried), since ``start()``
    never fails for an unavailable bus.

    Counters: ``out`` = frames emitted (counted by the runtime), ``bus_errors`` = times the
    bus became unavailable, ``reconnects`` = times it came back.
    """

    type_name: ClassVar[str] = "can_source"
    input_kind: ClassVar[Kind | None] = None
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.FRAME}
    examples: ClassVar[tuple[str, ...]] = (
        "bus:\n  type: can_source\n  interface: virtual\n  channel: les02\n",
        "bus:\n"
        "  type: can_source\n"
        "  interface: socketcan\n"
        "  channel: can0\n"
        "  bitrate: 500000\n"
        "  filters:\n"
        "    - {can_id: 0x80, can_mask: 0x7FE}\n",
        "bus:\n"
        "  type: can_source\n"
        "  interface: slcan\n"
        "  channel: /dev/ttyACM0\n"
        "  bitrate: 500000\n"
        "  bus_options: {tty_baudrate: 115200}\n"
        "  retry_max: 30\n",
    )

    def __init__(self, node_id: str, config: CanSourceConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self._subject: HotPort[can.Message] = HotPort()
        #: the runtime's list emitter of ``out`` (see :meth:`bind_batches`), if any
        self._emit_list: Callable[[list[Any]], None] | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._stopped = False
        self._task: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Future[None] | None = None
        self._session: _Session | None = None
        self._where = f"interface={config.interface}, channel={config.channel}"
        self._drop_log = RateLimitedLog(self.log)
        self._bad_log = RateLimitedLog(self.log)

    # -- declaration -------------------------------------------------------------------------

    @property
    def bus_info(self) -> dict[str, str]:
        """What sinks that advertise the bus need: interface, channel, bitrate (strings)."""
        info = {"interface": self.config.interface, "channel": str(self.config.channel)}
        if self.config.bitrate is not None:
            info["bitrate"] = str(self.config.bitrate)
        if self.config.data_bitrate is not None:
            info["data_bitrate"] = str(self.config.data_bitrate)
        if self.config.fd:
            info["fd"] = "true"
        return info

    @property
    def bus(self) -> can.BusABC | None:
        """The currently open bus, or ``None`` (for diagnostics; do not read from it)."""
        session = self._session
        return session.bus if session is not None and not session.closed else None

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        return {"out": self._subject.observable}

    def bind_batches(self, emitters: Mapping[str, Callable[[list[Any]], None]]) -> None:
        """Socket buses emit what one read brought in lists (the engine's batch path: the
        same messages in the same order for every node downstream, fewer calls per frame)."""
        self._emit_list = emitters.get("out")

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Start reading; returns after the first open attempt (or ``START_TIMEOUT``).

        Never raises for an unavailable bus: the retry loop keeps trying in the background.
        """
        if self._task is not None or self._closed:
            return
        loop = self.ctx.get_loop()
        self._first_attempt = loop.create_future()
        self._task = loop.create_task(self._supervise(), name=f"can_source {self.node_id}")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._first_attempt), START_TIMEOUT)

    async def stop(self) -> None:
        """Stop the reader, shut the bus down, complete ``out``. Idempotent, bounded, no raise."""
        if self._stopped:
            return
        self._stopped = True
        try:
            session = self._session
            if session is not None and session.reader is not None and not session.closed:
                # frames already taken from the socket still go out (a bounded amount)
                self._read_fd(session)
                while session.backlog:
                    self._pump(session, budget=float("inf"))
            with self._lock:
                self._closed = True
            task = self._task
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_TIMEOUT)
            session = self._session
            if session is not None and not session.closed:  # supervisor did not get to it
                self._detach(session)
                session.closed = True
                _shutdown_quietly(session.bus, self.log)
        except Exception as exc:  # never raise from stop
            self.log.warning("error while stopping: %s", exc)
        finally:
            try:
                self._subject.on_completed()
            except Exception as exc:
                self.log.warning("completing output: %s", exc)

    # -- supervisor (loop side) ----------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = Backoff(self.config.retry_initial, self.config.retry_max)
        outage = False
        attempts = 0
        try:
            while not self._closed:
                attempts += 1
                try:
                    bus = await self._open()
                except _Closed:
                    return
                except Exception as exc:
                    self._mark_first_attempt()
                    delay = backoff.next()
                    if not outage:
                        outage = True
                        self.ctx.set_status("error", f"cannot open CAN bus: {exc}")
                        self.counters.bump("bus_errors")
                        self.log.error(
                            "cannot open CAN bus (%s): %s: %s "
                            "-- retrying in %.3g s (backoff up to %.3g s)",
                            self._where,
                            type(exc).__name__,
                            exc,
                            delay,
                            self.config.retry_max,
                        )
                    else:
                        self.log.debug(
                            "retry %d failed (%s): %s: %s -- next in %.3g s",
                            attempts,
                            self._where,
                            type(exc).__name__,
                            exc,
                            delay,
                        )
                    await asyncio.sleep(delay)
                    continue

                if outage:
                    outage = False
                    self.counters.bump("reconnects")
                    self.log.info(
                        "CAN bus (%s) is back (attempt %d)",
                        self._where,
                        attempts,
                    )
                attempts = 0
                self.ctx.set_status("ok", f"reading {self._where}")
                session = self._attach(bus)
                self._mark_first_attempt()
                try:
                    cause = await session.failed
                finally:
                    await self._close_session(session)
                if session.delivered:
                    backoff.reset()
                delay = backoff.next()
                outage = True
                self.ctx.set_status("error", f"CAN bus failed: {cause}")
                self.counters.bump("bus_errors")
                self.log.error(
                    "CAN bus (%s) failed: %s: %s -- reconnecting in %.3g s",
                    self._where,
                    type(cause).__name__,
                    cause,
                    delay,
                )
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not vanish silently
            self.log.exception("reader supervisor crashed")
        finally:
            self._mark_first_attempt()

    def _mark_first_attempt(self) -> None:
        if self._first_attempt is not None and not self._first_attempt.done():
            self._first_attempt.set_result(None)

    async def _open(self) -> can.BusABC:
        """Open the bus in a daemon thread (opening may block, e.g. slcan waits seconds)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[can.BusABC] = loop.create_future()
        kwargs = bus_kwargs(self.config)

        def accept(bus: can.BusABC) -> None:  # loop side: take ownership or shut down
            if fut.done() or self._closed:
                _shutdown_quietly(bus, self.log)
            else:
                fut.set_result(bus)

        def fail(exc: BaseException) -> None:
            if not fut.done():
                fut.set_exception(exc)

        def work() -> None:
            try:
                bus = can.Bus(**kwargs)
            except Exception as exc:
                _post(loop, fail, exc)
                return
            with self._lock:
                closed = self._closed
            if closed or not _post(loop, accept, bus):
                _shutdown_quietly(bus, self.log)
                _post(loop, fail, _Closed())

        threading.Thread(target=work, name=f"can_source {self.node_id} open", daemon=True).start()
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                _shutdown_quietly(fut.result(), self.log)
            raise

    def _attach(self, bus: can.BusABC) -> _Session:
        loop = asyncio.get_running_loop()
        session = _Session(bus=bus, failed=loop.create_future())
        self._session = session
        how = "reader thread"
        reader = self._fd_reader(bus)
        if reader is not None:
            try:
                loop.add_reader(reader.fd, self._on_fd_readable, session)
                session.fd = reader.fd
                session.reader = reader
                session.drop_timer = loop.call_later(DROP_POLL_INTERVAL, self._poll_drops, session)
                how = f"batched socket reads ({reader.kind}, rcvbuf {reader.rcvbuf():,} bytes)"
            except Exception:  # e.g. a loop without add_reader (Windows proactor)
                session.fd = None
                session.reader = None
        if session.fd is None:
            fd = _usable_fileno(bus)
            if fd is not None:
                try:
                    loop.add_reader(fd, self._on_readable, session)
                    session.fd = fd
                    how = "add_reader"
                except Exception:
                    session.fd = None
        if session.fd is None:
            session.thread_done = loop.create_future()
            session.thread = threading.Thread(
                target=self._read_thread,
                args=(session, loop),
                name=f"can_source {self.node_id} reader",
                daemon=True,
            )
            session.thread.start()
        self.log.info("reading CAN bus (%s) via %s", self._where, how)
        if self.config.interface == "virtual" and self.config.idle_warning > 0:
            session.idle_timer = loop.call_later(self.config.idle_warning, self._warn_idle, session)
        return session

    def _warn_idle(self, session: _Session) -> None:
        """A virtual bus that saw nothing: most likely the sender is another process."""
        session.idle_timer = None
        if session.delivered or session.closed or self._closed:
            return
        self.log.warning(
            "no frames on virtual bus '%s' after %g s: the virtual interface "
            "only reaches this process; use --interface udp_multicast (interface: "
            "udp_multicast) in both processes to reach another process",
            self.config.channel,
            self.config.idle_warning,
        )

    def _fd_reader(self, bus: can.BusABC) -> FdReader | None:
        """The batched socket reader for ``bus`` with ``rcvbuf`` applied, or ``None``."""
        try:
            reader = fd_reader(bus)
        except Exception as exc:
            self.log.debug("no batched reader: %s", exc)
            return None
        if reader is None:
            return None
        want = self.config.rcvbuf
        if want:
            try:
                got = reader.set_rcvbuf(want)
            except OSError as exc:
                self.log.warning(
                    "cannot set rcvbuf=%d on %s: %s",
                    want,
                    self._where,
                    exc,
                )
            else:
                if got < want:  # Linux reports twice what it grants
                    self.log.warning(
                        "rcvbuf %d bytes asked, the kernel granted %d "
                        "(capped by net.core.rmem_max; raise it with "
                        "'sysctl -w net.core.rmem_max=%d', see docs/performance.md)",
                        want,
                        got,
                        want,
                    )
        if not reader.rxq_ovfl:
            self.log.info(
                "the socket of %s cannot report drops (SO_RXQ_OVFL)%s",
                self._where,
                "; the kernel's socket table is read instead"
                if reader.kind == "udp_multicast"
                else "",
            )
        return reader

    def _detach(self, session: _Session) -> None:
        session.stop.set()
        for timer in (session.drop_timer, session.rest_timer, session.idle_timer):
            if timer is not None:
                timer.cancel()
        session.drop_timer = session.rest_timer = session.idle_timer = None
        if session.reader is not None:
            self._poll_drops(session, again=False)
        if session.fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(session.fd)
            session.fd = None

    async def _close_session(self, session: _Session) -> None:
        """Stop the reader (thread joined within ``STOP_TIMEOUT``), then shut the bus down."""
        if session.closed:
            return
        self._detach(session)
        if session.thread_done is not None and not session.thread_done.done():
            await asyncio.wait({session.thread_done}, timeout=STOP_TIMEOUT)
        session.closed = True
        _shutdown_quietly(session.bus, self.log)
        if self._session is session:
            self._session = None

    # -- reading -------------------------------------------------------------------------------

    def _emit(self, session: _Session, batch: list[can.Message]) -> None:
        """Loop side: emit one batch, message by message."""
        session.delivered += len(batch)
        if self._closed:
            return
        on_next = self._subject.on_next
        for msg in batch:  # ``out`` is counted by the runtime at the port
            try:
                on_next(msg)
            except Exception as exc:  # a downstream bug must not lose the rest of the batch
                self.report_error(msg, exc)

    def _deliver(self, session: _Session, batch: list[can.Message]) -> None:
        """Loop side, from the reader thread: free the slot, emit."""
        session.slots.release()
        self._emit(session, batch)

    def _fail(self, session: _Session, exc: BaseException) -> None:
        """Loop side: the session's bus failed."""
        if not session.failed.done():
            session.failed.set_result(exc)

    def _on_readable(self, session: _Session) -> None:
        """Loop side (``add_reader``): drain up to ``BATCH_LIMIT`` frames without blocking."""
        if session.stop.is_set():
            return
        batch: list[can.Message] = []
        error: Exception | None = None
        try:
            while len(batch) < BATCH_LIMIT:
                msg = session.bus.recv(0)
                if msg is None:
                    break
                batch.append(msg)
        except Exception as exc:
            error = exc
        if batch:
            self._emit(session, batch)
        if error is not None:
            self._detach(session)  # a dead fd stays readable: stop watching it at once
            self._fail(session, error)

    # -- socket buses (udp_multicast, SocketCAN): batched non-blocking reads --------------------

    def _on_fd_readable(self, session: _Session) -> None:
        """Loop side (``add_reader``): empty the socket into the backlog, then emit a share."""
        if session.stop.is_set():
            return
        if self._read_fd(session) and not session.pump_scheduled:
            self._pump(session)
        if self.config.read_interval > 0:
            self._rest(session)

    def _rest(self, session: _Session) -> None:
        """``read_interval``: stop watching the socket; poll it on a timer while frames come.

        The first frame after a quiet spell is read at once (readiness); while traffic goes on
        the socket is read every ``read_interval`` by :meth:`_poll` (one wake-up for all the
        frames of that interval, no ``epoll_ctl`` per interval); the first poll that finds
        the socket empty watches it again.
        """
        if session.fd is None or session.paused or session.rest_timer is not None:
            return
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_reader(session.fd)
        session.rest_timer = loop.call_later(self.config.read_interval, self._poll, session)

    def _poll(self, session: _Session) -> None:
        """Timer (``read_interval``): read what came meanwhile; nothing came: watch again."""
        session.rest_timer = None
        if session.stop.is_set() or session.fd is None or session.paused:
            return
        before = len(session.backlog)
        if not self._read_fd(session):
            return
        loop = asyncio.get_running_loop()
        if len(session.backlog) > before:
            if not session.paused:  # (a full backlog watches again when it has shrunk)
                session.rest_timer = loop.call_later(self.config.read_interval, self._poll, session)
            if not session.pump_scheduled:
                self._pump(session)
        elif not session.paused:
            with contextlib.suppress(Exception):
                loop.add_reader(session.fd, self._on_fd_readable, session)

    def _read_fd(self, session: _Session) -> bool:
        """Read what the socket holds (bounded by ``BACKLOG_LIMIT``); ``False``: it failed."""
        reader = session.reader
        if reader is None or session.paused:
            return True
        backlog = session.backlog
        room = BACKLOG_LIMIT - len(backlog)
        try:
            emptied = reader.read(backlog, min(room, READ_LIMIT))
        except OSError as exc:
            self._detach(session)  # a dead fd stays readable: stop watching it at once
            while backlog:  # what got through before the failure still goes out
                self._pump(session, budget=float("inf"))
            self._fail(session, can.CanOperationError(f"receiving failed: {exc}"))
            return False
        if reader.kernel_drops != session.drops_seen:
            self._count_drops(session)
        if not emptied and len(backlog) >= BACKLOG_LIMIT and session.fd is not None:
            # the flow is behind by BACKLOG_LIMIT frames: leave further ones to the kernel,
            # whose buffer overflows visibly (kernel_drops), until the backlog has shrunk
            session.paused = True
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(session.fd)
        return True

    def _pump(self, session: _Session, budget: float = EMIT_BUDGET) -> None:
        """Decode and emit backlog frames for at most ``budget`` seconds, then yield."""
        backlog = session.backlog
        reader = session.reader
        if reader is None or not backlog:
            return
        decode = reader.decode
        on_next = self._subject.on_next
        popleft = backlog.popleft
        clock = time.perf_counter
        deadline = clock() + budget
        emitted = 0
        closed = self._closed
        emit_list = self._emit_list
        while backlog and emit_list is not None:  # the engine takes lists: one call per chunk
            items: list[can.Message] = []
            keep = items.append
            for _ in range(min(EMIT_LIST_CHUNK, len(backlog))):
                raw = popleft()
                try:
                    msg = decode(raw)
                except Exception as exc:
                    self._bad_datagram(raw, exc)
                    continue
                if msg is not None:  # (None: filtered out, as python-can would)
                    keep(msg)
            emitted += len(items)
            if items and not closed:
                try:
                    emit_list(items)
                except Exception as exc:  # the engine guards each node; this is a last resort
                    self.report_error(items, exc)
            if clock() >= deadline:
                break
        while backlog and emit_list is None:
            for _ in range(min(EMIT_CHUNK, len(backlog))):
                raw = popleft()
                try:
                    msg = decode(raw)
                except Exception as exc:
                    self._bad_datagram(raw, exc)
                    continue
                if msg is None:  # filtered out, as python-can would
                    continue
                emitted += 1
                if closed:
                    continue
                try:
                    on_next(msg)
                except Exception as exc:  # a downstream bug must not lose the rest
                    self.report_error(msg, exc)
            if clock() >= deadline:
                break
        session.delivered += emitted
        if session.paused and len(backlog) < BACKLOG_LIMIT // 2 and not session.stop.is_set():
            session.paused = False
            if session.rest_timer is None:  # else _poll reads the socket
                with contextlib.suppress(Exception):
                    asyncio.get_running_loop().add_reader(reader.fd, self._on_fd_readable, session)
        if backlog and not session.pump_scheduled and not session.stop.is_set():
            session.pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump_again, session)

    def _pump_again(self, session: _Session) -> None:
        session.pump_scheduled = False
        if session.stop.is_set():
            return
        if self._read_fd(session):  # keep the socket empty while catching up
            self._pump(session)

    def _bad_datagram(self, raw: Raw, exc: Exception) -> None:
        self.counters.errors += 1
        self.counters.bump("bad_frames")
        self._bad_log(
            logging.WARNING,
            "skipped a datagram on %s that is not a CAN frame: %s: %s (%d bytes: %s)",
            self._where,
            type(exc).__name__,
            exc,
            len(raw[0]),
            raw[0][:32].hex(),
        )

    def _poll_drops(self, session: _Session, again: bool = True) -> None:
        """Timer: ask the kernel's socket table for drops no datagram has reported yet."""
        reader = session.reader
        if reader is None:
            return
        try:
            reader.poll_drops()
        except Exception as exc:  # diagnostics must never stop the reader
            self.log.debug("drop poll failed: %s", exc)
        if reader.kernel_drops != session.drops_seen:
            self._count_drops(session)
        if again and not session.stop.is_set():
            session.drop_timer = asyncio.get_running_loop().call_later(
                DROP_POLL_INTERVAL, self._poll_drops, session
            )

    def _count_drops(self, session: _Session) -> None:
        reader = session.reader
        assert reader is not None
        new = reader.kernel_drops - session.drops_seen
        if new <= 0:
            return
        session.drops_seen = reader.kernel_drops
        self.counters.bump("kernel_drops", new)
        total = self.counters.extra.get("kernel_drops", 0)
        self.ctx.set_status("warning", f"the kernel dropped {total} frame(s): receive buffer full")
        self._drop_log(
            logging.WARNING,
            "the kernel dropped %d frame(s) on %s because the socket's "
            "receive buffer (%d bytes) was full: the flow did not keep up (%d dropped in "
            "total) -- raise rcvbuf / net.core.rmem_max or lighten the flow",
            new,
            self._where,
            reader.rcvbuf(),
            total,
        )

    # -- other buses: a reader thread ------------------------------------------------------

    def _read_thread(self, session: _Session, loop: asyncio.AbstractEventLoop) -> None:
        """Reader thread: block in recv, drain, hand over whole batches (one call each)."""
        bus, stop, slots = session.bus, session.stop, session.slots
        clock = time.monotonic
        last = -HANDOVER_INTERVAL
        try:
            while not stop.is_set():
                msg = bus.recv(RECV_TIMEOUT)
                if msg is None:
                    continue
                batch = [msg]
                wait = last + HANDOVER_INTERVAL - clock()
                if wait > 0:  # busy bus: collect until the interval is over
                    time.sleep(wait)
                error: Exception | None = None
                try:
                    while len(batch) < BATCH_LIMIT:
                        more = bus.recv(0)
                        if more is None:
                            break
                        batch.append(more)
                except Exception as exc:
                    error = exc  # hand over what we have first, then report
                while not slots.acquire(timeout=RECV_TIMEOUT):
                    if stop.is_set():
                        return
                if not _post(loop, self._deliver, session, batch):
                    return
                last = clock()
                if error is not None:
                    raise error
        except Exception as exc:
            if not stop.is_set():
                _post(loop, self._fail, session, exc)
        finally:
            if session.thread_done is not None:
                _post(loop, _resolve, session.thread_done)
