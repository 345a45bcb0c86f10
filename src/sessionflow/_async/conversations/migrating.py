"""Conversation lists during a migration: the session engine's stages, on conversation entries.

`AsyncMigratingConversations` keeps the conversation contract over two stores. Underneath
it is the engine's `AsyncMigratingBackend` over both stores' record views
(`AsyncConversationRecords`): the same stage cache and heartbeats, the same authoritative
write first and background copy with the durable repair queue, the same fenced writes in
``cutover``, read-through in ``live`` and sampled shadow comparisons. A message or delete
reads the entry, then writes the next version conditionally on the one it read (retried
if another writer got there first), so both stores hold every version at the same number.
In ``off`` and ``complete`` only one store is involved and its own atomic writes are used.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any, Self

import orjson

from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.control import AsyncControlPlane
from sessionflow._async.conversations.base import AsyncMigratableConversations
from sessionflow._async.conversations.records import AsyncConversationRecords
from sessionflow._clock import Clock
from sessionflow._concurrency import async_map_limited, async_sleep
from sessionflow._conversation import (
    DEFAULT_PAGE,
    Conversation,
    ConversationPage,
    check_id,
    check_timestamp,
    encode_metadata,
    tombstone_of,
)
from sessionflow._conversation_records import entry_key, entry_to_record, record_to_entry
from sessionflow._errors import ConfigError, SessionExists, SessionNotFound, VersionConflict
from sessionflow._migration_stats import MigrationStats
from sessionflow._stages import Stage

WRITE_ATTEMPTS = 12
"""How often a write is retried when another writer changed the entry since it was read."""
DELETE_ALL_CHUNK = 200
DELETE_ALL_CONCURRENCY = 8
_RETRY_PAUSE = 0.002


class AsyncMigratingConversations:
    """See `AsyncConversationBackend`; moves entries from `old` to `new` stage by stage.

    Args:
        old: the store entries move away from (for the write-up: Redis).
        new: the store entries move to (for the write-up: DynamoDB).
        control: the migration's control plane; give conversations their own migration
            name (``AsyncRedisControlPlane(client, migration="conversations")``).
        stage_ttl, compare_sample, mirror_timeout, process_id, heartbeat, clock, stats:
            as for `AsyncMigratingBackend`.
    """

    def __init__(
        self,
        old: AsyncMigratableConversations,
        new: AsyncMigratableConversations,
        control: AsyncControlPlane,
        *,
        stage_ttl: float = 5.0,
        compare_sample: float = 0.01,
        mirror_timeout: float = 2.0,
        process_id: str | None = None,
        heartbeat: bool = True,
        clock: Clock | None = None,
        stats: MigrationStats | None = None,
    ) -> None:
        self.old = old
        self.new = new
        self.records = AsyncMigratingBackend(
            AsyncConversationRecords(old),
            AsyncConversationRecords(new),
            control,
            stage_ttl=stage_ttl,
            compare_sample=compare_sample,
            mirror_timeout=mirror_timeout,
            process_id=process_id,
            heartbeat=heartbeat,
            clock=clock,
            stats=stats,
        )

    @classmethod
    def over(cls, records: AsyncMigratingBackend) -> Self:
        """Return a front over an existing migrating backend of two conversation record views.

        The front shares that backend's stage cache, heartbeats and background copies.
        """
        old, new = records.old, records.new
        if not (
            isinstance(old, AsyncConversationRecords) and isinstance(new, AsyncConversationRecords)
        ):
            raise ConfigError("the migrating backend does not move conversation lists")
        front = cls.__new__(cls)
        front.old, front.new, front.records = old.conversations, new.conversations, records
        return front

    @property
    def stats(self) -> MigrationStats:
        """The counters of the dual-write underneath (for metrics)."""
        return self.records.stats

    async def stage(self) -> Stage:
        """Return the stage this process runs (cached like `AsyncMigratingBackend.stage`)."""
        return await self.records.stage()

    def _authority(self, stage: Stage) -> AsyncMigratableConversations:
        return self.old if stage.authority == "old" else self.new

    async def record(
        self, owner: str, opponent: str, metadata: Mapping[str, Any], timestamp: float
    ) -> Conversation:
        """See `AsyncConversationBackend.record`."""
        check_id("owner", owner)
        check_id("opponent", opponent)
        when = check_timestamp(timestamp)
        fields = orjson.loads(encode_metadata(metadata))
        stage = await self.stage()
        if stage.single:
            return await self._authority(stage).record(owner, opponent, fields, when)

        def next_version(current: Conversation | None) -> Conversation:
            version = 1 if current is None else current.version + 1
            later = when if current is None else max(current.timestamp, when)
            return Conversation(owner, opponent, later, version, fields)

        written = await self._write(owner, opponent, next_version)
        assert written is not None  # noqa: S101 - a message always writes
        return written

    async def get(
        self, owner: str, opponent: str, *, include_deleted: bool = False
    ) -> Conversation | None:
        """See `AsyncConversationBackend.get`."""
        stage = await self.stage()
        if stage.single:
            return await self._authority(stage).get(
                owner, opponent, include_deleted=include_deleted
            )
        record = await self.records.get(
            entry_key(check_id("owner", owner), check_id("opponent", opponent))
        )
        if record is None or (record.tombstone and not include_deleted):
            return None
        return record_to_entry(record)

    async def list(
        self, owner: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> ConversationPage:
        """See `AsyncConversationBackend.list`: the authoritative store's list."""
        stage = await self.stage()
        return await self._authority(stage).list(owner, limit=limit, cursor=cursor)

    async def delete(self, owner: str, opponent: str) -> bool:
        """See `AsyncConversationBackend.delete`."""
        check_id("owner", owner)
        check_id("opponent", opponent)
        stage = await self.stage()
        if stage.single:
            return await self._authority(stage).delete(owner, opponent)

        def tombstone(current: Conversation | None) -> Conversation | None:
            if current is None or current.deleted:
                return None  # nothing live to delete
            return tombstone_of(current)

        return await self._write(owner, opponent, tombstone) is not None

    async def delete_all(self, owner: str) -> int:
        """See `AsyncConversationBackend.delete_all`: a page of the list at a time."""
        check_id("owner", owner)
        stage = await self.stage()
        if stage.single:
            return await self._authority(stage).delete_all(owner)
        deleted = 0
        while True:
            page = await self._authority(await self.stage()).list(owner, limit=DELETE_ALL_CHUNK)
            if not page.items:
                return deleted
            done = await async_map_limited(
                lambda entry: self.delete(owner, entry.opponent),
                page.items,
                DELETE_ALL_CONCURRENCY,
            )
            deleted += sum(done)

    async def _write(
        self,
        owner: str,
        opponent: str,
        change: Callable[[Conversation | None], Conversation | None],
    ) -> Conversation | None:
        """Read the entry, write `change(entry)` on its version; retry if it moved meanwhile."""
        key = entry_key(owner, opponent)
        for attempt in range(WRITE_ATTEMPTS):
            current_record = await self.records.get(key)
            current = None if current_record is None else record_to_entry(current_record)
            wanted = change(current)
            if wanted is None:
                return None
            record = entry_to_record(wanted)
            try:
                if current_record is None:
                    await self.records.create(record)
                else:
                    await self.records.save(
                        record,
                        expected_version=current_record.version,
                        changed=set(record.attributes),
                        removed=set(current_record.attributes) - set(record.attributes),
                    )
            except (VersionConflict, SessionExists, SessionNotFound):
                await async_sleep(_RETRY_PAUSE * attempt)
                continue
            return wanted
        raise VersionConflict(
            f"the conversation entry changed {WRITE_ATTEMPTS} times while it was written"
        )

    async def drain(self) -> None:
        """Wait for this process's background copies (see `AsyncMigratingBackend.drain`)."""
        await self.records.drain()

    async def aclose(self) -> None:
        """Drain background copies, then stop (keys not copied go to the repair queue)."""
        await self.records.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def validation_pair() -> tuple[str, str]:
    """Return a throwaway (owner, opponent) for a post-change validation."""
    return "sessionflow-validation", f"probe-{secrets.token_hex(8)}"


__all__ = ["AsyncMigratingConversations", "validation_pair"]
