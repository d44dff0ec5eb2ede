"""Stall diagnostics for a system under test (``BENCH_DIAGNOSE=1`` in its environment).

How the 56 ms garbage-collector pause and the 66 ms ride-start fit at 16,000 frames/s were
found (bench/RESULTS.md): while the traffic runs, it records

* event-loop lag: a 1 ms timer's lateness (the loop could not run anything for that long);
* slow callbacks: every loop callback that ran longer than 10 ms, with its repr;
* garbage-collector pauses per generation (``gc.callbacks``).

:meth:`Diagnostics.report` prints the worst of each to stderr. It slows the SUT down a little
(one wrapper per loop callback), so it is off unless asked for.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from typing import Any

__all__ = ["Diagnostics"]

_SLOW = 0.010


class Diagnostics:
    """Loop lag, slow callbacks and GC pauses of the running loop, from :meth:`start` on."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("BENCH_DIAGNOSE"))
        self.lags: list[tuple[float, float]] = []
        self.slow: list[tuple[float, str]] = []
        self.gc_pauses: list[tuple[int, float]] = []
        self._gc_t0 = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self.enabled:
            return
        t_start = loop.time()
        slow = self.slow
        orig_run = asyncio.events.Handle._run

        def run(handle: Any) -> None:
            t = time.perf_counter()
            orig_run(handle)
            d = time.perf_counter() - t
            if d > _SLOW:
                slow.append((d, repr(handle)[:300]))

        asyncio.events.Handle._run = run  # type: ignore[method-assign,assignment]

        def tick(expected: float) -> None:
            now = loop.time()
            self.lags.append((now - expected, expected - t_start))
            loop.call_at(now + 0.001, tick, now + 0.001)

        loop.call_soon(tick, loop.time())
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_t0 = time.perf_counter()
        else:
            self.gc_pauses.append((info["generation"], time.perf_counter() - self._gc_t0))

    def report(self) -> None:
        if not self.enabled:
            return
        out = sys.stderr
        worst = sorted(self.lags, reverse=True)[:10]
        out.write("loop lag (ms @ s): " + ", ".join(f"{a * 1e3:.1f}@{b:.2f}" for a, b in worst))
        out.write("\n")
        for d, r in sorted(self.slow, reverse=True)[:5]:
            out.write(f"slow callback {d * 1e3:.1f} ms: {r}\n")
        by_gen: dict[int, list[float]] = {}
        for g, d in self.gc_pauses:
            by_gen.setdefault(g, []).append(d)
        for g, ds in sorted(by_gen.items()):
            out.write(f"gc gen{g}: {len(ds)} runs, max {max(ds) * 1e3:.1f} ms\n")
