"""The ``web_console`` node: a page and a small HTTP API that show the running flow, the lift
and the rides in a browser, served by les02-flow itself (works offline).

HTTP and the live WebSocket share one port, served by ``websockets`` (already a dependency):
its ``process_request`` hook answers plain ``GET`` requests (the page, the API, ``/healthz``,
``/metrics``) and lets ``/ws`` go on to the WebSocket handshake. One connection per request
(``Connection: close``); the API is read-only, so ``GET`` is all it needs. See
``docs/web-console.md``.

The stream side is cheap: :meth:`WebConsole.consume` only updates :class:`LiveState` (a few
dictionary operations per event); a timer turns that into ONE ``tick`` message per update
period (``update_rate``, at most 30 per second) for all browsers, encoded once. Each browser
has a bounded queue (the broadcast core, ``les02_flow.broadcast``, ``drop_oldest``): a slow or
stalled browser loses its oldest updates, counted, and costs the stream nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Mapping
from http import HTTPStatus
from importlib import resources
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote, urlsplit

from pydantic import Field
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from les02_flow.broadcast import Broadcaster, format_peer
from les02_flow.node import Context, Kind, Node, NodeConfig, NodeStartError
from les02_flow.nodes.rides.store import StoreError
from les02_flow.wscompat import GuardedServerConnection, WsPeer, describe_close, text_frame

from .api import RideNotFound, RideReader, check_request, is_loopback_host, metrics_text
from .live import LiveState, RateMeter, learn_floors

__all__ = ["WebConsole", "WebConsoleConfig"]

STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
#: routes served without the token: the page's files (no data in them) and the health check
PUBLIC_ROUTES = frozenset({*STATIC_FILES, "/healthz"})
#: the page may load only its own files and talk only to its own server
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
CLOSE_TIMEOUT = 2.0
STOP_TIMEOUT = 2.0
#: rides whose end/start positions are kept to learn the floors from (no les02_sim in the flow)
_REST_POSITIONS = 400


class WebConsoleConfig(NodeConfig):
    """Config of ``web_console``."""

    host: str = Field(
        default="localhost",
        min_length=1,
        description="Address to listen on. 'localhost' serves this machine only (and then "
        "only requests whose Host is a loopback name); 0.0.0.0 or a LAN address expose it.",
    )
    port: int = Field(
        default=1880,
        ge=0,
        le=65535,
        description="TCP port of the page, the API and the live WebSocket. 0 picks a free one.",
    )
    token_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of an environment variable holding a shared secret. When set, every "
        "request except /healthz must carry it (`Authorization: Bearer <token>` or "
        "`?token=<token>`; open the page as http://HOST:PORT/?token=...), else HTTP 401. "
        "The variable must be set and non-empty when the node starts.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Other browser origins allowed to call the API and the WebSocket (e.g. "
        "'http://ui.local:8080'). The console's own page is always allowed; requests without "
        "an Origin header (curl, Prometheus) too. Others get HTTP 403.",
    )
    history: float = Field(
        default=60.0,
        ge=5.0,
        le=3600.0,
        description="Seconds of master/slave position shown in the scrolling chart.",
    )
    store: str | None = Field(
        default=None,
        min_length=1,
        description="Id of a ride_store node of this flow: the rides list and the ride charts "
        "read its database (read-only, in a worker thread). Unset: live rides only.",
    )
    update_rate: float = Field(
        default=20.0,
        ge=1.0,
        le=30.0,
        description="Live updates per second sent to each browser (the stream is summarised "
        "on the server; never one message per frame).",
    )
    buffer: int = Field(
        default=64,
        ge=4,
        description="Live updates queued per browser; beyond that its oldest are dropped "
        "(counted in `dropped`).",
    )
    max_clients: int = Field(
        default=16, ge=1, description="Most browsers on the live stream at once (1013 beyond)."
    )


class WebConsole(Node[WebConsoleConfig]):
    """A live web console: the flow, the lift and the rides in a browser.

    Open ``http://localhost:1880/``. The page (plain HTML/CSS/JS shipped with les02-flow, no
    internet needed) shows the **flow** left to right with every node's type, in/out rates,
    drop/error badges and status dot, following live re-deploys; the **lift**: the car in the
    shaft (floors from ``les02_sim`` or learned from rides), a scrolling master/slave
    position chart of the last ``history`` seconds with channel mismatches and dropouts
    marked, the speed and the ride in progress; the **rides** from the ``store`` (click one for
    its position and speed chart, CSV/JSON downloads equal to ``les02-flow rides --export``);
    a **debug** sidebar with the latest events, filterable by type and pausable; and, once
    events from a fleet arrive (they carry a ``site``, e.g. from ``mqtt_source``), a **lifts**
    panel: every (site, source) with its online/offline state (``edge_status``), last seen and
    last known position (at most 10,000 lifts, the least recently seen evicted and counted).

    Wire the events to watch into it (e.g. ``ride_detect``'s output). API on the same port:
    ``/api/flow``, ``/api/lifts``, ``/api/rides``, ``/api/rides/{id}``, ``/api/rides/{id}/samples``,
    ``/api/rides/{id}/export.csv|json``, ``/ws`` (live updates, at most ``update_rate`` per
    second), ``/healthz`` (200, or 503 while a source reports an error) and ``/metrics``
    (Prometheus text format: per-node counters and statuses, clients, drops, loop lag).

    Loopback only by default; ``token_env`` and ``allowed_origins`` work like ``ws_sink``'s.
    Counters: ``in`` = events watched, ``out`` = updates sent to browsers, ``dropped`` =
    updates dropped for slow browsers; extra ``http_requests``, ``http_refused``,
    ``clients_connected``, ``clients_disconnected``, ``clients_refused``.
    """

    type_name: ClassVar[str] = "web_console"
    config_model: ClassVar[type[NodeConfig]] = WebConsoleConfig
    input_kind: ClassVar[Kind | None] = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    examples: ClassVar[tuple[str, ...]] = (
        "console:\n  type: web_console\n",
        "console:\n  type: web_console\n  port: 8080\n  store: store\n  history: 120\n",
        "console:\n  type: web_console\n  host: 0.0.0.0\n  token_env: LES02_CONSOLE_TOKEN\n",
    )

    def __init__(self, node_id: str, config: WebConsoleConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self.port: int = config.port
        self.state = LiveState(config.history)
        self._rates = RateMeter()
        self._last_rates: dict[str, dict[str, float]] = {}
        self._server: Server | None = None
        #: the browsers on the live stream (les02_flow.broadcast, drop_oldest)
        self.clients: Broadcaster[WsPeer] = Broadcaster.for_node(self, policy="drop_oldest")
        self._tasks: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._token: bytes | None = None
        self._static: dict[str, bytes] = {}
        self._reader: RideReader | None = None
        self._stopping = False
        self._unsubscribe: Any = None
        self._loop_lag = 0.0
        self._lag_window = 0.0
        self._rest_mm: list[float] = []
        self._sim_floors: list[float] | None = None

    # -- flow view -------------------------------------------------------------------------

    def _location(self) -> str:
        view = self.ctx.flow
        if view is not None:
            for node in view.graph()["nodes"]:
                if node["id"] == self.node_id:
                    return f" ({node['location']})"
        return ""

    def _look_at_flow(self) -> None:
        """Resolution, floors and the store from the other nodes' configs."""
        view = self.ctx.flow
        graph = view.graph() if view is not None else {"nodes": []}
        resolution = None
        floors = None
        for node in graph["nodes"]:
            cfg = node["config"]
            if node["type"] == "ride_detect" and resolution is None:
                resolution = cfg.get("resolution_mm")
            elif node["type"] == "les02_sim":
                floors = floors or cfg.get("floors_mm")
                resolution = resolution or cfg.get("resolution_mm")
        self.state.resolution_mm = float(resolution or 1.0)
        self._sim_floors = [float(f) for f in floors] if floors else None
        store = self.config.store
        if store is None:
            return
        found = view.node_config(store) if view is not None else None
        stores = [n["id"] for n in graph["nodes"] if n["type"] == "ride_store"]
        if found is None and store in graph.get("disabled", []):
            self._reader = None
            self.log.warning(
                "store '%s' is disabled: the page shows live rides only",
                store,
            )
            return
        if found is None or found[0] != "ride_store":
            what = "is not a node of this flow" if found is None else f"is a {found[0]}"
            raise NodeStartError(
                f"{self.log.prefix}{self._location()}: store '{store}' {what}; it "
                f"must name a ride_store node (this flow has: {', '.join(stores) or 'none'})"
            )
        self._reader = RideReader(str(getattr(found[1], "path", "")))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is not None:
            return
        cfg = self.config
        self._look_at_flow()
        if cfg.token_env is not None:
            secret = os.environ.get(cfg.token_env, "")
            if not secret:
                raise NodeStartError(
                    f"{self.log.prefix}{self._location()}: token_env names "
                    f"${cfg.token_env}, which is not set or empty"
                )
            self._token = secret.encode()
        package = resources.files(__package__ or "les02_flow.nodes.web") / "static"
        for _, (name, _type) in STATIC_FILES.items():
            self._static[name] = (package / name).read_bytes()
        ws_log = self.ctx.library_log("websockets")
        try:
            self._server = await serve(
                self._handle,
                cfg.host,
                cfg.port,
                process_request=self._process_request,
                create_connection=GuardedServerConnection,
                compression=None,
                max_size=4096,
                ping_interval=20.0,
                ping_timeout=20.0,
                close_timeout=CLOSE_TIMEOUT,
                logger=ws_log,
            )
        except (OSError, OverflowError, UnicodeError) as exc:
            cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            hint = ""
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                hint = (
                    f" -- another program (another les02-flow, Node-RED?) uses port {cfg.port};"
                    f" pick another with --set {self.node_id}.port=PORT"
                )
            raise NodeStartError(
                f"{self.log.prefix}{self._location()}: cannot listen on "
                f"{cfg.host}:{cfg.port}: {cause}{hint}"
            ) from exc
        addresses = [s.getsockname() for s in self._server.sockets]
        if addresses:
            self.port = int(addresses[0][1])
        view = self.ctx.flow
        if view is not None:
            self._unsubscribe = view.on_change(self._flow_changed)
        if self._reader is not None:
            task = asyncio.get_running_loop().create_task(self._learn_from_store())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        self._ticker = asyncio.get_running_loop().create_task(self._tick_loop())
        host = cfg.host
        shown = "localhost" if host == "localhost" or not addresses else str(addresses[0][0])
        if ":" in shown:
            shown = f"[{shown}]"
        self.log.info(
            "open http://%s:%d/%s",
            shown,
            self.port,
            "?token=... ($" + cfg.token_env + ")" if cfg.token_env else "",
        )

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        try:
            if self._unsubscribe is not None:
                self._unsubscribe()
            if self._ticker is not None:
                self._ticker.cancel()
                await asyncio.gather(self._ticker, return_exceptions=True)
            server = self._server
            if server is None:
                return
            server.close(close_connections=False)
            for client in self.clients:
                client.transport.close_gracefully()
            pending = set(server.handler_tasks) | self._tasks
            if pending:
                _, pending = await asyncio.wait(pending, timeout=STOP_TIMEOUT)
            for ws in list(server.all_connections):
                ws.transport.abort()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)
            for task in list(self._tasks):
                task.cancel()
        except Exception:  # stop() never raises
            self.log.exception("error while stopping")

    # -- stream ----------------------------------------------------------------------------

    def consume(self, message: Any) -> None:
        self.state.add(message)

    def _broadcast(self, message: dict[str, Any]) -> None:
        if not self.clients:
            return
        data = json.dumps(message, separators=(",", ":"), default=str).encode()
        if self.clients.publish(text_frame(data)):
            self.clients.flush()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = 1.0 / self.config.update_rate
        due = loop.time()
        next_stats = due
        while True:
            due += period
            await asyncio.sleep(max(due - loop.time(), 0.0))
            now = loop.time()
            lag = now - due
            self._lag_window = max(self._lag_window, lag)
            if lag > period:
                due = now  # do not try to catch up after a stall
            try:
                msg = self.state.tick()
                if msg is not None:
                    self._remember_rest(msg)
                    self._broadcast(msg)
                if now >= next_stats:
                    next_stats = now + 1.0
                    self._loop_lag, self._lag_window = self._lag_window, 0.0
                    self._broadcast(self._stats())
            except Exception as exc:  # a bug here must not end the updates
                self._error_log(logging.ERROR, "update: %s", exc)

    def _remember_rest(self, tick: dict[str, Any]) -> None:
        for ev in tick["events"]:
            if ev.get("type") == "ride_end":
                p = ev.get("payload", {})
                for key in ("start_position_mm", "end_position_mm"):
                    if isinstance(p.get(key), (int, float)):
                        self._rest_mm.append(float(p[key]))
        del self._rest_mm[:-_REST_POSITIONS]

    async def _learn_from_store(self) -> None:
        reader = self._reader
        assert reader is not None
        try:
            rides = await asyncio.to_thread(reader.latest, 200)
        except StoreError as exc:
            self.log.warning("%s", exc)
            return
        for r in rides:
            for key in ("start_position_mm", "end_position_mm"):
                if isinstance(r.get(key), (int, float)):
                    self._rest_mm.insert(0, float(r[key]))

    def _floors(self) -> tuple[list[float], str | None]:
        if self._sim_floors:
            return self._sim_floors, "les02_sim"
        if self._rest_mm:
            return learn_floors(self._rest_mm), "rides"
        return [], None

    def _flow_changed(self) -> None:
        with contextlib.suppress(NodeStartError):
            self._look_at_flow()
        view = self.ctx.flow
        if view is not None:
            self._broadcast({"kind": "graph", "graph": view.graph()})

    # -- snapshots -------------------------------------------------------------------------

    def flow_document(self) -> dict[str, Any]:
        view = self.ctx.flow
        if view is None:
            return {"graph": {"nodes": []}, "counters": {}, "statuses": {}, "rates": {}}
        return {
            "graph": view.graph(),
            "counters": view.counters(),
            "statuses": view.statuses(),
            "rates": self._last_rates,
        }

    def _stats(self) -> dict[str, Any]:
        view = self.ctx.flow
        counters = view.counters() if view is not None else {}
        self._last_rates = self._rates.update(counters, time.monotonic())
        floors, floors_from = self._floors()
        return {
            "kind": "stats",
            "revision": view.revision if view is not None else 0,
            "counters": counters,
            "rates": self._last_rates,
            "statuses": view.statuses() if view is not None else {},
            "clients": len(self.clients),
            "loop_lag_ms": round(self._loop_lag * 1000.0, 2),
            "floors_mm": floors,
            "floors_from": floors_from,
            "resolution_mm": self.state.resolution_mm,
        }

    def _hello(self) -> dict[str, Any]:
        view = self.ctx.flow
        return {
            "kind": "hello",
            "node": self.node_id,
            "history": self.config.history,
            "update_rate": self.config.update_rate,
            "store": self._reader is not None,
            "graph": view.graph() if view is not None else {"nodes": []},
            "stats": self._stats(),
            "live": self.state.snapshot(),
        }

    def failing_sources(self) -> list[dict[str, str]]:
        view = self.ctx.flow
        if view is None:
            return []
        return [
            {"id": nid, "text": str(st["text"])}
            for nid, st in view.statuses().items()
            if st["role"] == "source" and st["state"] == "error"
        ]

    def _metrics_snapshot(self) -> dict[str, Any]:
        view = self.ctx.flow
        types = {}
        if view is not None:
            types = {n["id"]: n["type"] for n in view.graph()["nodes"]}
        return {
            "counters": view.counters() if view is not None else {},
            "statuses": view.statuses() if view is not None else {},
            "types": types,
            "revision": view.revision if view is not None else 0,
            "clients": len(self.clients),
            "dropped": self.counters.dropped,
            "loop_lag_s": self._loop_lag,
        }

    # -- HTTP ------------------------------------------------------------------------------

    async def _process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        self.counters.bump("http_requests")
        refused = check_request(
            request.path,
            request.headers,
            token=self._token,
            allowed_origins=list(self.config.allowed_origins),
            loopback_only=is_loopback_host(self.config.host),
            public=PUBLIC_ROUTES,
        )
        if refused is not None:
            status, reason = refused
            self.counters.bump("http_refused")
            self.log.warning(
                "refused %s %s: %s",
                format_peer(connection.remote_address),
                urlsplit(request.path).path,
                reason,
            )
            return _response(status, {"error": reason})
        route = urlsplit(request.path).path
        if route == "/ws":
            if request.headers.get("Upgrade", "").lower() != "websocket":
                return _response(426, {"error": "/ws is a WebSocket; connect with one"})
            return None
        try:
            return await self._route(route, dict(parse_qsl(urlsplit(request.path).query)))
        except RideNotFound as exc:
            return _response(404, {"error": str(exc)})
        except StoreError as exc:
            self._error_log(logging.ERROR, "%s", exc)
            return _response(503, {"error": str(exc)})

    async def _route(self, route: str, query: dict[str, str]) -> Response:
        if route in STATIC_FILES:
            name, content_type = STATIC_FILES[route]
            return _response(200, self._static[name], content_type, page=True)
        if route == "/healthz":
            failing = self.failing_sources()
            if failing:
                return _response(503, {"status": "failing", "failing": failing})
            return _response(200, {"status": "ok"})
        if route == "/metrics":
            body = metrics_text(self._metrics_snapshot)  # on the loop: it reads the engine
            return _response(200, body, "text/plain; version=0.0.4; charset=utf-8")
        if route == "/api/flow":
            return _response(200, self.flow_document())
        if route == "/api/lifts":
            return _response(200, self.state.lift_table())
        if not route.startswith("/api/rides"):
            return _response(404, {"error": f"no such page: {route}"})
        reader = self._reader
        if reader is None:
            return _response(404, {"error": f"{self.log.prefix} has no store configured"})
        parts = [unquote(p) for p in route.split("/")[3:]]
        if not parts or parts == [""]:
            try:
                limit = int(query.get("limit", "50"))
            except ValueError:
                return _response(400, {"error": "limit must be an integer"})
            if not 1 <= limit <= 1000:
                return _response(400, {"error": "limit must be 1..1000"})
            rides = await asyncio.to_thread(reader.latest, limit)
            return _response(200, {"rides": rides})
        ride_id = parts[0]
        if len(parts) == 1:
            return _response(200, await asyncio.to_thread(reader.ride, ride_id))
        if parts[1:] == ["samples"]:
            return _response(200, await asyncio.to_thread(reader.samples, ride_id))
        if parts[1:] in (["export.csv"], ["export.json"]):
            fmt = parts[1].split(".")[1]
            text = await asyncio.to_thread(reader.export, ride_id, fmt)
            kind = "text/csv" if fmt == "csv" else "application/json"
            safe = "".join(c for c in ride_id if c.isalnum() or c == "-")[:40]
            return _response(
                200,
                text.encode(),
                f"{kind}; charset=utf-8",
                download=f"ride-{safe}.{fmt}",
            )
        return _response(404, {"error": f"no such page: {route}"})

    # -- live WebSocket --------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        peer = format_peer(ws.remote_address)
        if self._stopping:
            await ws.close(CloseCode.GOING_AWAY, "server shutting down")
            return
        transport = WsPeer(ws)
        client = self.clients.admit(transport, peer)
        if client is None:
            await ws.close(
                CloseCode.TRY_AGAIN_LATER, f"too many browsers (max {self.config.max_clients})"
            )
            return
        hello = json.dumps(self._hello(), separators=(",", ":"), default=str).encode()
        client.queue.push(text_frame(hello))
        self.clients.flush()
        try:
            await transport.serve(self.clients, client)  # the page sends nothing that matters
        finally:
            self.clients.remove(client, describe_close(ws))


def _response(
    status: int,
    body: Any,
    content_type: str = "application/json",
    *,
    page: bool = False,
    download: str | None = None,
) -> Response:
    if not isinstance(body, bytes):
        body = (json.dumps(body, default=str) + "\n").encode()
    phrase = HTTPStatus(status).phrase
    headers = Headers(
        [
            ("Connection", "close"),
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
            ("Referrer-Policy", "no-referrer"),
        ]
    )
    if page:
        headers["Content-Security-Policy"] = CSP
        headers["X-Frame-Options"] = "DENY"
    if download is not None:
        headers["Content-Disposition"] = f'attachment; filename="{download}"'
    return Response(status, phrase, headers, body)
