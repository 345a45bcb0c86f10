"""The conversation-list contract every backend keeps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from sessionflow._async.backends.base import guarded_each
from sessionflow._conversation import DEFAULT_PAGE, Conversation, ConversationPage
from sessionflow._errors import CorruptRecord
from sessionflow._scan import GuardedResult, GuardedWrite


@runtime_checkable
class AsyncConversationBackend(Protocol):
    """An owner's conversations: upsert, newest-first pages, get, delete, delete all.

    Every write raises the entry's version; a delete leaves a tombstone that `get` and
    `list` hide (`get(..., include_deleted=True)` shows it, for migrations).
    """

    async def record(
        self, owner: str, opponent: str, metadata: Mapping[str, Any], timestamp: float
    ) -> Conversation:
        """Record a message exchanged between `owner` and `opponent`.

        The entry's metadata becomes `metadata`, its time the later of its time and
        `timestamp`, its version one higher; a deleted entry comes back.
        """
        ...

    async def get(
        self, owner: str, opponent: str, *, include_deleted: bool = False
    ) -> Conversation | None:
        """Return the entry, or None (a tombstone only with `include_deleted`)."""
        ...

    async def list(
        self, owner: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> ConversationPage:
        """Return up to `limit` live entries newest first, from `cursor` (None: the start)."""
        ...

    async def delete(self, owner: str, opponent: str) -> bool:
        """Delete an entry (a tombstone stays); return False if there was no live entry."""
        ...

    async def delete_all(self, owner: str) -> int:
        """Delete every entry of `owner` in bounded chunks; return how many were live."""
        ...


@runtime_checkable
class AsyncMigratableConversations(AsyncConversationBackend, Protocol):
    """What the migration engine needs of a conversation store besides the contract.

    Entries keep the versions they carry: a copy lands with its version, so the two
    stores of a migration agree on what is newer.
    """

    async def get_entries(
        self, pairs: Sequence[tuple[str, str]]
    ) -> list[Conversation | CorruptRecord | None]:
        """Return the entries (tombstones included) of (owner, opponent) pairs, in order."""
        ...

    async def put_entry(self, entry: Conversation, *, replaces: int | None = None) -> GuardedWrite:
        """Write `entry` with its version, atomically, if `entry_verdict` allows it.

        `replaces` None: a guarded copy; 0: only if absent; n: only over version n. Raise
        `CorruptRecord` if an unreadable entry is in the way.
        """
        ...

    async def put_entries(self, entries: Sequence[Conversation]) -> list[GuardedResult]:
        """Guarded `put_entry` for many entries, batched where the store can; results in order.

        An entry the store refuses gets its error in its place; a failure of the store
        itself raises `BackendError` (some entries may have landed: guarded copies can be
        sent again). Two entries of one pair are written in their order.
        """
        ...

    async def scan_entries(
        self, cursor: str | None = None, *, count: int = 500, worker: int = 0, workers: int = 1
    ) -> tuple[list[Conversation | CorruptRecord], str | None]:
        """Return the next page of this worker's share of all entries, and the next cursor.

        Like `AsyncBackend.scan`: tombstones included, about `count` entries a page even
        for an owner with millions, cursor None on the last page.
        """
        ...


async def put_entries_each(
    store: AsyncMigratableConversations, entries: Sequence[Conversation], *, limit: int = 16
) -> list[GuardedResult]:
    """`put_entries` for a store without batch writes: one `put_entry` each, `limit` at a time."""
    return await guarded_each(
        store.put_entry, entries, key=lambda e: (e.owner, e.opponent), limit=limit
    )
