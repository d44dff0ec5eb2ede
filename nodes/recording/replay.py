"""Replay's plain logic: the timeline (pacing offsets), offsets window, id filter, reading
passes in batches, and the progress line.

No asyncio, no Rx. The ``replay_source`` node runs :func:`read_batches` in a reader thread
and emits each item when its offset is due against the loop's monotonic clock.

Timeline
    Every item gets an offset ``v`` (seconds from the start of the replay) from the recorded
    timestamps only, never from how long sleeps took, so pacing cannot drift: an item is due at
    ``t0 + v / speed``. ``v`` grows by each recorded gap; a gap longer than ``max_gap`` counts
    as ``max_gap``; a negative gap (timestamps going backwards) counts as 0, the step from the
    last item of one loop pass to the first of the next as the ``gap`` given to
    :meth:`Timeline.new_pass` (0 by default).

Loop passes and timestamps
    With ``loop_gap`` (:func:`read_batches`), every pass after the first is shifted in time so
    that its first item comes ``loop_gap`` seconds after the previous pass's last item: a
    replay of N passes looks like one longer session (time never runs backwards; ride ids stay
    unique per pass). Without it the recorded timestamps repeat in every pass.

Out-of-order timestamps
    Items are always replayed in file order, none is skipped for its timestamp. An item
    stamped earlier than the one before it (a clock stepped back, a bogus first timestamp such
    as ``1e15``) is replayed right after its predecessor (gap 0) and counted in
    :attr:`Timeline.out_of_order`; the ``start``/``end`` window is measured on the same
    monotonic timeline (without the ``max_gap`` cap), so it never drops such items either.
    Gaps longer than ``max_gap`` are counted in :attr:`Timeline.capped`. Both are reported by
    the node (counters ``out_of_order`` and ``gaps_capped``, and a warning).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import can

from les02_flow.nodes.recording.formats import Problem, RecordingReader

__all__ = [
    "Batch",
    "FrameFilter",
    "Timeline",
    "Window",
    "format_duration",
    "format_progress",
    "item_timestamp",
    "read_batches",
    "shift_item",
]


class Timeline:
    """Offsets of recorded items from the start of the replay (pure, see the module doc).

    >>> tl = Timeline(max_gap=5.0)
    >>> [tl.offset(ts) for ts in (100.0, 100.5, 101.0, 130.0, 130.25)]
    [0.0, 0.5, 1.0, 6.0, 6.25]
    >>> tl.new_pass(); tl.offset(100.0), tl.offset(100.5)
    (6.25, 6.75)
    """

    def __init__(self, max_gap: float | None = None) -> None:
        self.max_gap = max_gap
        self._seg_ts: float | None = None  # recorded time where the current segment starts
        self._seg_v = 0.0  # offset of the segment start
        self._prev_ts = 0.0
        self._prev_v = 0.0
        #: items stamped earlier than the item before them
        self.out_of_order = 0
        #: gaps longer than max_gap (shortened to it)
        self.capped = 0
        #: the last backward step and the last capped gap, in recorded seconds
        self.last_step = 0.0
        self.last_gap = 0.0

    def new_pass(self, gap: float = 0.0) -> None:
        """The next item starts a new loop pass, ``gap`` seconds after the last item."""
        if self._seg_ts is not None:
            self._seg_ts = None
            self._seg_v = self._prev_v + gap

    def offset(self, ts: float) -> float:
        """The offset of the next item, recorded at ``ts`` (items in file order)."""
        if self._seg_ts is None:
            self._seg_ts = ts
        else:
            gap = ts - self._prev_ts
            if gap < 0 or (self.max_gap is not None and gap > self.max_gap):
                if gap < 0:
                    self.out_of_order += 1
                    self.last_step = -gap
                else:
                    self.capped += 1
                    self.last_gap = gap
                # start a new segment so the offsets stay exact differences of timestamps
                self._seg_v = self._prev_v + (0.0 if gap < 0 else self.max_gap or 0.0)
                self._seg_ts = ts
        v = self._seg_v + (ts - self._seg_ts)
        self._prev_ts = ts
        self._prev_v = v
        return v


@dataclass(frozen=True)
class Window:
    """Which items of a pass to replay: ``start``/``end`` in seconds from the first item.

    >>> w = Window(start=1.0, end=2.0)
    >>> [w.classify(t, first=10.0) for t in (10.5, 11.0, 12.0, 12.01)]
    ['skip', 'take', 'take', 'end']
    """

    start: float = 0.0
    end: float | None = None

    def classify(self, ts: float, first: float) -> str:
        rel = ts - first
        if self.end is not None and rel > self.end:
            return "end"
        return "skip" if rel < self.start else "take"


class FrameFilter:
    """Which frames pass: ids listed in ``ids``, or matching one ``(can_id, can_mask,
    extended)`` filter (``extended`` None = either); everything when both are empty.

    >>> f = FrameFilter(ids=[0x80], filters=[(0x30, 0x7FE, False)])
    >>> [f.accepts(can.Message(arbitration_id=i, is_extended_id=False))
    ...  for i in (0x80, 0x81, 0x30, 0x31, 0x20)]
    [True, False, True, True, False]
    """

    def __init__(
        self,
        ids: Iterable[int] = (),
        filters: Sequence[tuple[int, int, bool | None]] = (),
    ) -> None:
        self.ids = frozenset(ids)
        self.filters = tuple(filters)
        self.everything = not self.ids and not self.filters

    def accepts(self, msg: can.Message) -> bool:
        if self.everything:
            return True
        can_id = msg.arbitration_id
        if can_id in self.ids:
            return True
        for fid, mask, extended in self.filters:
            if (can_id & mask) == (fid & mask) and (
                extended is None or extended == msg.is_extended_id
            ):
                return True
        return False


def item_timestamp(item: Any) -> float:
    """The recorded time of a frame or an event envelope."""
    if isinstance(item, can.Message):
        return float(item.timestamp)
    return float(item["ts"])


def shift_item(item: Any, by: float) -> None:
    """Move a frame's or an event envelope's timestamp by ``by`` seconds (in place)."""
    if isinstance(item, can.Message):
        item.timestamp = float(item.timestamp) + by
    else:
        item["ts"] = float(item["ts"]) + by


@dataclass
class Batch:
    """Items handed from the reader to the loop: ``(offset, item)`` pairs, in order."""

    items: list[tuple[float, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    pass_index: int = 0  #: loop pass of the last item (0-based)
    fraction: float = 0.0  #: share of the current pass's file read
    end: bool = False  #: nothing follows this batch
    out_of_order: int = 0  #: items in this batch stamped earlier than their predecessor
    gaps_capped: int = 0  #: gaps in this batch shortened to max_gap
    #: the largest backward step and capped gap in this batch (recorded seconds)
    largest_step: float = 0.0
    largest_gap: float = 0.0
    #: items already emitted (and taken out of ``items``) by the consumer
    emitted: int = 0


def read_batches(
    path: str,
    *,
    loops: int | None = 1,
    timeline: Timeline | None = None,
    window: Window | None = None,
    accept: Callable[[Any], bool] | None = None,
    batch_size: int = 1000,
    stopped: Callable[[], bool] = lambda: False,
    on_open: Callable[[RecordingReader], None] | None = None,
    loop_gap: float | None = None,
) -> Iterator[Batch]:
    """Read ``path`` ``loops`` times (``None`` = forever) and yield batches of up to
    ``batch_size`` paced items; the last batch has ``end=True``.

    ``loop_gap`` (seconds): shift each pass after the first so it starts that long after the
    previous pass's last item (timestamps and pacing; see the module doc). None = passes
    repeat the recorded timestamps back to back.

    Corrupt lines/records land in ``Batch.problems`` (reported once per pass). A batch also
    comes after ``4 * batch_size`` items read (a window or filter skipping many), full or
    not. A pass that yields nothing ends a ``forever`` replay (nothing to loop over).
    ``stopped`` is polled between items to end early. ``OSError``/``ValueError`` when the
    file cannot be opened.
    """
    timeline = timeline or Timeline()
    window = window or Window()
    scan_limit = 4 * batch_size
    pass_index = 0
    batch = Batch()
    last_ts: float | None = None  # last item taken, shifted
    while loops is None or pass_index < loops:
        problems: list[Problem] = []
        reader = RecordingReader(path, on_problem=problems.append)
        if on_open is not None:
            on_open(reader)
        if pass_index:
            timeline.new_pass(loop_gap or 0.0)
        # the window is measured on this pass's own monotonic timeline: backward steps
        # count as 0, so an out-of-order item is never skipped for its timestamp
        clock = Timeline()
        shift: float | None = None if pass_index and loop_gap is not None else 0.0
        took = 0
        # no window: every item is taken (offsets are never negative)
        whole = window.start <= 0.0 and window.end is None
        scanned = 0  # items read since the last batch
        try:
            for item in reader:
                if stopped():
                    break
                scanned += 1
                if scanned > scan_limit:
                    # many items skipped (window, filter): hand over what there is, so a
                    # reader on the event loop never holds it for a whole file
                    scanned = 1
                    batch.pass_index = pass_index
                    batch.fraction = reader.fraction()
                    yield batch
                    batch = Batch()
                ts = item_timestamp(item)
                if not whole:
                    verdict = window.classify(clock.offset(ts), 0.0)
                    if verdict == "end":
                        break
                    if verdict == "skip":
                        continue
                if accept is not None and not accept(item):
                    continue
                if shift is None:  # first item of a later pass: continue after the last
                    shift = (last_ts if last_ts is not None else ts) + (loop_gap or 0.0) - ts
                ooo, capped = timeline.out_of_order, timeline.capped
                batch.items.append((timeline.offset(ts), item))
                if timeline.out_of_order != ooo:
                    batch.out_of_order += 1
                    batch.largest_step = max(batch.largest_step, timeline.last_step)
                elif timeline.capped != capped:
                    batch.gaps_capped += 1
                    batch.largest_gap = max(batch.largest_gap, timeline.last_gap)
                if shift:
                    shift_item(item, shift)
                last_ts = ts + shift
                took += 1
                if problems:
                    batch.problems.extend(problems)
                    problems.clear()
                if len(batch.items) >= batch_size:
                    scanned = 0
                    batch.pass_index = pass_index
                    batch.fraction = reader.fraction()
                    yield batch
                    batch = Batch()
        finally:
            reader.close()
        batch.problems.extend(problems)
        batch.pass_index = pass_index
        batch.fraction = 1.0
        pass_index += 1
        if stopped() or (took == 0 and loops is None):
            break
    batch.end = True
    yield batch


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss``; ``-`` when unknown.

    >>> format_duration(75.4), format_duration(3725), format_duration(float("nan"))
    ('1:15', '1:02:05', '-')
    """
    if not math.isfinite(seconds) or seconds < 0:
        return "-"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_progress(
    frames: int, done: float | None, elapsed: float, *, bar: bool, width: int = 24
) -> str:
    """One progress line: frames, percent, rate, ETA (``done`` = 0..1, None = unknown).

    >>> format_progress(50_000, 0.25, 2.0, bar=True, width=8)
    '[##......]  25.0%  50,000 frames  25,000/s  ETA 0:06'
    >>> format_progress(50_000, None, 2.0, bar=False)
    'replayed 50,000 frames, 25,000/s'
    """
    rate = frames / elapsed if elapsed > 0 else 0.0
    if done is None:
        text = f"{frames:,} frames  {rate:,.0f}/s"
        return f"[{'?' * width}]  {text}" if bar else f"replayed {frames:,} frames, {rate:,.0f}/s"
    done = min(max(done, 0.0), 1.0)
    eta = elapsed * (1.0 - done) / done if done > 0 else math.nan
    if bar:
        filled = int(done * width)
        return (
            f"[{'#' * filled}{'.' * (width - filled)}] {done * 100:5.1f}%  {frames:,} frames  "
            f"{rate:,.0f}/s  ETA {format_duration(eta)}"
        )
    return (
        f"replayed {frames:,} frames ({done * 100:.1f}%), {rate:,.0f}/s, ETA {format_duration(eta)}"
    )
