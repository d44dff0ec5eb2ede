"""What the web console's page sees live, made from the event stream (plain Python: no asyncio,
no sockets).

:class:`LiveState` takes every event (:meth:`LiveState.add`, a few dictionary operations per
event) and, at the console's update rate, turns what arrived since the last update into ONE
``tick`` message (:meth:`LiveState.tick`): the latest position sample per channel, the speed,
the ride in progress and the non-sample events. So a browser gets at most ``update_rate``
messages a second however fast the bus is, never one message per frame. The position history
(for the scrolling chart) keeps one point per channel per tick for ``history`` seconds.

Events that carry a ``site`` (a fleet's, from ``mqtt_source``) also fill a table of lifts keyed
by (site, source): online state from ``edge_status``, last seen, last known position. It is
bounded (``max_lifts``, the least recently seen evicted and counted); a tick carries only the
lifts that changed since the last one.

:class:`RateMeter` turns the engine's cumulative node counters into per-second rates.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

__all__ = ["CHANNELS", "LiveState", "RateMeter", "learn_floors"]

CHANNELS = ("master", "slave")
#: non-sample events carried by one tick; beyond that they are counted in ``skipped``
MAX_TICK_EVENTS = 50
#: events kept for a page that connects (its debug sidebar starts with them)
RECENT_EVENTS = 100
#: seconds of history the speed is measured over
SPEED_WINDOW = 0.25
#: event types that mark the chart (spans and points)
MARK_TYPES = ("channel_mismatch", "dropout", "ride_start", "ride_end", "relevel")
#: lifts (site, source) kept in the fleet table; the least recently seen beyond that evicted
MAX_LIFTS = 10_000


class LiveState:
    """The stream, summarised for the page.

    >>> s = LiveState(history=10.0, resolution_mm=1.0)
    >>> for i in range(5):
    ...     s.add({"type": "position_sample", "ts": 100.0 + i / 250, "source": "les02",
    ...            "payload": {"channel": "master", "position_raw": 1000 + 4 * i}})
    >>> tick = s.tick()
    >>> tick["samples"], tick["counts"]
    ({'master': [100.016, 1016]}, {'position_sample': 5})
    >>> s.tick() is None  # nothing new
    True
    """

    def __init__(
        self, history: float, resolution_mm: float = 1.0, max_lifts: int = MAX_LIFTS
    ) -> None:
        self.history = history
        self.max_lifts = max_lifts
        #: (site, source) -> the lift's row, least recently seen first
        self.lifts: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self.lifts_evicted = 0
        self._lifts_changed: set[tuple[str, str]] = set()
        self._lifts_gone: set[tuple[str, str]] = set()
        self.resolution_mm = resolution_mm
        self._last: dict[str, tuple[float, int]] = {}
        self._last_event: dict[str, dict[str, Any]] = {}
        self._fresh: set[str] = set()
        self._events: list[dict[str, Any]] = []
        self._skipped = 0
        self.counts: dict[str, int] = {}
        self._counts_sent: dict[str, int] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self.marks: deque[dict[str, Any]] = deque(maxlen=500)
        self.points: dict[str, deque[tuple[float, int]]] = {ch: deque() for ch in CHANNELS}
        self.ride: dict[str, Any] | None = None
        self.mismatch: dict[str, Any] | None = None
        self.last_ride: dict[str, Any] | None = None
        self.speed_mm_s: float | None = None

    # -- per event (hot path) ----------------------------------------------------------------

    def add(self, event: Any) -> None:
        """Take one event envelope; anything that is not one is ignored."""
        try:
            type_ = event["type"]
        except (TypeError, KeyError, IndexError):
            return
        counts = self.counts
        counts[type_] = counts.get(type_, 0) + 1
        if type(event) is dict and "site" in event:
            self._see_lift(event, type_)
        if type_ == "position_sample":
            payload = event.get("payload")
            if isinstance(payload, dict):
                channel = payload.get("channel")
                raw = payload.get("position_raw")
                ts = event.get("ts")
                if isinstance(channel, str) and isinstance(raw, int) and _number(ts):
                    self._last[channel] = (float(ts), raw)
                    self._last_event[channel] = event
                    self._fresh.add(channel)
            return
        if len(self._events) < MAX_TICK_EVENTS:
            self._events.append(event)
        else:
            self._skipped += 1
        self.recent.append(event)
        payload = event.get("payload") if isinstance(event, dict) else None
        if not isinstance(payload, dict):
            return
        if type_ in MARK_TYPES:
            self.marks.append({"type": type_, "ts": event.get("ts"), "payload": payload})
        if type_ == "ride_start":
            self.ride = payload
        elif type_ == "ride_end":
            self.ride = None
            self.last_ride = payload
        elif type_ == "channel_mismatch":
            self.mismatch = payload if payload.get("state") == "begin" else None

    def _see_lift(self, event: dict[str, Any], type_: str) -> None:
        site, source = event.get("site"), event.get("source")
        if not isinstance(site, str) or not isinstance(source, str):
            return
        key = (site, source)
        lifts = self.lifts
        row = lifts.get(key)
        if row is None:
            row = {
                "site": site,
                "source": source,
                "online": None,
                "last_seen": None,
                "status_ts": None,
                "position_mm": None,
            }
            lifts[key] = row
            self._lifts_gone.discard(key)
            while len(lifts) > self.max_lifts:
                old, _ = lifts.popitem(last=False)
                self.lifts_evicted += 1
                self._lifts_changed.discard(old)
                self._lifts_gone.add(old)
        else:
            lifts.move_to_end(key)
        ts = event.get("ts")
        if _number(ts):
            row["last_seen"] = ts
        payload = event.get("payload")
        if isinstance(payload, dict):
            if type_ == "edge_status":
                state = payload.get("state")
                if state in ("online", "offline"):
                    row["online"] = state == "online"
                    row["status_ts"] = ts if _number(ts) else None
            else:
                mm = _position_mm(type_, payload, self.resolution_mm)
                if mm is not None:
                    row["position_mm"] = mm
        self._lifts_changed.add(key)

    def lift_table(self) -> dict[str, Any]:
        """The fleet's lifts (``/api/lifts``), by site and source."""
        return {
            "lifts": [dict(self.lifts[k]) for k in sorted(self.lifts)],
            "count": len(self.lifts),
            "max_lifts": self.max_lifts,
            "evicted": self.lifts_evicted,
        }

    # -- per update ----------------------------------------------------------------------------

    def tick(self) -> dict[str, Any] | None:
        """The update for the page since the last call, or ``None`` when nothing happened."""
        if (
            not self._fresh
            and not self._events
            and not self._lifts_changed
            and not self._lifts_gone
            and self.counts == self._counts_sent
        ):
            return None
        samples: dict[str, list[float | int]] = {}
        for channel in sorted(self._fresh):
            ts, raw = self._last[channel]
            samples[channel] = [ts, raw]
            self._remember(channel, ts, raw)
            self.recent.append(self._last_event[channel])
        self._fresh.clear()
        self._update_speed()
        events, self._events = self._events, []
        skipped, self._skipped = self._skipped, 0
        self._counts_sent = dict(self.counts)
        msg: dict[str, Any] = {
            "kind": "tick",
            "samples": samples,
            "speed_mm_s": self.speed_mm_s,
            "ride": self.ride,
            "mismatch": self.mismatch,
            "events": events,
            "counts": self._counts_sent,
        }
        if skipped:
            msg["skipped"] = skipped
        if self._lifts_changed or self._lifts_gone:
            lifts = self.lifts
            msg["lifts"] = [dict(lifts[k]) for k in sorted(self._lifts_changed)]
            msg["lifts_gone"] = [list(k) for k in sorted(self._lifts_gone)]
            msg["lifts_evicted"] = self.lifts_evicted
            self._lifts_changed.clear()
            self._lifts_gone.clear()
        return msg

    def _remember(self, channel: str, ts: float, raw: int) -> None:
        points = self.points.setdefault(channel, deque())
        if points and ts < points[-1][0]:  # time went back (a replay restarted): start over
            points.clear()
        points.append((ts, raw))
        limit = ts - self.history
        while points and points[0][0] < limit:
            points.popleft()

    def _update_speed(self) -> None:
        points = self.points.get("master") or next((p for p in self.points.values() if p), None)
        if not points or len(points) < 2:
            self.speed_mm_s = None if not points else 0.0
            return
        t1, r1 = points[-1]
        t0, r0 = t1, r1
        for t, r in reversed(points):
            t0, r0 = t, r
            if t1 - t >= SPEED_WINDOW:
                break
        self.speed_mm_s = round((r1 - r0) * self.resolution_mm / (t1 - t0), 1) if t1 > t0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        """Everything a page that just connected needs to draw at once."""
        return {
            "points": {ch: [[t, r] for t, r in pts] for ch, pts in self.points.items()},
            "last": {ch: [t, r] for ch, (t, r) in self._last.items()},
            "speed_mm_s": self.speed_mm_s,
            "ride": self.ride,
            "mismatch": self.mismatch,
            "last_ride": self.last_ride,
            "marks": list(self.marks),
            "recent": list(self.recent),
            "counts": dict(self.counts),
            "lifts": self.lift_table()["lifts"],
            "lifts_evicted": self.lifts_evicted,
        }


class RateMeter:
    """Per-second ``in``/``out`` rates from cumulative counters, one :meth:`update` per period.

    >>> m = RateMeter()
    >>> m.update({"a": {"in": 0, "out": 0}}, now=10.0)
    {'a': {'in': 0.0, 'out': 0.0}}
    >>> m.update({"a": {"in": 500, "out": 250}}, now=11.0)
    {'a': {'in': 500.0, 'out': 250.0}}
    """

    def __init__(self) -> None:
        self._prev: dict[str, dict[str, int]] = {}
        self._t: float | None = None

    def update(
        self, counters: dict[str, dict[str, int]], now: float
    ) -> dict[str, dict[str, float]]:
        dt = None if self._t is None else now - self._t
        rates: dict[str, dict[str, float]] = {}
        for nid, c in counters.items():
            prev = self._prev.get(nid)
            rates[nid] = {
                key: (
                    round(max(c.get(key, 0) - prev.get(key, 0), 0) / dt, 1)
                    if prev is not None and dt
                    else 0.0
                )
                for key in ("in", "out")
            }
        self._prev = {nid: dict(c) for nid, c in counters.items()}
        self._t = now
        return rates


def learn_floors(positions_mm: list[float], tolerance_mm: float = 30.0) -> list[float]:
    """Floor heights learned from the rest positions rides started and ended at: positions
    within ``tolerance_mm`` of each other are one floor (their mean), lowest first.

    >>> learn_floors([0.0, 3500.0, 3502.0, 7000.0, 1.0, 6998.0])
    [0.5, 3501.0, 6999.0]
    """
    floors: list[list[float]] = []
    for p in sorted(positions_mm):
        if floors and p - floors[-1][-1] <= tolerance_mm:
            floors[-1].append(p)
        else:
            floors.append([p])
    return [round(sum(f) / len(f), 1) for f in floors]


def _position_mm(type_: str, payload: dict[str, Any], resolution_mm: float) -> float | None:
    """A lift's position from one of its events, when the event tells it."""
    if type_ == "position_sample":
        raw = payload.get("position_raw")
        return (
            round(raw * resolution_mm, 1)
            if isinstance(raw, (int, float)) and _number(raw)
            else None
        )
    key = {"ride_start": "position_mm", "ride_end": "end_position_mm"}.get(type_)
    value = payload.get(key) if key else None
    return float(value) if isinstance(value, (int, float)) and _number(value) else None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
