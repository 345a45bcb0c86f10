"""The exception hierarchy: every error sessionflow raises derives from `SessionflowError`."""

from __future__ import annotations

from collections.abc import Collection


class SessionflowError(Exception):
    """Base class of every error sessionflow raises."""


class ConfigError(SessionflowError, ValueError):
    """A setting is out of range or inconsistent."""


class InvalidSessionId(SessionflowError, ValueError):  # noqa: N818 - reads as a fact, like KeyError
    """A session id is not one sessionflow issued (wrong length or alphabet).

    Raised before the id touches storage. The message never contains the id itself.
    """


class InvalidAttribute(SessionflowError, ValueError):  # noqa: N818
    """An attribute name or value cannot be stored (not a string name, not serializable)."""


class CodecError(SessionflowError):
    """Bytes could not be encoded or decoded by the codec."""


class SessionTooLarge(SessionflowError, ValueError):  # noqa: N818
    """A session's size exceeds the configured maximum; nothing was written.

    `measure` says which size: ``"encoded"`` (as stored) or ``"decoded"`` (what its
    compressed values hold).
    """

    def __init__(self, size: int, limit: int, measure: str = "encoded") -> None:
        super().__init__(
            f"session is {size} bytes {measure}, over the {limit}-byte limit; nothing was written"
        )
        self.size = size
        self.limit = limit
        self.measure = measure


class SessionNotFound(SessionflowError, KeyError):  # noqa: N818
    """The session does not exist, has expired, or was deleted."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "session not found"


class SessionExists(SessionflowError):  # noqa: N818
    """A create found a record (live or deleted) under the same storage key."""


class VersionConflict(SessionflowError):  # noqa: N818
    """A save was based on a version that is no longer current.

    `attributes` names the attributes that another writer changed concurrently, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        current_version: int | None = None,
        attributes: Collection[str] = (),
    ) -> None:
        super().__init__(message)
        self.current_version = current_version
        self.attributes = frozenset(attributes)


class CorruptRecord(SessionflowError):  # noqa: N818
    """A stored record cannot be read as a session (wrong type, missing fields, undecodable).

    The record is left untouched in storage. `key_hint` is a short prefix of the storage
    hash, safe to log; it is not a usable session id.
    """

    def __init__(self, key_hint: str, reason: str) -> None:
        super().__init__(f"unreadable session record {key_hint}: {reason}")
        self.key_hint = key_hint
        self.reason = reason


class BackendError(SessionflowError):
    """The storage backend failed (connection, throttling, server error); the cause is chained."""


class StageChanged(SessionflowError):  # noqa: N818
    """The migration's control record changed since it was read; nothing was written."""


class MigrationRefused(SessionflowError):  # noqa: N818
    """A stage change or migration job is unsafe now; `reason` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidConversation(SessionflowError, ValueError):  # noqa: N818
    """An owner or opponent id, a timestamp or metadata a conversation list cannot store."""


class ConversationTooLarge(InvalidConversation):
    """Metadata larger than a conversation entry may carry; nothing was written."""


MESSAGE_LIMIT = 300
"""Characters of foreign text (a server's answer, a parser's report) kept in a message."""


def one_line(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """`text` with its whitespace runs collapsed, cut to `limit` characters with an ellipsis.

    For messages built from what another program said: an HTML error page, a parser's
    report quoting the source, a multi-line traceback text. A reason printed by the CLI
    stays on one line, and a log line stays a line.
    """
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
