"""The simulators' bus side (``les02_sim``, ``uds_sim``): open a python-can bus, send onto it
with errors counted and logged (rate-limited, never fatal), shut it down without raising."""

from __future__ import annotations

import logging
from typing import Any

import can

from les02_flow.node import Counters, Logger, NodeStartError, RateLimitedLog

__all__ = ["open_bus", "send_frame", "shutdown_bus"]


def open_bus(
    type_name: str, interface: str, channel: str | None, bitrate: int | None
) -> can.BusABC:
    """``can.Bus`` for a simulator; ``NodeStartError`` naming the node type when it fails."""
    kwargs: dict[str, Any] = {"interface": interface, "channel": channel}
    if bitrate is not None:
        kwargs["bitrate"] = bitrate
    try:
        return can.Bus(**kwargs)
    except Exception as exc:
        raise NodeStartError(
            f"{type_name}: cannot open bus interface={interface!r} "
            f"channel={channel!r}: {type(exc).__name__}: {exc}"
        ) from exc


def send_frame(bus: can.BusABC, msg: can.Message, counters: Counters, log: RateLimitedLog) -> bool:
    """Send without blocking; a failure bumps ``errors`` and ``send_errors`` and logs a
    (rate-limited) warning on ``log`` (built on the node's :meth:`Context.node_log`, which
    adds the node prefix). True when sent."""
    try:
        bus.send(msg, timeout=0)
    except Exception as exc:
        counters.errors += 1
        counters.bump("send_errors")
        log(
            logging.WARNING,
            "send of id 0x%03X failed: %s: %s",
            msg.arbitration_id,
            type(exc).__name__,
            exc,
        )
        return False
    return True


def shutdown_bus(bus: can.BusABC, log: Logger) -> None:
    """``bus.shutdown()``; a failure is logged as a warning on the node's prefixed ``log``."""
    try:
        bus.shutdown()
    except Exception as exc:
        log.warning("bus shutdown failed: %s: %s", type(exc).__name__, exc)
