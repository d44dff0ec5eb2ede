"""The web console's HTTP side that is not networking (plain Python, blocking where it reads
the ride database: call those from a worker thread).

* :class:`RideReader` reads a ``ride_store`` database read-only (one short connection per
  request, so the writer thread of the store is never held up for long; SQLite's WAL mode
  lets readers and the writer work at the same time).
* :func:`metrics_text` renders the flow's counters in the Prometheus text format with
  ``prometheus_client``.
* :func:`check_request` decides token, origin and Host checks.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from les02_flow.commands.rides import export_text
from les02_flow.nodes.rides.store import RideDB, StoreError

__all__ = [
    "RideNotFound",
    "RideReader",
    "check_request",
    "is_loopback_host",
    "metrics_text",
]

#: most rides one /api/rides call returns
MAX_RIDES = 1000


class RideNotFound(LookupError):
    """No ride (or more than one) matches the id asked for; the message says which."""


class RideReader:
    """Read-only access to a ride database for the API (blocking; use from a thread).

    A database that does not exist yet (the store has saved nothing) reads as empty.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def _open(self) -> RideDB | None:
        try:
            return RideDB.open_readonly(self.path)
        except StoreError as exc:
            # not created yet, or the store is creating its schema right now
            if "no ride database" in str(exc) or "no such table" in str(exc):
                return None
            raise

    def latest(self, limit: int = 50) -> list[dict[str, Any]]:
        """The ``limit`` newest rides, newest first, each with a ``complete`` flag."""
        db = self._open()
        if db is None:
            return []
        try:
            rows = db.conn.execute(
                "SELECT * FROM rides ORDER BY start_ts DESC LIMIT ?", (min(limit, MAX_RIDES),)
            ).fetchall()
            return [ride_row(r) for r in rows]
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read ride database {self.path!r}: {exc}") from exc
        finally:
            db.close()

    def _find(self, db: RideDB, ride_id: str) -> dict[str, Any]:
        found = db.find(ride_id)
        if not found:
            raise RideNotFound(f"no ride {ride_id!r} in {self.path}")
        if len(found) > 1:
            raise RideNotFound(f"{ride_id!r} matches {len(found)} rides; give more of the id")
        row = db.conn.execute(
            "SELECT * FROM rides WHERE ride_id = ?", (found[0]["ride_id"],)
        ).fetchone()
        return ride_row(row)

    def ride(self, ride_id: str) -> dict[str, Any]:
        db = self._open()
        if db is None:
            raise RideNotFound(f"no ride {ride_id!r}: {self.path} has no rides yet")
        try:
            return self._find(db, ride_id)
        finally:
            db.close()

    def samples(self, ride_id: str) -> dict[str, Any]:
        """``{"ride": ..., "samples": [{ts, channel, position_raw, position_mm}]}`` -- the
        same document as ``les02-flow rides DB --export ID --format json``."""
        return dict(json.loads(self.export(ride_id, "json")))

    def export(self, ride_id: str, fmt: str) -> str:
        """The text ``les02-flow rides DB --export ID --format FMT`` prints."""
        db = self._open()
        if db is None:
            raise RideNotFound(f"no ride {ride_id!r}: {self.path} has no rides yet")
        try:
            self._find(db, ride_id)  # not found / ambiguous
            return export_text(db, db.find(ride_id)[0], fmt)  # exactly what the CLI prints
        finally:
            db.close()


def ride_row(row: sqlite3.Row) -> dict[str, Any]:
    """A ``rides`` row as JSON values, ``event_json`` left out, ``complete`` added: the
    column where the database has it, else the stored ``ride_end`` payload's field, else
    ``None`` (unknown)."""
    d = dict(row)
    event_json = d.pop("event_json", None)
    if "complete" in d:
        d["complete"] = None if d["complete"] is None else bool(d["complete"])
    else:
        complete = None
        if isinstance(event_json, str):
            try:
                payload = json.loads(event_json).get("payload", {})
                value = payload.get("complete")
                complete = value if isinstance(value, bool) else None
            except (ValueError, AttributeError):
                complete = None
        d["complete"] = complete
    return d


# -- metrics -----------------------------------------------------------------------------------


class _FlowCollector(Collector):
    def __init__(self, snapshot: Any) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap: Mapping[str, Any] = self._snapshot()
        types: Mapping[str, str] = snap["types"]
        standard = {
            "in": ("les02_flow_node_received", "Messages a node received."),
            "out": ("les02_flow_node_emitted", "Messages a node emitted (or sent, for sinks)."),
            "dropped": ("les02_flow_node_dropped", "Messages a node dropped."),
            "errors": ("les02_flow_node_errors", "Per-message errors of a node."),
        }
        families = {
            key: CounterMetricFamily(name, doc, labels=["node", "type"])
            for key, (name, doc) in standard.items()
        }
        extra = GaugeMetricFamily(
            "les02_flow_node_counter",
            "Node-specific counters (see docs/nodes.md), by name.",
            labels=["node", "type", "name"],
        )
        for nid, counters in snap["counters"].items():
            type_ = types.get(nid, "")
            for key, value in counters.items():
                if key in families:
                    families[key].add_metric([nid, type_], float(value))
                else:
                    extra.add_metric([nid, type_, key], float(value))
        yield from families.values()
        yield extra
        status = GaugeMetricFamily(
            "les02_flow_node_status",
            "1 for a node's current status (ok, warning, error), by state.",
            labels=["node", "type", "state"],
        )
        for nid, st in snap["statuses"].items():
            status.add_metric([nid, types.get(nid, ""), str(st["state"])], 1.0)
        yield status
        yield GaugeMetricFamily(
            "les02_flow_revision", "Re-deploys applied since start.", value=snap["revision"]
        )
        yield GaugeMetricFamily(
            "les02_flow_web_console_clients",
            "Browsers connected to the web console's live stream.",
            value=snap["clients"],
        )
        yield CounterMetricFamily(
            "les02_flow_web_console_dropped",
            "Live updates the web console dropped for slow browsers.",
            value=snap["dropped"],
        )
        yield GaugeMetricFamily(
            "les02_flow_loop_lag_seconds",
            "Largest event-loop lag the web console measured over the last second.",
            value=snap["loop_lag_s"],
        )


def metrics_text(snapshot: Any) -> bytes:
    """The Prometheus text exposition of ``snapshot()`` (a dict with ``counters``,
    ``statuses``, ``types``, ``revision``, ``clients``, ``dropped``, ``loop_lag_s``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FlowCollector(snapshot))
    return generate_latest(registry)


# -- request checks ------------------------------------------------------------------------------


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, ``*.localhost`` and loopback addresses.

    >>> [is_loopback_host(h) for h in ("localhost", "127.0.0.1", "::1", "0.0.0.0", "pi.lan")]
    [True, True, True, False, False]
    """
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def check_request(
    path: str,
    headers: Mapping[str, str],
    *,
    token: bytes | None,
    allowed_origins: list[str],
    loopback_only: bool,
    public: frozenset[str] = frozenset({"/healthz"}),
) -> tuple[int, str] | None:
    """``None`` when the request may go on, else ``(HTTP status, reason)``.

    * Host (when the console listens on loopback only): a loopback name or address, so a web
      page on another site cannot reach the console through DNS rebinding (403).
    * Origin: absent (non-browser clients), the console's own (``http://`` + Host), or one of
      ``allowed_origins``; else 403.
    * Token (when configured): ``Authorization: Bearer <token>`` or ``?token=<token>``; else
      401. The ``public`` routes need no token: ``/healthz`` (it tells only ok/failing) and
      the page's own files (they hold no data; the page asks for the token when the API
      refuses it).

    >>> check_request("/api/flow", {"Host": "localhost:1880"}, token=b"s3cret",
    ...               allowed_origins=[], loopback_only=True)
    (401, 'missing or wrong token')
    >>> check_request("/api/flow?token=s3cret", {"Host": "localhost:1880"}, token=b"s3cret",
    ...               allowed_origins=[], loopback_only=True) is None
    True
    >>> check_request("/", {"Host": "evil.example:1880"}, token=None, allowed_origins=[],
    ...               loopback_only=True)
    (403, "Host 'evil.example:1880' is not this machine's loopback")
    """
    host = headers.get("Host", "")
    if loopback_only and not is_loopback_host(_host_name(host)):
        return 403, f"Host {host!r} is not this machine's loopback"
    origin = headers.get("Origin")
    if origin is not None and origin != f"http://{host}" and origin not in allowed_origins:
        return 403, f"origin {origin!r} is not allowed"
    route = urlsplit(path).path
    if token is None or route in public:
        return None
    given = ""
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        given = auth[len("Bearer ") :].strip()
    else:
        for key, value in parse_qsl(urlsplit(path).query):
            if key == "token":
                given = value
    if given and hmac.compare_digest(given.encode(), token):
        return None
    return 401, "missing or wrong token"
