"""ride_store's fast path for position samples, and its batch path (consume_batch), keep
exactly what its full path keeps.

The same stream (samples of two lifts, rides opening and closing, samples older than the
pre-buffer, a buffer over ``max_samples``) goes into two stores: as it is (position samples take
the fast path) and with every ``ts`` a float subclass (the fast path checks exact types, so all
take the full path). After every message both stores' buffers and counters must be equal,
and a third store fed the stream in batches must end with the same.
"""

from __future__ import annotations

import logging
from typing import Any

from les02_flow.events import make_event
from les02_flow.node import Context
from les02_flow.nodes.rides.store import RideStore, RideStoreConfig


class Stamp(float):
    """A float that is not exactly ``float``."""


def _store(name: str) -> RideStore:
    config = RideStoreConfig(path=f"/nonexistent/{name}.sqlite", max_samples=700, margin=0.5)
    return RideStore(name, config, Context(name, logging.getLogger(f"test.{name}")))


def _stream() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    t = 1737319234.0
    for k in range(3000):
        t += 0.002
        lift = "a" if k % 3 else "b"
        ev = make_event("position_sample", t, {"channel": "master", "position_raw": k}, lift)
        if k % 5 == 0:
            ev["site"] = "s1"
        out.append(ev)
        if k % 900 == 100:
            out.append(make_event("ride_start", t, {"ride_id": f"r{k}", "channel": "master"}))
        if k % 900 == 600:
            out.append(make_event("ride_end", t, {"ride_id": f"r{k - 500}"}))  # malformed
    out.append(make_event("position_sample", t, {"channel": "master", "position_raw": True}))
    return out


def _state(store: RideStore) -> Any:
    return (
        {k: (list(b.samples), dict(b.open)) for k, b in store._buffers.items()},
        store.counters.as_dict(),
    )


def test_fast_and_full_path_keep_the_same_samples() -> None:
    fast, full, batched = _store("fast"), _store("full"), _store("batched")
    stream = _stream()
    for k in range(0, len(stream), 97):  # the batch path, in batches of 97
        batched.consume_batch(stream[k : k + 97])
    for n, ev in enumerate(stream):
        slow = {**ev, "ts": Stamp(ev["ts"])}
        for store, msg in ((fast, ev), (full, slow)):
            try:
                store.consume(msg)
            except ValueError:
                store.counters.errors += 1
        if n % 7 == 0:
            assert _state(fast) == _state(full)
    assert _state(fast) == _state(full)
    assert _state(batched) == _state(full)
    assert sum(len(b.samples) for b in fast._buffers.values()) > 700
