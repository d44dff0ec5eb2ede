"""Shared pieces of the command line: logging, error printing, running a flow, options.

Command modules (``les02_flow.commands.*``) build on these so every command behaves alike.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.handlers
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from .compiler import CompiledFlow, compile_document, compile_file
from .engine import Engine, format_stats
from .flowfile import FlowDocument, FlowErrors
from .node import NodeStartError

__all__ = [
    "add_command",
    "add_run_options",
    "add_set_option",
    "compile_data",
    "compile_path",
    "positive_float",
    "print_errors",
    "run_flow",
    "serve",
    "setup_logging",
]

log = logging.getLogger("les02_flow")

Subparsers = Any  # argparse._SubParsersAction[argparse.ArgumentParser]


def setup_logging(level: str, log_file: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file:
        handlers.append(
            logging.handlers.RotatingFileHandler(
                log_file, maxBytes=10 * 1024 * 1024, backupCount=5, encoding="utf-8"
            )
        )
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )


def print_errors(errors: FlowErrors) -> None:
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


async def serve(flow: CompiledFlow, stats_interval: float) -> int:
    """Run a flow until SIGINT/SIGTERM or until every source finished."""
    loop = asyncio.get_running_loop()
    engine = Engine(flow, stats_interval=stats_interval)
    interrupts = 0

    def on_signal(signame: str) -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            log.info("%s: stopping gracefully (press Ctrl-C again to force)", signame)
            engine.request_stop()
        elif signame == "SIGINT":
            log.warning("second SIGINT: forcing exit")
            logging.shutdown()
            os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig.name)
    log.info("flow '%s' (%s): starting %d nodes", flow.name, flow.path, len(engine.nodes))
    try:
        await engine.start()
    except NodeStartError as exc:
        log.error("cannot start flow '%s': %s", flow.name, exc)
        return 1
    log.info("flow '%s' running", flow.name)
    try:
        why = await engine.wait()
        log.info("flow '%s': %s, stopping", flow.name, why)
    finally:
        await engine.stop()
        log.info("stats %s", format_stats(engine.counters()))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def compile_data(data: dict[str, Any], path: str) -> CompiledFlow | None:
    """Validate a flow built in code (commands that assemble flows); print errors."""
    try:
        return compile_document(FlowDocument(path=path, data=data))
    except FlowErrors as errors:
        print_errors(errors)
        return None


def run_flow(flow: CompiledFlow, stats_interval: float) -> int:
    """Run a compiled flow to its end (signals, stats, exit code)."""
    return asyncio.run(serve(flow, stats_interval))


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text!r}")
    return value


def add_command(
    sub: Subparsers,
    name: str,
    func: Callable[[argparse.Namespace], int],
    help_: str,
    examples: str,
) -> argparse.ArgumentParser:
    """Add a subcommand whose ``--help`` ends with its examples."""
    p: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=f"examples:\n{examples}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=func)
    return p


def add_set_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.KEY=VALUE",
        help="override a node's config value (repeatable), e.g. --set ws.port=9000",
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of every command that runs a flow: logging and the stats interval."""
    p.add_argument(
        "--log-level",
        type=str.upper,
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    p.add_argument("--log-file", help="also log to this file (rotated at 10 MB, 5 kept)")
    p.add_argument(
        "--stats-interval",
        type=positive_float,
        default=60.0,
        metavar="S",
        help="log per-node counters every S seconds (0 = only at exit; default 60)",
    )
