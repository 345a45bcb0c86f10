"""Timeouts and limits that a `SessionStore` enforces."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from sessionflow._errors import ConfigError

ConflictPolicy = Literal["raise", "last_writer_wins"]

LONGEST_SECONDS = 100 * 365 * 24 * 3600
"""The longest timeout a policy takes: expiry times past it overflow Redis's PEXPIREAT."""


def check_seconds(name: str, value: float, *, zero_ok: bool = False) -> None:
    """Raise `ConfigError` unless `value` is a finite number of seconds in range.

    NaN slips past a plain ``<= 0`` check, and an infinite or huge timeout makes expiry
    times no store can keep (Redis refuses the PEXPIREAT; a NaN expiry fails every read).
    """
    low_ok = value >= 0 if zero_ok else value > 0
    if isinstance(value, bool) or not (low_ok and value <= LONGEST_SECONDS):
        kind = "a number of seconds from 0" if zero_ok else "a positive number of seconds"
        raise ConfigError(f"{name} must be {kind} up to 100 years, not {value!r}")


def check_fraction(name: str, value: object) -> None:
    """Raise `ConfigError` unless `value` is a number from 0 to 1 (a share or a rate).

    Written so that NaN fails: every comparison with it is false, so a NaN threshold
    passes or fails each check it meets without a word.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ConfigError(f"{name} must be a number between 0 and 1, not {value!r}")


def whole_number(raw: object) -> int | None:
    """Return `raw` as an int if it is a whole number (``7``, ``7.0``, ``"7"``, ``"7e3"``).

    None for anything else: a fraction, an infinity or NaN (``int(inf)`` raises
    OverflowError, ``int(2.7)`` quietly makes 2), a bool, text that is not a number.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw)
        except ValueError:
            try:
                raw = float(raw)
            except ValueError:
                return None
    if isinstance(raw, float) and math.isfinite(raw) and raw.is_integer():
        return int(raw)
    return None


def check_count(name: str, value: object, *, least: int = 1, most: int | None = None) -> None:
    """Raise `ConfigError` unless `value` is a whole number from `least` (1) to `most`.

    A zero batch divides by zero in a batch count, a negative one slices from the end,
    and a float or bool slips into slices and ranges only to fail there.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or value < least
        or (most is not None and value > most)
    ):
        bound = f"of at least {least}" if most is None else f"from {least} to {most:,}"
        raise ConfigError(f"{name} must be a whole number {bound}, not {value!r}")


@dataclass(frozen=True)
class SessionPolicy:
    """How long sessions live and how saves resolve conflicts.

    Args:
        idle_timeout: seconds without a save or touch after which a session expires.
        absolute_timeout: seconds after creation after which a session expires, however
            active it is.
        touch_interval: a touch within this many seconds of the last one writes nothing.
        max_sessions_per_user: when set, creating a session for a user who already has this
            many revokes the oldest ones.
        max_save_retries: how many times a save re-reads and merges after a version conflict
            with a writer that changed other attributes.
        on_conflict: what happens when another writer changed the same attribute since this
            request read it: ``"raise"`` (`VersionConflict`) or ``"last_writer_wins"``.
        tombstone_seconds: how long a deleted session's tombstone blocks late writes; by
            default the absolute timeout, past which any stray copy has expired anyway.
    """

    idle_timeout: float = 30 * 60
    absolute_timeout: float = 12 * 60 * 60
    touch_interval: float = 60
    max_sessions_per_user: int | None = None
    max_save_retries: int = 64
    on_conflict: ConflictPolicy = "raise"
    tombstone_seconds: float | None = None

    def __post_init__(self) -> None:
        check_seconds("idle_timeout", self.idle_timeout)
        check_seconds("absolute_timeout", self.absolute_timeout)
        check_seconds("touch_interval", self.touch_interval, zero_ok=True)
        if self.tombstone_seconds is not None:
            check_seconds("tombstone_seconds", self.tombstone_seconds)
        if self.max_sessions_per_user is not None:
            check_count("max_sessions_per_user", self.max_sessions_per_user)
        check_count("max_save_retries", self.max_save_retries, least=0)
        if self.on_conflict not in ("raise", "last_writer_wins"):
            raise ConfigError("on_conflict must be 'raise' or 'last_writer_wins'")

    @property
    def tombstone_ttl(self) -> float:
        """Seconds a tombstone lives."""
        return self.absolute_timeout if self.tombstone_seconds is None else self.tombstone_seconds
