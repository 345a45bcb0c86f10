"""Timeouts and limits that a `SessionStore` enforces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sessionflow._errors import ConfigError

ConflictPolicy = Literal["raise", "last_writer_wins"]


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
        if self.idle_timeout <= 0 or self.absolute_timeout <= 0:
            raise ConfigError("idle_timeout and absolute_timeout must be positive")
        if self.touch_interval < 0:
            raise ConfigError("touch_interval must not be negative")
        if self.max_sessions_per_user is not None and self.max_sessions_per_user < 1:
            raise ConfigError("max_sessions_per_user must be at least 1 when set")
        if self.max_save_retries < 0:
            raise ConfigError("max_save_retries must not be negative")
        if self.on_conflict not in ("raise", "last_writer_wins"):
            raise ConfigError("on_conflict must be 'raise' or 'last_writer_wins'")
        if self.tombstone_seconds is not None and self.tombstone_seconds <= 0:
            raise ConfigError("tombstone_seconds must be positive when set")

    @property
    def tombstone_ttl(self) -> float:
        """Seconds a tombstone lives."""
        return self.absolute_timeout if self.tombstone_seconds is None else self.tombstone_seconds
