"""Conversation lists (the messaging write-up): who an owner exchanged messages with, newest first.

An entry is one (owner, opponent) pair: the metadata of the last message, its time, and a
version that every write raises. Deleting leaves a tombstone (a higher version, no
metadata), so a copy made by a migration can never bring a deleted entry back.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from sessionflow._codec import holds_non_finite
from sessionflow._errors import ConversationTooLarge, InvalidConversation

MAX_ID_LENGTH = 256
MAX_METADATA_BYTES = 32 * 1024
"""Metadata is the last message's summary, not the conversation: 32 KiB at most."""
DEFAULT_PAGE = 50
MAX_PAGE = 1000


class Conversation(NamedTuple):
    """One entry of an owner's conversation list (a tuple: cheap to build by the page)."""

    owner: str
    opponent: str
    timestamp: float
    """When the last message was exchanged (epoch seconds); the list's order."""
    version: int
    metadata: dict[str, Any]
    """The last message's metadata (empty on a tombstone)."""
    deleted: bool = False


def tombstone_of(entry: Conversation) -> Conversation:
    """Return the tombstone that deletes `entry`: one version above it, its time, no metadata."""
    return entry._replace(version=entry.version + 1, metadata={}, deleted=True)


@dataclass(frozen=True)
class ConversationPage:
    """A page of an owner's list, newest first; `cursor` fetches the next (None: the end)."""

    items: list[Conversation]
    cursor: str | None


def check_id(name: str, value: object) -> str:
    """Return an owner or opponent id, or raise `InvalidConversation` saying why not."""
    if not isinstance(value, str) or not value:
        raise InvalidConversation(f"{name} must be a non-empty string")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidConversation(f"{name} is longer than {MAX_ID_LENGTH} characters")
    if any(c in "{}" or not c.isprintable() for c in value):
        # Braces would break the Redis Cluster hash tag that keeps an owner's keys together.
        raise InvalidConversation(f"{name} must be printable and free of braces")
    return value


def check_timestamp(value: object) -> float:
    """Return a message time, or raise `InvalidConversation`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidConversation("timestamp must be a finite number of epoch seconds")
    if value < 0:
        raise InvalidConversation("timestamp must not be negative")
    return float(value)


def encode_metadata(metadata: object) -> bytes:
    """Return metadata as JSON, or raise `InvalidConversation` / `ConversationTooLarge`."""
    if not isinstance(metadata, Mapping):
        raise InvalidConversation("metadata must be a JSON object (a dict)")
    try:
        encoded = orjson.dumps(dict(metadata))
    except TypeError as exc:
        raise InvalidConversation(f"metadata is not JSON-able: {exc}") from exc
    if b"null" in encoded and holds_non_finite(metadata):  # orjson writes them as null
        raise InvalidConversation("metadata holds NaN or an infinity, which JSON cannot carry")
    if len(encoded) > MAX_METADATA_BYTES:
        raise ConversationTooLarge(
            f"metadata is {len(encoded):,} bytes encoded; the limit is {MAX_METADATA_BYTES:,}"
        )
    return encoded


def check_limit(limit: int) -> int:
    """Return a page size, or raise `InvalidConversation`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidConversation(f"limit must be 1..{MAX_PAGE}")
    return limit


def encode_cursor(position: dict[str, Any]) -> str:
    """Return an opaque cursor for a backend's position."""
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode()


def decode_cursor(cursor: str, *keys: str) -> dict[str, Any]:
    """Return a backend's position from its cursor; `InvalidConversation` if not one."""
    try:
        position = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:
        raise InvalidConversation("the cursor is not one this list returned") from exc
    if not isinstance(position, dict) or any(key not in position for key in keys):
        raise InvalidConversation("the cursor is not one this list returned")
    return position
