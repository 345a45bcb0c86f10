"""An in-process backend for tests and single-process applications."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence

from sessionflow._async.backends.base import put_guarded_each
from sessionflow._clock import Clock, SystemClock
from sessionflow._errors import CorruptRecord, SessionExists, SessionNotFound, VersionConflict
from sessionflow._record import SessionRecord, tombstone_record
from sessionflow._scan import (
    GuardedResult,
    GuardedWrite,
    ScanPage,
    check_scan,
    guard_verdict,
    in_share,
)

_PURGE_EVERY_WRITES = 1024


class AsyncMemoryBackend:
    """Keeps records in a dict guarded by a lock; expired records are purged as writes go by.

    Args:
        clock: the clock that decides when records are purged (share the store's in tests).
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._records: dict[str, SessionRecord] = {}
        self._users: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._writes = 0

    def __len__(self) -> int:
        """Return the number of records held, tombstones included."""
        return len(self._records)

    async def create(self, record: SessionRecord) -> None:
        """See `AsyncBackend.create`."""
        with self._lock:
            self._count_write()
            if record.key in self._records:
                raise SessionExists("a record with this key exists")
            self._records[record.key] = record._replace(attributes=dict(record.attributes))
            if record.user_id is not None:
                self._users.setdefault(record.user_id, {})[record.key] = record.created_at

    async def get(self, key: str) -> SessionRecord | None:
        """See `AsyncBackend.get`."""
        with self._lock:
            return self._records.get(key)

    async def get_many(self, keys: Sequence[str]) -> list[SessionRecord | CorruptRecord | None]:
        """See `AsyncBackend.get_many`."""
        with self._lock:
            return [self._records.get(key) for key in keys]

    async def save(
        self,
        record: SessionRecord,
        *,
        expected_version: int,
        changed: Collection[str],  # noqa: ARG002 - the whole record is replaced
        removed: Collection[str],  # noqa: ARG002
    ) -> None:
        """See `AsyncBackend.save`."""
        with self._lock:
            self._count_write()
            current = self._records.get(record.key)
            if current is None or current.tombstone:
                raise SessionNotFound("session not found or deleted")
            if current.version != expected_version:
                raise VersionConflict(
                    "session changed since it was read", current_version=current.version
                )
            self._records[record.key] = record._replace(attributes=dict(record.attributes))

    async def touch(self, key: str, *, last_access: float, idle_expires_at: float) -> bool:
        """See `AsyncBackend.touch`."""
        with self._lock:
            current = self._records.get(key)
            if current is None or current.tombstone:
                return False
            if current.idle_expires_at >= idle_expires_at:  # never move expiry backwards
                return True
            self._records[key] = current._replace(
                last_access=last_access, idle_expires_at=idle_expires_at
            )
            return True

    async def delete(
        self,
        key: str,
        *,
        tombstone_expires_at: float,
        expected_version: int | None = None,
    ) -> SessionRecord | None:
        """See `AsyncBackend.delete`."""
        with self._lock:
            self._count_write()
            current = self._records.get(key)
            if current is not None and current.tombstone:
                return None
            if (
                current is not None
                and expected_version is not None
                and current.version != expected_version
            ):
                raise VersionConflict(
                    "session changed since it was read", current_version=current.version
                )
            version = 1 if current is None else current.version + 1
            self._records[key] = tombstone_record(key, version, tombstone_expires_at)
            if current is not None and current.user_id is not None:
                self._users.get(current.user_id, {}).pop(key, None)
            return current

    async def user_keys(self, user_id: str) -> list[str]:
        """See `AsyncBackend.user_keys`."""
        with self._lock:
            entries = self._users.get(user_id, {})
            return sorted(entries, key=entries.__getitem__)

    async def forget_user_keys(self, user_id: str, keys: Collection[str]) -> None:
        """See `AsyncBackend.forget_user_keys`."""
        with self._lock:
            entries = self._users.get(user_id)
            if entries is None:
                return
            for key in keys:
                entries.pop(key, None)
            if not entries:
                del self._users[user_id]

    async def scan(
        self,
        cursor: str | None = None,
        *,
        count: int = 500,
        worker: int = 0,
        workers: int = 1,
    ) -> ScanPage:
        """See `AsyncBackend.scan`: keys in sorted order; the cursor is the last key returned."""
        check_scan(count, worker, workers)
        with self._lock:
            keys = sorted(k for k in self._records if cursor is None or k > cursor)
            page = keys[:count]
            records: list[SessionRecord | CorruptRecord] = [
                self._records[k] for k in page if in_share(k, worker, workers)
            ]
        return ScanPage(records, page[-1] if len(keys) > count else None)

    async def put_guarded(self, record: SessionRecord) -> GuardedWrite:
        """See `AsyncBackend.put_guarded`."""
        with self._lock:
            self._count_write()
            verdict = guard_verdict(self._records.get(record.key), record)
            if verdict is GuardedWrite.WRITTEN:
                self._records[record.key] = record._replace(attributes=dict(record.attributes))
                if record.user_id is not None and not record.tombstone:
                    self._users.setdefault(record.user_id, {})[record.key] = record.created_at
            return verdict

    async def evict(self, key: str, *, version: int, last_access: float) -> bool:
        """See `AsyncEvictable.evict`."""
        with self._lock:
            current = self._records.get(key)
            if (
                current is None
                or current.tombstone
                or (current.version, current.last_access) != (version, last_access)
            ):
                return False
            del self._records[key]
            return True

    async def instance(self) -> str:
        """See `AsyncEvictable.instance`: this object (its records live as long as it)."""
        return f"memory-{id(self):x}"

    async def put_guarded_many(self, records: Sequence[SessionRecord]) -> list[GuardedResult]:
        """See `AsyncBackend.put_guarded_many`."""
        return await put_guarded_each(self, records, limit=1)

    def _count_write(self) -> None:
        self._writes += 1
        if self._writes % _PURGE_EVERY_WRITES == 0:
            now = self._clock.now()
            for key in [k for k, r in self._records.items() if r.expires_at <= now]:
                del self._records[key]
