"""Config fields and field types that several node configs share, written once here.

:data:`HexInt` and :data:`CanIdInt` accept an integer or its text (``"0x80"`` arrives as a
string from ``${VAR}`` substitution or ``--set``); :class:`RetryFields` is the capped
exponential retry of the I/O nodes that reopen or reconnect (``retry_initial`` doubling up to
``retry_max``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = ["CanIdInt", "HexInt", "RetryFields", "int_text"]


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
