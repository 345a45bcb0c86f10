"""`AsyncSessionStore`, the facade applications use; the sync `SessionStore` is generated."""

from __future__ import annotations

import contextlib
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._clock import Clock, SystemClock
from sessionflow._codec import Codec
from sessionflow._concurrency import async_sleep
from sessionflow._errors import (
    CodecError,
    CorruptRecord,
    InvalidAttribute,
    SessionExists,
    SessionflowError,
    SessionNotFound,
    VersionConflict,
)
from sessionflow._events import (
    SessionEvent,
    SessionEventKind,
    SessionEventListener,
    check_listener,
)
from sessionflow._ids import key_hint, new_session_id, storage_key, validate_session_id
from sessionflow._input_checks import check_attribute_name, check_deadline, check_user_id
from sessionflow._policy import SessionPolicy
from sessionflow._record import SessionRecord
from sessionflow._session import (
    Session,
    SessionSummary,
    attribute_snapshot,
    deadline_moved,
    mark_saved,
)
from sessionflow._store_stats import StoreStats

logger = logging.getLogger("sessionflow")

USER_READ_PAGE = 500
"""Sessions of one user read per request when listing them."""

_HANDLE_PATTERN = re.compile(r"[0-9a-f]{64}")
_CREATE_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class _Changes:
    changed: frozenset[str]
    removed: frozenset[str]
    fields: dict[str, bytes]
    fingerprints: dict[str, bytes]


class AsyncSessionStore:
    """Creates, reads, saves and revokes sessions on any backend.

    Guarantees, on every backend:

    * ids are 256-bit values from `secrets`; storage sees only their SHA-256;
    * idle and absolute expiry are enforced when a session is read;
    * a save never loses another request's update: it is conditional on the version read,
      and on a conflict it re-reads and merges when the other writer changed different
      attributes (same attribute: `SessionPolicy.on_conflict` decides);
    * a deleted session stays deleted: its tombstone refuses later saves and touches.

    Args:
        backend: where records live.
        policy: timeouts and limits.
        codec: how attribute values are encoded.
        clock: the time source (inject a `ManualClock` in tests).
        on_event: called with a `SessionEvent` after each session this store creates,
            regenerates, deletes, revokes or evicts (an audit trail: `SessionEventLog`).
            It runs on the request's path; if it raises, the error is logged and counted
            in `stats.listener_failures` and the store's change stands.
    """

    def __init__(
        self,
        backend: AsyncBackend,
        *,
        policy: SessionPolicy | None = None,
        codec: Codec | None = None,
        clock: Clock | None = None,
        on_event: SessionEventListener | None = None,
    ) -> None:
        self.backend = backend
        self.policy = policy or SessionPolicy()
        self.codec = codec or Codec()
        self.clock = clock or SystemClock()
        check_listener(on_event)
        self.on_event = on_event
        self.stats = StoreStats()

    # -- create and read --------------------------------------------------------------

    async def create(
        self,
        attributes: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        expires_at: float | None = None,
    ) -> Session:
        """Create and store a new session; return it with its fresh id.

        `expires_at` (epoch seconds) ends it sooner than the policy's absolute timeout (a
        later time is the policy's; see `Session.expire_at`). With
        `SessionPolicy.max_sessions_per_user`, the user's oldest sessions beyond the cap
        are revoked.
        """
        check_user_id(user_id)
        data = dict(attributes or {})
        changes = self._encode(data, {})
        self.codec.check_size(changes.fields, changes.fingerprints)
        now = self.clock.now()
        absolute = now + self.policy.absolute_timeout
        if expires_at is not None:
            absolute = min(check_deadline(expires_at), absolute)
            if absolute <= now:
                raise InvalidAttribute("a new session cannot end before it starts")
        for attempt in range(_CREATE_ATTEMPTS):
            session_id = new_session_id()
            record = SessionRecord(
                key=storage_key(session_id),
                version=1,
                user_id=user_id,
                created_at=now,
                last_access=now,
                idle_expires_at=min(now + self.policy.idle_timeout, absolute),
                absolute_expires_at=absolute,
                attributes=changes.fields,
            )
            try:
                await self.backend.create(record)
                break
            except SessionExists:
                # 256 random bits do not collide; a clash means a broken random source.
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
        self._emit(SessionEventKind.CREATED, record.key, user_id, now)
        if user_id is not None:
            await self._enforce_cap(user_id, keep=record.key)
        return self._session(session_id, record, data, changes.fingerprints)

    async def get(self, session_id: str, *, touch: bool = True) -> Session | None:
        """Return the live session with this id, or None if unknown, expired or deleted.

        Raises `InvalidSessionId` for a malformed id, before anything is read. A record that
        cannot be decoded reads as None; it is counted and logged (without the id) and left
        in storage. With `touch`, the idle expiry is extended (at most once per
        `SessionPolicy.touch_interval`).
        """
        key = storage_key(validate_session_id(session_id))
        record = await self._read(key)
        now = self.clock.now()
        if record is None or not record.is_live(now):
            return None
        try:
            data = self.codec.decode_fields(record.attributes)
        except CodecError as exc:
            self._unreadable(CorruptRecord(key_hint(key), str(exc)))
            return None
        session = self._session(session_id, record, data)
        if touch:
            await self._touch(session, now)
        return session

    async def exists(self, session_id: str) -> bool:
        """Return True if a live session has this id (does not touch it)."""
        return await self.get(session_id, touch=False) is not None

    # -- write ------------------------------------------------------------------------

    async def save(self, session: Session) -> bool:
        """Write the session's changed attributes and extend its idle expiry.

        Returns False if nothing changed (then it only touches when due); a new end set by
        `Session.expire_at` is a change. Raises `SessionNotFound` if the session expired or
        was deleted meanwhile (a deleted session is never brought back), or if its new end
        has passed (it is deleted then), `VersionConflict` if another request changed one
        of the same attributes and the policy is ``"raise"``, and `SessionTooLarge` or
        `InvalidAttribute` before writing anything.
        """
        now = self.clock.now()
        base = attribute_snapshot(session)
        changes = self._encode(session.to_dict(), base)
        moved = deadline_moved(session)
        if not changes.changed and not changes.removed and not moved:
            await self._touch(session, now)
            return False
        if moved:
            ceiling = session.created_at + self.policy.absolute_timeout
            session.absolute_expires_at = min(session.absolute_expires_at, ceiling)
        if now >= session.absolute_expires_at:
            if moved:
                await self._end(session.key, SessionEventKind.DELETED)
            raise SessionNotFound("session expired")
        if now >= session.idle_expires_at:
            await self._live(session.key, now)  # another request may have touched it since
        self.codec.check_size(changes.fields, changes.fingerprints)
        version, fields, changed = session.version, changes.fields, changes.changed
        fingerprints = changes.fingerprints
        merged = False
        for attempt in range(self.policy.max_save_retries + 1):
            record = SessionRecord(
                key=session.key,
                version=version + 1,
                user_id=session.user_id,
                created_at=session.created_at,
                last_access=now,
                idle_expires_at=min(now + self.policy.idle_timeout, session.absolute_expires_at),
                absolute_expires_at=session.absolute_expires_at,
                attributes=fields,
            )
            try:
                await self.backend.save(
                    record,
                    expected_version=version,
                    changed=changed,
                    removed=changes.removed,
                )
            except VersionConflict:
                if attempt == self.policy.max_save_retries:
                    self.stats.raised_conflicts += 1
                    raise
                current = await self._live(session.key, now)
                fields, fingerprints = self._rebase(current, base, changes)
                version, changed = current.version, changes.changed
                merged = True
                self.stats.merged_conflicts += 1
                await async_sleep(random.uniform(0, 0.001 * min(attempt + 1, 10)))
                continue
            others = None
            if merged:
                mine = changes.changed | changes.removed
                others = self.codec.decode_fields(
                    {name: value for name, value in fields.items() if name not in mine}
                )
            mark_saved(session, record, fingerprints, others)
            return True
        raise AssertionError("unreachable")  # pragma: no cover

    async def touch(self, session: Session) -> bool:
        """Extend the idle expiry without rewriting attributes.

        Writes at most once per `SessionPolicy.touch_interval`; returns True if it wrote.
        A session that has ended (idled out, past its end, deleted) is not brought back:
        False.
        """
        return await self._touch(session, self.clock.now())

    async def delete(self, session: Session | str) -> bool:
        """Delete a session (by object or id); return True if a live session was deleted.

        A tombstone stays behind, so no concurrent save can bring the session back.
        """
        key = session.key if isinstance(session, Session) else self._key_of(session)
        return await self._end(key, SessionEventKind.DELETED)

    async def regenerate(self, session: Session, *, user_id: str | None = None) -> Session:
        """Move the session to a new id (for login: session-fixation protection).

        Pending changes are saved first; the new session has the same attributes, creation
        time and absolute expiry; the old id is dead when this returns. Pass `user_id` to
        bind the session to a user as it moves (the moment of login).
        """
        check_user_id(user_id)
        if self._is_dirty(session):
            await self.save(session)
        now = self.clock.now()
        new_id = new_session_id()
        new_key = storage_key(new_id)
        try:
            moved = await self._move(session.key, new_key, user_id, now)
        except Exception:
            # Never leave a copy behind that nobody holds the id of: the old session was
            # deleted meanwhile (logout wins), or the move failed.
            with contextlib.suppress(SessionflowError):
                await self._delete_key(new_key)
            raise
        owner = moved.user_id
        self._emit(SessionEventKind.REGENERATED, new_key, owner, now, previous=session.key)
        if owner is not None:
            await self._enforce_cap(owner, keep=new_key)
        return self._session(new_id, moved, self.codec.decode_fields(moved.attributes))

    async def _move(
        self, old_key: str, new_key: str, user_id: str | None, now: float
    ) -> SessionRecord:
        """Copy the live record at `old_key` to `new_key`, then tombstone the old one.

        The delete is conditional on the version copied; a save that lands on the old key
        in between makes it fail, and the copy is refreshed, so no acknowledged save is lost.
        """
        created = False
        for _ in range(self.policy.max_save_retries + 1):
            current = await self._live(old_key, now)
            moved = current._replace(
                key=new_key,
                user_id=user_id if user_id is not None else current.user_id,
                last_access=now,
                idle_expires_at=min(now + self.policy.idle_timeout, current.absolute_expires_at),
            )
            if created:
                present = await self.backend.get(new_key)
                if present is None or present.tombstone:
                    raise SessionNotFound("the regenerated session was deleted meanwhile")
                moved = moved._replace(version=present.version + 1)
                await self.backend.save(
                    moved,
                    expected_version=present.version,
                    changed=set(moved.attributes),
                    removed=set(present.attributes) - set(moved.attributes),
                )
            else:
                moved = moved._replace(version=1)
                await self.backend.create(moved)
                created = True
            try:
                old = await self.backend.delete(
                    old_key,
                    tombstone_expires_at=now + self.policy.tombstone_ttl,
                    expected_version=current.version,
                )
            except VersionConflict:
                continue  # a concurrent save landed on the old id: copy again
            if old is None:
                raise SessionNotFound("the session was deleted while it was regenerated")
            return moved
        raise VersionConflict("the session kept changing while it was regenerated")

    # -- users ------------------------------------------------------------------------

    async def list_user(self, user_id: str) -> list[SessionSummary]:
        """Return the user's live sessions, oldest first, pruning dead index entries.

        Sessions created at the same moment are ordered by handle.
        """
        check_user_id(user_id)
        keys = await self.backend.user_keys(user_id)
        if not keys:
            return []
        now = self.clock.now()
        live: list[SessionSummary] = []
        dead: list[str] = []
        # Page by page: a user with many sessions never has all their records in memory
        # at once, nor one Redis pipeline of them all.
        for start in range(0, len(keys), USER_READ_PAGE):
            page = keys[start : start + USER_READ_PAGE]
            for key, record in zip(page, await self.backend.get_many(page), strict=True):
                if isinstance(record, CorruptRecord):
                    self._unreadable(record)
                elif record is None or not record.is_live(now) or record.user_id != user_id:
                    dead.append(key)
                else:
                    live.append(_summary(record))
        if dead:
            await self.backend.forget_user_keys(user_id, dead)
        return sorted(live, key=lambda summary: (summary.created_at, summary.handle))

    async def revoke_user(self, user_id: str, *, keep: Session | str | None = None) -> int:
        """Delete every session of a user ("log out everywhere"); return how many.

        `keep` (a session or its id) is spared: the device the user is acting from.
        """
        spared = None
        if keep is not None:
            spared = keep.key if isinstance(keep, Session) else self._key_of(keep)
        revoked = 0
        for summary in await self.list_user(user_id):
            if summary.handle != spared and await self._end(
                summary.handle, SessionEventKind.REVOKED
            ):
                revoked += 1
        return revoked

    async def revoke(self, handle: str) -> bool:
        """Delete a session by the `handle` that `list_user` reported."""
        if not isinstance(handle, str) or _HANDLE_PATTERN.fullmatch(handle) is None:
            raise InvalidAttribute("a session handle is 64 lowercase hex characters")
        return await self._end(handle, SessionEventKind.REVOKED)

    # -- internals --------------------------------------------------------------------

    def _key_of(self, session_id: str) -> str:
        return storage_key(validate_session_id(session_id))

    async def _read(self, key: str) -> SessionRecord | None:
        try:
            return await self.backend.get(key)
        except CorruptRecord as exc:
            self._unreadable(exc)
            return None

    async def _live(self, key: str, now: float) -> SessionRecord:
        current = await self.backend.get(key)
        if current is None or not current.is_live(now):
            raise SessionNotFound("session expired or was deleted")
        return current

    async def _touch(self, session: Session, now: float) -> bool:
        if now - session.last_access < self.policy.touch_interval:
            return False
        if now >= session.idle_expires_at:
            # Idled out, unless another request touched it since this copy was read: a
            # touch must not bring an ended session back (its record can outlive it).
            current = await self._read(session.key)
            if current is None or not current.is_live(now):
                return False
        idle = min(now + self.policy.idle_timeout, session.absolute_expires_at)
        if not await self.backend.touch(session.key, last_access=now, idle_expires_at=idle):
            return False
        session.last_access, session.idle_expires_at = now, idle
        return True

    async def _delete_key(self, key: str) -> SessionRecord | None:
        """Delete the record at `key`; return it if it was a live session."""
        now = self.clock.now()
        old = await self.backend.delete(key, tombstone_expires_at=now + self.policy.tombstone_ttl)
        return old if old is not None and old.is_live(now) else None

    async def _end(self, key: str, kind: SessionEventKind) -> bool:
        """Delete the session at `key` and report it as `kind`; True if it was live."""
        ended = await self._delete_key(key)
        if ended is None:
            return False
        self._emit(kind, key, ended.user_id, self.clock.now())
        return True

    def _emit(
        self,
        kind: SessionEventKind,
        handle: str,
        user_id: str | None,
        at: float,
        *,
        previous: str | None = None,
    ) -> None:
        self.stats.events[kind] += 1
        if self.on_event is None:
            return
        try:
            self.on_event(SessionEvent(kind, handle, user_id, at, previous))
        except Exception:
            self.stats.listener_failures += 1
            logger.exception("the session event listener failed on a %s event", kind.value)

    def _is_dirty(self, session: Session) -> bool:
        changes = self._encode(session.to_dict(), attribute_snapshot(session))
        return bool(changes.changed or changes.removed) or deadline_moved(session)

    async def _enforce_cap(self, user_id: str, *, keep: str) -> None:
        """Revoke the user's sessions older than the newest `cap`.

        Every process computes the same list (oldest first, ties by handle), so logins of
        one user at the same moment agree on which sessions go. A process never revokes
        the session it has just created (`keep`): if that one is among the old, a newer
        login's process revokes it.
        """
        cap = self.policy.max_sessions_per_user
        if cap is None:
            return
        sessions = await self.list_user(user_id)
        for summary in sessions[: max(0, len(sessions) - cap)]:
            if summary.handle != keep:
                await self._end(summary.handle, SessionEventKind.EVICTED)

    def _encode(self, data: Mapping[str, Any], base: Mapping[str, bytes]) -> _Changes:
        fields: dict[str, bytes] = {}
        fingerprints: dict[str, bytes] = {}
        changed: set[str] = set()
        for name, value in data.items():
            check_attribute_name(name)
            encoded = self.codec.encode(name, value)
            fields[name] = encoded.stored
            fingerprints[name] = encoded.fingerprint
            if base.get(name) != encoded.fingerprint:
                changed.add(name)
        removed = frozenset(name for name in base if name not in data)
        return _Changes(frozenset(changed), removed, fields, fingerprints)

    def _rebase(
        self,
        current: SessionRecord,
        base: Mapping[str, bytes],
        changes: _Changes,
    ) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Apply this request's changes on top of the current record (three-way merge)."""
        current_fingerprints = self.codec.fingerprints(current.attributes)
        clashes = {
            name
            for name in changes.changed | changes.removed
            if current_fingerprints.get(name) != base.get(name)
            and current_fingerprints.get(name) != changes.fingerprints.get(name)
        }
        if clashes and self.policy.on_conflict == "raise":
            self.stats.raised_conflicts += 1
            raise VersionConflict(
                f"another request changed {sorted(clashes)} since this one read the session",
                current_version=current.version,
                attributes=clashes,
            )
        fields = dict(current.attributes)
        for name in changes.changed:
            fields[name] = changes.fields[name]
            current_fingerprints[name] = changes.fingerprints[name]
        for name in changes.removed:
            fields.pop(name, None)
            current_fingerprints.pop(name, None)
        self.codec.check_size(fields, current_fingerprints)
        return fields, current_fingerprints

    def _session(
        self,
        session_id: str,
        record: SessionRecord,
        data: dict[str, Any],
        fingerprints: dict[str, bytes] | None = None,
    ) -> Session:
        return Session(
            id=session_id,
            key=record.key,
            user_id=record.user_id,
            created_at=record.created_at,
            last_access=record.last_access,
            idle_expires_at=record.idle_expires_at,
            absolute_expires_at=record.absolute_expires_at,
            version=record.version,
            data=data,
            stored=record.attributes,
            codec=self.codec,
            base=fingerprints,
        )

    def _unreadable(self, exc: CorruptRecord) -> None:
        self.stats.unreadable_records += 1
        logger.warning("%s; it reads as no session and is left in storage", exc)


def _summary(record: SessionRecord) -> SessionSummary:
    return SessionSummary(
        handle=record.key,
        user_id=record.user_id,
        created_at=record.created_at,
        last_access=record.last_access,
        idle_expires_at=record.idle_expires_at,
        absolute_expires_at=record.absolute_expires_at,
        version=record.version,
    )
