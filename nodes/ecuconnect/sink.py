"""The ``ecuconnect_tcp_sink`` node: serve CAN frames to CANcorder over the ECUconnect protocol.

The seed's ``canlogger.py`` sends every frame to every client with a blocking ``sendall`` under
one lock, so one stuck client stops the bus and everyone else. This sink never waits for a
client:

* :meth:`EcuconnectTcpSink.consume` encodes each frame ONCE (:func:`.codec.encode`) and
  collects the packet; one flush per event-loop iteration joins them into one ``bytes``
  shared by all clients and publishes it to the broadcast core (:mod:`les02_flow.broadcast`,
  the same one ``ws_sink`` uses);
* each client is an ``asyncio.Protocol`` (write buffer high-water mark
  :data:`TRANSPORT_HIGH_WATER`) with a queue bounded by ``buffer`` bytes. While the transport
  is above its high-water mark (``pause_writing``), batches queue; when it drains
  (``resume_writing``) the whole queue goes out in ONE write;
* when a queue overflows, ``policy`` applies: drop the oldest batches (counted) or disconnect.

A peer that is alive but does not read keeps acknowledging what the kernel sent, so TCP never
times it out: it is a *stalled* client, left to ``policy`` (``clients_too_slow`` with
``disconnect``). A peer that acknowledges nothing (unplugged, powered off) is *dead*: TCP
keepalive / ``TCP_USER_TIMEOUT`` drop it after ``dead_peer_timeout`` (``clients_dead``).

The listening socket is bound by the node itself (``port: auto`` tries 42420 upwards and keeps
the first port that binds, no bind/close/re-bind race) and handed to ``loop.create_server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import can
from pydantic import Field, field_validator

from les02_flow.broadcast import Broadcaster, Client, Policy, format_peer, server_fields
from les02_flow.flushing import FlushScheduler
from les02_flow.node import Context, Kind, Node, NodeConfig, NodeStartError, RateLimitedLog

from .codec import EcuconnectProtocolError, encode
from .mdns import (
    DEFAULT_NAME_TEMPLATE,
    SERVICE_TYPE,
    Advertiser,
    advertised_addresses,
    check_name_template,
    format_service_name,
    short_hostname,
    txt_record,
    zeroconf_options,
)

__all__ = [
    "AUTO_PORT_FIRST",
    "AUTO_PORT_TRIES",
    "EcuconnectTcpSink",
    "EcuconnectTcpSinkConfig",
    "bind_listener",
    "keepalive_settings",
    "parse_networks",
]

#: ``port: auto`` tries this port first, then upwards (the seed's convention)
AUTO_PORT_FIRST = 42420
#: how many ports ``port: auto`` tries
AUTO_PORT_TRIES = 1000
#: transport write buffer marks (bytes): above HIGH a client counts as behind
TRANSPORT_HIGH_WATER = 64 * 1024
TRANSPORT_LOW_WATER = 16 * 1024
#: seconds ``stop()`` lets clients take what is queued before connections are aborted
FLUSH_TIMEOUT = 2.0
#: seconds ``stop()`` waits for the zeroconf goodbye
ZEROCONF_STOP_TIMEOUT = 4.0
#: TCP keepalive probes sent before a silent peer is declared dead
KEEPALIVE_PROBES = 3

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def keepalive_settings(timeout: float) -> tuple[int, int, int, int]:
    """``(TCP_KEEPIDLE s, TCP_KEEPINTVL s, TCP_KEEPCNT, TCP_USER_TIMEOUT ms)`` for a peer that
    must be declared dead within about ``timeout`` seconds (pure).

    Keepalive probes find a silent peer while the connection is idle; ``TCP_USER_TIMEOUT``
    while sent data stays unacknowledged (a peer that is alive but does not read keeps
    acknowledging, so it is left to the buffer ``policy``).

    >>> keepalive_settings(30)
    (15, 5, 3, 30000)
    >>> keepalive_settings(2)
    (1, 1, 3, 2000)
    """
    idle = max(1, int(timeout / 2))
    interval = max(1, int(timeout / 2 / KEEPALIVE_PROBES))
    return idle, interval, KEEPALIVE_PROBES, max(1, round(timeout * 1000))


def parse_networks(items: list[str]) -> list[Network]:
    """Client networks from an ``allow`` list (pure): CIDR or single addresses.

    Host bits are allowed (``192.168.1.7/24`` means ``192.168.1.0/24``); a bad entry raises
    ``ValueError`` naming it.

    >>> [str(n) for n in parse_networks(["192.168.1.7/24", "127.0.0.1", "fd00::/8"])]
    ['192.168.1.0/24', '127.0.0.1/32', 'fd00::/8']
    >>> parse_networks(["10.0.0.0/33"])
    Traceback (most recent call last):
    ValueError: allow: '10.0.0.0/33' is not an IP network (e.g. 192.168.1.0/24 or 10.0.0.5)
    """
    out: list[Network] = []
    for item in items:
        try:
            out.append(ipaddress.ip_network(str(item).strip(), strict=False))
        except ValueError:
            raise ValueError(
                f"allow: {item!r} is not an IP network (e.g. 192.168.1.0/24 or 10.0.0.5)"
            ) from None
    return out


def peer_allowed(host: str, networks: list[Network]) -> bool:
    """True when ``host`` (a peer address string) is in one of ``networks`` (pure).

    IPv4 peers on a dual-stack ``::`` socket arrive as ``::ffff:a.b.c.d`` and match IPv4
    networks. An empty list allows everyone.

    >>> nets = parse_networks(["192.168.1.0/24"])
    >>> peer_allowed("192.168.1.20", nets), peer_allowed("::ffff:192.168.1.20", nets)
    (True, True)
    >>> peer_allowed("10.0.0.1", nets), peer_allowed("not-an-ip", nets)
    (False, False)
    """
    if not networks:
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


_LIMITS = server_fields(
    host=(
        "127.0.0.1",
        "Address to listen on. 127.0.0.1 serves this machine only; 0.0.0.0 (all "
        "IPv4) or :: (IPv6 and IPv4) lets CANcorder connect from another machine.",
    ),
    buffer=1024 * 1024,
    buffer_unit="bytes beyond the client's socket buffers (a classic frame is 22 bytes, so "
    "1 MiB is about 47000 frames)",
    dropped="frames",
    on_full="closes that client",
    refusal="closed at once",
)


class EcuconnectTcpSinkConfig(NodeConfig):
    """Config of ``ecuconnect_tcp_sink``."""

    host: str = _LIMITS["host"]
    port: int | Literal["auto"] = Field(
        default="auto",
        description="TCP port, or 'auto': the first free port from 42420 upwards (bound once "
        "and kept). 0 picks any free port (tests).",
    )
    buffer: int = _LIMITS["buffer"]
    policy: Policy = _LIMITS["policy"]
    max_clients: int = _LIMITS["max_clients"]
    allow: list[str] = Field(
        default_factory=list,
        description="Client networks allowed to connect (CIDR like 192.168.1.0/24, or single "
        "addresses); others are closed at accept and counted in 'clients_denied'. Empty = "
        "anyone who can reach `host`.",
    )
    dead_peer_timeout: float | None = Field(
        default=30.0,
        gt=0,
        description="Seconds after which a client that acknowledges nothing (unplugged, "
        "powered off, out of Wi-Fi range) is dropped: TCP keepalive while idle, "
        "TCP_USER_TIMEOUT while data is unacknowledged. null = the OS defaults (hours).",
    )
    zeroconf: bool = Field(
        default=True,
        description="Advertise the logger by zeroconf/mDNS (_ecuconnect-log._tcp.local.) on the "
        "interfaces the server is bound to. Sends multicast: set false where that is unwanted.",
    )
    service_name: str = Field(
        default=DEFAULT_NAME_TEMPLATE,
        description="Zeroconf instance name; must start with 'ECUconnect-Logger'. Placeholders: "
        "{hostname} (short host name), {port} (the bound port).",
    )
    process: str = Field(
        default="les02-flow",
        description="Value of the TXT key 'process' (the seed publishes its script name).",
    )

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= 65535:
            raise ValueError(f"port {value} is out of range (0..65535, or 'auto')")
        return value

    @field_validator("allow")
    @classmethod
    def _allow(cls, value: list[str]) -> list[str]:
        parse_networks(value)
        return value

    @field_validator("service_name")
    @classmethod
    def _name(cls, value: str) -> str:
        check_name_template(value)
        return value


def _bind_one(family: int, sockaddr: Any) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            with contextlib.suppress(OSError):  # dual stack for "::"
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_listener(host: str, port: int | Literal["auto"]) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host`` (first ``getaddrinfo`` result).

    ``port="auto"`` tries :data:`AUTO_PORT_FIRST` and upwards and keeps the first that binds.
    Raises ``OSError`` (with a message naming host and ports) when nothing can be bound.
    """
    infos = socket.getaddrinfo(
        host, 0, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host!r}")
    family, _, _, _, sockaddr = infos[0]
    if port != "auto":
        return _bind_one(family, (sockaddr[0], port, *sockaddr[2:]))
    last: OSError | None = None
    for candidate in range(AUTO_PORT_FIRST, min(AUTO_PORT_FIRST + AUTO_PORT_TRIES, 65536)):
        try:
            return _bind_one(family, (sockaddr[0], candidate, *sockaddr[2:]))
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            last = exc
    raise OSError(
        errno.EADDRINUSE,
        f"no free port in {AUTO_PORT_FIRST}..{AUTO_PORT_FIRST + AUTO_PORT_TRIES - 1} "
        f"({last.strerror if last else 'in use'})",
    )


def _tune(sock: Any, dead_peer_timeout: float | None) -> None:
    """TCP_NODELAY, keepalive and the dead-peer timeout on a client socket (best effort)."""
    if sock is None:
        return
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if dead_peer_timeout is None:
        return
    idle, interval, count, user_timeout = keepalive_settings(dead_peer_timeout)
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", interval),
        ("TCP_KEEPCNT", count),
        ("TCP_USER_TIMEOUT", user_timeout),
    ):
        opt = getattr(socket, name, None)
        if opt is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, opt, value)


def _host_of(addr: Any) -> str:
    return str(addr[0]) if isinstance(addr, tuple) and addr else ""


class _Client(asyncio.Protocol):
    """One TCP client, and the broadcast core's Transport for it. Inbound bytes are read and
    ignored."""

    def __init__(self, sink: EcuconnectTcpSink) -> None:
        self.sink = sink
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        #: the core's record of this client, once admitted
        self.client: Client[_Client] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.peer = format_peer(transport.get_extra_info("peername"))
        _tune(transport.get_extra_info("socket"), self.sink.config.dead_peer_timeout)
        transport.set_write_buffer_limits(high=TRANSPORT_HIGH_WATER, low=TRANSPORT_LOW_WATER)
        self.sink._connected(self)

    def data_received(self, data: bytes) -> None:
        self.sink.counters.bump("inbound_ignored_bytes", len(data))

    def eof_received(self) -> bool:
        return False  # close our side too

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.queue.pause()

    def resume_writing(self) -> None:
        if self.client is not None and self.sink.clients.write_backlog(self.client):
            self.sink.counters.bump("coalesced_writes")

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.sink._disconnected(self, exc)

    # -- broadcast Transport --------------------------------------------------------------

    def ready(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def kick(self, reason: str) -> None:
        if self.transport is not None:
            self.transport.abort()

    def write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0


class EcuconnectTcpSink(Node[EcuconnectTcpSinkConfig]):
    """Serve CAN frames to CANcorder and other ECUconnect Logger clients over TCP.

    Every frame goes to every connected client as one ECUconnect packet (``u64 timestamp_us |
    u32 id | u8 flags | u8 length | payload``, big-endian; see ``docs/ecuconnect.md``), with
    the frame's own timestamp. Error frames are not sent (counter ``error_frames_skipped``);
    remote frames go out as length-0 data frames (the format has no RTR flag).

    Never blocks the stream: each frame is encoded once and the packets are joined into one
    write per client: a frame on a quiet bus goes out on the next event-loop iteration; on a
    busy bus (several frames per flush) writes are spaced 2 ms apart, so a saturated bus costs
    at most 500 writes per client per second and adds at most 2 ms. A client that falls behind
    has its data queued (``buffer`` bytes) and receives the backlog in one large write when its
    socket drains; on overflow ``policy: drop_oldest`` drops its oldest queued frames (counted
    in ``dropped``) and ``policy: disconnect`` closes it. Other clients and the bus are never
    delayed. Client sockets have TCP_NODELAY and keepalive on. A *stalled* client (alive, but
    not reading: it still acknowledges) is left to ``policy``; a *dead* one (unplugged, out of
    range: it acknowledges nothing) is dropped after ``dead_peer_timeout`` and counted in
    ``clients_dead``. Connects and disconnects are logged with the client totals. Clients
    beyond ``max_clients`` are closed at once (logged at most every 5 s); with
    an ``allow`` list, clients from other networks are closed at accept (counted in
    ``clients_denied``, logged rate-limited).

    ``port: auto`` binds the first free port from 42420 upwards, once. With ``zeroconf: true``
    the logger is advertised as ``_ecuconnect-log._tcp.local.`` with the instance name
    ``service_name`` and TXT keys ``system``, ``process``, ``interface``, ``channel``,
    ``bitrate`` (from the ``can_source`` that feeds this node) and ``port``, on the addresses
    the server is bound to (all non-loopback addresses for 0.0.0.0 / ::). A zeroconf failure is
    logged and the TCP server keeps running. On stop the service is unregistered (mDNS goodbye),
    queued data is flushed (at most 2 s) and clients are closed.

    Counters: ``out`` = frames handed to client sockets (one per client), ``dropped`` = frames
    a client did not get because of ``policy``; extra: ``clients_connected``,
    ``clients_disconnected``, ``clients_refused``, ``clients_denied``, ``clients_too_slow``,
    ``clients_dead``, ``coalesced_writes``, ``error_frames_skipped``, ``inbound_ignored_bytes``.
    """

    type_name: ClassVar[str] = "ecuconnect_tcp_sink"
    input_kind: ClassVar[Kind | None] = Kind.FRAME
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    examples: ClassVar[tuple[str, ...]] = (
        "tcp:\n  type: ecuconnect_tcp_sink\n  host: 127.0.0.1\n  zeroconf: false\n",
        "tcp:\n"
        "  type: ecuconnect_tcp_sink\n"
        "  host: 0.0.0.0\n"
        "  port: auto\n"
        "  service_name: ECUconnect-Logger lab bench {port}\n"
        "  process: les02-flow canlogger\n",
        "tcp:\n"
        "  type: ecuconnect_tcp_sink\n"
        "  port: 42424\n"
        "  buffer: 65536\n"
        "  policy: disconnect\n"
        "  max_clients: 4\n"
        "  zeroconf: false\n",
        "tcp:\n"
        "  type: ecuconnect_tcp_sink\n"
        "  host: 0.0.0.0\n"
        "  allow: [192.168.1.0/24, 10.0.0.5]\n"
        "  dead_peer_timeout: 20\n",
    )

    def __init__(self, node_id: str, config: EcuconnectTcpSinkConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        #: the bound port after start()
        self.port: int | None = None
        #: the registered zeroconf instance name, once registered
        self.service_name: str | None = None
        self._server: asyncio.Server | None = None
        #: the connected clients, their queues and counters (les02_flow.broadcast)
        self.clients: Broadcaster[_Client] = Broadcaster.for_node(
            self, unit="bytes", slack=None, noun="frame"
        )
        self._packets: list[bytes] = []
        self._flusher: FlushScheduler | None = None
        self._advertiser: Advertiser | None = None
        self._zc_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._stopped = False
        self._allow = parse_networks(config.allow)
        self._deny_log = RateLimitedLog(self.log)
        #: set when the zeroconf registration attempt ended (registered or failed)
        self.zeroconf_done: asyncio.Event | None = None

    @property
    def client_count(self) -> int:
        return len(self.clients)

    def held_bytes(self, client: Client[_Client]) -> int:
        """Bytes held for ``client`` beyond the kernel: its queue and the write buffer."""
        return client.queue.queued_bytes + client.transport.write_buffer_size()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and listen (NodeStartError when impossible); start zeroconf in the background."""
        if self._server is not None:
            return
        cfg = self.config
        loop = self.ctx.get_loop()
        try:
            sock = bind_listener(cfg.host, cfg.port)
        except (OSError, UnicodeError) as exc:
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise NodeStartError(
                f"ecuconnect_tcp_sink: cannot listen on {cfg.host} port {cfg.port}: {cause}"
            ) from exc
        try:
            self._server = await loop.create_server(lambda: _Client(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        bound = sock.getsockname()
        self.port = int(bound[1])
        self.log.info(
            "ECUconnect Logger listening on %s",
            format_peer(bound),
        )
        self.zeroconf_done = asyncio.Event()
        if cfg.zeroconf:
            self._zc_task = loop.create_task(
                self._advertise(str(bound[0])), name=f"zeroconf {self.node_id}"
            )
        else:
            self.zeroconf_done.set()

    async def _advertise(self, bound: str) -> None:
        assert self.port is not None and self.zeroconf_done is not None
        try:
            name = format_service_name(self.config.service_name, short_hostname(), self.port)
            addresses = advertised_addresses(bound)
            txt = txt_record(
                system=short_hostname(),
                process=self.config.process,
                port=self.port,
                bus_info=self.ctx.bus_info,
            )
            interfaces, version = zeroconf_options(bound)
            self._advertiser = Advertiser(interfaces, version, self.log)
            registered = await self._advertiser.register(name, self.port, txt, addresses)
            self.service_name = registered
            self.log.info(
                "zeroconf: advertising '%s' (%s) at %s port %d, TXT %s",
                registered,
                SERVICE_TYPE,
                ", ".join(addresses),
                self.port,
                " ".join(f"{k}={v}" for k, v in txt.items()),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.counters.bump("zeroconf_errors")
            self.log.error(
                "zeroconf registration failed, the logger is NOT "
                "advertised (TCP server on port %s keeps running): %s: %s",
                self.port,
                type(exc).__name__,
                exc,
            )
        finally:
            self.zeroconf_done.set()

    async def stop(self) -> None:
        """Say the zeroconf goodbye, flush what is queued (bounded), close clients and server."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping = True
        try:
            await self._shutdown()
        except Exception:  # stop() never raises
            self.log.exception("error while stopping")

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        task = self._zc_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)
        if self._advertiser is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._advertiser.close(), ZEROCONF_STOP_TIMEOUT)
            if self.service_name:
                self.log.info(
                    "zeroconf: '%s' unregistered",
                    self.service_name,
                )
        self._flush()
        protocols = [c.transport for c in self.clients]
        for client in self.clients:
            self.clients.write_backlog(client)
            t = client.transport.transport
            if t is not None:
                t.close()  # flushes the transport's buffer, then closes
        waits = [p.closed for p in protocols if not p.closed.done()]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=FLUSH_TIMEOUT)
            if pending:
                self.log.warning(
                    "%d client(s) did not take their data within %.0f s, aborting them",
                    len(pending),
                    FLUSH_TIMEOUT,
                )
                for p in protocols:
                    if not p.closed.done():
                        p.kick("shutdown")
                await asyncio.wait(pending, timeout=1.0)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if self._flusher is not None:
            self._flusher.cancel()

    # -- stream ----------------------------------------------------------------------------

    def consume(self, message: Any) -> None:
        """Encode one frame (only when someone listens) and schedule the batch flush."""
        if self.clients:
            self.consume_batch([message])

    def consume_batch(self, messages: list[Any]) -> None:
        """Encode a list of frames (the engine's batch path; :meth:`consume` is a list of
        one): error frames skipped and counted, anything not a ``can.Message`` or not
        encodable reported per message, one flush request for all the packets."""
        if not self.clients:
            return
        append = self._packets.append
        n = 0
        for message in messages:
            if type(message) is not can.Message and not isinstance(message, can.Message):
                self.report_error(message, TypeError("not a can.Message"))
                continue
            if message.is_error_frame:
                self.counters.bump("error_frames_skipped")
                continue
            try:
                append(encode(message))
            except EcuconnectProtocolError as exc:
                self.report_error(message, exc)
                continue
            n += 1
        if n:
            if self._flusher is None:
                self._flusher = FlushScheduler(self.ctx.get_loop(), self._flush)
            self._flusher.request(n)

    def _flush(self) -> None:
        """Send the batch: one joined ``bytes`` queued for every client, one write each.

        Runs on the next loop iteration after a frame; while the sink is busy (the last flush
        carried several frames) at most every 2 ms (:class:`les02_flow.flushing.FlushScheduler`),
        so under load 2 ms of frames go out in one write per client.
        """
        if self._flusher is not None:
            self._flusher.flushed()
        packets = self._packets
        if not packets:
            return
        self._packets = []
        data = packets[0] if len(packets) == 1 else b"".join(packets)
        if self.clients.publish(data, len(packets)):
            self.clients.flush()

    # -- connections (called by _Client) ----------------------------------------------------

    def _connected(self, proto: _Client) -> None:
        transport = proto.transport
        assert transport is not None
        if self._stopping:
            transport.abort()
            return
        if not peer_allowed(_host_of(transport.get_extra_info("peername")), self._allow):
            self.counters.bump("clients_denied")
            self._deny_log(
                logging.WARNING,
                "refused client %s: not in the allow list",
                proto.peer,
            )
            transport.abort()
            return
        proto.client = self.clients.admit(proto, proto.peer)
        if proto.client is None:  # max_clients
            transport.close()

    def _disconnected(self, proto: _Client, exc: Exception | None) -> None:
        client = proto.client
        if client is None:
            return
        if isinstance(exc, TimeoutError) or getattr(exc, "errno", None) == errno.ETIMEDOUT:
            self.counters.bump("clients_dead")
            why = f"dead peer: nothing acknowledged within dead_peer_timeout ({exc})"
        else:
            why = f"{type(exc).__name__}: {exc}" if exc else "closed"
        self.clients.remove(client, why)
