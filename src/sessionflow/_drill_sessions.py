"""The drill's session workload: a web fleet's session traffic, kept in a ledger."""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack
from typing import Any

from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.control import AsyncControlPlane
from sessionflow._async.migration import AsyncMigration
from sessionflow._async.store import AsyncSessionStore
from sessionflow._codec import Codec
from sessionflow._drill_ledger import AcknowledgedItemMissing, LedgerEntry
from sessionflow._ids import storage_key
from sessionflow._migration_config import StoreConfig
from sessionflow._policy import SessionPolicy
from sessionflow._record import SessionRecord

POLICY = SessionPolicy(idle_timeout=3600, absolute_timeout=4 * 3600, touch_interval=1)
SEED_BATCH = 500


class SessionWorkload:
    """Users' sessions: create, read, update, touch, delete and regenerate (at login)."""

    data = "sessions"
    noun = "sessions"
    operations: tuple[tuple[str, int], ...] = (
        ("read", 50),
        ("update", 20),
        ("touch", 10),
        ("create", 8),
        ("delete", 6),
        ("regenerate", 6),
    )
    creating = "create"
    reads: tuple[str, ...] = ("read", "touch")

    def __init__(self) -> None:
        self.ledger: dict[str, LedgerEntry] = {}
        self.fleet: list[AsyncMigratingBackend] = []
        self._stores: list[AsyncSessionStore] = []
        self._codec = Codec()

    def store_configs(self, redis_url: str, dynamodb_endpoint: str) -> tuple[StoreConfig, ...]:
        """Return the Redis and DynamoDB stores of the drill."""
        return (
            StoreConfig("redis", redis_url=redis_url, redis_prefix="drill"),
            StoreConfig("dynamodb", dynamodb_endpoint=dynamodb_endpoint, dynamodb_table="drill"),
        )

    async def open(
        self, old: StoreConfig, new: StoreConfig, control: AsyncControlPlane, stack: AsyncExitStack
    ) -> AsyncMigration:
        """Open both stores; return the migration between them."""
        from sessionflow._open_backend import open_backend  # noqa: PLC0415 - client libraries

        return AsyncMigration(
            await open_backend(old, stack), await open_backend(new, stack), control,
            heartbeat_max_age=5,
        )  # fmt: skip

    async def seed(self, migration: AsyncMigration, total: int, rng: random.Random) -> None:
        """Create `total` sessions in the old store, in the ledger too."""
        store = AsyncSessionStore(migration.old, policy=POLICY)
        for start in range(0, total, SEED_BATCH):
            batch = [
                {"n": 0, "cart": [rng.randrange(100)]}
                for _ in range(min(SEED_BATCH, total - start))
            ]
            created = await asyncio.gather(
                *(store.create(a, user_id=f"user{rng.randrange(500)}") for a in batch)
            )
            for session, attributes in zip(created, batch, strict=True):
                self.ledger[session.id] = LedgerEntry(attributes)

    def start_fleet(self, fleet: list[AsyncMigratingBackend]) -> None:
        """Serve users through `fleet`, one migrating backend per process."""
        self.fleet = fleet
        self._stores = [AsyncSessionStore(backend, policy=POLICY) for backend in fleet]

    def choose(self, operation: str, owned: list[str], rng: random.Random) -> str | None:  # noqa: ARG002
        """Return one of the user's live sessions to act on (None: none, create instead)."""
        for session_id in rng.sample(owned, min(3, len(owned))):
            entry = self.ledger[session_id]
            if not entry.deleted and not entry.uncertain:
                return session_id
        return None

    async def operate(
        self, operation: str, process: int, session_id: str, owned: list[str], rng: random.Random
    ) -> None:
        """Do one user operation through `process`; keep the ledger."""
        store = self._stores[process]
        if operation == "create":
            attributes = {"n": 0, "cart": [rng.randrange(100)]}
            created = await store.create(attributes, user_id=f"user{rng.randrange(500)}")
            self.ledger[created.id] = LedgerEntry(dict(attributes))
            owned.append(created.id)
            return
        entry = self.ledger[session_id]
        if operation == "delete":
            await store.delete(session_id)
            entry.deleted = True
            return
        session = await store.get(session_id, touch=operation == "touch")
        if session is None:
            raise AcknowledgedItemMissing("an acknowledged session read as missing")
        if operation == "update":
            session["n"] = entry.attributes["n"] + 1
            await store.save(session)
            entry.attributes["n"] += 1
        elif operation == "regenerate":
            moved = await store.regenerate(session)
            entry.deleted = True
            self.ledger[moved.id] = LedgerEntry(dict(entry.attributes))
            owned.append(moved.id)

    def record_key(self, session_id: str) -> str:
        """Return the stores' key of a ledger entry."""
        return storage_key(session_id)

    def contents(self, record: SessionRecord) -> dict[str, Any]:
        """Return what the ledger compares of a stored record."""
        return self._codec.decode_fields(record.attributes)
