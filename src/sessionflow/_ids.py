"""Session ids: 256 random bits from `secrets`, validated before use, hashed at rest."""

from __future__ import annotations

import hashlib
import re
import secrets

from sessionflow._errors import InvalidSessionId

ID_BYTES = 32
ID_LENGTH = 43  # base64url of 32 bytes, without padding
_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
# 43 base64url characters carry 258 bits; the last one's 2 low bits are unused and must be
# zero, which leaves the 16 characters at alphabet positions divisible by 4.
_CANONICAL_ID = re.compile(r"[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]")


def new_session_id() -> str:
    """Return a fresh session id: 256 bits from `secrets`, base64url without padding."""
    return secrets.token_urlsafe(ID_BYTES)


def validate_session_id(session_id: object) -> str:
    """Return `session_id` unchanged if it is a well-formed id, else raise `InvalidSessionId`.

    Checks type, length, alphabet and that it decodes to exactly 32 bytes in canonical form.
    The error message never echoes the id.
    """
    if not isinstance(session_id, str):
        raise InvalidSessionId(f"session id must be a str, not {type(session_id).__name__}")
    if len(session_id) != ID_LENGTH:
        raise InvalidSessionId(f"session id must be {ID_LENGTH} characters, got {len(session_id)}")
    if _CANONICAL_ID.fullmatch(session_id) is not None:
        return session_id
    if _ID_PATTERN.fullmatch(session_id) is None:
        raise InvalidSessionId("session id must use only the base64url alphabet [A-Za-z0-9_-]")
    # Ids that differ only in the unused low bits of the last character decode to the
    # same bytes; only the canonical spelling is accepted.
    raise InvalidSessionId("session id is not in canonical base64url form")


def storage_key(session_id: str) -> str:
    """Return the storage key of a validated id: the hex SHA-256 of the id.

    A dump of the store yields only these hashes, which cannot be presented as a cookie.
    """
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def key_hint(key: str) -> str:
    """Return a short prefix of a storage key, for logs and error messages."""
    return key[:12]
