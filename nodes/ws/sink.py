"""The ``ws_sink`` node: broadcast events to WebSocket clients, one bounded buffer per client.

Unlike the seed's listener (``asyncio.gather`` over every client per event, no buffering), the
sink never awaits a client: :meth:`WsSink.consume` encodes the event once, appends it to each
interested client's bounded :class:`OutboundBuffer` and wakes that client's writer task. One
slow or dead client only ever fills its own buffer; the configured policy then drops its oldest
messages or disconnects it, and every other client goes on at its own pace.

The plain-Python parts (no asyncio, no sockets) are :func:`parse_types_query` and
:class:`OutboundBuffer`; :class:`WsSink` wires them to ``websockets.asyncio.server``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Origin

from les02_flow.events import encode_event
from les02_flow.flushing import FlushScheduler
from les02_flow.node import Context, Kind, Node, NodeConfig, NodeStartError

__all__ = [
    "BURST_SLACK",
    "FLUSH_TIMEOUT",
    "OutboundBuffer",
    "Policy",
    "TypeFilterError",
    "WsSink",
    "WsSinkConfig",
    "parse_types_query",
]

Policy = Literal["drop_oldest", "disconnect"]

#: seconds ``stop()`` waits for clients to receive what is queued and answer the close frame
FLUSH_TIMEOUT = 2.0
#: seconds a closing handshake may take before the TCP connection is aborted
CLOSE_TIMEOUT = 2.0
#: messages a client may queue beyond ``buffer`` while its writer is NOT behind (it just has
#: not run yet because the upstream handed over a burst in one loop iteration; can_source
#: hands over at most 4 x 512 frames at once)
BURST_SLACK = 4096
#: a close reason must fit in a control frame: 125 bytes minus the 2-byte code
_MAX_REASON_BYTES = 123
_TYPE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


# -- plain logic -------------------------------------------------------------------------------


class TypeFilterError(ValueError):
    """The ``?types=`` query of a client's URL is malformed; the message says why."""


def parse_types_query(path: str) -> frozenset[str] | None:
    """The set of event types a client asked for in its request path, ``None`` for all types.

    ``path`` is the request target (``/``, ``/?types=ride_start,ride_end``). Rules:

    * no query string, or an empty one: all types (``None``);
    * ``types`` is a comma-separated list of snake_case type names; blanks around names and
      empty items (``a,,b``) are ignored; ``types`` may repeat (the lists are merged);
    * names are not checked against a fixed list (flows may add types); a name that matches no
      event simply selects nothing;
    * a ``types`` that names nothing (``?types=``), a name that is not snake_case, or any other
      query parameter (a typo such as ``?type=`` must not silently mean "everything") raises
      :class:`TypeFilterError`; the sink then closes that client with code 1008 and the message
      as the reason.

    >>> parse_types_query("/") is None
    True
    >>> sorted(parse_types_query("/?types=ride_end, ride_start,,"))
    ['ride_end', 'ride_start']
    >>> try:
    ...     parse_types_query("/?types=")
    ... except TypeFilterError as exc:
    ...     print(exc)
    empty ?types= filter: name at least one type, or omit the query for all types
    """
    query = urlsplit(path).query
    if not query:
        return None
    names: set[str] = set()
    if all(key == "token" for key, _ in parse_qsl(query, keep_blank_values=True)):
        return None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key == "token":  # authentication, checked at the handshake (see WsSink)
            continue
        if key != "types":
            raise TypeFilterError(
                f"unknown query parameter {_clip(key)!r} (only 'types' is supported,"
                " e.g. ?types=position_sample,ride_end)"
            )
        for item in value.split(","):
            name = item.strip()
            if not name:
                continue
            if not _TYPE_NAME.match(name):
                raise TypeFilterError(f"bad event type {_clip(name)!r} in ?types= (snake_case)")
            names.add(name)
    if not names:
        raise TypeFilterError(
            "empty ?types= filter: name at least one type, or omit the query for all types"
        )
    return frozenset(names)


class OutboundBuffer:
    """Bounded FIFO of encoded messages waiting for one client (plain Python, no asyncio).

    :meth:`push` never blocks. When the buffer already holds ``capacity`` messages, the policy
    applies: ``drop_oldest`` discards the oldest queued messages (counted in :attr:`dropped`)
    and keeps the new one; ``disconnect`` discards everything, marks the buffer
    :attr:`overflowed` and returns ``False``: the caller must disconnect that client. An
    overflowed buffer refuses further messages (``push`` returns ``False`` and counts them).

    ``push(item, burst=True)`` says the consumer is not behind -- it has simply not run since
    a burst began (a whole batch of frames handed over in one event-loop iteration): then the
    buffer may hold up to ``capacity + BURST_SLACK`` messages before the policy applies, so a
    client that keeps up never loses messages to the burst size.

    >>> buf = OutboundBuffer(2, "drop_oldest")
    >>> [buf.push(m) for m in (b"1", b"2", b"3")], list(buf), buf.dropped
    ([True, True, True], [b'2', b'3'], 1)
    >>> buf = OutboundBuffer(2, "disconnect")
    >>> [buf.push(m) for m in (b"1", b"2", b"3")], list(buf), buf.dropped, buf.overflowed
    ([True, True, False], [], 3, True)
    >>> buf = OutboundBuffer(2, "disconnect")
    >>> [buf.push(m, burst=True) for m in (b"1", b"2", b"3")], len(buf), buf.dropped
    ([True, True, True], 3, 0)
    """

    def __init__(self, capacity: int, policy: Policy) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.policy: Policy = policy
        self.dropped = 0
        self.overflowed = False
        self._items: deque[bytes] = deque()

    def push(self, item: bytes, *, burst: bool = False) -> bool:
        """Queue ``item``; ``False`` means the client overflowed under ``disconnect``."""
        if self.overflowed:
            self.dropped += 1
            return False
        items = self._items
        n = len(items)
        if n >= self.capacity and not (burst and n < self.capacity + BURST_SLACK):
            if self.policy == "disconnect":
                self.dropped += n + 1
                items.clear()
                self.overflowed = True
                return False
            while len(items) >= self.capacity:
                items.popleft()
                self.dropped += 1
        items.append(item)
        return True

    def pop(self) -> bytes:
        """The oldest queued message (``IndexError`` when empty)."""
        return self._items.popleft()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Any:
        return iter(self._items)

    def take_all(self) -> list[bytes]:
        """Every queued message, oldest first; the buffer is empty afterwards."""
        items = list(self._items)
        self._items.clear()
        return items


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2) as a server sends it.

    Server frames are never masked, so the bytes are the same for every client: the sink
    builds them once per event.

    >>> text_frame(b"hi")
    b'\\x81\\x02hi'
    >>> text_frame(bytes(200))[:4], text_frame(bytes(70000))[:10]
    (b'\\x81~\\x00\\xc8', b'\\x81\\x7f\\x00\\x00\\x00\\x00\\x00\\x01\\x11p')
    """
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return bytes((0x81, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x81, 127)) + n.to_bytes(8, "big") + payload


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _close_reason(text: str) -> str:
    """``text`` cut to what a close frame can carry (123 UTF-8 bytes)."""
    data = text.encode()
    if len(data) <= _MAX_REASON_BYTES:
        return text
    return data[: _MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


# -- node --------------------------------------------------------------------------------------


class WsSinkConfig(NodeConfig):
    """Config of ``ws_sink``."""

    host: str = Field(
        default="localhost",
        min_length=1,
        description="Address to listen on. 'localhost' serves this machine only; 0.0.0.0 or "
        ":: expose the event stream to the network.",
    )
    port: int = Field(
        default=8765,
        ge=0,
        le=65535,
        description="TCP port. 0 picks a free port (use a single-address host such as "
        "127.0.0.1 then); the node reports it in the log.",
    )
    buffer: int = Field(
        default=1000,
        ge=1,
        description="Most messages queued per client; beyond that `policy` applies.",
    )
    policy: Policy = Field(
        default="drop_oldest",
        description="When a client's buffer is full: 'drop_oldest' drops its oldest queued "
        "message and counts it; 'disconnect' closes that client (code 1008 'too slow').",
    )
    max_clients: int = Field(
        default=64,
        ge=1,
        description="Most clients at once; further ones are closed with code 1013 and counted.",
    )
    max_message_size: int = Field(
        default=4096,
        ge=1,
        description="Largest inbound message in bytes. Inbound messages are read and ignored; "
        "a larger one closes that client (code 1009).",
    )
    ping_interval: float | None = Field(
        default=20.0,
        gt=0,
        description="Seconds between keepalive pings; null disables pings.",
    )
    ping_timeout: float | None = Field(
        default=20.0,
        gt=0,
        description="Seconds to wait for a pong before closing a dead client; null waits forever.",
    )
    token_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable holding a shared secret. When set, a "
        "client must present it at the handshake (`Authorization: Bearer <token>` or "
        "`?token=<token>`), else it gets HTTP 401. The variable must be set and non-empty "
        "when the node starts. The secret never appears in the flow file.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to connect (e.g. 'http://ui.local:8080'); "
        "empty = any. Clients that send no Origin header (non-browser tools) are allowed. "
        "Others get HTTP 403.",
    )


@dataclass(eq=False)
class _Client:
    ws: ServerConnection
    peer: str
    types: frozenset[str] | None
    buffer: OutboundBuffer
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: set by stop(): flush what is queued, then close with 1001
    shutdown: bool = False
    #: why the server dropped this client, for the disconnect log line
    kicked: str = ""
    #: the writer is suspended in ``send``: the connection is above its write limit (behind)
    blocked: bool = False


class WsSink(Node[WsSinkConfig]):
    """Serve events to WebSocket clients as JSON text messages, one event per message.

    Each event is encoded once (``les02_flow.events.encode_event``, UTF-8) and the same bytes
    are queued for every client that wants it; the JSON text is exactly the envelope of
    ``docs/protocol.md``. Connect with ``ws://HOST:PORT/`` for all events or
    ``ws://HOST:PORT/?types=position_sample,ride_end`` for some types (any path is accepted).
    A malformed filter (``?types=``, a name that is not snake_case, an unknown query
    parameter) closes that client with code 1008 and a reason saying what is wrong.

    Sending never blocks the stream: every client has its own bounded buffer (``buffer``
    messages). Queued frames go out in one write per client: an event on a quiet stream on the
    next event-loop iteration; on a busy one (several events per flush) writes are spaced 2 ms
    apart, which caps the writes at 500 per client per second and adds at most 2 ms. A client
    that is behind is served by its own writer task. When a client cannot keep up and its buffer
    is full, ``policy: drop_oldest`` drops its oldest queued messages (counted in ``dropped``
    and logged per client on disconnect) and ``policy: disconnect`` closes it with code 1008
    "too slow". Other clients are never delayed. A client counts as behind only while its
    connection is above its write limit; a burst the upstream hands over in one loop iteration
    may exceed ``buffer`` by up to 4096 messages for a client that keeps up, so a fast client
    never loses messages to burst size. Memory per client is therefore bounded by ``buffer`` (+
    the burst) queued messages -- the encoded bytes are shared by all clients -- plus
    websockets' 32 KiB write buffer. Inbound messages are read and ignored; one larger than
    ``max_message_size`` closes that client (1009). Beyond ``max_clients`` new clients are
    closed with code 1013. On stop, queued messages are flushed (at most 2 s) and clients are
    closed with code 1001 "server shutting down".

    Counters: ``out`` = messages handed to client connections, ``dropped`` = messages a client
    did not get because of its buffer policy; extra: ``clients_connected``,
    ``clients_disconnected``, ``clients_refused`` (max_clients), ``clients_bad_filter``,
    ``clients_too_slow``, ``inbound_ignored``. Per-message compression is off: it would
    compress every message once per client.
    """

    type_name: ClassVar[str] = "ws_sink"
    input_kind: ClassVar[Kind | None] = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    examples: ClassVar[tuple[str, ...]] = (
        "ws:\n  type: ws_sink\n",
        "ws:\n  type: ws_sink\n  host: 127.0.0.1\n  port: 9000\n",
        "ws:\n  type: ws_sink\n  buffer: 200\n  policy: disconnect\n  max_clients: 8\n",
    )

    def __init__(self, node_id: str, config: WsSinkConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        #: the bound port after start() (the configured one, or the one picked for port 0)
        self.port: int = config.port
        self._server: Server | None = None
        self._clients: dict[_Client, None] = {}  # insertion-ordered set
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._flusher: FlushScheduler | None = None
        self._token: bytes | None = None

    @property
    def client_count(self) -> int:
        """Clients currently receiving events."""
        return len(self._clients)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port; raise :class:`NodeStartError` when that is impossible."""
        if self._server is not None:
            return
        cfg = self.config
        self._flusher = FlushScheduler(asyncio.get_running_loop(), self._flush)
        # websockets logs every connection at INFO; this node logs its own lines (with the
        # client count), so keep the library's to warnings unless configured otherwise.
        ws_log = self.log.getChild("websockets")
        if ws_log.level == logging.NOTSET:
            ws_log.setLevel(logging.WARNING)
        if cfg.token_env is not None:
            secret = os.environ.get(cfg.token_env, "")
            if not secret:
                raise NodeStartError(
                    f"ws_sink: token_env names ${cfg.token_env}, which is not set or empty"
                )
            self._token = secret.encode()
        origins: list[Origin | None] | None = None
        if cfg.allowed_origins:
            origins = [*(Origin(o) for o in cfg.allowed_origins), None]
        try:
            self._server = await serve(
                self._handle,
                cfg.host,
                cfg.port,
                process_request=self._authenticate if self._token is not None else None,
                origins=origins,
                compression=None,
                max_size=cfg.max_message_size,
                ping_interval=cfg.ping_interval,
                ping_timeout=cfg.ping_timeout,
                close_timeout=CLOSE_TIMEOUT,
                logger=ws_log,
            )
        except (OSError, OverflowError, UnicodeError) as exc:
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise NodeStartError(
                f"ws_sink: cannot listen on {cfg.host}:{cfg.port}: {cause}"
            ) from exc
        addresses = [s.getsockname() for s in self._server.sockets]
        if addresses:
            self.port = int(addresses[0][1])
        self.log.info(
            "ws_sink '%s': listening on %s",
            self.node_id,
            ", ".join(_ws_url(a) for a in addresses),
        )

    async def stop(self) -> None:
        """Flush queued messages (bounded), close clients with 1001, close the server."""
        if self._stopping:
            return
        self._stopping = True
        server = self._server
        if server is None:
            return
        try:
            await self._shutdown(server)
        except Exception:  # stop() never raises
            self.log.exception("ws_sink '%s': error while stopping", self.node_id)

    async def _shutdown(self, server: Server) -> None:
        server.close(close_connections=False)  # stop accepting; handshakes in progress get 503
        if self._flusher is not None:
            self._flusher.cancel()  # the writers flush what is queued
        for client in self._clients:
            client.shutdown = True
            client.wake.set()
        # Every connection handler (ours, and refusals in their closing handshake) must end.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        pending = set(server.handler_tasks) | self._tasks
        if pending:
            _, pending = await asyncio.wait(pending, timeout=FLUSH_TIMEOUT)
        if pending:
            self.log.warning(
                "ws_sink '%s': %d client(s) did not close within %.0f s, aborting them",
                self.node_id,
                len(server.all_connections),
                FLUSH_TIMEOUT,
            )
            for ws in list(server.all_connections):
                ws.transport.abort()
        remaining = max(deadline - loop.time(), 0.0) + 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), remaining)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)

    # -- stream ----------------------------------------------------------------------------

    def consume(self, message: Any) -> None:
        """Queue one event for every client that wants it (never awaits, never blocks).

        The event is encoded only when at least one client wants it; an event that cannot be
        encoded (not an envelope, not JSON-serializable) is counted as an error and skipped.
        """
        if not self._clients:
            return
        try:
            type_ = message["type"]
        except (TypeError, KeyError, IndexError) as exc:
            self.report_error(message, ValueError(f"not an event envelope ({exc!r})"))
            return
        data: bytes | None = None
        for client in list(self._clients):
            if client.types is not None and type_ not in client.types:
                continue
            if data is None:
                try:
                    data = text_frame(encode_event(message).encode())
                except (TypeError, ValueError) as exc:
                    self.report_error(message, exc)
                    return
            before = client.buffer.dropped
            if client.buffer.push(data, burst=not client.blocked):
                self.counters.dropped += client.buffer.dropped - before
            else:
                self.counters.dropped += client.buffer.dropped - before
                self._kick_slow(client)
        if data is not None and self._flusher is not None:
            self._flusher.request()

    def _flush(self) -> None:
        """One transport write per client for everything queued since the last flush.

        Flushes run on the next loop iteration after an event; while the sink is busy (the last
        flush carried several events) at most every 2 ms
        (:class:`les02_flow.flushing.FlushScheduler`), so under load 2 ms of events go out in
        one write per client instead of one per hand-over. Clients that
        are behind (their socket's write buffer is above the high-water mark) are left to
        their writer task, which waits for the socket to drain.
        """
        if self._flusher is not None:
            self._flusher.flushed()
        emitted = 0
        for client in self._clients:
            if not client.buffer or client.blocked:
                continue
            ws = client.ws
            if ws.protocol.state is not State.OPEN:
                continue
            if ws.paused:
                client.wake.set()
                continue
            frames = client.buffer.take_all()
            ws.transport.write(b"".join(frames))
            emitted += len(frames)
        self.counters.emitted += emitted

    def _kick_slow(self, client: _Client) -> None:
        """Disconnect a client whose buffer overflowed under ``policy: disconnect``."""
        self._clients.pop(client, None)
        self.counters.bump("clients_too_slow")
        reason = f"too slow: more than {self.config.buffer} messages queued"
        client.kicked = reason
        task = asyncio.get_running_loop().create_task(
            client.ws.close(CloseCode.POLICY_VIOLATION, reason)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connections -----------------------------------------------------------------------

    def _authenticate(self, connection: ServerConnection, request: Request) -> Response | None:
        """Handshake check when ``token_env`` is set: HTTP 401 unless the token matches."""
        assert self._token is not None
        given = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            given = header[len("Bearer ") :].strip()
        else:
            for key, value in parse_qsl(urlsplit(request.path).query):
                if key == "token":
                    given = value
        if given and hmac.compare_digest(given.encode(), self._token):
            return None
        self.counters.bump("clients_unauthorized")
        self.log.warning(
            "ws_sink '%s': refused client %s: %s token",
            self.node_id,
            _peer(connection),
            "wrong" if given else "missing",
        )
        return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")

    async def _handle(self, ws: ServerConnection) -> None:
        """One client: check filter and limits, start its writer, read (and ignore) inbound."""
        peer = _peer(ws)
        path = ws.request.path if ws.request is not None else "/"
        try:
            types = parse_types_query(path)
        except TypeFilterError as exc:
            self.counters.bump("clients_bad_filter")
            self.log.warning("ws_sink '%s': refused client %s: %s", self.node_id, peer, exc)
            await ws.close(CloseCode.POLICY_VIOLATION, _close_reason(str(exc)))
            return
        if self._stopping:
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        if len(self._clients) >= self.config.max_clients:
            self.counters.bump("clients_refused")
            self.log.warning(
                "ws_sink '%s': refused client %s: already %d clients (max_clients)",
                self.node_id,
                peer,
                len(self._clients),
            )
            await ws.close(
                CloseCode.TRY_AGAIN_LATER, f"too many clients (max {self.config.max_clients})"
            )
            return

        client = _Client(ws, peer, types, OutboundBuffer(self.config.buffer, self.config.policy))
        self._clients[client] = None
        self.counters.bump("clients_connected")
        self.log.info(
            "ws_sink '%s': client %s connected (types: %s). Total clients: %d",
            self.node_id,
            peer,
            ",".join(sorted(types)) if types is not None else "all",
            len(self._clients),
        )
        writer = asyncio.get_running_loop().create_task(self._write(client))
        try:
            async for _ in ws:  # inbound messages are read and ignored
                self.counters.bump("inbound_ignored")
        except ConnectionClosed:
            pass
        finally:
            self._clients.pop(client, None)
            if not writer.done():
                writer.cancel()
            await asyncio.wait([writer])
            if not writer.cancelled() and writer.exception() is not None:
                self.log.error(
                    "ws_sink '%s': writer for %s failed",
                    self.node_id,
                    peer,
                    exc_info=writer.exception(),
                )
            self.counters.bump("clients_disconnected")
            self.log.info(
                "ws_sink '%s': client %s disconnected (%s), %d message(s) dropped. "
                "Total clients: %d",
                self.node_id,
                peer,
                client.kicked or _describe_close(ws),
                client.buffer.dropped,
                len(self._clients),
            )

    async def _write(self, client: _Client) -> None:
        """A client's writer: takes over while the client is behind, and closes it on stop.

        The buffer holds ready-made text frames (built once per event for all clients). In
        the normal case :meth:`_flush` writes a client's whole queue in ONE transport write per
        loop iteration -- one system call per client, not per message, and no task switch.
        When the connection's write buffer is above its high-water mark (the client is
        behind), :meth:`_flush` wakes this task, which waits for the socket to drain; the
        buffer policy applies to what accumulates meanwhile. Frames are written only while the
        connection is OPEN, so they never follow a close frame; websockets still does the
        handshake, pings and the closing handshake.
        """
        ws, buffer, wake = client.ws, client.buffer, client.wake
        transport = ws.transport
        try:
            while True:
                while buffer:
                    if ws.protocol.state is not State.OPEN:
                        return
                    if ws.paused:  # behind: let the socket drain first
                        client.blocked = True
                        await ws.drain()
                        client.blocked = False
                        continue
                    frames = buffer.take_all()
                    transport.write(b"".join(frames))
                    self.counters.emitted += len(frames)
                    await asyncio.sleep(0)  # let pause_writing() and other clients run
                if client.shutdown:
                    await ws.close(CloseCode.GOING_AWAY, "server shutting down")
                    return
                wake.clear()
                await wake.wait()
        except ConnectionClosed:
            return


def _peer(ws: ServerConnection) -> str:
    try:
        address = ws.remote_address
    except Exception:  # transport already gone
        address = None
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address) if address else "?"


def _ws_url(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"ws://[{host}]:{port}" if ":" in str(host) else f"ws://{host}:{port}"


def _describe_close(ws: ServerConnection) -> str:
    code = ws.close_code
    if code is None:
        return "connection lost"
    reason = ws.close_reason
    return f"code {code}" + (f" {reason!r}" if reason else "")
