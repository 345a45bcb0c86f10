"""The drill's ledger: what the traffic was told, and the check of a store against it.

A workload (sessions, conversation entries) keeps one `LedgerEntry` per item it touched.
At the end every item is read from a store through the engine's record view and counted
as lost (acknowledged, not there), resurrected (deleted, back) or stale (there, with
contents older than the last acknowledged write).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Protocol

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.control import AsyncControlPlane
from sessionflow._async.migration import AsyncMigration
from sessionflow._errors import CorruptRecord, SessionflowError
from sessionflow._migration_config import StoreConfig
from sessionflow._record import SessionRecord

CHECK_BATCH = 500
EXAMPLES_KEPT = 10


@dataclass
class LedgerEntry:
    """What the traffic was told about one item: its contents, or that it is gone."""

    attributes: dict[str, Any]
    deleted: bool = False
    uncertain: bool = False
    """An operation on it failed: the outcome is unknown, so it is not checked."""


class AcknowledgedItemMissing(SessionflowError):  # noqa: N818 - reads as a fact
    """The traffic read nothing where its ledger says a live item is."""


class DrillWorkload(Protocol):
    """One data type's part of the drill: its stores, its seed, its users' operations."""

    data: str
    """The migration config's ``data`` value."""
    noun: str
    operations: tuple[tuple[str, int], ...]
    """Operation names and their weights in the mix."""
    creating: str
    """The operation that makes a new item (used when no item fits another operation)."""
    reads: tuple[str, ...]
    """Operations that change nothing (a failed one leaves the ledger certain)."""
    ledger: dict[str, LedgerEntry]
    fleet: list[AsyncMigratingBackend]

    def store_configs(self, redis_url: str, dynamodb_endpoint: str) -> tuple[StoreConfig, ...]:
        """Return the old (Redis) and new (DynamoDB) store settings."""
        ...

    async def open(
        self, old: StoreConfig, new: StoreConfig, control: AsyncControlPlane, stack: AsyncExitStack
    ) -> AsyncMigration:
        """Open both stores; return the migration between them."""
        ...

    async def seed(self, migration: AsyncMigration, total: int, rng: random.Random) -> None:
        """Write `total` items in the old store and the ledger."""
        ...

    def start_fleet(self, fleet: list[AsyncMigratingBackend]) -> None:
        """Serve users through `fleet` (one record-level migrating backend per process)."""
        ...

    def choose(self, operation: str, owned: list[str], rng: random.Random) -> str | None:
        """Return the ledger key of the user's that `operation` acts on; None: create instead."""
        ...

    async def operate(
        self, operation: str, process: int, key: str, owned: list[str], rng: random.Random
    ) -> None:
        """Do one operation through `process`; update the ledger when it is acknowledged."""
        ...

    def record_key(self, key: str) -> str:
        """Return the stores' record key of a ledger key."""
        ...

    def contents(self, record: SessionRecord) -> dict[str, Any]:
        """Return what the ledger compares of a stored record."""
        ...


@dataclass
class LedgerCheck:
    """The comparison of one store with the ledger."""

    store: str
    checked: int = 0
    lost: int = 0
    resurrected: int = 0
    stale: int = 0
    uncertain: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True if nothing was lost, resurrected or overwritten with stale data."""
        return self.lost == self.resurrected == self.stale == 0

    def example(self, text: str) -> None:
        """Keep a screenful of examples."""
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(text)


async def check_ledger(
    backend: AsyncBackend,
    name: str,
    ledger: dict[str, LedgerEntry],
    *,
    record_key: Callable[[str], str],
    contents: Callable[[SessionRecord], dict[str, Any]],
    now: float,
) -> LedgerCheck:
    """Compare every item of the ledger with what `backend` holds (500 reads a request)."""
    result = LedgerCheck(name)
    items = [(record_key(key), entry) for key, entry in ledger.items()]
    for start in range(0, len(items), CHECK_BATCH):
        chunk = items[start : start + CHECK_BATCH]
        records = await backend.get_many([key for key, _ in chunk])
        for (key, entry), record in zip(chunk, records, strict=True):
            if entry.uncertain:
                result.uncertain += 1
                continue
            result.checked += 1
            if isinstance(record, CorruptRecord):
                result.lost += 1
                continue
            alive = record is not None and record.is_live(now)
            if entry.deleted:
                if alive:
                    result.resurrected += 1
                    result.example(f"resurrected {key[:12]}")
                continue
            if record is None or not alive:
                result.lost += 1
                result.example(f"lost {key[:12]}")
            elif contents(record) != entry.attributes:
                result.stale += 1
                result.example(f"stale {key[:12]}")
    return result
