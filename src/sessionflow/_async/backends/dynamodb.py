"""The DynamoDB backend: one item per session, conditional writes, a GSI per user."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from botocore.exceptions import ClientError

from sessionflow import _dynamodb_layout as layout
from sessionflow._async.dynamodb_tables import create_table_if_missing
from sessionflow._async.dynamodb_transact import transact_guarded, transaction_batches
from sessionflow._codec import DYNAMODB_ITEM_LIMIT
from sessionflow._concurrency import async_sleep
from sessionflow._dynamodb_client import dynamodb_errors, error_code
from sessionflow._errors import (
    BackendError,
    ConfigError,
    CorruptRecord,
    InvalidAttribute,
    SessionExists,
    SessionNotFound,
    SessionTooLarge,
    VersionConflict,
)
from sessionflow._record import SessionRecord
from sessionflow._scan import GuardedResult, GuardedWrite, ScanPage, check_scan

if TYPE_CHECKING:
    from types_aiobotocore_dynamodb.client import DynamoDBClient as AsyncDynamoDBClient

_BATCH_GET_LIMIT = 100
_BATCH_RETRIES = 8


def _record_found(failure: Mapping[str, Any]) -> SessionRecord | None:
    """Return the record a failed condition found (ReturnValuesOnConditionCheckFailure=ALL_OLD).

    `failure` is the error response or a transaction's cancellation reason. None when there
    was no item; raises `CorruptRecord` when the item is not a session.
    """
    item = cast("Mapping[str, Any] | None", failure.get("Item"))
    return layout.item_to_record(item) if item else None


def _kept(found: SessionRecord | None, record: SessionRecord) -> GuardedWrite:
    """Name what a failed guard kept instead of `record`."""
    if found is not None and found.tombstone and not record.tombstone:
        return GuardedWrite.TOMBSTONE_KEPT
    return GuardedWrite.NEWER_KEPT


class AsyncDynamoDBBackend:
    """Stores sessions in a DynamoDB table through a ready boto3 / aioboto3 client.

    Give the client botocore's standard retry mode (see `dynamodb_client_config`):
    throttling and transient errors are retried there; a failed condition never is.

    Args:
        client: a DynamoDB client (``aioboto3`` for the async flavour, ``boto3`` for sync).
        table_name: the sessions table; `ensure_table` creates it.
        consistent_reads: read with strong consistency (the default). Eventually consistent
            reads cost half but may miss a save made a moment ago.
    """

    def __init__(
        self,
        client: AsyncDynamoDBClient,
        *,
        table_name: str = "sessions",
        consistent_reads: bool = True,
    ) -> None:
        layout.check_table_name(table_name)
        self._client = client
        self._table = table_name
        self._consistent = consistent_reads
        self.capacity = layout.CapacityMeter()

    @property
    def table_name(self) -> str:
        """The sessions table."""
        return self._table

    async def approximate_count(self) -> int:
        """Return the table's item count as DynamoDB reports it (refreshed about every 6 h)."""
        with dynamodb_errors():
            response = await self._client.describe_table(TableName=self._table)
        return int(response["Table"].get("ItemCount", 0))

    async def ensure_table(self, *, wait_seconds: float = 60, streams: bool = True) -> None:
        """Create the table (GSI, stream, on-demand billing) if missing and enable its TTL.

        The stream (new and old images) is for consumers of session changes; sessionflow
        itself does not read it. `streams=False` leaves it out (DynamoDB Local slows down
        as stream records pile up, which matters for benchmarks and long local runs).
        """
        await create_table_if_missing(
            self._client,
            layout.table_definition(self._table, streams=streams),
            wait_seconds=wait_seconds,
        )
        with dynamodb_errors():
            ttl = (await self._client.describe_time_to_live(TableName=self._table))[
                "TimeToLiveDescription"
            ]
            if ttl.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
                if ttl.get("AttributeName") != layout.TTL_ATTRIBUTE:
                    raise ConfigError(
                        f"DynamoDB table {self._table!r} expires items by "
                        f"{ttl.get('AttributeName')!r}; sessionflow's records carry their "
                        f"expiry in {layout.TTL_ATTRIBUTE!r}, so they would never be removed"
                    )
            else:
                await self._client.update_time_to_live(
                    TableName=self._table,
                    TimeToLiveSpecification={
                        "Enabled": True,
                        "AttributeName": layout.TTL_ATTRIBUTE,
                    },
                )

    def check_storable(self, record: SessionRecord) -> None:
        """Raise `SessionTooLarge` or `InvalidAttribute` if this table could never hold `record`."""
        self._item(record)

    def _item(self, record: SessionRecord) -> layout.Item:
        item = layout.record_to_item(record)
        size = layout.item_size(item)
        if size > DYNAMODB_ITEM_LIMIT:
            raise SessionTooLarge(size, DYNAMODB_ITEM_LIMIT)
        return item

    async def create(self, record: SessionRecord) -> None:
        """See `AsyncBackend.create`."""
        item = self._item(record)
        with dynamodb_errors():
            try:
                response = await self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(session_id)",
                    ReturnConsumedCapacity="TOTAL",
                )
            except ClientError as exc:
                if error_code(exc) == "ConditionalCheckFailedException":
                    raise SessionExists("a record with this key exists") from exc
                raise
        self.capacity.record("create", response)

    async def get(self, key: str) -> SessionRecord | None:
        """See `AsyncBackend.get`."""
        with dynamodb_errors():
            response = await self._client.get_item(
                TableName=self._table,
                Key=layout.key_of(key),
                ConsistentRead=self._consistent,
                ReturnConsumedCapacity="TOTAL",
            )
        self.capacity.record("get", response)
        item = response.get("Item")
        return None if item is None else layout.item_to_record(item)

    async def get_many(self, keys: Sequence[str]) -> list[SessionRecord | CorruptRecord | None]:
        """See `AsyncBackend.get_many`: BatchGetItem in chunks of 100, unprocessed keys retried."""
        found: dict[str, SessionRecord | CorruptRecord] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _BATCH_GET_LIMIT):
            pending: Any = {
                self._table: {
                    "Keys": [layout.key_of(k) for k in unique[start : start + _BATCH_GET_LIMIT]],
                    "ConsistentRead": self._consistent,
                }
            }
            for attempt in range(_BATCH_RETRIES + 1):
                with dynamodb_errors():
                    response = await self._client.batch_get_item(
                        RequestItems=pending, ReturnConsumedCapacity="TOTAL"
                    )
                self.capacity.record("get_many", response)
                for item in response.get("Responses", {}).get(self._table, []):
                    key = str(item[layout.PARTITION_KEY]["S"])
                    try:
                        found[key] = layout.item_to_record(item)
                    except CorruptRecord as exc:
                        found[key] = exc
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                if attempt == _BATCH_RETRIES:
                    raise BackendError("DynamoDB left keys unprocessed after retries")
                await async_sleep(min(1.0, 0.05 * 2**attempt))
        return [found.get(key) for key in keys]

    async def save(
        self,
        record: SessionRecord,
        *,
        expected_version: int,
        changed: Collection[str],  # noqa: ARG002 - the item is written whole
        removed: Collection[str],  # noqa: ARG002
    ) -> None:
        """See `AsyncBackend.save`: a put conditional on the version read and no tombstone."""
        item = self._item(record)
        with dynamodb_errors():
            try:
                response = await self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression=layout.SAVE_CONDITION,
                    ExpressionAttributeNames={"#v": "version"},
                    ExpressionAttributeValues={":expected": {"N": str(expected_version)}},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    ReturnConsumedCapacity="TOTAL",
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                self._raise_failed_condition(exc)
        self.capacity.record("save", response)

    @staticmethod
    def _raise_failed_condition(exc: ClientError) -> None:
        current = _record_found(exc.response)
        if current is None or current.tombstone:
            raise SessionNotFound("session not found or deleted") from exc
        raise VersionConflict(
            "session changed since it was read", current_version=current.version
        ) from exc

    async def touch(self, key: str, *, last_access: float, idle_expires_at: float) -> bool:
        """See `AsyncBackend.touch`. The store keeps idle expiry at or before absolute expiry."""
        with dynamodb_errors():
            try:
                response = await self._client.update_item(
                    TableName=self._table,
                    Key=layout.key_of(key),
                    UpdateExpression=layout.TOUCH_UPDATE,
                    ConditionExpression=layout.TOUCH_CONDITION,
                    ExpressionAttributeValues={
                        ":a": {"N": repr(last_access)},
                        ":i": {"N": repr(idle_expires_at)},
                        ":e": {"N": str(SessionRecord.epoch_ceiling(idle_expires_at))},
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    ReturnConsumedCapacity="TOTAL",
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                current = _record_found(exc.response)
                # Still live but already expiring later than this touch asks: nothing to do.
                return current is not None and not current.tombstone
        self.capacity.record("touch", response)
        return True

    async def delete(
        self,
        key: str,
        *,
        tombstone_expires_at: float,
        expected_version: int | None = None,
    ) -> SessionRecord | None:
        """See `AsyncBackend.delete`: an update that turns the item into a tombstone."""
        values: dict[str, Any] = {
            ":t": {"BOOL": True},
            ":e": {"N": str(SessionRecord.epoch_ceiling(tombstone_expires_at))},
            ":te": {"N": repr(tombstone_expires_at)},
            ":zero": {"N": "0"},
            ":one": {"N": "1"},
        }
        condition = layout.DELETE_CONDITION
        if expected_version is not None:
            condition = layout.DELETE_CONDITION_VERSIONED
            values[":expected"] = {"N": str(expected_version)}
        with dynamodb_errors():
            try:
                response = await self._client.update_item(
                    TableName=self._table,
                    Key=layout.key_of(key),
                    UpdateExpression=layout.DELETE_UPDATE,
                    ConditionExpression=condition,
                    ExpressionAttributeNames={"#v": "version", "#d": "data"},
                    ExpressionAttributeValues=values,
                    ReturnValues="ALL_OLD",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                    ReturnConsumedCapacity="TOTAL",
                )
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                current = _record_found(exc.response)
                if current is not None and not current.tombstone:
                    raise VersionConflict(
                        "session changed since it was read", current_version=current.version
                    ) from exc
                return None
        self.capacity.record("delete", response)
        old_item = response.get("Attributes")
        if not old_item:
            return None
        try:
            return layout.item_to_record(old_item)
        except CorruptRecord:
            return None

    async def user_keys(self, user_id: str) -> list[str]:
        """See `AsyncBackend.user_keys`: a query of the user GSI (eventually consistent)."""
        keys: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            request: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": layout.USER_INDEX,
                "KeyConditionExpression": "user_id = :u",
                "ExpressionAttributeValues": {":u": {"S": user_id}},
                "ScanIndexForward": True,
                "ReturnConsumedCapacity": "TOTAL",
            }
            if start is not None:
                request["ExclusiveStartKey"] = start
            with dynamodb_errors():
                response = await self._client.query(**request)
            self.capacity.record("user_keys", response)
            keys += [str(item[layout.PARTITION_KEY]["S"]) for item in response.get("Items", [])]
            start = response.get("LastEvaluatedKey")
            if not start:
                return keys

    async def forget_user_keys(self, user_id: str, keys: Collection[str]) -> None:
        """See `AsyncBackend.forget_user_keys`: nothing to do, DynamoDB maintains the GSI."""

    async def scan(
        self,
        cursor: str | None = None,
        *,
        count: int = 500,
        worker: int = 0,
        workers: int = 1,
    ) -> ScanPage:
        """See `AsyncBackend.scan`: a consistent Scan; workers are parallel-scan segments."""
        check_scan(count, worker, workers)
        request: dict[str, Any] = {
            "TableName": self._table,
            "Limit": count,
            "ConsistentRead": True,
            "ReturnConsumedCapacity": "TOTAL",
        }
        if workers > 1:
            request["Segment"], request["TotalSegments"] = worker, workers
        if cursor is not None:
            request["ExclusiveStartKey"] = json.loads(cursor)
        with dynamodb_errors():
            response = await self._client.scan(**request)
        self.capacity.record("scan", response)
        records: list[SessionRecord | CorruptRecord] = []
        for item in response.get("Items", []):
            try:
                records.append(layout.item_to_record(item))
            except CorruptRecord as exc:
                records.append(exc)
        last = response.get("LastEvaluatedKey")
        return ScanPage(records, json.dumps(last) if last else None)

    def _guarded_put(self, record: SessionRecord) -> dict[str, Any]:
        """Return the conditional put that copies `record` unless the table holds newer."""
        if record.tombstone:
            item, condition = layout.tombstone_to_item(record), layout.GUARDED_TOMBSTONE_CONDITION
        else:
            item, condition = self._item(record), layout.GUARDED_LIVE_CONDITION
        return {
            "TableName": self._table,
            "Item": item,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#v": "version"},
            "ExpressionAttributeValues": {":incoming": {"N": str(record.version)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }

    async def put_guarded(self, record: SessionRecord) -> GuardedWrite:
        """See `AsyncBackend.put_guarded`: a put conditional on an older version or none."""
        request = self._guarded_put(record)
        with dynamodb_errors():
            try:
                response = await self._client.put_item(**request, ReturnConsumedCapacity="TOTAL")
            except ClientError as exc:
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
                return _kept(_record_found(exc.response), record)
        self.capacity.record("put_guarded", response)
        return GuardedWrite.WRITTEN

    async def put_guarded_many(self, records: Sequence[SessionRecord]) -> list[GuardedResult]:
        """See `AsyncBackend.put_guarded_many`: TransactWriteItems of up to 100 guarded puts.

        See `transact_guarded`. On AWS a transactional write costs two write units per
        item instead of one; `backfill --batch-size 1` trades the speed back for the units.
        """
        results: list[GuardedResult | None] = [None] * len(records)
        puts = []
        for index, record in enumerate(records):
            try:
                puts.append((index, record.key, self._guarded_put(record)))
            except (SessionTooLarge, InvalidAttribute) as exc:
                results[index] = exc

        def kept(index: int, found: Mapping[str, Any] | None) -> GuardedWrite:
            return _kept(layout.item_to_record(found) if found else None, records[index])

        for batch in transaction_batches(puts):
            await transact_guarded(
                self._client,
                batch,
                results,
                kept=kept,
                on_response=lambda response: self.capacity.record("put_guarded_many", response),
            )
        return [result if result is not None else GuardedWrite.WRITTEN for result in results]
