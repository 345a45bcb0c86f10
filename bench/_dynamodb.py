"""DynamoDB requests the benchmarks send with the bare client, no sessionflow code on the way."""

from __future__ import annotations

from typing import Any

from sessionflow._dynamodb_layout import GUARDED_LIVE_CONDITION


def guarded_put(table: str, item: dict[str, Any]) -> dict[str, Any]:
    """A put of `item` under the backfill's version-and-tombstone condition."""
    return {
        "TableName": table,
        "Item": item,
        "ConditionExpression": GUARDED_LIVE_CONDITION,
        "ExpressionAttributeNames": {"#v": "version"},
        "ExpressionAttributeValues": {":incoming": item["version"]},
    }
