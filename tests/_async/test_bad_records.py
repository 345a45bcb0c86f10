"""Bad data in the stores: typed errors, counted reads, and nothing destroyed."""

from __future__ import annotations

import secrets
import uuid

import pytest
from botocore.exceptions import ClientError
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from sessionflow import (
    AsyncDynamoDBBackend,
    AsyncDynamoDBConversations,
    AsyncMemoryBackend,
    AsyncRedisBackend,
    AsyncSessionStore,
    BackendError,
    ConfigError,
    CorruptRecord,
    InvalidAttribute,
    ManualClock,
    SessionTooLarge,
    Stage,
    new_session_id,
    storage_key,
)
from sessionflow._async.control import AsyncMemoryControlPlane
from sessionflow._async.migration import AsyncMigration
from sessionflow._dynamodb_client import dynamodb_errors
from sessionflow._redis_layout import user_index_key
from sessionflow._scan import GuardedWrite
from sessionflow.local_servers import free_port
from tests.clients import async_dynamodb_client_at
from tests.conftest import TABLE, Servers


@pytest.fixture
async def async_redis(servers: Servers):
    client = AsyncRedis(port=servers.redis.port)
    yield client
    await client.aclose()


async def test_wrong_typed_redis_key_reads_as_none_and_survives(
    async_redis, prefix: str, clock: ManualClock
) -> None:
    backend = AsyncRedisBackend(async_redis, prefix=prefix)
    store = AsyncSessionStore(backend, clock=clock)
    session = await store.create({"a": 1})
    redis_key = backend.redis_key(session.key)
    await async_redis.delete(redis_key)
    await async_redis.set(redis_key, b"a plain string where a session hash belongs")

    assert await store.get(session.id) is None
    assert store.stats.unreadable_records == 1
    session["a"] = 2
    with pytest.raises(CorruptRecord, match="not a session hash"):
        await store.save(session)
    with pytest.raises(CorruptRecord, match="left as is"):
        await store.delete(session.id)
    with pytest.raises(CorruptRecord):
        await store.backend.touch(session.key, last_access=1.0, idle_expires_at=2.0)
    assert await async_redis.get(redis_key) == b"a plain string where a session hash belongs"


async def test_redis_hash_without_metadata_is_corrupt_and_kept(
    async_redis, prefix: str, clock: ManualClock
) -> None:
    backend = AsyncRedisBackend(async_redis, prefix=prefix)
    store = AsyncSessionStore(backend, clock=clock)
    session_id = new_session_id()
    redis_key = backend.redis_key(storage_key(session_id))
    await async_redis.hset(redis_key, mapping={"a:cart": b"\x01\x00[]", "_v": b"1"})
    assert await store.get(session_id) is None
    assert store.stats.unreadable_records == 1
    with pytest.raises(CorruptRecord, match="lacks field"):
        await backend.get(storage_key(session_id))
    assert await async_redis.hgetall(redis_key) == {b"a:cart": b"\x01\x00[]", b"_v": b"1"}


async def test_redis_hash_without_version_refuses_saves(
    async_redis, prefix: str, clock: ManualClock
) -> None:
    backend = AsyncRedisBackend(async_redis, prefix=prefix)
    store = AsyncSessionStore(backend, clock=clock)
    session = await store.create({"a": 1})
    await async_redis.hdel(backend.redis_key(session.key), "_v")
    session["a"] = 2
    with pytest.raises(CorruptRecord, match="no version"):
        await store.save(session)


async def test_redis_client_must_return_bytes(servers: Servers) -> None:
    client = AsyncRedis(port=servers.redis.port, decode_responses=True)
    with pytest.raises(ConfigError, match="decode_responses"):
        AsyncRedisBackend(client)
    await client.aclose()
    with pytest.raises(ConfigError, match="prefix"):
        AsyncRedisBackend(AsyncRedis(port=servers.redis.port), prefix="a{b")


async def test_dynamodb_item_missing_attributes_reads_as_none_and_survives(
    async_dynamodb_client, clock: ManualClock, user: str
) -> None:
    backend = AsyncDynamoDBBackend(async_dynamodb_client, table_name=TABLE)
    store = AsyncSessionStore(backend, clock=clock)
    session_id = new_session_id()
    key = {"session_id": {"S": storage_key(session_id)}}
    # Indexed for the user (it has the GSI keys) but lacks the rest of a session.
    broken = {**key, "version": {"N": "1"}, "user_id": {"S": user}, "created_at": {"N": "1"}}
    await async_dynamodb_client.put_item(TableName=TABLE, Item=broken)

    assert await store.get(session_id) is None
    assert store.stats.unreadable_records == 1
    with pytest.raises(CorruptRecord, match="lacks attribute 'last_access'"):
        await backend.get(storage_key(session_id))
    listed = await store.list_user(user)
    assert listed == []
    assert store.stats.unreadable_records == 2
    kept = await async_dynamodb_client.get_item(TableName=TABLE, Key=key, ConsistentRead=True)
    assert kept["Item"] == broken


async def test_dynamodb_item_with_garbage_data_is_corrupt(
    async_dynamodb_client, clock: ManualClock
) -> None:
    backend = AsyncDynamoDBBackend(async_dynamodb_client, table_name=TABLE)
    store = AsyncSessionStore(backend, clock=clock)
    session = await store.create({"a": 1})
    await async_dynamodb_client.update_item(
        TableName=TABLE,
        Key={"session_id": {"S": session.key}},
        UpdateExpression="SET #d = :garbage",
        ExpressionAttributeNames={"#d": "data"},
        ExpressionAttributeValues={":garbage": {"B": b"\x07not an envelope"}},
    )
    assert await store.get(session.id) is None
    assert store.stats.unreadable_records == 1


async def test_dynamodb_records_consumed_capacity_per_operation(
    async_dynamodb_client, clock: ManualClock
) -> None:
    backend = AsyncDynamoDBBackend(async_dynamodb_client, table_name=TABLE)
    store = AsyncSessionStore(backend, clock=clock)
    session = await store.create({"a": 1}, user_id="capacity-user")
    await store.get(session.id)
    session["a"] = 2
    await store.save(session)
    await store.delete(session)
    for operation in ("create", "get", "save", "delete"):
        assert backend.capacity.calls[operation] >= 1
        assert backend.capacity.units[operation] > 0
    assert backend.capacity.total >= sum(backend.capacity.units[op] for op in ("get", "save"))


async def test_unreachable_redis_is_a_backend_error() -> None:
    client = AsyncRedis(
        port=free_port(), socket_connect_timeout=0.5, retry=AsyncRetry(NoBackoff(), 0)
    )
    store = AsyncSessionStore(AsyncRedisBackend(client))
    with pytest.raises(BackendError, match="Redis failed"):
        await store.get(new_session_id())
    with pytest.raises(BackendError):
        await store.create({"a": 1})
    await client.aclose()


async def test_unreachable_dynamodb_is_a_backend_error() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    async with async_dynamodb_client_at(endpoint, max_attempts=1, connect_timeout=0.5) as client:
        store = AsyncSessionStore(AsyncDynamoDBBackend(client, table_name=TABLE))
        with pytest.raises(BackendError, match="DynamoDB request failed"):
            await store.get(new_session_id())


async def test_missing_dynamodb_table_is_a_backend_error(async_dynamodb_client) -> None:
    store = AsyncSessionStore(AsyncDynamoDBBackend(async_dynamodb_client, table_name="no_such"))
    with pytest.raises(BackendError, match="ResourceNotFoundException"):
        await store.get(new_session_id())


async def test_requests_are_checked_by_dynamodb_not_by_botocore(async_dynamodb_client) -> None:
    # dynamodb_client_config turns botocore's client-side check off (sessionflow builds its
    # requests itself); a malformed request still fails clearly, refused by the server
    with (
        pytest.raises(BackendError, match="DynamoDB refused the request") as refused,
        dynamodb_errors(),
    ):
        await async_dynamodb_client.get_item(TableName=TABLE)  # no Key
    assert "Parameter validation failed" not in str(refused.value)


async def test_ensure_table_is_idempotent_and_configures_the_table(async_dynamodb_client) -> None:
    backend = AsyncDynamoDBBackend(async_dynamodb_client, table_name=f"t{uuid.uuid4().hex[:8]}")
    await backend.ensure_table()
    await backend.ensure_table()  # a second call (another process starting) changes nothing
    table = (await async_dynamodb_client.describe_table(TableName=backend.table_name))["Table"]
    assert table["KeySchema"] == [{"AttributeName": "session_id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    (index,) = table["GlobalSecondaryIndexes"]
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["user_id", "created_at"]
    ttl = await async_dynamodb_client.describe_time_to_live(TableName=backend.table_name)
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    assert ttl["TimeToLiveDescription"]["TimeToLiveStatus"] in ("ENABLED", "ENABLING")
    await async_dynamodb_client.delete_table(TableName=backend.table_name)


async def test_wrong_typed_key_in_a_user_listing_is_counted_not_fatal(
    async_redis, prefix: str, clock: ManualClock, user: str
) -> None:
    backend = AsyncRedisBackend(async_redis, prefix=prefix)
    store = AsyncSessionStore(backend, clock=clock)
    good = await store.create(user_id=user)
    bad = await store.create(user_id=user)
    await async_redis.delete(backend.redis_key(bad.key))
    await async_redis.rpush(backend.redis_key(bad.key), b"not a hash")
    assert [s.handle for s in await store.list_user(user)] == [good.key]
    assert store.stats.unreadable_records == 1
    assert await async_redis.lrange(backend.redis_key(bad.key), 0, -1) == [b"not a hash"]


@pytest.mark.parametrize("name", ["", "ab", "a b", "sessions/eu", "x" * 256, "séance"])
async def test_a_dynamodb_table_name_dynamodb_would_refuse_is_a_config_error(
    async_dynamodb_client, name: str
) -> None:
    with pytest.raises(ConfigError, match="3 to 255 letters, digits"):
        AsyncDynamoDBBackend(async_dynamodb_client, table_name=name)
    with pytest.raises(ConfigError, match="3 to 255 letters, digits"):
        AsyncDynamoDBConversations(async_dynamodb_client, table_name=name)


async def test_scan_surfaces_wrong_typed_keys_for_quarantine(
    async_redis, prefix: str, clock: ManualClock
) -> None:
    backend = AsyncRedisBackend(async_redis, prefix=prefix)
    store = AsyncSessionStore(backend, clock=clock)
    good = await store.create({"a": 1})
    bad = await store.create({"a": 2})
    await async_redis.delete(backend.redis_key(bad.key))
    await async_redis.set(backend.redis_key(bad.key), b"garbage")
    page = await backend.scan(None, count=100)
    records, corrupt = [], []
    while True:
        for record in page.records:
            (corrupt if isinstance(record, CorruptRecord) else records).append(record)
        if page.cursor is None:
            break
        page = await backend.scan(page.cursor, count=100)
    assert [r.key for r in records] == [good.key]
    assert [c.key_hint for c in corrupt] == [bad.key[:12]]
    live = await backend.get(good.key)
    assert live is not None
    with pytest.raises(CorruptRecord, match="left as is"):
        await backend.put_guarded(live._replace(key=bad.key))
    assert await async_redis.get(backend.redis_key(bad.key)) == b"garbage"


async def test_dynamodb_scan_surfaces_broken_items(
    async_dynamodb_client, clock: ManualClock
) -> None:
    table = f"t{uuid.uuid4().hex[:8]}"
    backend = AsyncDynamoDBBackend(async_dynamodb_client, table_name=table)
    await backend.ensure_table()
    store = AsyncSessionStore(backend, clock=clock)
    good = await store.create({"a": 1})
    broken_key = storage_key(new_session_id())
    await async_dynamodb_client.put_item(
        TableName=table, Item={"session_id": {"S": broken_key}, "version": {"N": "1"}}
    )
    page = await backend.scan(None, count=100, worker=0, workers=1)
    assert page.cursor is None
    kinds = {
        (r.key_hint if isinstance(r, CorruptRecord) else r.key): isinstance(r, CorruptRecord)
        for r in page.records
    }
    assert kinds == {good.key: False, broken_key[:12]: True}
    await async_dynamodb_client.delete_table(TableName=table)


async def test_guarded_batch_refuses_bad_records_in_place_and_writes_the_rest(
    async_dynamodb_client, clock: ManualClock
) -> None:
    backend = AsyncDynamoDBBackend(async_dynamodb_client, table_name=TABLE)
    store = AsyncSessionStore(backend, clock=clock)
    source = AsyncSessionStore(AsyncMemoryBackend(clock), clock=clock)
    good = await source.create({"a": 1})
    huge = await source.create({"blob": "x"})
    broken = await source.create({"b": 2})
    await async_dynamodb_client.put_item(  # an item in the way that is not a session
        TableName=TABLE,
        Item={"session_id": {"S": broken.key}, "version": {"N": "99"}},
    )
    records = [await source.backend.get(s.key) for s in (good, huge, broken)]
    assert None not in records
    # Over DynamoDB's 400 KB item limit (the store's own codec would refuse to make it).
    records[1] = records[1]._replace(attributes={"blob": secrets.token_bytes(450_000)})

    results = await backend.put_guarded_many(records)

    assert results[0] is GuardedWrite.WRITTEN
    assert isinstance(results[1], SessionTooLarge)
    assert isinstance(results[2], CorruptRecord)
    assert (await store.get(good.id)) is not None
    assert await backend.get(huge.key) is None


async def test_a_backfill_quarantines_a_user_id_too_long_for_dynamodbs_user_index(
    async_redis, async_dynamodb_client, prefix: str, clock: ManualClock
) -> None:
    """Sessions written before user ids were limited may carry one DynamoDB cannot index."""
    old = AsyncRedisBackend(async_redis, prefix=prefix)
    new = AsyncDynamoDBBackend(async_dynamodb_client, table_name=f"t{uuid.uuid4().hex[:8]}")
    await new.ensure_table()  # its own table: the verification below reads all of it
    source = AsyncSessionStore(AsyncMemoryBackend(clock), clock=clock)
    sessions = [await source.create({"n": n}, user_id=f"user-{n}") for n in range(3)]
    records = [await source.backend.get(s.key) for s in sessions]
    assert None not in records
    records[1] = records[1]._replace(user_id="😀" * 600)  # 2,400 bytes in UTF-8
    for record in records:
        assert await old.put_guarded(record) is GuardedWrite.WRITTEN
    with pytest.raises(InvalidAttribute, match="2400 bytes in UTF-8, over the 2048"):
        await new.put_guarded(records[1])
    migration = AsyncMigration(old, new, AsyncMemoryControlPlane(Stage.DUALWRITE), clock=clock)

    entries: list[dict[str, str]] = []
    result = await migration.backfill(quarantined=entries.append)

    assert (result.copied, result.quarantine.total) == (2, 1)
    assert [e["key"] for e in entries] == [records[1].key[:12]]
    assert "2048 bytes DynamoDB takes in an index key" in entries[0]["reason"]
    assert await new.get(records[0].key) is not None
    assert await new.get(records[1].key) is None
    assert await old.get(records[1].key) is not None  # kept where it was

    report = await migration.verify(mode="full", repair=True, recheck_delay=0)
    assert (report.missing, report.remaining) == (1, 1)
    assert report.quarantine.counts == {"refused": 1}

    # A change the dual-write could not copy waits in the repair queue: it must leave it.
    await migration.control.enqueue_repairs([records[1].key], clock.now())
    repaired = await migration.repair()
    assert (repaired.outcomes, repaired.failed, repaired.remaining) == ({"quarantined": 1}, 0, 0)
    assert [e["key"] for e in repaired.quarantine.entries] == [records[1].key[:12]]
    assert "2048 bytes DynamoDB takes" in repaired.quarantine.entries[0]["reason"]


async def test_redis_guarded_batch_gives_a_refused_record_its_error_and_writes_the_rest(
    async_redis, prefix: str, clock: ManualClock
) -> None:
    backend = AsyncRedisBackend(async_redis, prefix=prefix)
    source = AsyncSessionStore(AsyncMemoryBackend(clock), clock=clock)
    good = await source.create({"a": 1}, user_id="ann")
    in_the_way = await source.create({"b": 2})
    bad_index = await source.create({"c": 3}, user_id="bob")
    last = await source.create({"d": 4})
    await async_redis.set(backend.redis_key(in_the_way.key), b"not a session")
    await async_redis.set(user_index_key(prefix, "bob"), b"not an index")
    records = [await source.backend.get(s.key) for s in (good, in_the_way, bad_index, last)]

    results = await backend.put_guarded_many(records)  # one pipeline

    assert results[0] is GuardedWrite.WRITTEN
    assert isinstance(results[1], CorruptRecord)
    assert isinstance(results[2], CorruptRecord)
    assert results[3] is GuardedWrite.WRITTEN
    assert await async_redis.get(backend.redis_key(in_the_way.key)) == b"not a session"
    store = AsyncSessionStore(backend, clock=clock)
    assert [s.handle for s in await store.list_user("ann")] == [good.key]
    assert (await store.get(last.id)) is not None


class _CancellingClient:
    """Stands in for DynamoDB's client: cancels transactions with the given reasons first."""

    def __init__(self, *cancellations: list[dict[str, str]]) -> None:
        self.cancellations = list(cancellations)
        self.sent: list[int] = []

    async def transact_write_items(self, **request: object) -> dict[str, object]:
        items = request["TransactItems"]
        assert isinstance(items, list)
        self.sent.append(len(items))
        if self.cancellations:
            reasons = self.cancellations.pop(0)
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                    "CancellationReasons": reasons,  # type: ignore[typeddict-unknown-key]
                },
                "TransactWriteItems",
            )
        return {}


async def _three_records(clock: ManualClock) -> list:
    source = AsyncSessionStore(AsyncMemoryBackend(clock), clock=clock)
    records = []
    for i in range(3):
        session = await source.create({"i": i})
        records.append(await source.backend.get(session.key))
    return records


async def test_guarded_batch_sends_again_after_a_conflicting_transaction(
    clock: ManualClock,
) -> None:
    client = _CancellingClient(
        [{"Code": "None"}, {"Code": "TransactionConflict"}, {"Code": "None"}],
        [{"Code": "ThrottlingError"}, {"Code": "None"}, {"Code": "None"}],
    )
    backend = AsyncDynamoDBBackend(client, table_name=TABLE)  # type: ignore[arg-type]
    results = await backend.put_guarded_many(await _three_records(clock))
    assert results == [GuardedWrite.WRITTEN] * 3
    assert client.sent == [3, 3, 3]


async def test_guarded_batch_gives_up_on_endless_contention_and_reports_other_refusals(
    clock: ManualClock,
) -> None:
    endless = _CancellingClient(*[[{"Code": "TransactionConflict"}] * 3] * 20)
    backend = AsyncDynamoDBBackend(endless, table_name=TABLE)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="contention"):
        await backend.put_guarded_many(await _three_records(clock))

    refusing = _CancellingClient(
        [{"Code": "ValidationError", "Message": "bad item"}, {"Code": "None"}, {"Code": "None"}]
    )
    backend = AsyncDynamoDBBackend(refusing, table_name=TABLE)  # type: ignore[arg-type]
    results = await backend.put_guarded_many(await _three_records(clock))
    assert isinstance(results[0], BackendError)
    assert "ValidationError: bad item" in str(results[0])
    assert results[1:] == [GuardedWrite.WRITTEN] * 2
    assert refusing.sent == [3, 2]

    reasonless = _CancellingClient([{"Code": "None"}] * 3)
    backend = AsyncDynamoDBBackend(reasonless, table_name=TABLE)  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="without a failed item"):
        await backend.put_guarded_many(await _three_records(clock))
