"""One contract for conversation lists, on memory, Redis, Redis Cluster and DynamoDB Local."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from sessionflow._async.control import AsyncMemoryControlPlane
from sessionflow._async.conversations.base import AsyncConversationBackend
from sessionflow._async.conversations.dynamodb import AsyncDynamoDBConversations
from sessionflow._async.conversations.memory import AsyncMemoryConversations
from sessionflow._async.conversations.migrating import AsyncMigratingConversations
from sessionflow._async.conversations.redis import AsyncRedisConversations
from sessionflow._conversation import MAX_METADATA_BYTES
from sessionflow._errors import ConfigError, ConversationTooLarge, InvalidConversation
from sessionflow._stages import Stage
from tests.clients import async_dynamodb_client_at

KINDS = ["memory", "redis", "redis-cluster", "dynamodb"]
# The migrating store keeps the same contract at every stage (Redis to DynamoDB).
MIGRATING_KINDS = [f"migrating@{stage.value}" for stage in Stage]
TABLE = "conversations-tests"


@pytest.fixture(params=KINDS + MIGRATING_KINDS)
async def conversations(request: pytest.FixtureRequest, servers) -> AsyncIterator[Any]:
    kind = request.param
    prefix = f"c{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        if kind.startswith("migrating@"):
            client = await stack.enter_async_context(AsyncRedis(port=servers.redis.port))
            ddb = await stack.enter_async_context(
                async_dynamodb_client_at(servers.dynamodb.endpoint_url)
            )
            new = AsyncDynamoDBConversations(ddb, table_name=TABLE)
            await new.ensure_table()
            migrating = await stack.enter_async_context(
                AsyncMigratingConversations(
                    AsyncRedisConversations(client, prefix=prefix),
                    new,
                    AsyncMemoryControlPlane(Stage(kind.partition("@")[2])),
                    compare_sample=1.0,
                )
            )
            yield migrating
        elif kind == "memory":
            yield AsyncMemoryConversations()
        elif kind == "redis":
            client = await stack.enter_async_context(AsyncRedis(port=servers.redis.port))
            yield AsyncRedisConversations(client, prefix=prefix)
        elif kind == "redis-cluster":
            cluster = await stack.enter_async_context(
                AsyncRedisCluster(host="127.0.0.1", port=servers.cluster_port)
            )
            yield AsyncRedisConversations(cluster, prefix=prefix)
        else:
            client = await stack.enter_async_context(
                async_dynamodb_client_at(servers.dynamodb.endpoint_url)
            )
            backend = AsyncDynamoDBConversations(client, table_name=TABLE)
            await backend.ensure_table()
            yield backend


@pytest.fixture
def owner() -> str:
    return f"owner-{uuid.uuid4().hex[:12]}"


async def test_every_backend_keeps_the_contract(conversations: Any) -> None:
    assert isinstance(conversations, AsyncConversationBackend)


async def test_record_then_get(conversations: Any, owner: str) -> None:
    entry = await conversations.record(owner, "bob", {"last": "hi", "unread": 2}, 100.5)
    assert (entry.owner, entry.opponent, entry.timestamp, entry.version) == (
        owner, "bob", 100.5, 1,
    )  # fmt: skip
    assert entry.metadata == {"last": "hi", "unread": 2}
    got = await conversations.get(owner, "bob")
    assert got == entry
    assert await conversations.get(owner, "carol") is None
    assert await conversations.get(f"{owner}-other", "bob") is None


async def test_a_new_message_updates_the_entry_and_raises_its_version(
    conversations: Any, owner: str
) -> None:
    await conversations.record(owner, "bob", {"last": "hi"}, 100.0)
    second = await conversations.record(owner, "bob", {"last": "how are you"}, 200.0)
    assert (second.version, second.timestamp, second.metadata) == (
        2,
        200.0,
        {"last": "how are you"},
    )
    # a message delivered late keeps the entry's later time but carries its metadata
    late = await conversations.record(owner, "bob", {"last": "late"}, 150.0)
    assert (late.version, late.timestamp) == (3, 200.0)
    assert await conversations.get(owner, "bob") == late


async def test_the_list_is_newest_first_and_pages_cover_everything_once(
    conversations: Any, owner: str
) -> None:
    for i in range(23):  # ties too: several opponents share a time
        await conversations.record(owner, f"op-{i:02d}", {"i": i}, 1000.0 + i // 3)
    seen: list[Any] = []
    cursor = None
    pages = 0
    while True:
        page = await conversations.list(owner, limit=5, cursor=cursor)
        pages += 1
        assert len(page.items) <= 5
        seen += page.items
        cursor = page.cursor
        if cursor is None:
            break
    assert pages == 5
    assert sorted(e.opponent for e in seen) == [f"op-{i:02d}" for i in range(23)]
    times = [e.timestamp for e in seen]
    assert times == sorted(times, reverse=True)
    first = await conversations.list(owner, limit=50)
    assert [e.opponent for e in first.items] == [e.opponent for e in seen]
    assert first.cursor is None


async def test_a_message_moves_a_conversation_to_the_top(conversations: Any, owner: str) -> None:
    for i, name in enumerate(["a", "b", "c"]):
        await conversations.record(owner, name, {}, 10.0 + i)
    await conversations.record(owner, "a", {"last": "again"}, 20.0)
    page = await conversations.list(owner, limit=2)
    assert [e.opponent for e in page.items] == ["a", "c"]
    assert page.cursor is not None


async def test_deletes_hide_the_entry_and_leave_a_tombstone(conversations: Any, owner: str) -> None:
    await conversations.record(owner, "bob", {"last": "hi"}, 100.0)
    await conversations.record(owner, "carol", {}, 101.0)
    assert await conversations.delete(owner, "bob") is True
    assert await conversations.delete(owner, "bob") is False
    assert await conversations.delete(owner, "nobody") is False
    assert await conversations.get(owner, "bob") is None
    tombstone = await conversations.get(owner, "bob", include_deleted=True)
    assert (tombstone.deleted, tombstone.version, tombstone.metadata) == (True, 2, {})
    assert [e.opponent for e in (await conversations.list(owner)).items] == ["carol"]
    back = await conversations.record(owner, "bob", {"last": "new"}, 300.0)
    assert (back.version, back.deleted) == (3, False)
    assert [e.opponent for e in (await conversations.list(owner)).items] == ["bob", "carol"]


async def test_delete_all_removes_every_entry_of_one_owner(conversations: Any, owner: str) -> None:
    for i in range(120):
        await conversations.record(owner, f"op-{i}", {}, float(i))
    await conversations.record(f"{owner}-x", "keep", {}, 1.0)
    await conversations.delete(owner, "op-5")
    assert await conversations.delete_all(owner) == 119
    assert (await conversations.list(owner)).items == []
    assert await conversations.delete_all(owner) == 0
    assert await conversations.get(f"{owner}-x", "keep") is not None


@pytest.mark.parametrize("count", [0, -1, 10_001])
async def test_a_scan_page_size_it_cannot_serve_is_refused(
    conversations: Any, owner: str, count: int
) -> None:
    if not hasattr(conversations, "scan_entries"):
        pytest.skip("a migrating store is not scanned itself: its two stores are")
    await conversations.record(owner, "bob", {"last": "hi"}, 100.0)
    with pytest.raises(ConfigError, match="count must be a whole number from 1 to 10,000"):
        await conversations.scan_entries(None, count=count)


@pytest.mark.parametrize(
    ("args", "error", "reason"),
    [
        (("", "bob", {}, 1.0), InvalidConversation, "owner must be a non-empty string"),
        (("a{b}", "bob", {}, 1.0), InvalidConversation, "free of braces"),
        (("alice", "x" * 300, {}, 1.0), InvalidConversation, "opponent is longer"),
        (("alice", "bob", ["not", "a", "dict"], 1.0), InvalidConversation, "JSON object"),
        (("alice", "bob", {"when": object()}, 1.0), InvalidConversation, "not JSON-able"),
        (("alice", "bob", {"score": float("nan")}, 1.0), InvalidConversation, "NaN or an inf"),
        (("alice", "bob", {}, float("nan")), InvalidConversation, "finite"),
        (("alice", "bob", {}, -1.0), InvalidConversation, "negative"),
        (("alice", "bob", {"big": "x" * MAX_METADATA_BYTES}, 1.0), ConversationTooLarge, "limit"),
    ],
)
async def test_bad_input_is_refused_before_anything_is_written(
    conversations: Any, args: tuple[Any, ...], error: type[Exception], reason: str
) -> None:
    with pytest.raises(error, match=reason):
        await conversations.record(*args)
    if args[0] and "{" not in args[0] and len(args[1]) <= 256:
        assert await conversations.get(args[0], args[1], include_deleted=True) is None


async def test_bad_page_requests_are_refused(conversations: Any, owner: str) -> None:
    with pytest.raises(InvalidConversation, match="limit"):
        await conversations.list(owner, limit=0)
    with pytest.raises(InvalidConversation, match="cursor"):
        await conversations.list(owner, cursor="not-a-cursor")


async def test_a_redis_client_that_decodes_responses_is_refused(servers) -> None:
    async with AsyncRedis(port=servers.redis.port, decode_responses=True) as client:
        with pytest.raises(ConfigError, match="decode_responses"):
            AsyncRedisConversations(client)
