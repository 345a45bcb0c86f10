"""The drill's conversation workload: the messaging write-up's traffic, kept in a ledger.

Owners exchange messages (each one rewrites an entry's metadata and time), read their
newest conversations, open new ones, delete some and come back to deleted ones. Each ledger
key is one (owner, opponent) pair, written by one simulated user only, so the ledger knows
every acknowledged outcome.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from contextlib import AsyncExitStack
from typing import Any

from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.control import AsyncControlPlane
from sessionflow._async.conversations.migrating import AsyncMigratingConversations
from sessionflow._async.conversations.records import AsyncConversationRecords
from sessionflow._async.migration import AsyncMigration
from sessionflow._conversation_records import entry_key, record_to_entry
from sessionflow._drill_ledger import AcknowledgedItemMissing, LedgerEntry
from sessionflow._migration_config import StoreConfig
from sessionflow._record import SessionRecord

ENTRIES_PER_OWNER = 50
SEED_BATCH = 500
_SEPARATOR = "\x1f"


def _pair(key: str) -> tuple[str, str]:
    owner, _, opponent = key.partition(_SEPARATOR)
    return owner, opponent


class ConversationWorkload:
    """Owners' conversation lists: message, list newest, get, open, delete, come back."""

    data = "conversations"
    noun = "conversation entries"
    operations: tuple[tuple[str, int], ...] = (
        ("list", 30),
        ("get", 20),
        ("message", 25),
        ("open", 10),
        ("delete", 8),
        ("come-back", 7),
    )
    creating = "open"
    reads: tuple[str, ...] = ("list", "get")

    def __init__(self) -> None:
        self.ledger: dict[str, LedgerEntry] = {}
        self.fleet: list[AsyncMigratingBackend] = []
        self._fronts: list[AsyncMigratingConversations] = []
        self._owners: list[str] = []

    def store_configs(self, redis_url: str, dynamodb_endpoint: str) -> tuple[StoreConfig, ...]:
        """Return the Redis and DynamoDB stores of the drill."""
        return (
            StoreConfig("redis", redis_url=redis_url, redis_prefix="drill"),
            StoreConfig(
                "dynamodb",
                dynamodb_endpoint=dynamodb_endpoint,
                dynamodb_table="drill-conversations",
            ),
        )

    async def open(
        self, old: StoreConfig, new: StoreConfig, control: AsyncControlPlane, stack: AsyncExitStack
    ) -> AsyncMigration:
        """Open both stores; return the migration between them."""
        from sessionflow._open_backend import open_conversations  # noqa: PLC0415

        return AsyncMigration.for_conversations(
            await open_conversations(old, stack), await open_conversations(new, stack), control,
            heartbeat_max_age=5,
        )  # fmt: skip

    async def seed(self, migration: AsyncMigration, total: int, rng: random.Random) -> None:
        """Write `total` entries, `ENTRIES_PER_OWNER` an owner, in the old store and the ledger."""
        store = _conversations(migration.old)
        owners = max(1, total // ENTRIES_PER_OWNER)
        self._owners = [f"owner-{i:06d}" for i in range(owners)]
        pairs = [(self._owners[i % owners], f"opponent-{i:07d}") for i in range(total)]
        for start in range(0, total, SEED_BATCH):
            batch = pairs[start : start + SEED_BATCH]
            metadata = [{"n": 0, "last": f"m{rng.randrange(1000)}"} for _ in batch]
            await asyncio.gather(
                *(
                    store.record(owner, opponent, meta, 1_700_000_000.0 + start + i)
                    for i, ((owner, opponent), meta) in enumerate(zip(batch, metadata, strict=True))
                )
            )
            for (owner, opponent), meta in zip(batch, metadata, strict=True):
                self.ledger[owner + _SEPARATOR + opponent] = LedgerEntry(meta)

    def start_fleet(self, fleet: list[AsyncMigratingBackend]) -> None:
        """Serve users through `fleet`: a conversation front over each process's backend."""
        self.fleet = fleet
        self._fronts = [AsyncMigratingConversations.over(backend) for backend in fleet]

    def choose(self, operation: str, owned: list[str], rng: random.Random) -> str | None:
        """Return one of the user's pairs to act on (a deleted one to come back to)."""
        wanted_deleted = operation == "come-back"
        for key in rng.sample(owned, min(5, len(owned))):
            entry = self.ledger[key]
            if entry.deleted == wanted_deleted and not entry.uncertain:
                return key
        return None

    async def operate(
        self, operation: str, process: int, key: str, owned: list[str], rng: random.Random
    ) -> None:
        """Do one operation through `process`; keep the ledger."""
        front = self._fronts[process]
        if operation == "open":
            owner = rng.choice(self._owners)
            opponent = f"opponent-new-{secrets.token_hex(6)}"
            metadata = {"n": 0, "last": "hello"}
            await front.record(owner, opponent, metadata, time.time())
            self.ledger[owner + _SEPARATOR + opponent] = LedgerEntry(metadata)
            owned.append(owner + _SEPARATOR + opponent)
            return
        owner, opponent = _pair(key)
        entry = self.ledger[key]
        if operation == "list":
            await front.list(owner, limit=20)
        elif operation == "get":
            if await front.get(owner, opponent) is None:
                raise AcknowledgedItemMissing("an acknowledged conversation read as missing")
        elif operation == "message":
            metadata = {"n": entry.attributes["n"] + 1, "last": f"m{rng.randrange(1000)}"}
            await front.record(owner, opponent, metadata, time.time())
            entry.attributes = metadata
        elif operation == "delete":
            await front.delete(owner, opponent)
            entry.deleted = True
        elif operation == "come-back":
            metadata = {"n": 0, "last": "back again"}
            await front.record(owner, opponent, metadata, time.time())
            entry.attributes, entry.deleted = metadata, False

    def record_key(self, key: str) -> str:
        """Return the stores' record key of a ledger key."""
        return entry_key(*_pair(key))

    def contents(self, record: SessionRecord) -> dict[str, Any]:
        """Return what the ledger compares of a stored record: the entry's metadata."""
        return record_to_entry(record).metadata


def _conversations(backend: object) -> Any:  # noqa: ANN401 - the store behind a record view
    if not isinstance(backend, AsyncConversationRecords):
        raise TypeError("the conversation drill needs conversation stores")
    return backend.conversations
