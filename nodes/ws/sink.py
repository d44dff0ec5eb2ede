"""The ``ws_sink`` node: broadcast events to WebSocket clients, one bounded queue per client.

Unlike the seed's listener (``asyncio.gather`` over every client per event, no buffering), the
sink never awaits a client: :meth:`WsSink.consume` encodes the event once and publishes the
frame to the broadcast core (:mod:`les02_flow.broadcast`), which queues it for every
interested client and writes each client's queue in one write per flush. One slow or dead
client only ever fills its own queue; the configured policy then drops its oldest messages or
disconnects it, and every other client goes on at its own pace.

The plain-Python parts (no asyncio, no sockets) are :func:`parse_types_query` and the core;
the websockets side is :mod:`les02_flow.wscompat`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import re
from collections.abc import Mapping
from http import HTTPStatus
from json import encoder as json_encoder
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from pydantic import Field
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Origin

from les02_flow.broadcast import Broadcaster, Client, Policy, format_peer, server_fields
from les02_flow.events import encode_event
from les02_flow.flushing import FlushScheduler
from les02_flow.node import Context, Kind, Node, NodeConfig, NodeStartError
from les02_flow.wscompat import GuardedServerConnection, WsPeer, describe_close, text_frame

__all__ = [
    "BURST_SLACK",
    "FLUSH_TIMEOUT",
    "Policy",
    "TypeFilterError",
    "WsSink",
    "WsSinkConfig",
    "event_json",
    "parse_types_query",
]

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


_POSITION_KEYS = ("proto", "type", "ts", "source", "payload")
_POSITION_PAYLOAD = ("channel", "position_raw")
_POSITION_JSON = (
    '{"proto": %d, "type": %s, "ts": %s, "source": %s, '
    '"payload": {"channel": %s, "position_raw": %d}}'
)
_INF = float("inf")


def event_json(event: Any) -> str:
    """``encode_event(event)``, the same text; ``position_sample`` events (most of the stream)
    of the usual shape without the general encoder: one formatting of a fixed template.

    The shortcut applies only to a plain dict with exactly the envelope's keys in order and a
    payload of exactly ``channel`` (str) and ``position_raw`` (int), ``proto`` an int, ``ts`` a
    finite float, ``type``/``source`` str; strings are escaped by the very function the JSON
    encoder uses. Everything else goes to :func:`les02_flow.events.encode_event` (tests compare
    both on random events).

    >>> from les02_flow.events import make_event
    >>> e = make_event("position_sample", 1.5, {"channel": "master", "position_raw": 144})
    >>> event_json(e) == encode_event(e)
    True
    """
    if type(event) is dict and len(event) == 5:
        payload = event.get("payload")
        if type(payload) is dict and len(payload) == 2:
            try:
                proto, type_, ts, source, _ = event.values()
                channel, raw = payload.values()
            except ValueError:  # (changed size while unpacking: not ours to judge)
                return encode_event(event)
            if (
                type(ts) is float
                and -_INF < ts < _INF
                and type(proto) is int
                and type(raw) is int
                and type(type_) is str
                and type(source) is str
                and type(channel) is str
                and tuple(event) == _POSITION_KEYS
                and tuple(payload) == _POSITION_PAYLOAD
            ):
                return _POSITION_JSON % (
                    proto, _quote(type_), _float(ts), _quote(source), _quote(channel), raw
                )  # fmt: skip
    return encode_event(event)


_quote = json_encoder.encode_basestring  # what json.JSONEncoder(ensure_ascii=False) uses
_float = float.__repr__  # what the JSON encoder writes for a finite float


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _close_reason(text: str) -> str:
    """``text`` cut to what a close frame can carry (123 UTF-8 bytes)."""
    data = text.encode()
    if len(data) <= _MAX_REASON_BYTES:
        return text
    return data[: _MAX_REASON_BYTES - 3].decode(errors="ignore") + "..."


# -- node --------------------------------------------------------------------------------------


_LIMITS = server_fields(
    host=(
        "localhost",
        "Address to listen on. 'localhost' serves this machine only; 0.0.0.0 or "
        ":: expose the event stream to the network.",
    ),
    buffer=1000,
    buffer_unit="messages",
    dropped="messages",
    on_full="closes that client (code 1008 'too slow')",
    refusal="closed with code 1013",
)


class WsSinkConfig(NodeConfig):
    """Config of ``ws_sink``."""

    host: str = _LIMITS["host"]
    port: int = Field(
        default=8765,
        ge=0,
        le=65535,
        description="TCP port. 0 picks a free port (use a single-address host such as "
        "127.0.0.1 then); the node reports it in the log.",
    )
    buffer: int = _LIMITS["buffer"]
    policy: Policy = _LIMITS["policy"]
    max_clients: int = _LIMITS["max_clients"]
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
    closed with code 1013 (logged at most every 5 s). A client that sends pings (or anything
    websockets answers by itself) faster than it reads is closed with code 1008 once 64 KiB
    of answers wait unread (``clients_control_flood``). On stop, queued messages are flushed
    (at most 2 s) and clients are closed with code 1001 "server shutting down".

    Counters: ``out`` = messages handed to client connections, ``dropped`` = messages a client
    did not get because of its buffer policy; extra: ``clients_connected``,
    ``clients_disconnected``, ``clients_refused`` (max_clients), ``clients_bad_filter``,
    ``clients_too_slow``, ``clients_control_flood``, ``inbound_ignored``. Per-message
    compression is off: it would compress every message once per client.
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
        #: the connected clients, their queues and counters (les02_flow.broadcast)
        self.clients: Broadcaster[WsPeer] = Broadcaster.for_node(self, slack=BURST_SLACK)
        self._stopping = False
        self._flusher: FlushScheduler | None = None
        self._token: bytes | None = None
        # frames encoded since the last flush and their event types (published in one go)
        self._frames: list[bytes] = []
        self._types: list[str] = []

    @property
    def client_count(self) -> int:
        """Clients currently receiving events."""
        return len(self.clients)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port; raise :class:`NodeStartError` when that is impossible."""
        if self._server is not None:
            return
        cfg = self.config
        self._flusher = FlushScheduler(asyncio.get_running_loop(), self._flush)
        # websockets logs every connection at INFO; this node logs its own lines (with the
        # client count), so keep the library's to warnings unless configured otherwise.
        ws_log = self.ctx.library_log("websockets")
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
                create_connection=GuardedServerConnection,
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
            "listening on %s",
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
            self.log.exception("error while stopping")

    async def _shutdown(self, server: Server) -> None:
        server.close(close_connections=False)  # stop accepting; handshakes in progress get 503
        if self._flusher is not None:
            self._flusher.cancel()  # the writers flush what is queued
        self._publish_pending()  # encoded, not yet published: queue it for the writers
        for client in self.clients:
            client.transport.close_gracefully()
        # Every connection handler (ours, and refusals in their closing handshake) must end.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_TIMEOUT
        pending = set(server.handler_tasks)
        if pending:
            _, pending = await asyncio.wait(pending, timeout=FLUSH_TIMEOUT)
        if pending:
            self.log.warning(
                "%d client(s) did not close within %.0f s, aborting them",
                len(server.all_connections),
                FLUSH_TIMEOUT,
            )
            for ws in list(server.all_connections):
                ws.transport.abort()
        remaining = max(deadline - loop.time(), 0.0) + 1.0
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), remaining)

    # -- stream ----------------------------------------------------------------------------

    def consume(self, message: Any) -> None:
        """Queue one event for every client that wants it (never awaits, never blocks).

        The event is encoded only when at least one client wants it; an event that cannot be
        encoded (not an envelope, not JSON-serializable) is counted as an error and skipped.
        """
        clients = self.clients
        if not clients:
            return
        try:
            type_ = message["type"]
        except (TypeError, KeyError, IndexError) as exc:
            self.report_error(message, ValueError(f"not an event envelope ({exc!r})"))
            return
        if not clients.wants(type_):
            return
        try:
            frame = text_frame(event_json(message).encode())
        except (TypeError, ValueError) as exc:
            self.report_error(message, exc)
            return
        self._frames.append(frame)
        self._types.append(type_)
        if self._flusher is not None:
            self._flusher.request()

    def _flush(self) -> None:
        """One transport write per client for everything queued since the last flush.

        Flushes run on the next loop iteration after an event; while the sink is busy (the last
        flush carried several events) at most every 2 ms
        (:class:`les02_flow.flushing.FlushScheduler`), so under load 2 ms of events go out in
        one write per client instead of one per hand-over. Clients that are behind (their
        socket's write buffer is above the high-water mark) are left to their writer task,
        which waits for the socket to drain.
        """
        if self._flusher is not None:
            self._flusher.flushed()
        self._publish_pending()
        self.clients.flush()

    def _publish_pending(self) -> None:
        """Hand the frames encoded since the last flush to the core: one chunk per client."""
        frames = self._frames
        if frames:
            types = self._types
            self._frames, self._types = [], []
            self.clients.publish_many(frames, types)

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
            "refused client %s: %s token",
            _peer(connection),
            "wrong" if given else "missing",
        )
        return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token\n")

    def _control_flood(self, peer: str, unread: int) -> None:
        self.counters.bump("clients_control_flood")
        self.log.warning(
            "closing client %s (1008): %d bytes of pongs it does not read (ping flood)",
            peer,
            unread,
        )

    async def _handle(self, ws: ServerConnection) -> None:
        """One client: check filter and limits, then serve it until it is gone."""
        peer = _peer(ws)
        if isinstance(ws, GuardedServerConnection):
            ws.on_control_flood = lambda unread: self._control_flood(peer, unread)
        path = ws.request.path if ws.request is not None else "/"
        try:
            types = parse_types_query(path)
        except TypeFilterError as exc:
            self.counters.bump("clients_bad_filter")
            self.log.warning("refused client %s: %s", peer, exc)
            await ws.close(CloseCode.POLICY_VIOLATION, _close_reason(str(exc)))
            return
        if self._stopping:
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        transport = WsPeer(ws)
        detail = "types: " + (",".join(sorted(types)) if types is not None else "all")
        client = self.clients.admit(transport, peer, types, detail)
        if client is None:
            await ws.close(
                CloseCode.TRY_AGAIN_LATER, f"too many clients (max {self.config.max_clients})"
            )
            return
        try:
            await transport.serve(self.clients, client, self._inbound)
        finally:
            self.clients.remove(client, describe_close(ws))

    def _inbound(self, message: str | bytes) -> None:
        self.counters.bump("inbound_ignored")  # inbound messages are read and ignored

    def held_bytes(self, client: Client[WsPeer]) -> int:
        """Bytes held for ``client`` beyond the kernel: its queue and the write buffer."""
        return client.queue.queued_bytes + client.transport.write_buffer_size()


def _peer(ws: ServerConnection) -> str:
    try:
        address = ws.remote_address
    except Exception:  # transport already gone
        address = None
    return format_peer(address)


def _ws_url(sockname: Any) -> str:
    host, port = sockname[0], sockname[1]
    return f"ws://[{host}]:{port}" if ":" in str(host) else f"ws://{host}:{port}"
