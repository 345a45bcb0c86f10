"""Conversation entries as the migration engine's records. No I/O.

The engine (stages, dual-write, repair queue, backfill, verify, rollback) moves versioned
records with tombstones. A conversation entry is one: its key names the (owner, opponent)
pair, its version is the entry's, a deleted entry is a tombstone. Two things differ from
sessions, and the engine asks the store which rule applies (`deletes_are_final`):

- a deleted entry comes back when the pair exchange a message again, at a higher
  version; so between two copies the higher version wins, tombstone or not. A copy can
  still never resurrect a deletion: a tombstone carries a version higher than every live
  version before it, and a guarded write never replaces a version with a lower one.
- entries never expire; their times are message times, not deadlines.
"""

from __future__ import annotations

import hashlib
import math

import orjson

from sessionflow._conversation import MAX_METADATA_BYTES, Conversation, check_id
from sessionflow._errors import CorruptRecord
from sessionflow._record import SessionRecord
from sessionflow._scan import GuardedWrite

_SEPARATOR = "\x1f"  # not printable, so never part of an id (see check_id)
_SHARE_DIGITS = 16
TIME_FIELD, METADATA_FIELD = "ts", "meta"
MAX_RECORD_BYTES = MAX_METADATA_BYTES + len(TIME_FIELD) + len(METADATA_FIELD) + 32
"""A record's encoded size with the largest metadata allowed (a float's repr is under 32)."""


def entry_key(owner: str, opponent: str) -> str:
    """Return the engine's key of an entry: a hash of the owner, then both ids.

    The leading hex digits decide a job's worker share and are the key's hint in logs and
    mismatch records (an owner's entries share them, and one worker reads them all).
    """
    digest = hashlib.sha256(owner.encode()).hexdigest()[:_SHARE_DIGITS]
    return f"{digest}:{owner}{_SEPARATOR}{opponent}"


def owner_share_key(owner: str) -> str:
    """Return the hex prefix `in_share` reads for `owner`'s entries."""
    return entry_key(owner, "")[:_SHARE_DIGITS]


def split_key(key: str) -> tuple[str, str]:
    """Return (owner, opponent) of an entry key; `CorruptRecord` if it is not one."""
    owner, separator, opponent = key[_SHARE_DIGITS + 1 :].partition(_SEPARATOR)
    if not separator or entry_key(owner, opponent) != key:
        raise CorruptRecord(key[:12], "not a conversation entry key")
    return check_id("owner", owner), check_id("opponent", opponent)


def entry_to_record(entry: Conversation) -> SessionRecord:
    """Return `entry` as a record: time and metadata as fields, the owner as its user."""
    fields = {}
    if not entry.deleted:
        fields = {
            TIME_FIELD: repr(entry.timestamp).encode(),
            METADATA_FIELD: orjson.dumps(entry.metadata),
        }
    return SessionRecord(
        key=entry_key(entry.owner, entry.opponent),
        version=entry.version,
        user_id=entry.owner,
        created_at=entry.timestamp,
        last_access=entry.timestamp,
        idle_expires_at=math.inf,
        absolute_expires_at=math.inf,
        attributes=fields,
        tombstone=entry.deleted,
    )


def record_to_entry(record: SessionRecord) -> Conversation:
    """Return the entry a record stands for; `CorruptRecord` if it is not one."""
    owner, opponent = split_key(record.key)
    if record.tombstone:
        return Conversation(owner, opponent, record.created_at, record.version, {}, deleted=True)
    try:
        timestamp = float(record.attributes[TIME_FIELD])
        metadata = orjson.loads(record.attributes[METADATA_FIELD])
    except (KeyError, ValueError, orjson.JSONDecodeError) as exc:
        raise CorruptRecord(record.key[:12], f"not a conversation entry: {exc!r}") from exc
    if not isinstance(metadata, dict):
        raise CorruptRecord(record.key[:12], "conversation metadata is not a JSON object")
    return Conversation(owner, opponent, timestamp, record.version, metadata)


def entry_verdict(
    existing: Conversation | None, incoming: Conversation, replaces: int | None = None
) -> GuardedWrite:
    """Decide a conversation write: WRITTEN, or what the store keeps instead.

    With `replaces` None the write is guarded: it lands over nothing or a lower version
    (a tombstone included: the entry came back later). With `replaces` 0 it lands only
    over nothing; with `replaces` n only over version n exactly.
    """
    if replaces is not None:
        found = 0 if existing is None else existing.version
        return GuardedWrite.WRITTEN if found == replaces else GuardedWrite.NEWER_KEPT
    if existing is None or existing.version < incoming.version:
        return GuardedWrite.WRITTEN
    if existing.deleted and not incoming.deleted:
        return GuardedWrite.TOMBSTONE_KEPT
    return GuardedWrite.NEWER_KEPT
