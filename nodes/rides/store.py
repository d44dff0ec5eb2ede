"""Node ``ride_store``: completed rides into SQLite (stdlib ``sqlite3``, WAL mode).

:class:`RideDB` is the database (schema, idempotent save, queries; plain blocking code used by
the node's worker thread and by ``les02-flow rides``). :class:`RideStore` is the node: it keeps
a short buffer of position samples on the loop and hands each finished ride with its samples
to ONE dedicated writer thread through a bounded queue, so database work never runs on the
event loop.

Schema (``PRAGMA user_version = 3``)::

    rides(ride_id TEXT PRIMARY KEY, source, channel, start_ts, end_ts, duration_s,
          start_position_raw, start_position_mm, end_position_raw, end_position_mm,
          distance_raw, distance_mm, direction, max_speed_mm_s, samples, event_json,
          complete, reason, site)           -- index rides_by_lift(site, source, start_ts)
    ride_samples(ride_id, ts, channel, position_raw)   -- PRIMARY KEY (ride_id, channel, ts)

Columns added after version 1 are listed in :data:`ADDED_COLUMNS`; opening a database for
writing adds the ones it lacks (``ALTER TABLE ... ADD COLUMN`` with their default, so old rows
read as complete rides) and sets ``user_version``. A newer les02-flow adds its columns there.

The samples are a normalised table rather than the seed's JSON array: exports and queries by
time or channel need no JSON parsing, a sample costs about the same space, and the composite
key makes a replayed ride's samples idempotent too. ``event_json`` keeps the whole
``ride_end`` envelope, so fields added to the protocol later are not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from les02_flow.events import Event, encode_event
from les02_flow.loopcall import post
from les02_flow.node import Context, Kind, Node, NodeConfig
from les02_flow.nodes.fileid import FileIdentity, file_identity, path_lost

__all__ = [
    "ADDED_COLUMNS",
    "RIDE_COLUMNS",
    "RideDB",
    "RideStore",
    "RideStoreConfig",
    "StoreError",
    "add_missing_columns",
]

SCHEMA_VERSION = 3
#: SQLite checkpoints the WAL into the database after this many pages (4 MiB at 4 KiB pages)
WAL_AUTOCHECKPOINT_PAGES = 1000
#: bytes the WAL file is cut back to after a checkpoint
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
#: a WAL larger than this is checkpointed after the next save, not only when idle
WAL_CHECKPOINT_BYTES = 16 * 1024 * 1024
#: seconds without a ride before the writer checkpoints and checks the file is still there
IDLE_CHECK = 1.0
#: seconds before a failed save is tried again (doubling up to RETRY_MAX)
RETRY_INITIAL = 0.5
RETRY_MAX = 10.0

#: columns of ``rides`` taken from the ``ride_end`` payload, in table order
RIDE_COLUMNS: tuple[str, ...] = (
    "start_ts",
    "end_ts",
    "duration_s",
    "start_position_raw",
    "start_position_mm",
    "end_position_raw",
    "end_position_mm",
    "distance_raw",
    "distance_mm",
    "direction",
    "max_speed_mm_s",
    "samples",
)

#: columns added to ``rides`` after schema version 1: (name, SQL declaration, payload default).
#: :meth:`RideDB.open` adds the missing ones to an older database ("add missing columns").
#: ``complete`` is 1 for a ride that ended by the rules, 0 for one cut off (``reason``)
#: (version 2). ``site`` is the envelope's ``site`` (the fleet site the ride comes from, set by
#: ``mqtt_source``; ``''`` for a local bus) (version 3).
ADDED_COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("complete", "INTEGER NOT NULL DEFAULT 1", True),
    ("reason", "TEXT", None),
    ("site", "TEXT NOT NULL DEFAULT ''", ""),
)
#: added columns whose value is an envelope field, not a payload field
ENVELOPE_COLUMNS = frozenset({"site"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rides (
    ride_id TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    channel TEXT,
    start_ts REAL NOT NULL,
    end_ts REAL NOT NULL,
    duration_s REAL NOT NULL,
    start_position_raw INTEGER,
    start_position_mm REAL,
    end_position_raw INTEGER,
    end_position_mm REAL,
    distance_raw INTEGER,
    distance_mm REAL,
    direction TEXT,
    max_speed_mm_s REAL,
    samples INTEGER,
    event_json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rides_by_start ON rides(start_ts);
CREATE TABLE IF NOT EXISTS ride_samples (
    ride_id TEXT NOT NULL REFERENCES rides(ride_id) ON DELETE CASCADE,
    ts REAL NOT NULL,
    channel TEXT NOT NULL,
    position_raw INTEGER NOT NULL,
    PRIMARY KEY (ride_id, channel, ts)
) WITHOUT ROWID;
"""


def add_missing_columns(conn: sqlite3.Connection) -> list[str]:
    """Add the :data:`ADDED_COLUMNS` that ``rides`` lacks (old databases); returns their names.

    Idempotent; sets ``user_version`` to :data:`SCHEMA_VERSION` (never lowers it).
    """
    have = {row[1] for row in conn.execute("PRAGMA table_info(rides)")}
    added = []
    for name, decl, _default in ADDED_COLUMNS:
        if name not in have:
            try:
                conn.execute(f"ALTER TABLE rides ADD COLUMN {name} {decl}")
            except sqlite3.OperationalError as exc:  # another writer added it meanwhile
                if "duplicate column" not in str(exc):
                    raise
                continue
            added.append(name)
    conn.execute("CREATE INDEX IF NOT EXISTS rides_by_lift ON rides(site, source, start_ts)")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version < SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    conn.commit()
    return added


Sample = tuple[float, str, int]


class StoreError(Exception):
    """The database cannot be opened or read; the message names the file and the reason."""


class RideDB:
    """One SQLite connection to a ride database. Blocking: use it from one thread only.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "r.sqlite")
    >>> db = RideDB.open(path)
    >>> end = {"ride_id": "r1", "start_ts": 1.0, "end_ts": 6.0, "duration_s": 5.0,
    ...        "start_position_raw": 0, "start_position_mm": 0.0, "end_position_raw": 3500,
    ...        "end_position_mm": 3500.0, "distance_raw": 3500, "distance_mm": 3500.0,
    ...        "direction": "up", "max_speed_mm_s": 1427.8, "samples": 1250}
    >>> ev = {"proto": 1, "type": "ride_end", "ts": 8.0, "source": "les02", "payload": end}
    >>> db.save(ev, "master", [(1.0, "master", 0)]), db.save(ev, "master", [])
    (True, False)
    >>> [r["ride_id"] for r in db.rides()], db.samples("r1")
    (['r1'], [(1.0, 'master', 0)])
    >>> db.close()
    """

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.conn = conn
        self.path = path
        conn.row_factory = sqlite3.Row
        #: (st_dev, st_ino) of the database file when opened
        self.identity: FileIdentity | None = None
        with contextlib.suppress(OSError):
            st = os.stat(path)
            self.identity = file_identity(st)

    def lost(self) -> str | None:
        """Why the path no longer names the open database (deleted, replaced), or None."""
        return path_lost(self.path, self.identity)

    def checkpoint(self) -> None:
        """Copy the WAL into the database and truncate it; ``sqlite3.Error`` when that
        cannot be done completely (disk full, a reader holds it)."""
        busy, log_pages, done = self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy or (log_pages > 0 and done < log_pages):
            raise sqlite3.OperationalError(
                f"WAL checkpoint incomplete ({done} of {log_pages} pages, busy={busy})"
            )

    def wal_size(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    @classmethod
    def open(cls, path: str | Path, timeout: float = 5.0) -> RideDB:
        """Open (creating the file, its directory and the schema) in WAL mode for writing."""
        p = Path(path)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(str(p), timeout=timeout)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open ride database {str(p)!r}: {exc}") from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"ride database {str(p)!r}: cannot switch to WAL (mode {mode})")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            # the WAL is checkpointed every 1000 pages and cut back to 4 MiB after each
            # checkpoint; the writer also checkpoints (TRUNCATE) when idle (RideStore)
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            conn.executescript(_SCHEMA)
            add_missing_columns(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot use ride database {str(p)!r}: {exc}") from exc
        except StoreError:
            conn.close()
            raise
        return cls(conn, str(p))

    @classmethod
    def open_readonly(cls, path: str | Path) -> RideDB:
        """Open an existing database for reading (never creates one)."""
        p = Path(path)
        if not p.is_file():
            raise StoreError(f"no ride database at {str(p)!r}")
        try:
            conn = sqlite3.connect(p.resolve().as_uri() + "?mode=ro", uri=True)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            conn.execute("SELECT 1 FROM rides LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"{str(p)!r} is not a readable ride database: {exc}") from exc
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(
                f"{str(p)!r} has schema version {version}; this les02-flow reads "
                f"<= {SCHEMA_VERSION}"
            )
        return cls(conn, str(p))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()

    def save(self, event: Event, channel: str | None, samples: list[Sample]) -> bool:
        """Store one ``ride_end`` event and its samples in one transaction.

        Returns False (and changes nothing) when the ride_id is already stored. Raises
        ``KeyError``/``ValueError`` for a malformed event, ``sqlite3.Error`` for the database.
        """
        payload = event["payload"]
        ride_id = payload["ride_id"]
        if not isinstance(ride_id, str) or not ride_id:
            raise ValueError(f"ride_end without a ride_id: {payload!r}")
        values = [ride_id, str(event.get("source", "")), channel]
        if not isinstance(event.get("site", ""), str):
            raise ValueError(f"ride_end with a non-string site: {event.get('site')!r}")
        values += [payload[c] for c in RIDE_COLUMNS]
        values.append(encode_event(event))
        values += [
            (event if name in ENVELOPE_COLUMNS else payload).get(name, default)
            for name, _decl, default in ADDED_COLUMNS
        ]
        columns = ", ".join((*RIDE_COLUMNS, "event_json", *(c[0] for c in ADDED_COLUMNS)))
        marks = ", ".join("?" * len(values))
        with self.conn:
            cur = self.conn.execute(
                f"INSERT OR IGNORE INTO rides (ride_id, source, channel, {columns}) "
                f"VALUES ({marks})",
                values,
            )
            if cur.rowcount == 0:
                return False
            self.conn.executemany(
                "INSERT OR IGNORE INTO ride_samples (ride_id, ts, channel, position_raw) "
                "VALUES (?, ?, ?, ?)",
                ((ride_id, t, ch, raw) for t, ch, raw in samples),
            )
        return True

    def rides(
        self, since: float | None = None, site: str | None = None, source: str | None = None
    ) -> list[dict[str, Any]]:
        """Rides (oldest first), optionally only those starting at or after ``since``, of one
        ``site`` and/or one ``source``."""
        where: list[str] = []
        args: list[Any] = []
        if since is not None:
            where.append("start_ts >= ?")
            args.append(since)
        if site is not None:
            if not self._has_column("site"):  # a database older than version 3
                return [] if site else self.rides(since, None, source)
            where.append("site = ?")
            args.append(site)
        if source is not None:
            where.append("source = ?")
            args.append(source)
        sql = "SELECT * FROM rides" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self.conn.execute(sql + " ORDER BY start_ts", args).fetchall()
        return [_row(r) for r in rows]

    def _has_column(self, name: str) -> bool:
        return any(r[1] == name for r in self.conn.execute("PRAGMA table_info(rides)"))

    def find(self, ride_id: str) -> list[dict[str, Any]]:
        """Rides whose id is ``ride_id`` or starts with it (a unique prefix is enough)."""
        rows = self.conn.execute(
            "SELECT * FROM rides WHERE ride_id = ? OR substr(ride_id, 1, ?) = ? ORDER BY start_ts",
            (ride_id, len(ride_id), ride_id),
        ).fetchall()
        exact = [r for r in rows if r["ride_id"] == ride_id]
        return [_row(r) for r in (exact or rows)]

    def samples(self, ride_id: str) -> list[Sample]:
        rows = self.conn.execute(
            "SELECT ts, channel, position_raw FROM ride_samples WHERE ride_id = ? "
            "ORDER BY ts, channel",
            (ride_id,),
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]


def _row(row: sqlite3.Row) -> dict[str, Any]:
    d = dict(row)
    d.pop("event_json", None)
    for name, _decl, default in ADDED_COLUMNS:  # an old database read without migrating
        d.setdefault(name, default)
    if "complete" in d:
        d["complete"] = bool(d["complete"])
    return d


class RideStoreConfig(NodeConfig):
    """Configuration of ``ride_store``."""

    path: str = Field(
        default="data/rides.sqlite",
        min_length=1,
        description="SQLite database file (created with its directory; relative to the cwd).",
    )
    busy_timeout: float = Field(
        default=5.0, ge=0, description="Seconds a write waits for a locked database."
    )
    queue_size: int = Field(
        default=1000, ge=1, description="Rides waiting for the writer thread before drops."
    )
    margin: float = Field(
        default=0.5, ge=0, description="Seconds of samples kept before the start and after the end."
    )
    max_samples: int = Field(
        default=200_000,
        ge=100,
        description="Most buffered position samples per source (a bound for endless rides).",
    )
    retry_queue: int = Field(
        default=1000,
        ge=1,
        description="Rides kept for another try after a failed save (disk full, locked or "
        "missing database), retried in order with backoff (0.5 s doubling up to 10 s). When "
        "more fail, the oldest is dropped and counted in 'dropped' (and 'retry_dropped').",
    )


_PRE_BUFFER = 5.0  # seconds of samples kept while no ride is open (ride_start comes late)


class _SourceBuffer:
    def __init__(self) -> None:
        self.samples: deque[Sample] = deque()
        self.open: dict[str, str] = {}  # ride_id -> channel of rides started, not ended


class RideStore(Node[RideStoreConfig]):
    """Store completed rides (ride_end + their position samples) in a SQLite database.

    Wire it after ``ride_detect`` (whose ``out`` carries the samples and the ride events).
    The database (``path``, default ``data/rides.sqlite``) is opened in WAL mode by one
    dedicated writer thread; the node only buffers samples and queues finished rides (bounded
    by ``queue_size``; beyond it a ride is dropped and counted in ``queue_full``). Saving is
    idempotent by ``ride_id``: replaying a session twice stores each ride once (counted in
    ``duplicates``). A save that fails (disk full, locked or unwritable database) is logged
    as an error naming the file and the reason and counted (``errors``, ``write_errors``);
    the ride stays in a bounded retry queue (``retry_queue``, default 1000; waiting rides in
    ``retry_pending``) and is saved, in order, when the database works again (0.5 s backoff
    doubling up to 10 s; counted in ``retried``). A ride is only lost when that queue
    overflows or when it still fails at stop: then it is logged and counted in ``dropped``
    and ``retry_dropped``. The rest of the flow keeps running.

    A database file deleted or replaced while open is noticed before the next save and at
    least once a second: logged as an error, counted (``db_recreated``; the rides that were
    saved in the lost file since it was opened in ``rides_lost``), and a new database with
    the schema is created at the path. The WAL is checkpointed (and truncated) whenever the
    writer is idle for a second and when it exceeds 16 MiB; ``wal_autocheckpoint`` (1000
    pages) and ``journal_size_limit`` (4 MiB) are set, so ``-wal`` cannot grow without
    bound after a disk-full episode.

    Each ride's samples (both channels) from ``margin`` seconds before its start to
    ``margin`` seconds after its end go to the ``ride_samples`` table. Read the database with
    ``les02-flow rides DB``. Turn the node off with ``--set store.disabled=true``.
    """

    type_name: ClassVar[str] = "ride_store"
    input_kind: ClassVar[Kind | None] = Kind.EVENT
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    examples: ClassVar[tuple[str, ...]] = (
        "store:\n  type: ride_store\n  path: data/rides.sqlite\n",
        "store:\n  type: ride_store\n  path: /var/lib/les02/rides.sqlite\n  busy_timeout: 10\n"
        "  margin: 1.0\n",
    )

    def __init__(self, node_id: str, config: RideStoreConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self._buffers: dict[tuple[str, str], _SourceBuffer] = {}
        self._queue: queue.Queue[tuple[Event, str | None, list[Sample]] | None] = queue.Queue(
            maxsize=config.queue_size
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- loop side ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer thread (it opens the database; errors are logged, not fatal)."""
        if self._thread is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._queue = queue.Queue(maxsize=self.config.queue_size)
        self._thread = threading.Thread(
            target=self._writer, name=f"ride_store:{self.node_id}", daemon=True
        )
        self._thread.start()

    def consume_batch(self, messages: list[Any]) -> None:
        """:meth:`consume` per message (the batch path): the common position sample through
        :meth:`_fast_sample`, anything else through the full path (errors counted and logged
        per message, as the engine does)."""
        fast = self._fast_sample
        full = self._consume_full
        for message in messages:
            if fast(message):
                continue
            try:
                full(message)
            except Exception as exc:
                self.report_error(message, exc)

    def consume(self, message: Any) -> None:
        if not self._fast_sample(message):
            self._consume_full(message)

    def _fast_sample(self, message: Any) -> bool:
        """Keep a well-formed position sample of a lift already seen, as the full path would
        (without its conversions and calls); ``False`` for anything else."""
        if type(message) is not dict or message.get("type") != "position_sample":
            return False
        payload = message.get("payload")
        ts = message.get("ts")
        if type(payload) is not dict or type(ts) is not float:
            return False
        raw = payload.get("position_raw")
        channel = payload.get("channel")
        site = message.get("site", "")
        source = message.get("source", "")
        if not (
            type(raw) is int and type(channel) is str and type(site) is str and type(source) is str
        ):
            return False
        buf = self._buffers.get((site, source))
        if buf is None:
            return False
        samples = buf.samples
        samples.append((ts, channel, raw))
        if len(samples) > self.config.max_samples:
            samples.popleft()
            self.counters.bump("samples_dropped")
        if not buf.open:
            limit = ts - _PRE_BUFFER - self.config.margin  # as in _trim
            while samples and samples[0][0] < limit:
                samples.popleft()
        return True

    def _consume_full(self, message: Any) -> None:
        if not isinstance(message, dict):
            raise ValueError("not an event envelope")
        kind = message.get("type")
        if kind not in ("position_sample", "ride_start", "ride_end"):
            return
        # one buffer per lift: a fleet's sources are named per site
        source = (str(message.get("site", "")), str(message.get("source", "")))
        buf = self._buffers.get(source)
        if buf is None:
            buf = self._buffers[source] = _SourceBuffer()
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise ValueError("event without a payload object")
        ts = message.get("ts")
        if kind == "position_sample":
            raw = payload.get("position_raw")
            if isinstance(ts, (int, float)) and isinstance(raw, int):
                self._add_sample(buf, (float(ts), str(payload.get("channel")), raw))
            return
        if kind == "ride_start":
            buf.open[str(payload.get("ride_id"))] = str(payload.get("channel"))
            return
        self._ride_end(message, payload, buf)

    def _add_sample(self, buf: _SourceBuffer, sample: Sample) -> None:
        samples = buf.samples
        samples.append(sample)
        if len(samples) > self.config.max_samples:
            samples.popleft()
            self.counters.bump("samples_dropped")
        if not buf.open:
            self._trim(buf, sample[0])

    def _trim(self, buf: _SourceBuffer, now: float) -> None:
        samples = buf.samples
        limit = now - _PRE_BUFFER - self.config.margin
        while samples and samples[0][0] < limit:
            samples.popleft()

    def _ride_end(self, event: Event, payload: dict[str, Any], buf: _SourceBuffer) -> None:
        ride_id = payload.get("ride_id")
        start, end = payload.get("start_ts"), payload.get("end_ts")
        if not isinstance(ride_id, str) or not all(
            isinstance(t, (int, float)) for t in (start, end)
        ):
            raise ValueError("ride_end without ride_id/start_ts/end_ts")
        assert isinstance(start, (int, float)) and isinstance(end, (int, float))
        channel = buf.open.pop(ride_id, None)
        lo, hi = start - self.config.margin, end + self.config.margin
        samples = [s for s in buf.samples if lo <= s[0] <= hi]
        try:
            self._queue.put_nowait((event, channel, samples))
        except queue.Full:
            self.counters.dropped += 1
            self.counters.bump("queue_full")
            self._error_log(
                logging.ERROR,
                "writer queue full (%d rides): ride %s dropped",
                self.config.queue_size,
                ride_id,
            )
        if not buf.open and buf.samples:
            self._trim(buf, buf.samples[-1][0])

    async def stop(self) -> None:
        """Let the writer finish the queued rides (bounded by ``busy_timeout`` + 5 s)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        q = self._queue
        deadline = self.config.busy_timeout + 5.0

        def finish() -> None:
            with contextlib.suppress(queue.Full):
                q.put(None, timeout=deadline)
            thread.join(deadline)

        try:
            await asyncio.to_thread(finish)
        except Exception as exc:
            self.log.error("stopping the writer failed: %s", exc)
        if thread.is_alive():
            self.log.error(
                "writer still busy after %.1f s; queued rides may be lost",
                deadline,
            )
        await asyncio.sleep(0)  # run the writer's last counter callbacks

    # -- writer thread --------------------------------------------------------------------------

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self._loop
        if loop is not None:
            post(loop, fn, *args)

    def _saved(self, inserted: bool, retried: bool) -> None:
        self.counters.bump("rides_saved" if inserted else "duplicates")
        if retried:
            self.counters.bump("retried")

    def _attempt_failed(self, what: str, pending: int) -> None:
        """A save failed; the ride waits in the retry queue (nothing lost yet)."""
        self.counters.errors += 1
        self.counters.bump("write_errors")
        self.counters.extra["retry_pending"] = pending
        self._error_log(
            logging.ERROR,
            "%s (%d ride(s) waiting to be retried)",
            what,
            pending,
        )

    def _failed(self, what: str) -> None:
        """A ride is finally lost: malformed, retry queue overflow, or still failing at stop."""
        self.counters.errors += 1
        self.counters.dropped += 1
        self._error_log(logging.ERROR, "%s", what)

    def _malformed(self, what: str) -> None:
        self.counters.bump("write_errors")
        self._failed(what)

    def _retry_dropped(self, what: str) -> None:
        self.counters.bump("retry_dropped")
        self._failed(what)

    def _pending(self, n: int) -> None:
        if n or "retry_pending" in self.counters.extra:
            self.counters.extra["retry_pending"] = n

    def _recreated(self, what: str, lost: int) -> None:
        self.counters.errors += 1
        self.counters.bump("db_recreated")
        if lost:
            self.counters.bump("rides_lost", lost)
        self.log.error("%s", what)

    def _writer(self) -> None:
        """The writer thread: saves rides in order; a failed save is retried (bounded)."""
        cfg = self.config
        path = cfg.path
        db: RideDB | None = None
        saved_here = 0  # rides saved in the database file currently open
        dirty = False  # saved since the last checkpoint
        pending: deque[tuple[Event, str | None, list[Sample]]] = deque()
        delay, retry_at, retrying = RETRY_INITIAL, 0.0, False
        stopping = False
        try:
            db = RideDB.open(path, cfg.busy_timeout)
            self.log.info("writing rides to %s", path)
        except StoreError as exc:
            self._post(self.log.error, "%s (will retry per ride)", exc)
        while not stopping:
            now = time.monotonic()
            timeout = max(0.0, retry_at - now) if pending else IDLE_CHECK
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = _IDLE
            if item is None:
                stopping = True
            elif item is not _IDLE:
                pending.append(item)
                if len(pending) > cfg.retry_queue:
                    event = pending.popleft()[0]
                    self._post(
                        self._retry_dropped,
                        f"ride {_ride_id(event)} dropped: {cfg.retry_queue} ride(s) already "
                        f"wait for the database {path!r} to take them",
                    )
            # the database file deleted or replaced under us: start a new one (with schema)
            if db is not None:
                why = db.lost()
                if why is not None:
                    db.close()
                    db = None
                    _remove_orphans(path)
                    lost, saved_here = saved_here, 0
                    self._post(
                        self._recreated,
                        f"ride database {path!r} was {why} while open: the {lost} ride(s) "
                        "saved in it since it was opened are gone; a new database with the "
                        "schema is created",
                        lost,
                    )
                    if not pending:
                        try:
                            db = RideDB.open(path, cfg.busy_timeout)
                        except StoreError as exc:
                            self._post(self._attempt_failed, str(exc), 0)
            if pending and (stopping or time.monotonic() >= retry_at):
                while pending:
                    event, channel, samples = pending[0]
                    ride_id = _ride_id(event)
                    try:
                        if db is None:
                            db = RideDB.open(path, cfg.busy_timeout)
                            saved_here = 0
                        inserted = db.save(event, channel, samples)
                    except (StoreError, sqlite3.Error) as exc:
                        detail = (
                            str(exc)
                            if isinstance(exc, StoreError)
                            else (f"{type(exc).__name__}: {exc}")
                        )
                        self._post(
                            self._attempt_failed,
                            f"ride {ride_id} not saved to {path!r}: {detail}",
                            len(pending),
                        )
                        if db is not None:
                            db.close()
                            db = None
                        retry_at = time.monotonic() + delay
                        delay = min(delay * 2, RETRY_MAX)
                        retrying = True
                        break
                    except (KeyError, ValueError, TypeError) as exc:
                        pending.popleft()
                        self._post(
                            self._malformed,
                            f"ride {ride_id} not saved: malformed ride_end: {exc!r}",
                        )
                    else:
                        pending.popleft()
                        saved_here += int(inserted)
                        dirty = dirty or inserted
                        self._post(self._saved, inserted, retrying)
                else:
                    retrying, delay = False, RETRY_INITIAL
                self._post(self._pending, len(pending))
            if (
                db is not None
                and dirty
                and (item is _IDLE or stopping or db.wal_size() > WAL_CHECKPOINT_BYTES)
            ):
                try:
                    db.checkpoint()
                    dirty = False
                except sqlite3.Error as exc:
                    self._post(
                        self._error_log,
                        logging.WARNING,
                        "checkpointing %s-wal failed: %s (tried again later)",
                        path,
                        exc,
                    )
        for event, _, _ in pending:
            self._post(
                self._retry_dropped,
                f"ride {_ride_id(event)} dropped at stop: the database {path!r} still fails",
            )
        if db is not None:
            db.close()


_IDLE: Any = object()


def _ride_id(event: Event) -> str:
    payload = event.get("payload")
    return str(payload.get("ride_id")) if isinstance(payload, dict) else "?"


def _remove_orphans(path: str) -> None:
    """The database file is gone: its -wal/-shm (if someone left them) belong to no database
    and must not be applied to the new one."""
    if os.path.exists(path):
        return
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(OSError):
            os.unlink(path + suffix)
