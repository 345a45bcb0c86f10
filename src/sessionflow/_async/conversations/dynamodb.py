"""Conversation lists in DynamoDB: the messaging write-up's table design.

Partition key ``owner_id``, sort key ``opponent_id``, the last message time in ``ts``,
metadata as JSON in ``meta``, the version in ``v``, and a local secondary index
``by_time`` (``owner_id``, ``ts``) that lists an owner's conversations newest first
(`Query` with ``ScanIndexForward=False`` and ``Limit``, paginated by exclusive start key).
A tombstone keeps its item with ``deleted`` set; queries filter it out.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from botocore.exceptions import ClientError

from sessionflow._async.dynamodb_tables import create_table_if_missing
from sessionflow._async.dynamodb_transact import transact_guarded, transaction_batches
from sessionflow._concurrency import async_map_limited
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
)
from sessionflow._dynamodb_client import dynamodb_errors, error_code
from sessionflow._dynamodb_layout import check_table_name
from sessionflow._errors import BackendError, CorruptRecord, SessionflowError
from sessionflow._scan import GuardedResult, GuardedWrite, check_scan

OWNER, OPPONENT, TIME_INDEX = "owner_id", "opponent_id", "by_time"
DELETE_CONCURRENCY = 8
DELETE_PAGE = 100
BATCH_GET_LIMIT = 100
_UNPROCESSED_ROUNDS = 8


def conversation_table(table_name: str) -> dict[str, Any]:
    """Return the CreateTable arguments of a conversations table."""
    return {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": OWNER, "AttributeType": "S"},
            {"AttributeName": OPPONENT, "AttributeType": "S"},
            {"AttributeName": "ts", "AttributeType": "N"},
        ],
        "KeySchema": [
            {"AttributeName": OWNER, "KeyType": "HASH"},
            {"AttributeName": OPPONENT, "KeyType": "RANGE"},
        ],
        "LocalSecondaryIndexes": [
            {
                "IndexName": TIME_INDEX,
                "KeySchema": [
                    {"AttributeName": OWNER, "KeyType": "HASH"},
                    {"AttributeName": "ts", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


class AsyncDynamoDBConversations:
    """See `AsyncConversationBackend`; on a DynamoDB table (boto3 / aioboto3 client)."""

    def __init__(self, client: Any, *, table_name: str = "conversations") -> None:  # noqa: ANN401
        check_table_name(table_name)
        self._client = client
        self._table = table_name

    async def ensure_table(self, *, wait_seconds: float = 60) -> None:
        """Create the table and its time index if missing; wait until it is active."""
        await create_table_if_missing(
            self._client, conversation_table(self._table), wait_seconds=wait_seconds
        )

    def _key(self, owner: str, opponent: str) -> dict[str, Any]:
        return {
            OWNER: {"S": check_id("owner", owner)},
            OPPONENT: {"S": check_id("opponent", opponent)},
        }

    async def record(
        self, owner: str, opponent: str, metadata: Mapping[str, Any], timestamp: float
    ) -> Conversation:
        """See `AsyncConversationBackend.record`: one `UpdateItem` (two if time went back)."""
        key = self._key(owner, opponent)
        values = {
            ":m": {"S": encode_metadata(metadata).decode()},
            ":ts": {"N": repr(check_timestamp(timestamp))},
            ":one": {"N": "1"},
            ":zero": {"N": "0"},
        }
        update = "SET meta = :m, v = if_not_exists(v, :zero) + :one"
        with dynamodb_errors():
            try:
                answer = await self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression=update + ", ts = :ts REMOVE deleted",
                    ConditionExpression="attribute_not_exists(ts) OR ts <= :ts",
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                del values[":ts"]  # an older message: the entry keeps its later time
                answer = await self._client.update_item(
                    TableName=self._table,
                    Key=key,
                    UpdateExpression=update + " REMOVE deleted",
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_NEW",
                )
        return _entry(answer["Attributes"])

    async def get(
        self, owner: str, opponent: str, *, include_deleted: bool = False
    ) -> Conversation | None:
        """See `AsyncConversationBackend.get` (a consistent read)."""
        with dynamodb_errors():
            answer = await self._client.get_item(
                TableName=self._table, Key=self._key(owner, opponent), ConsistentRead=True
            )
        item = answer.get("Item")
        if item is None:
            return None
        entry = _entry(item)
        return None if entry.deleted and not include_deleted else entry

    async def list(
        self, owner: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> ConversationPage:
        """See `AsyncConversationBackend.list`: the time index, newest first, tombstones out."""
        check_limit(limit)
        query: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": TIME_INDEX,
            "KeyConditionExpression": f"{OWNER} = :o",
            "FilterExpression": "attribute_not_exists(deleted)",
            "ExpressionAttributeValues": {":o": {"S": check_id("owner", owner)}},
            "ScanIndexForward": False,
            "ConsistentRead": True,
        }
        start = None
        if cursor is not None:
            position = decode_cursor(cursor, "t", "o")
            start = {
                OWNER: {"S": owner},
                OPPONENT: {"S": str(position["o"])},
                "ts": {"N": str(position["t"])},
            }
        items: builtins.list[Conversation] = []
        with dynamodb_errors():
            while len(items) <= limit:
                page = await self._client.query(
                    **query,
                    Limit=limit + 1 - len(items),
                    **({"ExclusiveStartKey": start} if start else {}),
                )
                items += [_entry(item) for item in page.get("Items", [])]
                start = page.get("LastEvaluatedKey")
                if start is None:
                    break
        more = len(items) > limit
        items = items[:limit]
        next_cursor = None
        if more:
            last = items[-1]
            next_cursor = encode_cursor({"t": repr(last.timestamp), "o": last.opponent})
        return ConversationPage(items, next_cursor)

    async def delete(self, owner: str, opponent: str) -> bool:
        """See `AsyncConversationBackend.delete`: a conditional update into a tombstone."""
        with dynamodb_errors():
            try:
                await self._client.update_item(
                    TableName=self._table,
                    Key=self._key(owner, opponent),
                    UpdateExpression="SET v = v + :one, deleted = :yes REMOVE meta",
                    ConditionExpression="attribute_exists(v) AND attribute_not_exists(deleted)",
                    ExpressionAttributeValues={":one": {"N": "1"}, ":yes": {"BOOL": True}},
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    return False
                raise
        return True

    async def delete_all(self, owner: str) -> int:
        """See `AsyncConversationBackend.delete_all`: a page of keys at a time."""
        query: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": f"{OWNER} = :o",
            "FilterExpression": "attribute_not_exists(deleted)",
            "ExpressionAttributeValues": {":o": {"S": check_id("owner", owner)}},
            "ProjectionExpression": OPPONENT,
            "Limit": DELETE_PAGE,
        }
        deleted = 0
        start = None
        while True:
            with dynamodb_errors():
                page = await self._client.query(
                    **query, **({"ExclusiveStartKey": start} if start else {})
                )
            opponents = [item[OPPONENT]["S"] for item in page.get("Items", [])]
            done = await async_map_limited(
                lambda opponent: self.delete(owner, opponent), opponents, DELETE_CONCURRENCY
            )
            deleted += sum(done)
            start = page.get("LastEvaluatedKey")
            if start is None:
                return deleted

    async def get_entries(
        self, pairs: Sequence[tuple[str, str]]
    ) -> builtins.list[Conversation | CorruptRecord | None]:
        """See `AsyncMigratableConversations.get_entries`: BatchGetItem, 100 keys a request."""
        found: dict[tuple[str, str], Conversation | CorruptRecord] = {}
        unique = builtins.list(dict.fromkeys(pairs))  # a batch may not repeat a key
        for at in range(0, len(unique), BATCH_GET_LIMIT):
            keys = [
                self._key(owner, opponent) for owner, opponent in unique[at : at + BATCH_GET_LIMIT]
            ]
            for item in await self._batch_get(keys):
                pair = (item[OWNER]["S"], item[OPPONENT]["S"])
                found[pair] = _entry_or_error(item)
        return [found.get(pair) for pair in pairs]

    async def _batch_get(self, keys: builtins.list[dict[str, Any]]) -> builtins.list[Any]:
        items: builtins.list[Any] = []
        request = {self._table: {"Keys": keys, "ConsistentRead": True}}
        for _ in range(_UNPROCESSED_ROUNDS):
            with dynamodb_errors():
                answer = await self._client.batch_get_item(RequestItems=request)
            items += answer.get("Responses", {}).get(self._table, [])
            request = answer.get("UnprocessedKeys") or {}
            if not request:
                return items
        raise BackendError("DynamoDB left keys unprocessed after repeated BatchGetItem calls")

    async def put_entry(self, entry: Conversation, *, replaces: int | None = None) -> GuardedWrite:
        """See `AsyncMigratableConversations.put_entry`: one conditional PutItem."""
        with dynamodb_errors():
            try:
                await self._client.put_item(**self._put_request(entry, replaces))
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                found: Mapping[str, Any] | None = exc.response.get("Item")  # type: ignore[assignment]
                return _kept(found, entry, guarded=replaces is None)
        return GuardedWrite.WRITTEN

    async def put_entries(self, entries: Sequence[Conversation]) -> builtins.list[GuardedResult]:
        """See `AsyncMigratableConversations.put_entries`: transactions of up to 100 puts.

        See `transact_guarded`: one request a hundred entries, where single conditional
        puts pay the client's cost per request for each (docs/benchmarks.md has both). On
        AWS a transactional write costs two write units per item instead of one.
        """
        results: builtins.list[GuardedResult | None] = [None] * len(entries)
        puts = []
        for index, entry in enumerate(entries):
            try:
                request = self._put_request(entry, None)
            except SessionflowError as exc:
                results[index] = exc
                continue
            puts.append((index, f"{entry.owner}\x1f{entry.opponent}", request))

        def kept(index: int, found: Mapping[str, Any] | None) -> GuardedWrite:
            return _kept(found, entries[index], guarded=True)

        for batch in transaction_batches(puts):
            await transact_guarded(self._client, batch, results, kept=kept)
        return [result if result is not None else GuardedWrite.WRITTEN for result in results]

    def _put_request(self, entry: Conversation, replaces: int | None) -> dict[str, Any]:
        """Return the conditional Put of `entry` (see `entry_verdict`); refuse bad entries."""
        item = {
            **self._key(entry.owner, entry.opponent),
            "ts": {"N": repr(check_timestamp(entry.timestamp))},
            "v": {"N": str(entry.version)},
        }
        if entry.deleted:
            item["deleted"] = {"BOOL": True}
        else:
            item["meta"] = {"S": encode_metadata(entry.metadata).decode()}
        request: dict[str, Any] = {
            "TableName": self._table,
            "Item": item,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if replaces == 0:
            request["ConditionExpression"] = f"attribute_not_exists({OWNER})"
        else:
            request["ConditionExpression"] = (
                f"attribute_not_exists({OWNER}) OR v < :v" if replaces is None else "v = :v"
            )
            version = entry.version if replaces is None else replaces
            request["ExpressionAttributeValues"] = {":v": {"N": str(version)}}
        return request

    async def scan_entries(
        self, cursor: str | None = None, *, count: int = 500, worker: int = 0, workers: int = 1
    ) -> tuple[builtins.list[Conversation | CorruptRecord], str | None]:
        """See `AsyncMigratableConversations.scan_entries`: a consistent Scan, in segments."""
        check_scan(count, worker, workers)
        request: dict[str, Any] = {"TableName": self._table, "Limit": count, "ConsistentRead": True}
        if workers > 1:
            request["Segment"], request["TotalSegments"] = worker, workers
        if cursor is not None:
            request["ExclusiveStartKey"] = orjson.loads(cursor)
        with dynamodb_errors():
            answer = await self._client.scan(**request)
        entries = [_entry_or_error(item) for item in answer.get("Items", [])]
        last = answer.get("LastEvaluatedKey")
        return entries, orjson.dumps(last).decode() if last else None


def _kept(found: Mapping[str, Any] | None, entry: Conversation, *, guarded: bool) -> GuardedWrite:
    """Name what a failed condition kept; `CorruptRecord` if the item found is unreadable."""
    kept = _entry(found) if found else None
    if guarded and kept is not None and kept.deleted and not entry.deleted:
        return GuardedWrite.TOMBSTONE_KEPT
    return GuardedWrite.NEWER_KEPT


def _entry_or_error(item: Mapping[str, Any]) -> Conversation | CorruptRecord:
    try:
        return _entry(item)
    except CorruptRecord as exc:
        return exc


def _entry(item: Mapping[str, Any]) -> Conversation:
    try:
        deleted = bool(item.get("deleted", {}).get("BOOL", False))
        return Conversation(
            item[OWNER]["S"],
            item[OPPONENT]["S"],
            float(item["ts"]["N"]),
            int(item["v"]["N"]),
            {} if deleted else orjson.loads(item["meta"]["S"]),
            deleted=deleted,
        )
    except (KeyError, ValueError, TypeError, orjson.JSONDecodeError) as exc:
        where = f"{item.get(OWNER, {}).get('S', '?')}/{item.get(OPPONENT, {}).get('S', '?')}"
        raise CorruptRecord(where, f"not a conversation entry: {exc!r}") from exc
