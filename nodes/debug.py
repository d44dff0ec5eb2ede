"""The ``debug`` node: print whatever arrives, one line per message (Node-RED's debug node).

Frames are printed in ``candump -L`` style by :func:`format_frame`, events as their JSON
(:func:`les02_flow.events.encode_event`), anything else with ``repr``. The formatting and the
rate limiter are pure (:func:`format_message`, :class:`LineRateLimiter`); the node only writes.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, TextIO

import can
from pydantic import Field

from les02_flow.events import encode_event
from les02_flow.node import Context, Kind, Node, NodeConfig

__all__ = [
    "CAN_ERR_BUSERROR",
    "CAN_ERR_FLAG",
    "Debug",
    "DebugConfig",
    "LineRateLimiter",
    "format_frame",
    "format_message",
]

#: SocketCAN error-frame flag in the 32-bit id, as ``candump -L`` prints it
CAN_ERR_FLAG = 0x20000000
#: error class used when an error frame carries no class bits (python-can's log reader needs one)
CAN_ERR_BUSERROR = 0x00000080
_CAN_ERR_MASK = 0x1FFFFFFF
_CANFD_BRS = 0x01
_CANFD_ESI = 0x02


def format_frame(msg: can.Message, default_channel: str = "can0") -> str:
    """One frame as a ``candump -L`` line (without the trailing newline).

    ``(timestamp) channel id#data``: standard ids as 3 hex digits, extended ids as 8; CAN FD as
    ``id##<flags>data`` (flags: 1 = BRS, 2 = ESI); remote frames as ``id#R`` (plus the DLC when
    it is not 0); error frames with the SocketCAN error flag ``0x20000000`` in the 8-digit id.
    ``msg.channel`` names the interface; ``default_channel`` when it is unset, ``can<n>`` when
    it is a number. Never raises on a well-formed ``can.Message``.

    >>> format_frame(can.Message(timestamp=1737319234.5678, arbitration_id=0x80,
    ...                          is_extended_id=False, data=[0, 0, 0x90, 0], channel="les02"))
    '(1737319234.567800) les02 080#00009000'
    >>> format_frame(can.Message(timestamp=1.0, arbitration_id=0x18DAF110, data=[2, 0x10]))
    '(1.000000) can0 18DAF110#0210'
    >>> format_frame(can.Message(timestamp=2.5, arbitration_id=0x123, is_extended_id=False,
    ...                          is_fd=True, bitrate_switch=True, data=bytes(12), channel=1))
    '(2.500000) can1 123##1000000000000000000000000'
    >>> format_frame(can.Message(timestamp=3.0, arbitration_id=0x7DF, is_extended_id=False,
    ...                          is_remote_frame=True, dlc=8))
    '(3.000000) can0 7DF#R8'
    >>> format_frame(can.Message(timestamp=4.0, is_error_frame=True, data=bytes(8)))
    '(4.000000) can0 20000080#0000000000000000'
    """
    try:
        ts = float(msg.timestamp)
    except (TypeError, ValueError):
        ts = 0.0
    if not math.isfinite(ts):
        ts = 0.0
    channel = msg.channel
    if channel is None or channel == "":
        name = default_channel
    elif isinstance(channel, int) or (isinstance(channel, str) and channel.isdigit()):
        name = f"can{channel}"
    else:
        name = "_".join(str(channel).split()) or default_channel
    data = bytes(msg.data or b"").hex().upper()
    if msg.is_error_frame:
        err_id = msg.arbitration_id & _CAN_ERR_MASK or CAN_ERR_BUSERROR
        return f"({ts:.6f}) {name} {CAN_ERR_FLAG | err_id:08X}#{data}"
    can_id = f"{msg.arbitration_id:08X}" if msg.is_extended_id else f"{msg.arbitration_id:03X}"
    if msg.is_remote_frame:
        dlc = f"{msg.dlc:X}" if msg.dlc and 0 < msg.dlc <= 8 else ""
        body = f"R{dlc}"
    elif msg.is_fd:
        flags = (_CANFD_BRS if msg.bitrate_switch else 0) | (
            _CANFD_ESI if msg.error_state_indicator else 0
        )
        body = f"#{flags:X}{data}"
    else:
        body = data
    return f"({ts:.6f}) {name} {can_id}#{body}"


def format_message(message: object) -> str:
    """One line for anything that reaches a debug node; never raises.

    Frames via :func:`format_frame`, event dicts as their JSON, everything else (or what fails
    to format) as ``repr``.

    >>> format_message({"proto": 1, "type": "status", "ts": 2.0, "source": "les02",
    ...                 "payload": {"channel": "slave"}})
    '{"proto": 1, "type": "status", "ts": 2.0, "source": "les02", "payload": {"channel": "slave"}}'
    >>> format_message({"ts": float("nan")})
    "{'ts': nan}"
    >>> format_message(42)
    '42'
    """
    try:
        if isinstance(message, can.Message):
            return format_frame(message)
        if isinstance(message, dict):
            return encode_event(message)
    except Exception:
        pass
    try:
        return repr(message)
    except Exception as exc:
        return f"<unprintable {type(message).__name__}: {type(exc).__name__}>"


class LineRateLimiter:
    """At most ``rate`` lines per one-second window (pure: the caller passes the time).

    ``admit(now)`` returns ``(print_it, suppressed)``: ``suppressed`` is the number of lines
    refused since the last admitted one, reported once with the first line admitted after them.
    ``rate`` 0 admits everything.

    >>> lim = LineRateLimiter(2)
    >>> [lim.admit(t) for t in (0.0, 0.1, 0.2, 0.3, 1.05)]
    [(True, 0), (True, 0), (False, 0), (False, 0), (True, 2)]
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._window_end = -math.inf
        self._count = 0
        self._suppressed = 0

    def admit(self, now: float) -> tuple[bool, int]:
        if self.rate <= 0:
            return True, 0
        if now >= self._window_end:
            self._window_end = now + 1.0
            self._count = 0
        if self._count < self.rate:
            self._count += 1
            return True, self.take_suppressed()
        self._suppressed += 1
        return False, 0

    def take_suppressed(self) -> int:
        """The refused lines not yet reported (and forget them)."""
        n, self._suppressed = self._suppressed, 0
        return n


class DebugConfig(NodeConfig):
    """Config of ``debug``."""

    stream: Literal["stdout", "stderr", "log"] = Field(
        default="stdout",
        description="Where lines go: stdout, stderr, or log (logging INFO with the node id).",
    )
    rate_limit: int = Field(
        default=0,
        ge=0,
        description="Most lines printed per second (0 = unlimited). The excess is counted as "
        "dropped and summarised as 'debug <id>: N messages suppressed' when printing resumes.",
    )
    prefix: str = Field(
        default="", description="Text printed (followed by a space) before each line when set."
    )


class Debug(Node[DebugConfig]):
    """Print each message as one line (like Node-RED's debug node).

    Frames appear in ``candump -L`` style, e.g. ``(1737319234.567800) les02 080#00009000``
    (extended ids with 8 hex digits, CAN FD as ``##<flags>``, remote frames as ``R``, error
    frames with the ``0x20000000`` error flag in the id); events as their JSON; anything else
    with ``repr``. Odd input never raises.

    ``rate_limit`` caps lines per second; what is over the cap is counted in ``dropped`` and
    summarised in one line when printing resumes (and on stop). Writing to stdout/stderr is
    flushed once per event-loop iteration; a stream that blocks (a paused pager) blocks the loop,
    so use ``stream: log`` or a rate limit for busy buses.
    """

    type_name: ClassVar[str] = "debug"
    input_kind: ClassVar[Kind | None] = Kind.ANY
    output_ports: ClassVar[Mapping[str, Kind]] = {}
    examples: ClassVar[tuple[str, ...]] = (
        "debug:\n  type: debug\n",
        "invalid:\n  type: debug\n  stream: stderr\n  rate_limit: 10\n  prefix: 'invalid:'\n",
        "trace:\n  type: debug\n  stream: log\n",
    )

    def __init__(self, node_id: str, config: DebugConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self._limiter = LineRateLimiter(config.rate_limit)
        #: monotonic clock used for the rate limit (tests may replace it)
        self.clock: Callable[[], float] = time.monotonic
        self._flush_pending: TextIO | None = None
        #: the reader of our stdout/stderr pipe closed it: print nothing more
        self._reader_gone = False

    def consume(self, message: Any) -> None:
        """Print one message (rate-limited); never raises."""
        admitted, suppressed = self._limiter.admit(self.clock())
        if not admitted:
            self.counters.dropped += 1
            return
        if suppressed:
            self._write(f"debug {self.node_id}: {suppressed} messages suppressed", message)
        self._write(format_message(message), message)

    def input_completed(self) -> None:
        self._report_suppressed()

    async def stop(self) -> None:
        """Report lines still suppressed and flush. Idempotent; never raises."""
        self._report_suppressed()
        self._flush()

    # -- output --------------------------------------------------------------------------------

    def _report_suppressed(self) -> None:
        suppressed = self._limiter.take_suppressed()
        if suppressed:
            self._write(f"debug {self.node_id}: {suppressed} messages suppressed", None)

    def _write(self, line: str, message: Any) -> None:
        if self.config.prefix:
            line = f"{self.config.prefix} {line}"
        try:
            if self.config.stream == "log":
                self.log.info("%s", line)
                return
            stream = sys.stdout if self.config.stream == "stdout" else sys.stderr
            if self._reader_gone:
                self.counters.dropped += 1
                return
            stream.write(line + "\n")
            self._schedule_flush(stream)
        except BrokenPipeError:
            self._gone(stream)
        except Exception as exc:  # closed or broken stream: count, log (rate-limited), go on
            self.report_error(message, exc)

    def _gone(self, stream: TextIO) -> None:
        """The reader of our pipe went away (``les02-flow replay x.log | head``): stop printing
        quietly, like a Unix filter, instead of one error per message; the flow goes on. (The
        command line's end keeps Python's exit flush quiet: :func:`les02_flow.cli.main`.)"""
        self.counters.dropped += 1
        if self._reader_gone:
            return
        self._reader_gone = True
        self.log.info(
            "the reader of %s closed it (e.g. | head); not printing any more",
            self.config.stream,
        )

    def _schedule_flush(self, stream: TextIO) -> None:
        """Flush once per loop iteration (at once when no loop runs)."""
        if self._flush_pending is stream:
            return
        if self._flush_pending is not None:
            self._flush()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._flush_pending = stream
            self._flush()
            return
        self._flush_pending = stream
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        stream, self._flush_pending = self._flush_pending, None
        if stream is None:
            return
        try:
            stream.flush()
        except BrokenPipeError:
            self._gone(stream)
        except Exception as exc:
            self.report_error(None, exc)
