"""`Session`: what an application holds during a request. No I/O."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from sessionflow._codec import Codec
from sessionflow._input_checks import check_deadline
from sessionflow._record import SessionRecord


class Session(MutableMapping[str, Any]):
    """A session's attributes plus its metadata.

    Use it as a dict of JSON-able values. Nested values may be mutated in place: a save
    compares every attribute with the state read, so no change goes unnoticed. The raw `id`
    lives only here, in memory; storage sees its hash.
    """

    __slots__ = (
        "_base",
        "_codec",
        "_data",
        "_saved_deadline",
        "_stored",
        "absolute_expires_at",
        "created_at",
        "id",
        "idle_expires_at",
        "key",
        "last_access",
        "user_id",
        "version",
    )

    def __init__(
        self,
        *,
        id: str,  # noqa: A002 - the natural name for a session id
        key: str,
        user_id: str | None,
        created_at: float,
        last_access: float,
        idle_expires_at: float,
        absolute_expires_at: float,
        version: int,
        data: dict[str, Any],
        stored: Mapping[str, bytes],
        codec: Codec,
        base: dict[str, bytes] | None = None,
    ) -> None:
        self.id = id
        self.key = key
        self.user_id = user_id
        self.created_at = created_at
        self.last_access = last_access
        self.idle_expires_at = idle_expires_at
        self.absolute_expires_at = absolute_expires_at
        self._saved_deadline = absolute_expires_at
        self.version = version
        self._stored = stored
        self._codec = codec
        self._data = data
        self._base = base

    @property
    def expires_at(self) -> float:
        """When the session expires if nothing touches it: the earlier of idle and absolute."""
        return min(self.idle_expires_at, self.absolute_expires_at)

    def expire_at(self, when: float) -> None:
        """End the session at `when` (epoch seconds) instead of at its absolute expiry.

        The next `save` writes it, even if no attribute changed: "remember me" unticked,
        a shorter life after a risky action, or back to the policy's. The store keeps it at
        most its policy's absolute timeout after creation; a time already past deletes the
        session at that save.
        """
        self.absolute_expires_at = check_deadline(when)
        self.idle_expires_at = min(self.idle_expires_at, self.absolute_expires_at)

    def __getitem__(self, name: str) -> Any:  # noqa: ANN401
        return self._data[name]

    def __setitem__(self, name: str, value: Any) -> None:  # noqa: ANN401
        self._data[name] = value

    def __delitem__(self, name: str) -> None:
        del self._data[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        # Never print the id: reprs end up in logs.
        names = sorted(self._data)
        return (
            f"Session(key={self.key[:12]}..., user_id={self.user_id!r}, version={self.version}, "
            f"attributes={names})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a shallow copy of the attributes."""
        return dict(self._data)


@dataclass(frozen=True, slots=True)
class SessionSummary:
    """A session as listed for its user: enough to show "your devices", no usable id.

    `handle` is the storage hash; `SessionStore.revoke` accepts it.
    """

    handle: str
    user_id: str | None
    created_at: float
    last_access: float
    idle_expires_at: float
    absolute_expires_at: float
    version: int


def attribute_snapshot(session: Session) -> Mapping[str, bytes]:
    """Return the fingerprints of the attributes as they were read or last saved.

    Derived from the stored bytes on first use, so reads that never save skip the work.
    """
    # The store and the session are one unit: it reaches into the session's state.
    if session._base is None:  # noqa: SLF001
        session._base = session._codec.fingerprints(session._stored)  # noqa: SLF001
    return session._base  # noqa: SLF001


def deadline_moved(session: Session) -> bool:
    """Return True if `Session.expire_at` moved the session's end since it was read or saved."""
    return session.absolute_expires_at != session._saved_deadline  # noqa: SLF001


def mark_saved(
    session: Session,
    record: SessionRecord,
    base: dict[str, bytes],
    merged: Mapping[str, Any] | None = None,
) -> None:
    """Record what a save wrote (`record`) as the session's new state and baseline.

    After a merge, `merged` holds the decoded values of the attributes other requests
    changed: the session takes them, so its next save does not write its stale view back.
    """
    if merged is not None:
        for name in [n for n in session._data if n not in record.attributes]:  # noqa: SLF001
            del session._data[name]  # noqa: SLF001 - another request removed it
        session._data.update(merged)  # noqa: SLF001
    session.version = record.version
    session.absolute_expires_at = session._saved_deadline = record.absolute_expires_at  # noqa: SLF001
    session.last_access = record.last_access
    session.idle_expires_at = record.idle_expires_at
    session._stored = record.attributes  # noqa: SLF001
    session._base = base  # noqa: SLF001
