"""The migration engine on conversation lists, through the code that moves sessions.

Real servers: Redis to DynamoDB Local (the write-up's move), DynamoDB back to Redis, and
Redis standalone to Redis Cluster. The version guard and tombstones apply: a backfill
never overwrites a newer entry and never resurrects a deleted one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from sessionflow._async.control import AsyncMemoryControlPlane
from sessionflow._async.conversations.dynamodb import AsyncDynamoDBConversations
from sessionflow._async.conversations.migrating import AsyncMigratingConversations
from sessionflow._async.conversations.redis import AsyncRedisConversations
from sessionflow._async.migration import AsyncMigration
from sessionflow._conversation import Conversation
from sessionflow._errors import BackendError, MigrationRefused
from sessionflow._stages import Stage
from tests.clients import async_dynamodb_client_at

TABLE = "conversations-migration-tests"
PAIRS = ["redis>dynamodb", "dynamodb>redis", "redis>redis-cluster"]


class Stores:
    """Conversation stores on the test servers, each under fresh keys or a fresh table."""

    def __init__(self, stack: AsyncExitStack, servers: Any) -> None:
        self.stack = stack
        self.servers = servers
        self.redis: Any = None

    async def open(self, kind: str) -> Any:
        prefix = f"m{uuid.uuid4().hex[:8]}"
        if kind == "redis":
            self.redis = await self.stack.enter_async_context(
                AsyncRedis(port=self.servers.redis.port)
            )
            return AsyncRedisConversations(self.redis, prefix=prefix)
        if kind == "redis-cluster":
            cluster = await self.stack.enter_async_context(
                AsyncRedisCluster(host="127.0.0.1", port=self.servers.cluster_port)
            )
            return AsyncRedisConversations(cluster, prefix=prefix)
        client = await self.stack.enter_async_context(
            async_dynamodb_client_at(self.servers.dynamodb.endpoint_url)
        )
        store = AsyncDynamoDBConversations(client, table_name=f"{TABLE}-{prefix}")
        await store.ensure_table()
        return store


class Move:
    """One migration of conversation lists: two stores, a control plane, the engine."""

    def __init__(self, old: Any, new: Any, stores: Stores) -> None:
        self.old, self.new, self.stores = old, new, stores
        self.control = AsyncMemoryControlPlane()
        self.migration = AsyncMigration.for_conversations(old, new, self.control)

    async def front(self, *, old: Any = None, new: Any = None) -> AsyncMigratingConversations:
        return await self.stores.stack.enter_async_context(
            AsyncMigratingConversations(
                old or self.old, new or self.new, self.control, stage_ttl=0, compare_sample=1.0
            )
        )

    async def set_stage(self, stage: Stage) -> None:
        record = await self.control.read_stage()
        await self.control.write_stage(stage, expected_revision=record.revision, now=0.0)


async def _move(pair: str, servers: Any, stack: AsyncExitStack) -> Move:
    stores = Stores(stack, servers)
    old_kind, _, new_kind = pair.partition(">")
    return Move(await stores.open(old_kind), await stores.open(new_kind), stores)


@pytest.fixture(params=PAIRS)
async def move(request: pytest.FixtureRequest, servers: Any) -> AsyncIterator[Move]:
    async with AsyncExitStack() as stack:
        yield await _move(request.param, servers, stack)


@pytest.fixture
async def redis_to_dynamodb(servers: Any) -> AsyncIterator[Move]:
    async with AsyncExitStack() as stack:
        yield await _move("redis>dynamodb", servers, stack)


def _owner() -> str:
    return f"owner-{uuid.uuid4().hex[:10]}"


async def _seed(store: Any, owners: list[str], per_owner: int) -> dict[tuple[str, str], Any]:
    """Write entries natively, delete some and bring one back; return the expected state."""
    for owner in owners:
        for i in range(per_owner):
            await store.record(owner, f"op-{i:03d}", {"last": f"m{i}", "n": i}, 1000.0 + i)
        await store.delete(owner, "op-001")
        await store.delete(owner, "op-002")
        await store.record(owner, "op-002", {"last": "back"}, 5000.0)  # revived
    return await _state(store, owners, per_owner)


async def _state(store: Any, owners: list[str], per_owner: int) -> dict[tuple[str, str], Any]:
    pairs = [(owner, f"op-{i:03d}") for owner in owners for i in range(per_owner)]
    return dict(zip(pairs, await store.get_entries(pairs), strict=True))


async def test_backfill_copies_every_entry_and_verify_agrees(move: Move) -> None:
    owners = [_owner() for _ in range(3)]
    expected = await _seed(move.old, owners, 30)
    await move.set_stage(Stage.DUALWRITE)
    progress = await move.migration.backfill(page_size=20, batch_size=10)
    assert progress.done
    assert progress.copied == 90
    assert progress.tombstones == 3
    assert progress.quarantine.total == 0
    assert await _state(move.new, owners, 30) == expected
    report = await move.migration.verify(mode="full", recheck_delay=0)
    assert (report.checked, report.inconsistent) == (90, 0)
    sample = await move.migration.verify(mode="sample", sample=0.5, recheck_delay=0)
    assert sample.inconsistent == 0


async def test_backfill_never_overwrites_newer_and_never_resurrects(
    redis_to_dynamodb: Move,
) -> None:
    move, owner = redis_to_dynamodb, _owner()
    for name in ("bob", "carol", "dave"):
        await move.old.record(owner, name, {"from": "old"}, 10.0)
    await move.old.delete(owner, "dave")
    await move.old.record(owner, "dave", {"from": "old, back"}, 30.0)  # version 3
    # what dual-write put in the new store meanwhile:
    await move.new.put_entry(Conversation(owner, "bob", 20.0, 4, {"from": "new"}))
    await move.new.put_entry(Conversation(owner, "carol", 10.0, 2, {}, deleted=True))
    await move.new.put_entry(Conversation(owner, "dave", 10.0, 2, {}, deleted=True))
    await move.set_stage(Stage.DUALWRITE)
    progress = await move.migration.backfill()
    assert (progress.copied, progress.newer_kept) == (1, 2)
    bob, carol, dave = await move.new.get_entries(
        [(owner, "bob"), (owner, "carol"), (owner, "dave")]
    )
    assert (bob.version, bob.metadata) == (4, {"from": "new"})
    assert carol.deleted  # the deletion stays: the older live copy did not land
    assert (dave.version, dave.deleted) == (3, False)  # revived after its deletion


async def test_a_killed_backfill_resumes_where_it_stopped(redis_to_dynamodb: Move) -> None:
    move, owners = redis_to_dynamodb, [_owner() for _ in range(10)]
    for owner in owners:  # small owners: Redis returns a small hash whole, so 10 of them
        for i in range(25):
            await move.old.record(owner, f"op-{i:03d}", {"i": i}, float(i))
    await move.set_stage(Stage.DUALWRITE)
    pages: list[int] = []

    def stop_after_two_pages(progress: Any) -> None:
        pages.append(progress.scanned)
        if len(pages) == 2:
            raise KeyboardInterrupt  # the operator's ctrl-c, after the checkpoint

    with pytest.raises(KeyboardInterrupt):
        await move.migration.backfill(page_size=50, progress=stop_after_two_pages)
    resumed = await move.migration.backfill(page_size=50)
    assert resumed.done
    assert resumed.scanned == 250  # counted once: the resumed run started at page three
    for owner in owners:
        assert len((await move.new.list(owner, limit=1000)).items) == 25


async def test_bad_entries_are_quarantined_with_reasons(redis_to_dynamodb: Move) -> None:
    move, owner = redis_to_dynamodb, _owner()
    await move.old.record(owner, "fine", {"ok": True}, 1.0)
    data = move.old.keys(owner)[1]
    redis = move.stores.redis
    await redis.hset(data, "garbled", b"not an entry")
    await redis.hset(data, "huge", b"1:2.0:0:" + b'{"text":"' + b"x" * 40_000 + b'"}')
    await redis.set(move.old.keys(f"{owner}-string")[1], b"a string where a hash belongs")
    await move.set_stage(Stage.DUALWRITE)
    quarantined: list[dict[str, str]] = []
    progress = await move.migration.backfill(quarantined=quarantined.append)
    assert progress.done
    assert progress.copied == 1
    reasons = " | ".join(entry["reason"] for entry in quarantined)
    assert progress.quarantine.total == 3
    assert "unreadable" in reasons
    assert "oversized" in reasons
    assert "wrong type" in reasons
    assert await move.new.get(owner, "fine") is not None
    assert await move.new.get(owner, "huge", include_deleted=True) is None


class BrokenWrites:
    """A conversation store whose writes fail while `broken` (reads still work)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def put_entry(self, entry: Conversation, *, replaces: int | None = None) -> Any:
        if self.broken:
            raise BackendError("injected failure")
        return await self.inner.put_entry(entry, replaces=replaces)


async def test_a_failing_secondary_never_fails_a_request_and_repair_catches_up(
    redis_to_dynamodb: Move,
) -> None:
    move, owner = redis_to_dynamodb, _owner()
    broken = BrokenWrites(move.new)
    await move.set_stage(Stage.DUALWRITE)
    front = await move.front(new=broken)
    broken.broken = True
    for i in range(12):
        await front.record(owner, f"op-{i}", {"i": i}, float(i))
    assert await front.delete(owner, "op-3") is True
    await front.drain()
    depth = await move.control.repair_depth()
    assert depth.count == 12
    assert await move.new.get(owner, "op-0") is None
    broken.broken = False
    repaired = await move.migration.repair()
    assert (repaired.failed, repaired.remaining) == (0, 0)
    report = await move.migration.verify(recheck_delay=0)
    assert report.inconsistent == 0
    assert (await move.new.get(owner, "op-3", include_deleted=True)).deleted


async def test_every_stage_with_a_rollback_from_live_keeps_every_write(move: Move) -> None:
    owner = _owner()
    front = await move.front()
    ledger: dict[str, dict[str, Any] | None] = {}

    async def traffic(tag: str) -> None:
        for i in range(6):
            opponent = f"{tag}-{i}"
            await front.record(owner, opponent, {"tag": tag, "i": i}, 100.0 + i)
            ledger[opponent] = {"tag": tag, "i": i}
        await front.delete(owner, f"{tag}-0")
        ledger[f"{tag}-0"] = None
        if len(ledger) > 7:  # an entry of an earlier stage changes, one comes back
            await front.record(owner, "off-0", {"back": tag}, 900.0)
            ledger["off-0"] = {"back": tag}

    async def advance_to(stage: Stage) -> None:
        await front.get(owner, "heartbeat")  # the process reports the stage it runs
        assert (await move.migration.advance()).stage is stage

    await traffic("off")
    await advance_to(Stage.DUALWRITE)
    await traffic("dual-before-backfill")
    assert (await move.migration.backfill(page_size=7)).done
    await traffic("dualwrite")
    await advance_to(Stage.SHADOW)
    await traffic("shadow")
    await front.drain()
    await front.get(owner, "heartbeat")
    with pytest.raises(MigrationRefused, match="verification"):
        await move.migration.advance()
    assert (await move.migration.verify(recheck_delay=0)).inconsistent == 0
    for stage in (Stage.CUTOVER, Stage.LIVE):
        await advance_to(stage)
        await traffic(stage.value)
        await front.drain()
    await front.get(owner, "heartbeat")
    assert (await move.migration.rollback()).stage is Stage.CUTOVER
    await front.get(owner, "heartbeat")
    # cutover -> shadow hands authority back after the reverse repair pass
    assert (await move.migration.rollback()).stage is Stage.SHADOW
    await traffic("back-in-shadow")
    steps = await move.migration.validate()
    assert [step.name for step in steps] == ["create", "read", "update", "delete"]
    assert all(step.ok for step in steps), steps
    await front.drain()
    assert (await move.migration.verify(recheck_delay=0)).inconsistent == 0
    for stage in (Stage.CUTOVER, Stage.LIVE, Stage.RAMPDOWN, Stage.COMPLETE):
        await advance_to(stage)
        await traffic(stage.value)
        await front.drain()
    for opponent, metadata in ledger.items():
        entry = await front.get(owner, opponent)
        assert (entry.metadata if entry else None) == metadata, opponent
    live = {e.opponent for e in (await front.list(owner, limit=1000)).items}
    assert live == {opponent for opponent, metadata in ledger.items() if metadata is not None}
