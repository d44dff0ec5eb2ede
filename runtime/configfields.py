"""Config fields and field types that several node configs share, written once here.

:data:`HexInt` and :data:`CanIdInt` accept an integer or its text (``"0x80"`` arrives as a
string from ``${VAR}`` substitution or ``--set``); :class:`RetryFields` is the capped
exponential retry of the I/O nodes that reopen or reconnect (``retry_initial`` doubling up to
``retry_max``); :data:`WindowStart`, :data:`WindowEnd` (checked by :func:`check_window`) and
:data:`EventTypes` select a part of a recording (``replay_source`` and a flow test's input).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "CanIdInt",
    "EventTypes",
    "HexInt",
    "RetryFields",
    "WindowEnd",
    "WindowStart",
    "check_window",
    "int_text",
]


def int_text(what: str) -> Callable[[object], object]:
    """A before-validator: a string is read as an integer (``0x`` hex, ``0o``, ``0b`` or
    decimal); ``ValueError`` says "not {what}" with an example. Other values pass unchanged."""

    def parse(value: object) -> object:
        if isinstance(value, str):
            try:
                return int(value.strip(), 0)
            except ValueError:
                raise ValueError(f"not {what}: {value!r} (use e.g. 128 or 0x80)") from None
        return value

    return parse


#: an integer; text like ``"0x80"`` is read as hex
HexInt = Annotated[int, BeforeValidator(int_text("an integer"))]
#: a CAN identifier; text like ``"0x80"`` is read as hex (bounds are the field's)
CanIdInt = Annotated[int, BeforeValidator(int_text("a CAN id"))]

#: where a replayed recording starts (``start: WindowStart = 0.0``)
WindowStart = Annotated[
    float,
    Field(ge=0, description="Skip the first seconds of the recording (from its first item)."),
]
#: where it ends (``end: WindowEnd = None``); :func:`check_window` checks it against the start
WindowEnd = Annotated[
    float | None,
    Field(
        gt=0,
        description="Stop at this many seconds after the recording's first item. "
        "Unset = to the end.",
    ),
]
#: the event types replayed from a ``.jsonl`` recording
EventTypes = Annotated[
    list[str],
    Field(
        default_factory=list,
        description="For .jsonl recordings: only events of these types. Empty = all.",
    ),
]


def check_window(start: float, end: float | None) -> None:
    """``ValueError`` unless ``end`` (when set) is after ``start`` (for a model validator)."""
    if end is not None and end <= start:
        raise ValueError(f"end ({end}) must be greater than start ({start})")


class RetryFields(BaseModel):
    """``retry_initial`` / ``retry_max``: a node config extends this to get both, checked."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    retry_initial: float = Field(
        default=0.5,
        gt=0,
        description="Seconds before the first retry (reopen or reconnect) after a failure.",
    )
    retry_max: float = Field(
        default=10.0,
        gt=0,
        description="Longest wait between retries (the wait doubles up to this).",
    )

    @model_validator(mode="after")
    def _check_retry(self) -> Self:
        if self.retry_max < self.retry_initial:
            raise ValueError(
                f"retry_max ({self.retry_max}) must be >= retry_initial ({self.retry_initial})"
            )
        return self
