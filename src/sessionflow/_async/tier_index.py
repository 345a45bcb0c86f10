"""The tier's two indexes: last access of hot sessions, and changes not yet in the cold tier.

The demotion sweeper reads the oldest entries of the access index, so its cost grows with the
sessions it moves, not with all keys; the flusher reads the dirty index. Both live beside
the hot tier (Redis sorted sets, `AsyncRedisTierIndex`, or memory for one process).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class AsyncTierIndex(Protocol):
    """Last access per hot session, and the version of each change the cold tier lacks."""

    async def accessed(self, key: str, last_access: float) -> None:
        """Record a use of a hot session (the index keeps the latest)."""
        ...

    async def inactive(self, before: float, limit: int) -> list[tuple[str, float]]:
        """Return up to `limit` (key, last access) pairs last used before `before`, oldest first."""
        ...

    async def forget(self, key: str, last_access: float) -> None:
        """Drop a key demoted or gone, unless it was used after `last_access`."""
        ...

    async def changed(self, key: str, version: int) -> None:
        """Note a change (at `version`) the cold tier does not hold yet."""
        ...

    async def dirty(self, limit: int) -> list[tuple[str, int]]:
        """Return up to `limit` (key, version) pairs of changes the cold tier lacks."""
        ...

    async def dirty_versions(self, keys: Sequence[str]) -> list[int | None]:
        """Return the version of each key's dirty mark, None where the cold tier lacks nothing."""
        ...

    async def flushed(self, key: str, version: int) -> None:
        """Drop the dirty mark of `key` unless a change newer than `version` came since."""
        ...

    async def sizes(self) -> tuple[int, int]:
        """Return (hot sessions indexed, dirty sessions)."""
        ...


class AsyncMemoryTierIndex:
    """The indexes in process memory (one process, tests)."""

    def __init__(self) -> None:
        self._access: dict[str, float] = {}
        self._dirty: dict[str, int] = {}
        self._lock = threading.Lock()

    async def accessed(self, key: str, last_access: float) -> None:
        """See `AsyncTierIndex.accessed`."""
        with self._lock:
            self._access[key] = max(last_access, self._access.get(key, last_access))

    async def inactive(self, before: float, limit: int) -> list[tuple[str, float]]:
        """See `AsyncTierIndex.inactive`."""
        with self._lock:
            old = sorted((score, key) for key, score in self._access.items() if score < before)
        return [(key, score) for score, key in old[:limit]]

    async def forget(self, key: str, last_access: float) -> None:
        """See `AsyncTierIndex.forget`."""
        with self._lock:
            if self._access.get(key, float("inf")) <= last_access:
                del self._access[key]

    async def changed(self, key: str, version: int) -> None:
        """See `AsyncTierIndex.changed`."""
        with self._lock:
            self._dirty[key] = max(version, self._dirty.get(key, version))

    async def dirty(self, limit: int) -> list[tuple[str, int]]:
        """See `AsyncTierIndex.dirty`."""
        with self._lock:
            return list(self._dirty.items())[:limit]

    async def dirty_versions(self, keys: Sequence[str]) -> list[int | None]:
        """See `AsyncTierIndex.dirty_versions`."""
        with self._lock:
            return [self._dirty.get(key) for key in keys]

    async def flushed(self, key: str, version: int) -> None:
        """See `AsyncTierIndex.flushed`."""
        with self._lock:
            if self._dirty.get(key, version + 1) <= version:
                del self._dirty[key]

    async def sizes(self) -> tuple[int, int]:
        """See `AsyncTierIndex.sizes`."""
        with self._lock:
            return len(self._access), len(self._dirty)
