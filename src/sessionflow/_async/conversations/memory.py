"""Conversation lists in a dict: for tests and as either side of a migration drill."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sessionflow._async.conversations.base import put_entries_each
from sessionflow._conversation import (
    DEFAULT_PAGE,
    Conversation,
    ConversationPage,
    check_id,
    check_limit,
    check_timestamp,
    decode_cursor,
    encode_cursor,
    encode_metadata,
    tombstone_of,
)
from sessionflow._conversation_records import entry_verdict, owner_share_key
from sessionflow._errors import CorruptRecord
from sessionflow._scan import GuardedResult, GuardedWrite, check_scan, in_share


class AsyncMemoryConversations:
    """See `AsyncConversationBackend`; entries live in this process only."""

    def __init__(self) -> None:
        self._owners: dict[str, dict[str, Conversation]] = {}

    async def record(
        self, owner: str, opponent: str, metadata: Mapping[str, Any], timestamp: float
    ) -> Conversation:
        """See `AsyncConversationBackend.record`."""
        entries = self._owners.setdefault(check_id("owner", owner), {})
        encoded = encode_metadata(metadata)
        when = check_timestamp(timestamp)
        old = entries.get(check_id("opponent", opponent))
        entry = Conversation(
            owner,
            opponent,
            when if old is None else max(old.timestamp, when),
            1 if old is None else old.version + 1,
            orjson.loads(encoded),
        )
        entries[opponent] = entry
        return entry

    async def get(
        self, owner: str, opponent: str, *, include_deleted: bool = False
    ) -> Conversation | None:
        """See `AsyncConversationBackend.get`."""
        entry = self._owners.get(check_id("owner", owner), {}).get(check_id("opponent", opponent))
        if entry is None or (entry.deleted and not include_deleted):
            return None
        return entry

    async def list(
        self, owner: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> ConversationPage:
        """See `AsyncConversationBackend.list`."""
        check_limit(limit)
        live = sorted(
            (e for e in self._owners.get(check_id("owner", owner), {}).values() if not e.deleted),
            key=lambda e: (e.timestamp, e.opponent),
            reverse=True,
        )
        if cursor is not None:
            after = decode_cursor(cursor, "t", "o")
            last = (float(after["t"]), str(after["o"]))
            live = [e for e in live if (e.timestamp, e.opponent) < last]
        page = live[:limit]
        more = len(live) > limit
        return ConversationPage(
            page,
            encode_cursor({"t": page[-1].timestamp, "o": page[-1].opponent}) if more else None,
        )

    async def delete(self, owner: str, opponent: str) -> bool:
        """See `AsyncConversationBackend.delete`."""
        entries = self._owners.get(check_id("owner", owner), {})
        entry = entries.get(check_id("opponent", opponent))
        if entry is None or entry.deleted:
            return False
        entries[opponent] = tombstone_of(entry)
        return True

    async def delete_all(self, owner: str) -> int:
        """See `AsyncConversationBackend.delete_all`."""
        opponents = builtins.list(self._owners.get(check_id("owner", owner), {}))
        return sum([await self.delete(owner, opponent) for opponent in opponents])

    async def get_entries(
        self, pairs: Sequence[tuple[str, str]]
    ) -> builtins.list[Conversation | CorruptRecord | None]:
        """See `AsyncMigratableConversations.get_entries`."""
        return [self._owners.get(owner, {}).get(opponent) for owner, opponent in pairs]

    async def put_entry(self, entry: Conversation, *, replaces: int | None = None) -> GuardedWrite:
        """See `AsyncMigratableConversations.put_entry`."""
        entries = self._owners.setdefault(check_id("owner", entry.owner), {})
        verdict = entry_verdict(entries.get(entry.opponent), entry, replaces)
        if verdict is GuardedWrite.WRITTEN:
            entries[check_id("opponent", entry.opponent)] = entry
        return verdict

    async def put_entries(self, entries: Sequence[Conversation]) -> builtins.list[GuardedResult]:
        """See `AsyncMigratableConversations.put_entries`."""
        return await put_entries_each(self, entries, limit=1)

    async def scan_entries(
        self, cursor: str | None = None, *, count: int = 500, worker: int = 0, workers: int = 1
    ) -> tuple[builtins.list[Conversation | CorruptRecord], str | None]:
        """See `AsyncMigratableConversations.scan_entries`: owners, then opponents, sorted."""
        check_scan(count, worker, workers)
        after = ("", "") if cursor is None else tuple(orjson.loads(cursor))
        owners = sorted(
            owner
            for owner in self._owners
            if owner >= after[0] and in_share(owner_share_key(owner), worker, workers)
        )
        found = (
            (owner, opponent)
            for owner in owners
            for opponent in sorted(self._owners[owner])
            if (owner, opponent) > after
        )
        page = builtins.list(itertools.islice(found, count + 1))
        entries: builtins.list[Conversation | CorruptRecord] = [
            self._owners[owner][opponent] for owner, opponent in page[:count]
        ]
        more = len(page) > count
        return entries, orjson.dumps(page[count - 1]).decode() if more else None
