"""Node ``les02_parse``: LES02 CAN frames in, event envelopes out (a thin wrapper around
:class:`les02_flow.nodes.les02.codec.Les02Decoder`)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field
from reactivex import Observable

from les02_flow.node import Context, Kind, Node, NodeConfig, RateLimitedLog
from les02_flow.nodes.les02.codec import REASONS, Les02Decoder, Rejection

__all__ = ["Les02Parse", "Les02ParseConfig"]

_PORTS = ("out", "invalid")


class Les02ParseConfig(NodeConfig):
    """Config of ``les02_parse``."""

    source: str = Field(
        default="les02",
        min_length=1,
        description="Value of the 'source' field of every event envelope.",
    )
    strict_ids: bool = Field(
        default=False,
        description=(
            "Accept only the ids 0x10/0x11/0x20/0x21/0x30/0x31/0x80/0x81. Off (the seed's rule): "
            "every 11-bit id whose id & 0xFE is 0x10/0x20/0x30/0x80 is accepted, so e.g. 0x180 "
            "is a master position frame."
        ),
    )
    log_invalid: bool = Field(
        default=True,
        description=(
            "Log rejected frames with the node id and the reason, at most one line per reason "
            "every 5 s."
        ),
    )


class Les02Parse(Node[Les02ParseConfig]):
    """Decode LES02 CAN frames into position_sample/status/error/system events.

    Rules (docs/protocol.md): channel is "master" for even ids and "slave" for odd ids; the
    base id ``id & 0xFE`` selects the type: 0x80 position (DLC 4, 24-bit big-endian position
    in bytes 0..2), 0x30 status, 0x20 error, 0x10 system (DLC 8, raw data as hex). Event ``ts``
    is the frame's timestamp.

    Port ``out`` carries the events. Frames that break the rules (unknown id, wrong DLC, data
    length not matching the DLC, error/remote/CAN FD/extended-id frames) go unchanged to port
    ``invalid``; they are counted in ``dropped`` and per reason in ``invalid_<reason>``
    (reasons: malformed, error_frame, remote_frame, fd_frame, extended_id, unknown_id,
    bad_dlc, length_mismatch) and logged (rate-limited) unless ``log_invalid`` is off.
    One upstream subscription feeds both ports.
    """

    type_name: ClassVar[str] = "les02_parse"
    input_kind: ClassVar[Kind | None] = Kind.FRAME
    output_ports: ClassVar[Mapping[str, Kind]] = {"out": Kind.EVENT, "invalid": Kind.FRAME}
    examples: ClassVar[tuple[str, ...]] = (
        "parse:\n  type: les02_parse\n",
        "parse:\n  type: les02_parse\n  source: shaft-a\n  strict_ids: true\n"
        "  log_invalid: false\n",
    )

    def __init__(self, node_id: str, config: Les02ParseConfig, ctx: Context) -> None:
        super().__init__(node_id, config, ctx)
        self.decoder = Les02Decoder(source=config.source, strict_ids=config.strict_ids)
        # one limiter per reason, so a flood of one kind does not hide another
        self._invalid_logs = {reason: RateLimitedLog(self.log) for reason in REASONS}

    def build(self, source: Observable[Any] | None) -> Mapping[str, Observable[Any]]:
        if source is None:
            raise ValueError(f"{self.log.prefix} needs an input of CAN frames")
        decode = self.decoder.decode

        def route(msg: Any) -> tuple[str, Any]:
            result = decode(msg)
            if isinstance(result, Rejection):
                self._count_invalid(result)
                return ("invalid", result.frame)
            return ("out", result)

        return self.split(source, route, _PORTS)

    def process_batch(self, messages: list[Any]) -> Mapping[str, list[Any]]:
        """The batch path (replay at speed max): the same routing as :meth:`build`'s."""
        decode = self.decoder.decode
        out: list[Any] = []
        invalid: list[Any] = []
        append = out.append
        for msg in messages:
            try:
                result = decode(msg)
            except Exception as exc:
                self.report_error(msg, exc)
                continue
            if type(result) is dict:  # an event (the common case)
                append(result)
            elif isinstance(result, Rejection):
                self._count_invalid(result)
                invalid.append(result.frame)
            else:
                append(result)
        return {"out": out, "invalid": invalid}

    def _count_invalid(self, rej: Rejection) -> None:
        counters = self.counters
        counters.dropped += 1
        counters.bump(f"invalid_{rej.reason}")
        if self.config.log_invalid:
            self._invalid_logs[rej.reason](
                logging.WARNING,
                "invalid frame (%s): %s -- not forwarded to 'out'",
                rej.reason,
                rej.message,
            )
