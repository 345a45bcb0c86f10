"""What a backend stores: a session record keyed by the hash of the session id. No I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

_NO_ATTRIBUTES: Mapping[str, bytes] = MappingProxyType({})


class SessionRecord(NamedTuple):
    """A session as a backend stores it (immutable; a tuple, so cheap on the read path).

    `key` is the SHA-256 hex of the session id, never the id. `attributes` maps attribute
    names to their encoded envelopes (see `Codec`). Times are epoch seconds.
    A tombstone marks a deleted session: it carries a version and an expiry, nothing else,
    and no write may turn it back into a live session.
    """

    key: str
    version: int
    user_id: str | None
    created_at: float
    last_access: float
    idle_expires_at: float
    absolute_expires_at: float
    attributes: Mapping[str, bytes] = _NO_ATTRIBUTES
    tombstone: bool = False

    @property
    def expires_at(self) -> float:
        """When the record stops being valid: the earlier of idle and absolute expiry."""
        return min(self.idle_expires_at, self.absolute_expires_at)

    @property
    def expires_at_epoch(self) -> int:
        """`expires_at` rounded up to whole seconds (for TTL attributes)."""
        return self.epoch_ceiling(self.expires_at)

    @staticmethod
    def epoch_ceiling(epoch_seconds: float) -> int:
        """Round an epoch time up to whole seconds."""
        return math.ceil(epoch_seconds)

    def is_live(self, now: float) -> bool:
        """Return True if the record is not a tombstone and has not expired at `now`."""
        return not self.tombstone and now < self.idle_expires_at and now < self.absolute_expires_at


def tombstone_record(key: str, version: int, expires_at: float) -> SessionRecord:
    """Return the tombstone that replaces a deleted session."""
    return SessionRecord(
        key=key,
        version=version,
        user_id=None,
        created_at=0.0,
        last_access=0.0,
        idle_expires_at=expires_at,
        absolute_expires_at=expires_at,
        tombstone=True,
    )
