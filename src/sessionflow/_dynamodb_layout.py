"""How sessions are laid out in DynamoDB. No I/O.

One item per session, partition key ``session_id`` (the storage hash). Attributes travel
as one binary envelope in ``data``; ``expires_at`` is the TTL attribute (whole epoch
seconds) and only garbage-collects: expiry is enforced when a record is read. A GSI on
``user_id`` + ``created_at`` lists a user's sessions; tombstones drop ``user_id`` so they
leave the index.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sessionflow._codec import pack_fields, unpack_fields
from sessionflow._errors import CodecError, ConfigError, CorruptRecord, InvalidAttribute
from sessionflow._ids import key_hint
from sessionflow._record import SessionRecord, tombstone_record

_TABLE_NAME = re.compile(r"[A-Za-z0-9_.-]{3,255}")
# botocore's own rule: anything else fails when the client is made (InvalidRegionError).
_REGION_NAME = re.compile(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?")

PARTITION_KEY = "session_id"
USER_INDEX = "user_id-created_at-index"
INDEX_KEY_LIMIT = 2048
"""Bytes DynamoDB takes in the partition key of a secondary index (here ``user_id``)."""
TTL_ATTRIBUTE = "expires_at"


def check_table_name(name: str) -> None:
    """Refuse a name DynamoDB would refuse at every request: 3-255 of ``A-Za-z0-9_.-``."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise ConfigError(
            f"a DynamoDB table name must be 3 to 255 letters, digits, '_', '-' or '.', not {name!r}"
        )


def check_region(setting: str, name: str) -> None:
    """Refuse a region name botocore would refuse when the client is made."""
    if not isinstance(name, str) or not _REGION_NAME.fullmatch(name):
        raise ConfigError(f"{setting} must be an AWS region name like us-east-1, not {name!r}")


# The condition a save carries: the version it read, and not deleted since.
SAVE_CONDITION = "#v = :expected AND attribute_not_exists(tombstone)"
# A touch never moves the expiry backwards (a slower request touching late).
TOUCH_CONDITION = (
    "attribute_exists(session_id) AND attribute_not_exists(tombstone) AND idle_expires_at < :i"
)
TOUCH_UPDATE = "SET last_access = :a, idle_expires_at = :i, expires_at = :e"
DELETE_UPDATE = (
    "SET tombstone = :t, expires_at = :e, idle_expires_at = :te, absolute_expires_at = :te, "
    "#v = if_not_exists(#v, :zero) + :one "
    "REMOVE user_id, #d, created_at, last_access"
)
DELETE_CONDITION = "attribute_not_exists(tombstone)"
DELETE_CONDITION_VERSIONED = (
    "attribute_not_exists(tombstone) AND (attribute_not_exists(#v) OR #v = :expected)"
)

Item = dict[str, Any]


def _n(value: float) -> dict[str, str]:
    return {"N": repr(value) if isinstance(value, float) else str(value)}


def key_of(key: str) -> Item:
    """Return the DynamoDB key of a record."""
    return {PARTITION_KEY: {"S": key}}


def record_to_item(record: SessionRecord) -> Item:
    """Return the item that stores a live record.

    Raises `InvalidAttribute` for a ``user_id`` the user index cannot take: the session
    store refuses such ids, but a record written by an earlier version or copied from
    another store may carry one.
    """
    if record.user_id is not None:
        user_bytes = len(record.user_id.encode())
        if user_bytes > INDEX_KEY_LIMIT:
            raise InvalidAttribute(
                f"user_id is {user_bytes} bytes in UTF-8, over the {INDEX_KEY_LIMIT} bytes "
                f"DynamoDB takes in an index key"
            )
    item: Item = {
        PARTITION_KEY: {"S": record.key},
        "version": _n(record.version),
        "created_at": _n(record.created_at),
        "last_access": _n(record.last_access),
        "idle_expires_at": _n(record.idle_expires_at),
        "absolute_expires_at": _n(record.absolute_expires_at),
        TTL_ATTRIBUTE: _n(record.expires_at_epoch),
        "data": {"B": pack_fields(record.attributes)},
    }
    if record.user_id is not None:
        item["user_id"] = {"S": record.user_id}
    return item


def tombstone_to_item(record: SessionRecord) -> Item:
    """Return the item that stores a tombstone."""
    return {
        PARTITION_KEY: {"S": record.key},
        "version": _n(record.version),
        "tombstone": {"BOOL": True},
        "idle_expires_at": _n(record.absolute_expires_at),
        "absolute_expires_at": _n(record.absolute_expires_at),
        TTL_ATTRIBUTE: _n(record.expires_at_epoch),
    }


# A guarded copy lands only over an absent or older record, and a live copy never over a
# tombstone.
GUARDED_LIVE_CONDITION = (
    "attribute_not_exists(session_id) OR (#v < :incoming AND attribute_not_exists(tombstone))"
)
GUARDED_TOMBSTONE_CONDITION = "attribute_not_exists(session_id) OR #v < :incoming"


def item_size(item: Item) -> int:
    """Estimate an item's size as DynamoDB counts it (names plus values), for the size guard."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        ((kind, raw),) = value.items()
        size += len(raw) if kind == "B" else len(str(raw).encode())
    return size


def item_to_record(item: Mapping[str, Any]) -> SessionRecord:
    """Turn an item into a record; raise `CorruptRecord` if it is not one."""
    key = _text(item, PARTITION_KEY, "?")
    hint = key_hint(key)
    try:
        version = int(item["version"]["N"])
        if item.get("tombstone", {}).get("BOOL"):
            expiry = float(item.get("absolute_expires_at", {"N": "0"})["N"])
            return tombstone_record(key, version, expiry)
        user = item.get("user_id")
        return SessionRecord(
            key=key,
            version=version,
            user_id=None if user is None else str(user["S"]),
            created_at=float(item["created_at"]["N"]),
            last_access=float(item["last_access"]["N"]),
            idle_expires_at=float(item["idle_expires_at"]["N"]),
            absolute_expires_at=float(item["absolute_expires_at"]["N"]),
            attributes=unpack_fields(bytes(item["data"]["B"])),
        )
    except KeyError as exc:
        raise CorruptRecord(hint, f"item lacks attribute {exc.args[0]!r}") from exc
    except (TypeError, ValueError) as exc:
        raise CorruptRecord(hint, f"item has a malformed attribute: {exc}") from exc
    except CodecError as exc:
        raise CorruptRecord(hint, str(exc)) from exc


def _text(item: Mapping[str, Any], name: str, default: str) -> str:
    value = item.get(name)
    if isinstance(value, Mapping) and isinstance(value.get("S"), str):
        return str(value["S"])
    return default


def table_definition(table_name: str, *, streams: bool = True) -> dict[str, Any]:
    """Return the CreateTable arguments of a sessions table (with a change stream or not)."""
    definition: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": PARTITION_KEY, "AttributeType": "S"},
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "created_at", "AttributeType": "N"},
        ],
        "KeySchema": [{"AttributeName": PARTITION_KEY, "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": USER_INDEX,
                "KeySchema": [
                    {"AttributeName": "user_id", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if streams:
        definition["StreamSpecification"] = {
            "StreamEnabled": True,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        }
    return definition


@dataclass
class CapacityMeter:
    """Consumed capacity units per operation name, summed from DynamoDB's replies."""

    units: dict[str, float] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def record(self, operation: str, response: Mapping[str, Any]) -> None:
        """Add the consumed capacity a reply reports (single or list form)."""
        consumed = response.get("ConsumedCapacity")
        entries = consumed if isinstance(consumed, list) else [consumed] if consumed else []
        total = sum(float(entry.get("CapacityUnits", 0.0)) for entry in entries)
        self.units[operation] = self.units.get(operation, 0.0) + total
        self.calls[operation] = self.calls.get(operation, 0) + 1

    @property
    def total(self) -> float:
        """All capacity units consumed so far."""
        return sum(self.units.values())
