"""A conversation store seen as a backend of records, so the migration engine can move it.

`AsyncConversationRecords` keeps the backend contract (`AsyncBackend`) over a store's
migration primitives (`AsyncMigratableConversations`): the engine's stages, dual-write,
repair queue, backfill, verify and rollback then work on conversation entries through the
same code as on sessions. `_conversation_records` says how an entry maps to a record.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sessionflow._async.conversations.base import AsyncMigratableConversations
from sessionflow._conversation import Conversation, tombstone_of
from sessionflow._conversation_records import (
    MAX_RECORD_BYTES,
    entry_to_record,
    record_to_entry,
    split_key,
)
from sessionflow._errors import ConfigError, CorruptRecord, SessionExists, VersionConflict
from sessionflow._record import SessionRecord
from sessionflow._scan import GuardedResult, GuardedWrite, ScanPage

_DELETE_ATTEMPTS = 16


class AsyncConversationRecords:
    """`AsyncBackend` over a conversation store; keys from `entry_key`.

    Entries never expire, so `touch` changes nothing; a delete leaves a tombstone one
    version above the entry. Conversation lists keep no per-user session index.
    """

    deletes_are_final = False
    """A deleted entry comes back when the pair exchange a message again."""
    max_record_bytes = MAX_RECORD_BYTES
    """The largest record a copy carries; larger ones are quarantined by jobs."""

    def __init__(self, conversations: AsyncMigratableConversations) -> None:
        if not isinstance(conversations, AsyncMigratableConversations):
            raise ConfigError(f"{type(conversations).__name__} has no migration primitives")
        self.conversations = conversations

    async def get(self, key: str) -> SessionRecord | None:
        """See `AsyncBackend.get`."""
        (found,) = await self.conversations.get_entries([split_key(key)])
        if isinstance(found, CorruptRecord):
            raise found
        return None if found is None else entry_to_record(found)

    async def get_many(self, keys: Sequence[str]) -> list[SessionRecord | CorruptRecord | None]:
        """See `AsyncBackend.get_many`."""
        found = await self.conversations.get_entries([split_key(key) for key in keys])
        return [
            entry if not isinstance(entry, Conversation) else entry_to_record(entry)
            for entry in found
        ]

    async def create(self, record: SessionRecord) -> None:
        """See `AsyncBackend.create`: written only where the pair has no entry at all."""
        if await self._put(record, replaces=0) is not GuardedWrite.WRITTEN:
            raise SessionExists("the conversation entry exists")

    async def save(
        self,
        record: SessionRecord,
        *,
        expected_version: int,
        changed: Collection[str],  # noqa: ARG002 - an entry is written whole
        removed: Collection[str],  # noqa: ARG002
    ) -> None:
        """See `AsyncBackend.save`: an entry is one item, so it is written whole."""
        if await self._put(record, replaces=expected_version) is not GuardedWrite.WRITTEN:
            raise VersionConflict("the conversation entry changed since it was read")

    async def touch(
        self,
        key: str,
        *,
        last_access: float,  # noqa: ARG002 - entries do not expire
        idle_expires_at: float,  # noqa: ARG002
    ) -> bool:
        """See `AsyncBackend.touch`: entries do not expire; True if the entry is live."""
        record = await self.get(key)
        return record is not None and not record.tombstone

    async def delete(
        self,
        key: str,
        *,
        tombstone_expires_at: float,  # noqa: ARG002 - an entry's tombstone is kept
        expected_version: int | None = None,
    ) -> SessionRecord | None:
        """See `AsyncBackend.delete`: a tombstone one version above the entry, kept forever."""
        owner, opponent = split_key(key)
        for _ in range(_DELETE_ATTEMPTS):
            current = await self.get(key)
            if current is not None and current.tombstone:
                return None
            if (
                expected_version is not None
                and current is not None
                and current.version != expected_version
            ):
                raise VersionConflict(
                    "the conversation entry changed", current_version=current.version
                )
            if current is None:  # a tombstone all the same, so a late copy cannot land
                version, tombstone = 0, Conversation(owner, opponent, 0.0, 1, {}, deleted=True)
            else:
                version, tombstone = current.version, tombstone_of(record_to_entry(current))
            written = await self.conversations.put_entry(tombstone, replaces=version)
            if written is GuardedWrite.WRITTEN:
                return current
        raise VersionConflict("the conversation entry kept changing while it was deleted")

    async def user_keys(self, user_id: str) -> list[str]:  # noqa: ARG002 - refused
        """Conversation lists keep no session index: refused with `ConfigError`."""
        raise ConfigError("conversation lists have no per-user session index")

    async def forget_user_keys(
        self,
        user_id: str,  # noqa: ARG002 - refused
        keys: Collection[str],  # noqa: ARG002
    ) -> None:
        """Conversation lists keep no session index: refused with `ConfigError`."""
        raise ConfigError("conversation lists have no per-user session index")

    async def scan(
        self, cursor: str | None = None, *, count: int = 500, worker: int = 0, workers: int = 1
    ) -> ScanPage:
        """See `AsyncBackend.scan`."""
        entries, following = await self.conversations.scan_entries(
            cursor, count=count, worker=worker, workers=workers
        )
        records: list[SessionRecord | CorruptRecord] = [
            entry if isinstance(entry, CorruptRecord) else entry_to_record(entry)
            for entry in entries
        ]
        return ScanPage(records, following)

    async def put_guarded(self, record: SessionRecord) -> GuardedWrite:
        """See `AsyncBackend.put_guarded`: by version alone (deletes are not final)."""
        return await self._put(record, replaces=None)

    async def put_guarded_many(self, records: Sequence[SessionRecord]) -> list[GuardedResult]:
        """See `AsyncBackend.put_guarded_many`: through the store's `put_entries`."""
        results: list[GuardedResult] = []
        entries: list[Conversation] = []
        for record in records:
            try:
                entries.append(record_to_entry(record))
                results.append(GuardedWrite.WRITTEN)
            except CorruptRecord as exc:
                results.append(exc)
        written = iter(await self.conversations.put_entries(entries))
        return [next(written) if r is GuardedWrite.WRITTEN else r for r in results]

    async def _put(self, record: SessionRecord, *, replaces: int | None) -> GuardedWrite:
        return await self.conversations.put_entry(record_to_entry(record), replaces=replaces)


__all__ = ["AsyncConversationRecords"]
