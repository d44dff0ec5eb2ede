"""Running flows from the command line: compile with printed errors, serve until a signal,
re-deploy on edits (``run --watch``, SIGHUP)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import logging.handlers
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .clilog import emergency_message, flush_logs
from .compiler import CompiledFlow, compile_document, compile_file
from .engine import Engine, format_stats
from .flowfile import FlowDocument, FlowError, FlowErrors, Location, apply_sets, load_flow
from .node import NodeStartError

__all__ = [
    "Reload",
    "compile_doc",
    "compile_off_loop",
    "compile_path",
    "print_errors",
    "run_document",
    "run_flow",
    "serve",
    "settle_heap",
]

log = logging.getLogger("les02_flow")


def print_errors(errors: FlowErrors) -> None:
    flush_logs()  # what was logged before comes first
    for err in errors.errors:
        print(err, file=sys.stderr)
    n = len(errors.errors)
    print(f"{n} error{'s' if n != 1 else ''}", file=sys.stderr)


def compile_path(path: str, sets: Sequence[str]) -> CompiledFlow | None:
    try:
        return compile_file(path, sets)
    except FlowErrors as errors:
        print_errors(errors)
        return None


@dataclass(frozen=True)
class Reload:
    """Where a running flow comes from, so that edits can be re-deployed (``run --watch``)."""

    path: str
    sets: Sequence[str] = ()
    watch: bool = False
    poll_interval: float = 0.25
    debounce: float = 0.2


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


async def _watch(reload: Reload, trigger: asyncio.Event) -> None:
    """Poll the flow file's (mtime, size, inode); editors that save by rename change the
    inode. A change is reported once the file has been stable for ``debounce`` seconds."""
    last = _signature(reload.path)
    while True:
        await asyncio.sleep(reload.poll_interval)
        now = _signature(reload.path)
        if now == last or now is None:
            continue
        while True:  # debounce: wait until the file stops changing
            await asyncio.sleep(reload.debounce)
            settled = _signature(reload.path)
            if settled == now:
                break
            now = settled
        last = now
        trigger.set()


#: seconds a re-deploy may take to read and check the edited file before it is given up
REDEPLOY_TIMEOUT = 60.0


def _load_and_compile(reload: Reload) -> CompiledFlow | FlowErrors:
    """Read and validate the edited flow file (plain blocking code, for a worker thread)."""
    try:
        doc = load_flow(reload.path)
        if doc.data is not None:
            apply_sets(doc, _sets_still_wanted(doc, reload.sets))
        return compile_document(doc)
    except FlowErrors as errors:
        return errors


def _sets_still_wanted(doc: FlowDocument, sets: Sequence[str]) -> list[str]:
    """The ``--set`` overrides of a re-deploy whose node is still in the edited file; an
    override for a node the edit removed is a warning, not a veto of every later edit."""
    nodes = doc.data.get("nodes") if isinstance(doc.data, dict) else None
    if not isinstance(nodes, dict):
        return list(sets)
    kept = []
    for item in sets:
        node = item.split("=", 1)[0].split(".", 1)[0].strip()
        if node in nodes:
            kept.append(item)
        else:
            log.warning(
                "--set %s: node '%s' is no longer in %s; this override is ignored",
                item,
                node,
                doc.path,
            )
    return kept


async def compile_off_loop(reload: Reload) -> CompiledFlow | FlowErrors:
    """Run :func:`_load_and_compile` in its own daemon thread: a large or hostile edit (a
    1 MiB file, an alias bomb up to the limits of docs/flows.md) never stalls the stream,
    and a stop does not wait for it."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[CompiledFlow | FlowErrors] = loop.create_future()

    def done(result: CompiledFlow | FlowErrors | None, failure: BaseException | None) -> None:
        if fut.done():
            return
        if failure is not None:
            fut.set_exception(failure)
        else:
            assert result is not None
            fut.set_result(result)

    def work() -> None:
        try:
            result, failure = _load_and_compile(reload), None
        except BaseException as exc:  # reported on the loop, never lost in the thread
            result, failure = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(done, result, failure)

    threading.Thread(target=work, name="flow re-deploy compiler", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(fut), REDEPLOY_TIMEOUT)
    except TimeoutError:
        msg = (
            f"reading and checking the edit took longer than {REDEPLOY_TIMEOUT:g} s "
            "(a file that never ends, e.g. a FIFO?); ignored"
        )
        return FlowErrors([FlowError(Location(reload.path), msg)])


async def _redeploy(engine: Engine, reload: Reload) -> None:
    t0 = time.monotonic()
    new = await compile_off_loop(reload)
    took = time.monotonic() - t0
    if isinstance(new, FlowErrors):
        errors = new
        log.error(
            "flow edit rejected (%d error%s, checked in %.2f s off the event loop); the "
            "running flow is unchanged:",
            len(errors.errors),
            "s" if len(errors.errors) != 1 else "",
            took,
        )
        for err in errors.errors:
            log.error("  %s", err)
        return
    log.info("flow edit read and checked in %.2f s (off the event loop); applying", took)
    try:
        result = await engine.apply(new)
    except NodeStartError as exc:
        log.error("flow edit not applied, previous flow restored: %s", exc)
        return
    log.info("flow re-deployed: %s", result.summary())


async def _reloader(engine: Engine, reload: Reload, trigger: asyncio.Event) -> None:
    while True:
        await trigger.wait()
        trigger.clear()
        try:
            await _redeploy(engine, reload)
        except Exception as exc:  # never let a bad edit end the run
            log.exception("flow re-deploy failed: %s", exc)


#: seconds a graceful stop (after the first SIGINT/SIGTERM) may take before the process
#: exits anyway (exit code 1), even when the event loop is stuck
STOP_DEADLINE = 30.0


class _Stopper:
    """SIGINT/SIGTERM handling that does not need the event loop.

    The handlers are plain :func:`signal.signal` handlers: Python runs them in the main
    thread between two bytecodes, even while the loop is busy for seconds in one callback (a
    10,000-way fan-out) or blocked in a node. The first signal asks the engine to stop (via
    ``call_soon_threadsafe``) and starts a watchdog thread: if the stop has not finished
    after :data:`STOP_DEADLINE` seconds the process exits with code 1. A second SIGINT or
    SIGTERM exits at once with code 130. Nothing in the handlers takes a lock the
    interrupted code may hold (the message goes straight to fd 2).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, request_stop: Callable[[], None]):
        self.loop = loop
        self.request_stop = request_stop
        self.count = 0
        self._old: dict[int, Any] = {}
        self._watchdog: threading.Timer | None = None

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        for sig, old in self._old.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, old)
        self._old.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        self.count += 1
        name = signal.Signals(signum).name
        if self.count == 1:
            with contextlib.suppress(RuntimeError):  # loop closed: we are exiting anyway
                self.loop.call_soon_threadsafe(self._first, name)
            self._watchdog = threading.Timer(STOP_DEADLINE, self._overdue)
            self._watchdog.daemon = True
            self._watchdog.start()
            return
        emergency_message(f"{name} again: forcing exit (exit code 130)")
        os._exit(130)

    def _first(self, name: str) -> None:
        log.info("%s: stopping gracefully (press Ctrl-C again to force)", name)
        self.request_stop()

    def _overdue(self) -> None:
        emergency_message(
            f"the flow did not stop within {STOP_DEADLINE:g} s of the signal: forcing exit "
            "(exit code 1)"
        )
        os._exit(1)


def settle_heap() -> None:
    """Move everything alive after start-up out of the garbage collector's reach.

    Modules, node configs, compiled schemas and buffers built at start live for the whole
    run; a full (generation 2) collection would scan them all and stall the event loop:
    measured 56 ms at 16,000 frames/s in ``bench.live``. ``gc.freeze()`` after start leaves
    the collector only what the stream allocates afterwards (3 ms). Called once by
    :func:`run_flow` after the engine started (``serve(..., settle=True)``).
    """
    gc.collect()
    gc.freeze()


async def serve(
    flow: CompiledFlow,
    stats_interval: float,
    reload: Reload | None = None,
    duration: float | None = None,
    *,
    settle: bool = False,
) -> int:
    """Run a flow until SIGINT/SIGTERM, until every source finished, or for ``duration`` s.

    With ``reload``, SIGHUP re-reads the flow file and applies it as a diff; with
    ``reload.watch`` a change of the file does the same. ``settle`` freezes the heap after
    start (:func:`settle_heap`, a process-wide change: the command line asks for it).
    """
    loop = asyncio.get_running_loop()
    engine = Engine(flow, stats_interval=stats_interval)
    trigger = asyncio.Event()
    helpers: list[asyncio.Task[None]] = []
    stopper = _Stopper(loop, engine.request_stop)
    stopper.install()
    signals: list[signal.Signals] = []
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, trigger.set)
        signals.append(signal.SIGHUP)
    log.info("flow '%s' (%s): starting %d nodes", flow.name, flow.path, len(engine.nodes))
    try:
        await engine.start()
    except NodeStartError as exc:
        log.error("cannot start flow '%s': %s", flow.name, exc)
        for sig in signals:
            loop.remove_signal_handler(sig)
        stopper.uninstall()
        return 1
    if settle:
        settle_heap()
    if reload is not None:
        helpers.append(asyncio.create_task(_reloader(engine, reload, trigger)))
        if reload.watch:
            helpers.append(asyncio.create_task(_watch(reload, trigger)))
            log.info("watching %s for changes (SIGHUP also re-deploys)", reload.path)
    log.info("flow '%s' running", flow.name)
    timer = None
    if duration:

        def on_duration() -> None:
            log.info("flow '%s': %g s elapsed (duration), stopping", flow.name, duration)
            engine.request_stop()

        timer = loop.call_later(duration, on_duration)
    try:
        why = await engine.wait()
        log.info("flow '%s': %s, stopping", flow.name, why)
    finally:
        if timer is not None:
            timer.cancel()
        for task in helpers:
            task.cancel()
        await asyncio.gather(*helpers, return_exceptions=True)
        await engine.stop()
        log.info("stats %s", format_stats(engine.counters()))
        for sig in signals:
            loop.remove_signal_handler(sig)
        stopper.uninstall()
    return 0


def compile_doc(doc: FlowDocument) -> CompiledFlow | None:
    """Validate a loaded or assembled flow document; print every error and return None."""
    try:
        return compile_document(doc)
    except FlowErrors as errors:
        print_errors(errors)
        return None


def run_document(doc: FlowDocument, stats_interval: float, duration: float | None = None) -> int:
    """Validate and run a flow document: exit code 1 with every error printed, else the run's."""
    flow = compile_doc(doc)
    if flow is None:
        return 1
    return run_flow(flow, stats_interval, duration=duration)


def run_flow(
    flow: CompiledFlow,
    stats_interval: float,
    reload: Reload | None = None,
    duration: float | None = None,
) -> int:
    """Run a compiled flow to its end (signals, stats, exit code), the heap settled."""
    return asyncio.run(serve(flow, stats_interval, reload, duration, settle=True))
