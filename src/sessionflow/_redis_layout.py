"""How sessions are laid out in Redis, and the Lua that writes them. No I/O.

One hash per session, ``<prefix>:{<key>}``; the braces make the storage key a hash tag, so
on a Cluster every command and script about one session addresses one slot. Metadata
fields start with ``_``; attribute ``name`` is field ``a:name``, holding its envelope, so a
save rewrites only the attributes that changed. A user's sessions are indexed in a sorted
set ``<prefix>:u:{<sha256 of user id>}`` scored by creation time.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, ItemsView, Iterator, Mapping
from typing import Any

from sessionflow._errors import ConfigError, CorruptRecord
from sessionflow._ids import key_hint
from sessionflow._record import SessionRecord, tombstone_record

ScriptArg = bytes | str | int | float

VERSION = b"_v"
USER = b"_u"
CREATED = b"_c"
LAST_ACCESS = b"_a"
IDLE_EXPIRES = b"_i"
ABSOLUTE_EXPIRES = b"_x"
TOMBSTONE = b"_t"
ATTRIBUTE_PREFIX = b"a:"

# Shared by the scripts: set field/value pairs from ARGV[from..] in chunks (Lua's unpack
# has a stack limit), then run the body.
_HSET_PAIRS = """
local function hset_pairs(key, from, to)
  for i = from, to, 200 do
    redis.call('HSET', key, unpack(ARGV, i, math.min(i + 199, to)))
  end
end
"""

# KEYS[1] session; ARGV[1] expire-at ms; ARGV[2..] field/value pairs.
# Returns 1 when created, 0 when any record (tombstones too) already has the key.
CREATE_SCRIPT = (
    _HSET_PAIRS
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
hset_pairs(KEYS[1], 2, #ARGV)
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
return 1
"""
)

# KEYS[1] session; ARGV[1] expected version; ARGV[2] expire-at ms; ARGV[3] number of
# field/value items that follow; then the pairs; then the attribute fields to delete.
# Returns {1} saved, {0} missing or deleted, {-1, version} conflict, {-2} no version field.
SAVE_SCRIPT = (
    _HSET_PAIRS
    + """
local cur = redis.call('HMGET', KEYS[1], '_v', '_t')
if cur[2] == '1' then return {0} end
if not cur[1] then
  if redis.call('EXISTS', KEYS[1]) == 1 then return {-2} end
  return {0}
end
if cur[1] ~= ARGV[1] then return {-1, cur[1]} end
local n = tonumber(ARGV[3])
hset_pairs(KEYS[1], 4, 3 + n)
for i = 4 + n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('PEXPIREAT', KEYS[1], ARGV[2])
return {1}
"""
)

# KEYS[1] session; ARGV[1] last access; ARGV[2] idle expiry (s); ARGV[3] idle expiry (ms).
# Returns 1 when the session is live (touched, or already expiring later), 0 when missing or
# deleted. A touch never moves the expiry backwards (a slower request touching late).
TOUCH_SCRIPT = """
local cur = redis.call('HMGET', KEYS[1], '_v', '_t', '_x', '_i')
if not cur[1] or cur[2] == '1' then return 0 end
local idle = tonumber(cur[4])
if idle and idle >= tonumber(ARGV[2]) then return 1 end
redis.call('HSET', KEYS[1], '_a', ARGV[1], '_i', ARGV[2])
local at = tonumber(ARGV[3])
local absolute = tonumber(cur[3])
if absolute then at = math.min(at, math.ceil(absolute * 1000)) end
redis.call('PEXPIREAT', KEYS[1], at)
return 1
"""

# KEYS[1] session; ARGV[1] tombstone expiry (ms); ARGV[2] expected version or '';
# ARGV[3] tombstone expiry (s). Returns {1, old fields...} deleted a live record,
# {2} wrote a tombstone where there was none, {0} already deleted, {-1, version} conflict,
# {-2, type} not a session hash (left untouched).
DELETE_SCRIPT = """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then return {-2, kind} end
local cur = redis.call('HMGET', KEYS[1], '_v', '_t')
if cur[2] == '1' then return {0} end
if ARGV[2] ~= '' and cur[1] and cur[1] ~= ARGV[2] then return {-1, cur[1]} end
local old = redis.call('HGETALL', KEYS[1])
local version = (tonumber(cur[1]) or 0) + 1
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_v', version, '_t', '1', '_i', ARGV[3], '_x', ARGV[3])
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if kind == 'none' then return {2} end
return {1, old}
"""


# KEYS[1] session; ARGV[1] version; ARGV[2] last access. Deletes a live session only if
# neither changed (no save, no touch since it was read). Returns 1 if evicted, else 0.
EVICT_SCRIPT = """
local cur = redis.call('HMGET', KEYS[1], '_v', '_a', '_t')
if not cur[1] or cur[3] == '1' then return 0 end
if tonumber(cur[1]) ~= tonumber(ARGV[1]) or tonumber(cur[2]) ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('DEL', KEYS[1])
return 1
"""


# KEYS[1] session; ARGV[1] incoming version; ARGV[2] '1' if the incoming record is a
# tombstone; ARGV[3] expire-at ms; ARGV[4..] the record's field/value pairs.
# Returns 0 written, 1 kept a newer or equal version, 2 kept a tombstone, -2 not a session.
PUT_GUARDED_SCRIPT = (
    _HSET_PAIRS
    + """
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'hash' and kind ~= 'none' then return -2 end
local cur = redis.call('HMGET', KEYS[1], '_v', '_t')
if cur[1] then
  if cur[2] == '1' and ARGV[2] ~= '1' then return 2 end
  if tonumber(cur[1]) >= tonumber(ARGV[1]) then return 1 end
elseif kind == 'hash' then
  return -2
end
redis.call('DEL', KEYS[1])
hset_pairs(KEYS[1], 4, #ARGV)
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 0
"""
)


def session_key(prefix: str, key: str) -> str:
    """Return the Redis key of a session."""
    return f"{prefix}:{{{key}}}"


def user_index_key(prefix: str, user_id: str) -> str:
    """Return the Redis key of a user's index (the user id is hashed, out of key names)."""
    return f"{prefix}:u:{{{hashlib.sha256(user_id.encode()).hexdigest()}}}"


def expire_at_ms(epoch_seconds: float) -> int:
    """Return the PEXPIREAT argument for an expiry in epoch seconds."""
    return math.ceil(epoch_seconds * 1000)


def _number(value: float) -> bytes:
    return repr(float(value)).encode()


def metadata_fields(record: SessionRecord) -> list[ScriptArg]:
    """Return the metadata of a live record as flat field/value items."""
    items: list[ScriptArg] = [
        VERSION, str(record.version).encode(),
        CREATED, _number(record.created_at),
        LAST_ACCESS, _number(record.last_access),
        IDLE_EXPIRES, _number(record.idle_expires_at),
        ABSOLUTE_EXPIRES, _number(record.absolute_expires_at),
    ]  # fmt: skip
    if record.user_id is not None:
        items += [USER, record.user_id.encode()]
    return items


def record_fields(record: SessionRecord) -> list[ScriptArg]:
    """Return every field of a record (live or tombstone) as flat field/value items."""
    if record.tombstone:
        expiry = _number(record.absolute_expires_at)
        return [VERSION, str(record.version).encode(), TOMBSTONE, b"1", IDLE_EXPIRES, expiry,
                ABSOLUTE_EXPIRES, expiry]  # fmt: skip
    return [
        *metadata_fields(record),
        *attribute_fields(record.attributes, record.attributes),
    ]


def key_from_redis_key(redis_key: bytes | str) -> str:
    """Return the storage key inside a session's Redis key (the part between the braces)."""
    text = redis_key.decode() if isinstance(redis_key, bytes) else redis_key
    return text[text.index("{") + 1 : text.rindex("}")]


def attribute_fields(attributes: Mapping[str, bytes], names: Collection[str]) -> list[ScriptArg]:
    """Return the named attributes as flat field/value items."""
    items: list[ScriptArg] = []
    for name in names:
        items += [ATTRIBUTE_PREFIX + name.encode(), attributes[name]]
    return items


def attribute_field(name: str) -> bytes:
    """Return the hash field that holds attribute `name`."""
    return ATTRIBUTE_PREFIX + name.encode()


class HashAttributes(Mapping[str, bytes]):
    """The attributes of a session hash, read in place from the HGETALL reply.

    A view rather than a copy: the store decodes the attributes in one pass over it.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: Mapping[bytes, bytes]) -> None:
        self._fields = fields

    def __getitem__(self, name: str) -> bytes:
        return self._fields[ATTRIBUTE_PREFIX + name.encode()]

    def __iter__(self) -> Iterator[str]:
        return (name[2:].decode() for name in self._fields if name[:2] == ATTRIBUTE_PREFIX)

    def __len__(self) -> int:
        return sum(1 for name in self._fields if name[:2] == ATTRIBUTE_PREFIX)

    def items(self) -> ItemsView[str, bytes]:
        """Return (name, envelope) pairs without a lookup per name."""
        return _HashAttributeItems(self)

    def __repr__(self) -> str:
        return f"HashAttributes({sorted(self)})"


class _HashAttributeItems(ItemsView[str, bytes]):
    _mapping: HashAttributes

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for name, value in self._mapping._fields.items():
            if name[:2] == ATTRIBUTE_PREFIX:
                yield name[2:].decode(), value


def parse_hash(key: str, fields: Mapping[bytes, bytes]) -> SessionRecord:
    """Turn a session hash into a record; raise `CorruptRecord` if it is not one."""
    try:
        version = int(fields[VERSION])
        if fields.get(TOMBSTONE) == b"1":
            expiry = float(fields.get(IDLE_EXPIRES, b"0"))
            return tombstone_record(key, version, expiry)
        user = fields.get(USER)
        return SessionRecord(
            key,
            version,
            None if user is None else user.decode(),
            float(fields[CREATED]),
            float(fields[LAST_ACCESS]),
            float(fields[IDLE_EXPIRES]),
            float(fields[ABSOLUTE_EXPIRES]),
            HashAttributes(fields),
        )
    except KeyError as exc:
        raise CorruptRecord(key_hint(key), f"session hash lacks field {exc.args[0]!r}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptRecord(key_hint(key), f"session hash has a malformed field: {exc}") from exc


def pairs_to_mapping(flat: list[bytes]) -> dict[bytes, bytes]:
    """Turn a flat HGETALL reply from a script into a mapping."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def check_client(client: Any, prefix: str) -> None:  # noqa: ANN401 - a redis-py client
    """Refuse a client that decodes replies and a prefix that would break the hash tags."""
    if client.get_connection_kwargs().get("decode_responses"):
        raise ConfigError("the Redis client must be created with decode_responses=False")
    check_prefix(prefix)


def check_prefix(prefix: str) -> None:
    """Refuse a key prefix that is empty or would break the hash tags (braces)."""
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigError(
            f"the Redis key prefix must be non-empty and free of braces, not {prefix!r}"
        )
