"""Node ``replay_source``: replay a recording into the flow, paced or as fast as possible.

A thin wrapper: a reader thread runs :func:`~les02_flow.nodes.recording.replay.read_batches`
(python-can readers block) and hands batches to the loop with ``call_soon_threadsafe``, at most
:data:`READ_AHEAD` batches ahead; a task on the loop emits each item when it is due. At
``speed: max`` the task reads the batches itself, between them (the reading holds the GIL in a
thread too; a thread only added hand-overs between the cores), and emits each batch at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Literal

import can
from pydantic import Field, field_validator, model_validator
from reactivex import Observable, abc
from reactivex.disposable import Disposable

from les02_flow.configfields import CanIdInt, EventTypes, WindowEnd, WindowStart, check_window
from les02_flow.loopcall import post as _post
from les02_flow.node import Context, Kind, Node, NodeConfig, NodeStartError, RateLimitedLog
from les02_flow.nodes.can_source import CanFilter
from les02_flow.nodes.recording.formats import Problem, RecordingReader, detect_format
from les02_flow.nodes.recording.replay import (
    Batch,
    FrameFilter,
    Timeline,
    Window,
    format_progress,
    read_batches,
)

__all__ = ["READ_AHEAD", "YIELD_EVERY", "ReplaySource", "ReplaySourceConfig"]

#: items per batch handed from the reader thread to the loop
READ_BATCH = 1000
#: batches read ahead of what has been emitted
READ_AHEAD = 8
#: at speed max (or when behind), items emitted before yielding to the event loop
YIELD_EVERY = 1000
#: default longest silence replayed (recorded seconds): a bogus 1e15 s gap must not stall
DEFAULT_MAX_GAP = 60.0
#: a wait for the next item longer than this is logged (with max_gap: null)
LONG_WAIT = 10.0
#: corrupt lines logged one by one before the log is rate-limited
_PROBLEMS_LOGGED = 10
_STOP_TIMEOUT = 2.0


class ReplaySourceConfig(NodeConfig):
    """Config of ``replay_source``."""

    path: str = Field(
        min_length=1,
        description="The recording: .log, .asc, .blf, .csv, .trc, .db (frames, port 'out'), "
        ".jsonl (events, port 'events'), or a .gz of the text formats.",
    )
    speed: float | Literal["max"] = Field(
        default=1.0,
        description="1 = real time, 2 = twice as fast, 0.5 = half speed, 'max' = as fast as "
        "possible (the loop still runs other nodes between batches of 1000).",
    )
    loop: int | Literal["forever"] = Field(
        default=1,
        description="How many times to play the recording (1 or more), or 'forever'.",
    )
    loop_gap: float = Field(
        default=1.0,
        ge=0,
        allow_inf_nan=False,
        description="With loop > 1 and original timestamps: seconds between the last item of "
        "a pass and the first of the next. Each pass is shifted by the recording's length "
        "plus this, so time never runs backwards and a flow sees one longer session.",
    )
    max_gap: float | None = Field(
        default=DEFAULT_MAX_GAP,
        gt=0,
        allow_inf_nan=False,
        description="Longest silence replayed, in recorded seconds: longer gaps are shortened "
        "to this, counted in 'gaps_capped' and logged (affects pacing and 'now' timestamps). "
        "null = keep every gap (a wait longer than 10 s is still logged).",
    )
    timestamps: Literal["original", "now"] = Field(
        default="original",
        description="'original' keeps the recorded times; 'now' re-stamps each item to the "
        "replay clock (replay start + its offset / speed; at speed max the recorded spacing "
        "is kept).",
    )
    start: WindowStart = 0.0
    end: WindowEnd = None
    ids: list[CanIdInt] = Field(
        default_factory=list,
        description="Replay only frames with these CAN ids (hex like 0x80 is fine); "
        "combined with 'filters' (a frame passes if either matches). Empty = all.",
    )
    filters: list[CanFilter] = Field(
        default_factory=list,
        description="Replay only frames matching one {can_id, can_mask, extended} filter "
        "(id & can_mask == can_id & can_mask). Empty = all.",
    )
    types: EventTypes
    progress: float = Field(
        default=0.0,
        ge=0,
        description="Seconds between progress reports (frames, percent, rate, ETA): a bar on "
        "stderr when it is a terminal, log lines otherwise. 0 = off.",
    )

    @field_validator("ids")
    @classmethod
    def _id_range(cls, value: list[int]) -> list[int]:
        for v in value:
            if not 0 <= v <= 0x1FFFFFFF:
                raise ValueError(f"CAN id out of range: {v} (0..0x1FFFFFFF)")
        return value

    @field_validator("path")
    @classmethod
    def _known_format(cls, value: str) -> str:
        detect_format(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> ReplaySourceConfig:
        if isinstance(self.speed, float | int) and not self.speed > 0:
            raise ValueError(f"speed must be > 0 or 'max', got {self.speed}")
        if isinstance(self.loop, int) and self.loop < 1:
            raise ValueError(f"loop must be >= 1 or 'forever', got {self.loop}")
        check_window(self.start, self.end)
        return self


class _Port:
    """A light hot observable for one output port: emitting calls the subscribers' ``on_next``
    directly (no Subject lock; the engine subscribes once per port)."""

    def __init__(self) -> None:
        self.observers: list[abc.ObserverBase[Any]] = []
        self.completed = False

    def observable(self) -> Observable[Any]:
        def subscribe(
            observer: abc.ObserverBase[Any], scheduler: abc.SchedulerBase | None = None
        ) -> abc.DisposableBase:
            if self.completed:
                observer.on_completed()
                return Disposable()
            self.observers.append(observer)

            def dispose() -> None:
                if observer in self.observers:
                    self.observers.remove(observer)

            return Disposable(dispose)

        return Observable(subscribe)

    def on_next(self, value: Any) -> None:
        for observer in list(self.observers):
            observer.on_next(value)

    def emitter(self) -> Callable[[Any], None]:
        """The fastest way to emit to the current subscribers."""
        if len(self.observers) == 1:
            return self.observers[0].on_next
        return self.on_next

    def on_completed(self) -> None:
        if self.completed:
            return
        self.completed = True
        observers, self.observers = self.observers, []
        for observer in observers:
            observer.on_completed()


class ReplaySource(Node[ReplaySourceConfig]):
    """Replay a recording (candump .log, .asc, .blf, .csv, .trc, .db, or .jsonl events).

    Frames come out on ``out``, events of a ``.jsonl`` recording on ``events``; both ports
    complete at the end, so a flow whose sources are all replays finishes by itself (and
    ``les02-flow run`` exits 0).

    Pacing is drift-free against the event loop's monotonic clock: each item's due time is
    computed from the replay start and the recorded timestamps (never by adding up sleeps);
    everything due is emitted at once. ``speed: max`` emits as fast as the flow takes it,
    yielding to the loop every 1000 items so sinks and servers keep running. ``max_gap``
    shortens long silences (default 60 s; ``null`` keeps them): each shortened gap is counted
    in ``gaps_capped`` and logged. ``timestamps: now`` re-stamps to the replay clock.

    Timestamps that go backwards (a clock stepped back, a bogus first timestamp like
    ``1e15``): every item is replayed in file order, right after the one before it; none is
    skipped for its timestamp (the ``start``/``end`` window is measured on the same monotonic
    timeline). Each such item is counted in ``out_of_order`` and a warning says so.

    Frames are checked like frames from a bus: a frame no CAN bus can carry (a classic frame
    with more than 8 data bytes, an invalid FD length, a DLC that does not match the data,
    an id out of range, a non-finite timestamp, or in ``.log`` files a line python-can would
    misread such as ``080#ABC`` with an odd number of hex digits) is reported with file and
    line, counted in ``errors`` and ``corrupt``, and skipped.

    ``loop`` replays several times (or ``forever``): with the original timestamps each pass
    after the first is shifted to start ``loop_gap`` seconds (default 1) after the previous
    pass's last item -- the recording's length plus the gap -- so time never runs backwards
    and the flow sees one longer session (ride ids differ per pass, detectors do not see
    time jump back); pacing waits the gap too. ``start``/``end`` cut a window (seconds from
    the first item); ``ids``/``filters`` select CAN ids; ``types`` selects event types.

    Tolerant reading: a corrupt line (text formats) is reported with file and line number,
    counted in ``errors`` and ``corrupt``, and skipped; an unterminated last line (a recording
    cut by ``kill -9``) is reported and skipped; a corrupt binary record (.blf/.db) or a
    truncated .gz is reported with its offset and ends that pass. A missing or unreadable file
    fails at start. The file is read in a thread, at most 8 batches of 1000 ahead (at speed
    max on the event loop, one batch of 1000 at a time between the others' work).

    Counters: ``out`` (by the runtime), ``corrupt``, ``passes`` (loop passes completed),
    ``out_of_order``, ``gaps_capped``.
    """

    type_name: ClassVar[str] = "replay_source"
    input_kind: ClassVar[Kind | None] = None
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.FRAME, "events": Kind.EVENT}
    examples: ClassVar[tuple[str, ...]] = (
        "bus:\n  type: replay_source\n  path: recordings/session.log\n",
        "bus:\n  type: replay_source\n  path: recordings/session.blf\n  speed: max\n"
        "  ids: [0x80, 0x81]\n",
        "bus:\n  type: replay_source\n  path: recordings/session.asc.gz\n  speed: 2\n"
        "  loop: forever\n  max_gap: 5\n  timestamps: now\n  start: 60\n  end: 120\n",
        "events:\n  type: replay_source\n  path: recordings/events.jsonl\n  speed: max\n"
        "  types: [position_sample]\n",
    )

    #: at speed max, read on the loop instead of a reader thread (False: always a thread)
    read_on_loop_at_max: ClassVar[bool] = True

    def __init__(self, node_id: str, config: ReplaySourceConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self._out = _Port()
        self._events = _Port()
        #: the runtime's batch emitters per port (see Node.bind_batches)
        self._batch_emit: Mapping[str, Callable[[list[Any]], None]] = {}
        self._queue: deque[Batch | BaseException] = deque()
        self._ready = asyncio.Event()
        self._slots = threading.BoundedSemaphore(READ_AHEAD)
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        #: speed max: the batches, read on the loop (no reader thread)
        self._inline: Iterator[Batch] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._progress_task: asyncio.Task[None] | None = None
        self._completed = False
        self._stopped = False
        self._problem_log = RateLimitedLog(self.log)
        self._order_log = RateLimitedLog(self.log)
        self._wait_log = RateLimitedLog(self.log)
        self._problems = 0
        #: progress: items emitted, current pass, share of the current pass read
        self.items = 0
        self._pass = 0
        self._fraction = 0.0
        self._t_start = 0.0

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        return {"out": self._out.observable(), "events": self._events.observable()}

    def bind_batches(self, emitters: Mapping[str, Callable[[list[Any]], None]]) -> None:
        self._batch_emit = emitters

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the recording can be read, then start the reader thread and the pacer."""
        if self._thread is not None or self._inline is not None or self._stopped:
            return
        path = self.config.path
        try:
            await asyncio.to_thread(_probe, path)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise NodeStartError(
                f"{self.log.prefix}: cannot read recording '{path}': {reason}"
            ) from exc
        except Exception as exc:
            raise NodeStartError(
                f"{self.log.prefix}: cannot read recording '{path}': {type(exc).__name__}: {exc}"
            ) from exc
        loop = asyncio.get_running_loop()
        self._t_start = loop.time()
        if self.config.speed == "max" and self.read_on_loop_at_max:
            # as fast as possible: read on the loop between batches. A reader thread would
            # hold the GIL for the same work and only add hand-overs between two cores
            self._inline = self._batches()
        else:
            self._thread = threading.Thread(
                target=self._read, args=(loop,), name=f"replay_source {self.node_id}", daemon=True
            )
            self._thread.start()
        self._pump_task = loop.create_task(self._pump(), name=f"replay_source {self.node_id}")
        if self.config.progress > 0:
            self._progress_task = loop.create_task(self._report_progress())
        cfg = self.config
        self.log.info(
            "replaying %s (speed %s, loop %s)",
            path,
            cfg.speed,
            cfg.loop,
        )

    async def stop(self) -> None:
        """Stop reading and emitting, complete the ports. Idempotent, bounded, never raises."""
        if self._stopped:
            return
        self._stopped = True
        self._halt.set()
        try:
            tasks = [t for t in (self._pump_task, self._progress_task) if t is not None]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=_STOP_TIMEOUT)
            thread = self._thread
            if thread is not None and thread.is_alive():
                with contextlib.suppress(ValueError):
                    self._slots.release()  # wake a reader waiting for a slot
                await asyncio.to_thread(thread.join, _STOP_TIMEOUT)
        except Exception as exc:
            self.log.warning("error while stopping: %s", exc)
        finally:
            self._complete()

    # -- reader thread -------------------------------------------------------------------------

    def _batches(self) -> Iterator[Batch]:
        """The recording's batches (:func:`read_batches` with this node's settings)."""
        cfg = self.config
        accept: Callable[[Any], bool] | None = None
        if detect_format(cfg.path).events:
            if cfg.types:
                wanted = frozenset(cfg.types)
                accept = lambda e: e.get("type") in wanted  # noqa: E731
        else:
            frame_filter = FrameFilter(
                cfg.ids, [(f.can_id, f.can_mask, f.extended) for f in cfg.filters]
            )
            if not frame_filter.everything:
                accept = frame_filter.accepts
        return read_batches(
            cfg.path,
            loops=None if cfg.loop == "forever" else int(cfg.loop),
            timeline=Timeline(cfg.max_gap),
            window=Window(cfg.start, cfg.end),
            accept=accept,
            batch_size=READ_BATCH,
            stopped=self._halt.is_set,
            loop_gap=cfg.loop_gap if cfg.timestamps == "original" else None,
        )

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        halt = self._halt
        try:
            for batch in self._batches():
                while not self._slots.acquire(timeout=0.2):
                    if halt.is_set():
                        return
                if halt.is_set() or not _post(loop, self._receive, batch):
                    return
                if batch.end:
                    return
        except Exception as exc:  # the file became unreadable mid-way
            _post(loop, self._receive, exc)

    def _receive(self, item: Batch | BaseException) -> None:
        """Loop side: a batch (or the reader's failure) arrived."""
        self._queue.append(item)
        self._ready.set()

    # -- pacing ----------------------------------------------------------------------------------

    async def _next(self) -> Batch | BaseException:
        if self._inline is not None:  # speed max: read here, on the loop
            try:
                return next(self._inline)
            except StopIteration:
                return Batch(end=True)
            except Exception as exc:  # the file became unreadable mid-way
                return exc
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
        item = self._queue.popleft()
        if isinstance(item, Batch):
            with contextlib.suppress(ValueError):
                self._slots.release()
        return item

    async def _pump(self) -> None:
        cfg = self.config
        loop = asyncio.get_running_loop()
        speed = None if cfg.speed == "max" else float(cfg.speed)
        restamp = cfg.timestamps == "now"
        t0: float | None = None
        epoch0 = time.time()
        since_yield = 0
        try:
            while True:
                batch = await self._next()
                if isinstance(batch, BaseException):
                    self.counters.errors += 1
                    self.log.error(
                        "reading %s failed: %s: %s",
                        cfg.path,
                        type(batch).__name__,
                        batch,
                    )
                    break
                for problem in batch.problems:
                    self._report_problem(problem)
                if batch.out_of_order or batch.gaps_capped:
                    self._report_order(batch)
                if t0 is None and batch.items:
                    # the clock starts with the first item (not with the first read)
                    t0 = loop.time() - (batch.items[0][0] / speed if speed else 0.0)
                    epoch0 = time.time()
                if speed is None and batch.items:
                    # as fast as possible: the whole batch in one call (one by one where the
                    # flow downstream needs it: the engine decides, the results are the same)
                    self._emit_batch(batch, epoch0 if restamp else None)
                    await asyncio.sleep(0)
                    since_yield = 0
                    batch.items = []
                emit_frame = self._out.emitter()
                emit_event = self._events.emitter()
                for v, item in batch.items:
                    if speed is not None and t0 is not None:
                        delay = t0 + v / speed - loop.time()
                        if delay > 0:
                            if delay > LONG_WAIT:
                                self._wait_log(
                                    logging.WARNING,
                                    "the recording is silent here: waiting "
                                    "%.1f s for the next item (set max_gap to shorten gaps)",
                                    delay,
                                )
                            await asyncio.sleep(delay)
                            since_yield = 0
                    if since_yield >= YIELD_EVERY:
                        await asyncio.sleep(0)
                        since_yield = 0
                    since_yield += 1
                    try:
                        if isinstance(item, can.Message):
                            if restamp:
                                item.timestamp = epoch0 + (v / speed if speed else v)
                            emit_frame(item)
                        else:
                            if restamp:
                                item["ts"] = epoch0 + (v / speed if speed else v)
                            emit_event(item)
                    except Exception as exc:
                        self.report_error(item, exc)
                self.items += len(batch.items) + batch.emitted
                if batch.pass_index > self._pass:
                    self.counters.bump("passes", batch.pass_index - self._pass)
                self._pass = batch.pass_index
                self._fraction = batch.fraction
                if batch.end:
                    self.counters.bump("passes")
                    self._pass += 1
                    self._fraction = 0.0
                    break
        finally:
            if self._problems > _PROBLEMS_LOGGED:
                self.log.warning(
                    "%d corrupt lines/records skipped in %s",
                    self._problems,
                    cfg.path,
                )
            self._halt.set()
            self._complete()

    def _emit_batch(self, batch: Batch, epoch0: float | None) -> None:
        """Speed max: emit the batch's items in one call per port (frames or events)."""
        items = [item for _v, item in batch.items]
        if epoch0 is not None:
            for v, item in batch.items:
                if isinstance(item, can.Message):
                    item.timestamp = epoch0 + v
                else:
                    item["ts"] = epoch0 + v
        frames = not detect_format(self.config.path).events  # a file holds one or the other
        port = "out" if frames else "events"
        emit = self._batch_emit.get(port)
        batch.emitted = len(items)
        if emit is None:  # not in an engine: through the port's observers
            subject = self._out if frames else self._events
            for item in items:
                try:
                    subject.on_next(item)
                except Exception as exc:
                    self.report_error(item, exc)
            return
        try:
            emit(items)
        except Exception as exc:
            self.report_error(items, exc)

    def _report_order(self, batch: Batch) -> None:
        if batch.out_of_order:
            self.counters.bump("out_of_order", batch.out_of_order)
            self._order_log(
                logging.WARNING,
                "%s: %d item(s) stamped earlier than the item before them "
                "(time steps back by up to %.6g s): replayed in file order, right after their "
                "predecessor (counted in out_of_order)",
                self.config.path,
                batch.out_of_order,
                batch.largest_step,
            )
        if batch.gaps_capped:
            self.counters.bump("gaps_capped", batch.gaps_capped)
            self._order_log(
                logging.WARNING,
                "%s: %d silence(s) of up to %.6g s shortened to max_gap "
                "%g s (counted in gaps_capped)",
                self.config.path,
                batch.gaps_capped,
                batch.largest_gap,
                self.config.max_gap or 0.0,
            )

    def _report_problem(self, problem: Problem) -> None:
        self._problems += 1
        self.counters.errors += 1
        self.counters.bump("corrupt")
        if self._problems <= _PROBLEMS_LOGGED:
            self.log.warning("%s", problem)
        else:
            self._problem_log(logging.WARNING, "%s", problem)

    def _complete(self) -> None:
        if self._completed:
            return
        self._completed = True
        if self._progress_task is not None and not self._progress_task.done():
            self._progress_task.cancel()
            self._print_progress(final=True)
        for subject in (self._out, self._events):
            try:
                subject.on_completed()
            except Exception as exc:
                self.log.error("completing failed: %s", exc)

    # -- progress -------------------------------------------------------------------------------

    def done_fraction(self) -> float | None:
        """Share of the whole replay done (None for ``loop: forever``)."""
        if self.config.loop == "forever":
            return None
        return min(1.0, (self._pass + self._fraction) / int(self.config.loop))

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(self.config.progress)
            self._print_progress(final=False)

    def _print_progress(self, final: bool) -> None:
        try:
            elapsed = asyncio.get_running_loop().time() - self._t_start
        except RuntimeError:
            return
        done = self.done_fraction()
        tty = sys.stderr.isatty()
        line = format_progress(self.items, done, elapsed, bar=tty)
        if tty:
            sys.stderr.write(f"\r{line}" + ("\n" if final else ""))
            sys.stderr.flush()
        else:
            self.log.info("%s", line)


def _probe(path: str) -> None:
    """Open and close the recording (raises when it cannot be read)."""
    RecordingReader(path).close()
