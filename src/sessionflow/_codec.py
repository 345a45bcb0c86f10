"""The codec: turns attribute values into stored bytes and back. No I/O.

Every stored attribute value is a small envelope::

    byte 0   envelope version (1)
    byte 1   flags: bits 0-1 the format (0 = JSON, 1 = msgpack), bit 2 zstd-compressed
    rest     the payload

Attributes are JSON-able values whichever wire format is chosen, so a fleet can switch
formats without a migration: records written in either format stay readable.
Change detection compares canonical JSON fingerprints (sorted keys), never Python identity.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import msgpack
import orjson
import zstandard

from sessionflow._errors import CodecError, ConfigError, InvalidAttribute, SessionTooLarge

ENVELOPE_VERSION: Final = 1
_FORMAT_JSON: Final = 0
_FORMAT_MSGPACK: Final = 1
_FLAG_ZSTD: Final = 0b100
_FORMAT_MASK: Final = 0b011
# Datetimes and dataclasses would come back as strings or dicts: refuse them instead.
_ORJSON_OPTIONS: Final = (
    orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)
_PLAIN_JSON_HEADER: Final = bytes((ENVELOPE_VERSION, _FORMAT_JSON))
# Space the metadata of a record takes beside its attributes (names and numbers), generously.
RECORD_OVERHEAD_BYTES: Final = 512
DYNAMODB_ITEM_LIMIT: Final = 400 * 1024

Format = Literal["json", "msgpack"]


@dataclass(frozen=True, slots=True)
class EncodedValue:
    """One attribute value: the bytes to store and its canonical fingerprint."""

    stored: bytes
    fingerprint: bytes


@dataclass(frozen=True)
class Codec:
    """Encodes and decodes attribute values.

    Args:
        format: the wire format of new writes, ``"json"`` (orjson) or ``"msgpack"``.
        compress_threshold: payloads of at least this many bytes are zstd-compressed when
            that makes them smaller.
        max_session_bytes: the largest encoded session accepted; the default leaves room
            under DynamoDB's 400 KB item limit for the record's metadata.
        max_decoded_bytes: the largest a session's attributes may be decoded (names and
            canonical JSON). Compressed values can be thousands of times smaller than what
            they hold; this bounds what a read may inflate, and a write is refused past it
            rather than stored and then refused at every read.
        zstd_level: the zstd compression level.
    """

    format: Format = "json"
    compress_threshold: int = 1024
    max_session_bytes: int = 350_000
    max_decoded_bytes: int = 8 * 1024 * 1024
    zstd_level: int = 3
    _compressor: zstandard.ZstdCompressor = field(init=False, repr=False, compare=False)
    _decompressor: zstandard.ZstdDecompressor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.format not in ("json", "msgpack"):
            raise ConfigError(f"codec format must be 'json' or 'msgpack', not {self.format!r}")
        for name in ("compress_threshold", "max_session_bytes", "max_decoded_bytes"):
            size = getattr(self, name)
            if isinstance(size, bool) or not isinstance(size, int):
                raise ConfigError(f"{name} must be a whole number of bytes, not {size!r}")
        if self.compress_threshold < 1:
            raise ConfigError("compress_threshold must be at least 1 byte")
        limit = DYNAMODB_ITEM_LIMIT - RECORD_OVERHEAD_BYTES
        if not 1 <= self.max_session_bytes <= limit:
            raise ConfigError(
                f"max_session_bytes must be between 1 and {limit} (DynamoDB's item limit "
                "less room for metadata)"
            )
        if self.max_decoded_bytes < 1:
            raise ConfigError("max_decoded_bytes must be at least 1 byte")
        object.__setattr__(self, "_compressor", zstandard.ZstdCompressor(level=self.zstd_level))
        object.__setattr__(self, "_decompressor", zstandard.ZstdDecompressor())

    def fingerprint(self, name: str, value: Any) -> bytes:  # noqa: ANN401 - any JSON-able value
        """Return the canonical JSON of `value`; raise `InvalidAttribute` if it is not JSON-able.

        NaN and infinities are refused: JSON has no such numbers, and orjson would write
        them as null, changing the value without a word.
        """
        try:
            encoded = orjson.dumps(value, option=_ORJSON_OPTIONS)
        except TypeError as exc:
            raise InvalidAttribute(
                f"attribute {name!r} is not JSON-serializable ({type(value).__name__}): {exc}"
            ) from exc
        if b"null" in encoded and holds_non_finite(value):  # the search keeps the walk rare
            raise InvalidAttribute(
                f"attribute {name!r} holds NaN or an infinity, which JSON cannot carry"
            )
        return encoded

    def encode(self, name: str, value: Any) -> EncodedValue:  # noqa: ANN401
        """Encode one attribute value into its stored envelope."""
        fingerprint = self.fingerprint(name, value)
        if self.format == "json":
            payload, fmt = fingerprint, _FORMAT_JSON
        else:
            payload, fmt = msgpack.packb(value, use_bin_type=True), _FORMAT_MSGPACK
        flags = fmt
        if len(payload) >= self.compress_threshold:
            compressed = self._compressor.compress(payload)
            if len(compressed) < len(payload):
                payload, flags = compressed, fmt | _FLAG_ZSTD
        return EncodedValue(bytes((ENVELOPE_VERSION, flags)) + payload, fingerprint)

    def decode(self, stored: bytes) -> Any:  # noqa: ANN401
        """Decode a stored envelope into its value; raise `CodecError` if it is not one."""
        return self.decode_with_fingerprint(stored)[0]

    def decode_with_fingerprint(self, stored: bytes) -> tuple[Any, bytes]:
        """Decode a stored envelope; return the value and its canonical fingerprint."""
        value, fingerprint, _ = self._decode(stored, self.max_decoded_bytes)
        return value, fingerprint

    def _decode(self, stored: bytes, budget: int) -> tuple[Any, bytes, int]:
        """Decode one envelope whose payload may be at most `budget` bytes decompressed.

        Returns the value, its fingerprint and the payload's decompressed size.
        """
        if len(stored) < 2:  # noqa: PLR2004 - the envelope header is two bytes
            raise CodecError("stored value is shorter than the envelope header")
        version, flags = stored[0], stored[1]
        if version != ENVELOPE_VERSION:
            raise CodecError(f"unknown envelope version {version}")
        if flags & ~(_FORMAT_MASK | _FLAG_ZSTD):
            raise CodecError(f"unknown envelope flags {flags:#04x}")
        payload = stored[2:]
        if flags & _FLAG_ZSTD:
            payload = self._inflate(payload, budget)
        fmt = flags & _FORMAT_MASK
        try:
            if fmt == _FORMAT_JSON:
                return orjson.loads(payload), payload, len(payload)
            if fmt == _FORMAT_MSGPACK:
                value = msgpack.unpackb(payload, raw=False, strict_map_key=True)
                return value, orjson.dumps(value, option=_ORJSON_OPTIONS), len(payload)
        except (orjson.JSONDecodeError, ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CodecError(f"undecodable payload: {exc}") from exc
        raise CodecError(f"unknown payload format {fmt}")

    def _inflate(self, payload: bytes, budget: int) -> bytes:
        """Decompress a zstd payload; refuse one that holds more than `budget` bytes.

        zstd allocates what a frame's header announces and ignores `max_output_size`
        then, so the announced size is checked first; a frame that announces none is
        bounded by `max_output_size`.
        """
        limit = self.max_decoded_bytes
        try:
            announced = zstandard.frame_content_size(payload)
            if announced > budget:
                raise CodecError(
                    f"a compressed value of {announced} bytes takes the session over the "
                    f"{limit} bytes it may hold decoded"
                )
            return self._decompressor.decompress(payload, max_output_size=budget)
        except zstandard.ZstdError as exc:
            raise CodecError(
                f"corrupt zstd payload, or one over the {limit} bytes a session may hold "
                f"decoded: {exc}"
            ) from exc

    def decode_fields(self, fields: Mapping[str, bytes]) -> dict[str, Any]:
        """Decode every stored attribute; raise `CodecError` if any is not an envelope.

        Also raised when the attributes together hold more than `max_decoded_bytes`.
        """
        return self._decode_all(fields, with_values=True)[0]

    def fingerprints(self, fields: Mapping[str, bytes]) -> dict[str, bytes]:
        """Return the canonical fingerprint of every stored attribute."""
        return self._decode_all(fields, with_values=False)[1]

    def _decode_all(
        self, fields: Mapping[str, bytes], *, with_values: bool
    ) -> tuple[dict[str, Any], dict[str, bytes]]:
        """Return every attribute's value and fingerprint, within one decoded budget.

        Without `with_values`, a plain JSON value is not parsed: its stored bytes are
        its fingerprint.
        """
        values: dict[str, Any] = {}
        fingerprints: dict[str, bytes] = {}
        budget = self.max_decoded_bytes
        loads = orjson.loads
        for name, stored in fields.items():
            if stored[:2] == _PLAIN_JSON_HEADER:  # the common case, kept cheap
                fingerprint = stored[2:]
                if with_values:
                    try:
                        values[name] = loads(fingerprint)
                    except orjson.JSONDecodeError as exc:
                        raise CodecError(f"undecodable payload: {exc}") from exc
                budget -= len(name) + len(fingerprint)
            else:
                budget -= len(name)
                values[name], fingerprint, size = self._decode(stored, max(budget, 0))
                budget -= size
            fingerprints[name] = fingerprint
        if budget < 0:
            raise CodecError(
                f"the attributes hold more than the {self.max_decoded_bytes} bytes a "
                "session may hold decoded"
            )
        return values, fingerprints

    def check_size(self, fields: Mapping[str, bytes], fingerprints: Mapping[str, bytes]) -> int:
        """Return the encoded size of a session's fields; raise `SessionTooLarge` if too large.

        `fingerprints` are the same attributes' canonical JSON: what a read decodes, held
        to `max_decoded_bytes`.
        """
        size = encoded_size(fields)
        if size > self.max_session_bytes:
            raise SessionTooLarge(size, self.max_session_bytes)
        decoded = encoded_size(fingerprints)
        if decoded > self.max_decoded_bytes:
            raise SessionTooLarge(decoded, self.max_decoded_bytes, measure="decoded")
        return size


def encoded_size(fields: Mapping[str, bytes]) -> int:
    """Return the stored size of a session's fields: names and encoded values."""
    return sum(len(name.encode()) + len(value) for name, value in fields.items())


def pack_fields(fields: Mapping[str, bytes]) -> bytes:
    """Pack a record's stored fields into one blob (for stores that keep a single value)."""
    packed: bytes = msgpack.packb(dict(fields), use_bin_type=True)
    return bytes((ENVELOPE_VERSION, 0)) + packed


def unpack_fields(blob: bytes) -> dict[str, bytes]:
    """Unpack a blob made by `pack_fields`; raise `CodecError` if it is not one."""
    if len(blob) < 2 or blob[0] != ENVELOPE_VERSION or blob[1] != 0:  # noqa: PLR2004
        raise CodecError("attribute blob has an unknown envelope header")
    try:
        fields = msgpack.unpackb(blob[2:], raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CodecError(f"undecodable attribute blob: {exc}") from exc
    if not isinstance(fields, dict) or not all(
        isinstance(k, str) and isinstance(v, bytes) for k, v in fields.items()
    ):
        raise CodecError("attribute blob is not a map of names to bytes")
    return fields


def holds_non_finite(value: Any) -> bool:  # noqa: ANN401 - any JSON-able value
    """Tell whether `value` is, or holds at any depth, a NaN or an infinite float."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(holds_non_finite(item) for item in value.values())
    if isinstance(value, list | tuple):
        return any(holds_non_finite(item) for item in value)
    return False
