"""Node ``dbc_decode``: CAN frames in, one ``can_message`` event per decoded frame out.

The decoding is pure (:class:`DbcDecoder` on a cantools database); the node only routes. The
DBC file is loaded (and cached) when the flow is validated, so a file that does not load is a
``FILE:LINE:COL`` error before anything runs.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import cantools
from pydantic import Field, ValidationInfo, field_validator
from reactivex import Observable

from les02_flow.events import CanInvalidPayload, CanMessagePayload, Event, make_event
from les02_flow.node import Context, Kind, Node, NodeConfig, RateLimitedLog

__all__ = [
    "REASONS",
    "DbcDecode",
    "DbcDecodeConfig",
    "DbcDecoder",
    "DbcError",
    "load_dbc",
]

#: why a frame was not decoded (the ``reason`` of a ``can_invalid`` event)
REASONS = ("malformed", "error_frame", "remote_frame", "unknown_id", "bad_length", "decode_error")

_cache: dict[tuple[str, int, int], Any] = {}


class DbcError(ValueError):
    """A DBC file could not be read or parsed (the message says which and why)."""


def load_dbc(path: str) -> Any:
    """Load a DBC file with cantools (cached by path, size and modification time).

    Raises :class:`DbcError` naming the file and cantools' reason.
    """
    try:
        st = os.stat(path)
    except OSError as exc:
        raise DbcError(f"cannot read DBC file {path!r}: {exc.strerror or exc}") from None
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    db = _cache.get(key)
    if db is not None:
        return db
    try:
        db = cantools.database.load_file(path, database_format="dbc", strict=True)
    except Exception as exc:  # cantools raises its own ParseError, ValueError, UnicodeError...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DbcError(f"DBC file {path!r} does not load: {reason}") from None
    if not isinstance(db, cantools.database.can.Database):
        raise DbcError(f"{path!r} is not a CAN database")
    if not db.messages:
        raise DbcError(f"DBC file {path!r} describes no messages")
    _cache.clear()  # one file per path is enough; old versions go
    _cache[key] = db
    return db


@dataclass(frozen=True)
class _Msg:
    name: str
    message: Any
    length: int
    units: dict[str, str]
    #: signal name -> raw value -> physical value, for signals with a value table
    scaled: dict[str, Any]


class DbcDecoder:
    """Decodes frames with a cantools database into ``can_message`` / ``can_invalid`` events.

    >>> dec = DbcDecoder(load_dbc("examples/les02.dbc"))
    >>> import can
    >>> ev = dec.decode(can.Message(timestamp=1.5, arbitration_id=0x81, is_extended_id=False,
    ...                             data=bytes([0, 1, 0, 0])))
    >>> ev["type"], ev["ts"], ev["payload"]["message"], ev["payload"]["signals"]
    ('can_message', 1.5, 'LES02_POSITION_SLAVE', {'position_raw': 256})
    >>> ev["payload"]["units"]
    {'position_raw': 'counts'}
    >>> bad = dec.decode(can.Message(arbitration_id=0x80, is_extended_id=False, data=bytes(8)))
    >>> bad["type"], bad["payload"]["reason"]
    ('can_invalid', 'bad_length')
    """

    def __init__(
        self,
        db: Any,
        messages: list[str] | None = None,
        source: str = "dbc",
        allow_excess: bool = False,
    ) -> None:
        self.source = source
        self.allow_excess = allow_excess
        self.by_id: dict[tuple[int, bool], _Msg] = {}
        #: ids in the DBC but not selected by ``messages``
        self.skipped_ids: set[tuple[int, bool]] = set()
        wanted = set(messages) if messages else None
        for m in db.messages:
            key = (int(m.frame_id), bool(m.is_extended_frame))
            if wanted is not None and m.name not in wanted:
                self.skipped_ids.add(key)
                continue
            units = {s.name: str(s.unit) for s in m.signals if s.unit}
            scaled = {
                s.name: (lambda raw, c=s.conversion: c.raw_to_scaled(raw, decode_choices=False))
                for s in m.signals
                if s.choices
            }
            self.by_id[key] = _Msg(m.name, m, int(m.length), units, scaled)

    def decode(self, frame: Any) -> Event | None:
        """A ``can_message`` event, a ``can_invalid`` event, or ``None`` for a frame of a DBC
        message that ``messages`` does not select."""
        try:
            can_id = int(frame.arbitration_id)
            extended = bool(frame.is_extended_id)
            data = bytes(frame.data or b"")
            ts = float(frame.timestamp)
        except (AttributeError, TypeError, ValueError):
            return self._invalid(frame, "malformed", "not a CAN frame")
        if frame.is_error_frame:
            return self._invalid(frame, "error_frame", "CAN error frame")
        if frame.is_remote_frame:
            return self._invalid(frame, "remote_frame", "remote (RTR) frame")
        entry = self.by_id.get((can_id, extended))
        if entry is None:
            if (can_id, extended) in self.skipped_ids:
                return None
            kind = "extended" if extended else "11-bit"
            return self._invalid(frame, "unknown_id", f"{kind} id {can_id:#x} is not in the DBC")
        if len(data) < entry.length or (len(data) > entry.length and not self.allow_excess):
            return self._invalid(
                frame,
                "bad_length",
                f"{entry.name} has {entry.length} data bytes, the frame {len(data)}",
                entry.name,
            )
        try:
            # choices decoded by cantools: a value-table signal comes back as a named value
            # holding its *raw* value; its physical value is computed from that
            values = entry.message.decode(data, decode_choices=True, scaling=True)
            signals: dict[str, Any] = {}
            named: dict[str, str] = {}
            for name, v in values.items():
                if isinstance(v, (int, float)):
                    signals[name] = _number(v)
                elif name in entry.scaled and hasattr(v, "value"):
                    signals[name] = _number(entry.scaled[name](v.value))
                    named[name] = str(getattr(v, "name", v))
                else:
                    signals[name] = _number(v)
        except Exception as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            return self._invalid(frame, "decode_error", detail, entry.name)
        payload: CanMessagePayload = {
            "message": entry.name,
            "can_id": can_id,
            "extended": extended,
            "signals": signals,
        }
        units = {k: u for k, u in entry.units.items() if k in signals}
        if units:
            payload["units"] = units
        if named:
            payload["choices"] = named
        return make_event("can_message", ts, payload, self.source)

    def _invalid(self, frame: Any, reason: str, detail: str, name: str | None = None) -> Event:
        ts = getattr(frame, "timestamp", 0.0)
        payload: CanInvalidPayload = {"reason": reason, "detail": detail}
        try:
            payload["can_id"] = int(frame.arbitration_id)
            payload["extended"] = bool(frame.is_extended_id)
            payload["dlc"] = int(frame.dlc)
            payload["data"] = bytes(frame.data or b"").hex()
        except (AttributeError, TypeError, ValueError):
            pass
        if name is not None:
            payload["message"] = name
        return make_event(
            "can_invalid", float(ts) if isinstance(ts, (int, float)) else 0.0, payload, self.source
        )


def _number(v: Any) -> Any:
    """cantools values as JSON numbers (ints stay ints, floats floats)."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (int, float)):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


class DbcDecodeConfig(NodeConfig):
    """Config of ``dbc_decode``."""

    dbc: str = Field(
        min_length=1,
        description=(
            "Path of the DBC file (relative to the working directory); loaded when the flow is "
            "validated."
        ),
    )
    messages: list[str] = Field(
        default_factory=list,
        description=(
            "Names of the DBC messages to decode; [] = all. Frames of other DBC messages are "
            "skipped (counted in 'skipped'), not invalid."
        ),
    )
    source: str = Field(default="dbc", min_length=1, description="'source' of the events.")
    allow_excess: bool = Field(
        default=False,
        description=(
            "Decode frames longer than the DBC message (extra bytes ignored). Off: such frames "
            "are invalid (bad_length), like les02_parse's DLC check."
        ),
    )
    log_invalid: bool = Field(
        default=False,
        description="Log invalid frames (rate-limited per reason); they are always counted.",
    )

    @field_validator("dbc")
    @classmethod
    def _load(cls, v: str) -> str:
        load_dbc(v)
        return v

    @field_validator("messages")
    @classmethod
    def _names(cls, v: list[str], info: ValidationInfo) -> list[str]:
        path = info.data.get("dbc")
        if path is None:
            return v  # the file did not load: reported there
        known = [m.name for m in load_dbc(path).messages]
        for name in v:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                listed = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
                raise ValueError(f"no message '{name}' in {path}{hint}; messages: {listed}")
        return v


class DbcDecode(Node[DbcDecodeConfig]):
    """Decode CAN frames with a DBC file (cantools) into can_message events.

    One ``can_message`` event per decoded frame on ``out``; ``ts`` is the frame's timestamp and
    the payload is ``{message, can_id, extended, signals: {name: value}, units: {name: unit},
    choices: {name: choice name}}`` (``units``/``choices`` only for signals that have one;
    values are scaled physical numbers, choice signals keep their number in ``signals`` and
    add the name in ``choices``; multiplexed messages carry the signals of the frame's
    multiplexer value). Frames that cannot be decoded go to ``invalid`` as ``can_invalid``
    events with ``{reason, detail, can_id, extended, dlc, data, message}`` (reasons:
    malformed, error_frame, remote_frame, unknown_id, bad_length, decode_error), counted per
    reason in ``invalid_<reason>``. Frames of DBC messages not listed in ``messages`` are
    skipped (``skipped``). The DBC is loaded when the flow is validated: a missing or broken
    file, or a ``messages`` name the DBC does not have, is a validation error.

    ``examples/les02.dbc`` describes the LES02 frames: with it, ``dbc_decode`` gives the same
    values as ``les02_parse`` with ``strict_ids: true`` (the DBC cannot express the seed's
    0x180 rule). Time: none involved; live and replay give the same output.
    """

    type_name: ClassVar[str] = "dbc_decode"
    config_model: ClassVar[type[NodeConfig]] = DbcDecodeConfig
    input_kind: ClassVar[Kind | None] = Kind.FRAME
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT, "invalid": Kind.EVENT}
    examples: ClassVar[tuple[str, ...]] = (
        "decode:\n  type: dbc_decode\n  dbc: examples/les02.dbc\n",
        "positions:\n  type: dbc_decode\n  dbc: examples/les02.dbc\n"
        "  messages: [LES02_POSITION_MASTER, LES02_POSITION_SLAVE]\n  source: lift-1\n",
    )

    def __init__(self, node_id: str, config: DbcDecodeConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self.decoder = DbcDecoder(
            load_dbc(config.dbc),
            config.messages or None,
            source=config.source,
            allow_excess=config.allow_excess,
        )
        self._invalid_logs = {reason: RateLimitedLog(self.log) for reason in REASONS}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input of CAN frames")
        decode = self.decoder.decode
        counters = self.counters

        def route(frame: Any) -> tuple[str, Any] | None:
            event = decode(frame)
            if event is None:
                counters.bump("skipped")
                return None
            if event["type"] == "can_invalid":
                reason = event["payload"]["reason"]
                counters.dropped += 1
                counters.bump(f"invalid_{reason}")
                if self.config.log_invalid:
                    self._invalid_logs[reason](
                        logging.WARNING,
                        "invalid frame (%s): %s",
                        reason,
                        event["payload"]["detail"],
                    )
                return ("invalid", event)
            return ("out", event)

        return self.split(source, route, ("out", "invalid"))
