"""The session-engine logic behind `sessionflow.django.SessionStore`, for one flavour.

Django's `SessionBase` has sync and async methods side by side; this module is their one
source: the async class drives an `AsyncSessionStore`, the generated sync one a
`SessionStore`. `engine` is the Django session object (its cache, key and flags).
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.base import UpdateError

from sessionflow._async.store import AsyncSessionStore
from sessionflow._django_expiry import EXPIRY_KEY, django_session_end
from sessionflow._errors import InvalidSessionId, SessionNotFound, VersionConflict
from sessionflow._session import Session

AUTH_USER_KEY = "_auth_user_id"
_SAME_END = 0.001
"""Seconds within which a session's end counts as unchanged (no write for float noise)."""


class AsyncEngineOps:
    """What a Django session engine does, on one store."""

    def __init__(self, store: AsyncSessionStore) -> None:
        self.store = store

    async def load(self, engine: Any) -> dict[str, Any]:  # noqa: ANN401 - a Django session
        """Load the data; an unknown, expired or deleted key becomes no key (a new session)."""
        session = None
        if engine.session_key is not None:
            session = await self.store.get(engine.session_key)
        engine.sessionflow_session = session
        if session is None:
            engine._session_key = None  # noqa: SLF001 - Django's own protocol
            return {}
        return session.to_dict()

    async def exists(self, session_key: str) -> bool:
        """Return True if a live session has this key."""
        try:
            return await self.store.exists(session_key)
        except InvalidSessionId:
            return False

    async def create(self, engine: Any, data: dict[str, Any] | None = None) -> None:  # noqa: ANN401
        """Store a new session (empty unless `data`) and give the engine its key."""
        user = data.get(AUTH_USER_KEY) if data else None
        end = self._end(data or {})
        if end is None:  # set_expiry with a moment already past: nothing to keep
            engine._session_key = None  # noqa: SLF001
            engine.sessionflow_session = None
            return
        session = await self.store.create(
            data or {}, user_id=None if user is None else str(user), expires_at=end
        )
        engine.sessionflow_session = session
        engine._session_key = session.id  # noqa: SLF001
        engine._session_cache = dict(data or {})  # noqa: SLF001
        engine.modified = True

    async def save(self, engine: Any, data: dict[str, Any], *, must_create: bool) -> None:  # noqa: ANN401
        """Save `data`: create if there is no key or `must_create`, else a delta save.

        A session deleted meanwhile, or a lost race on the same key, raises Django's
        `UpdateError` (the middleware answers 400: the change was not stored).
        """
        if engine.session_key is None or must_create:
            await self.create(engine, data)
            return
        session = engine.sessionflow_session or await self.store.get(engine.session_key)
        if session is None:
            raise UpdateError
        if not self._replace_data(session, data):
            await self._end_now(engine, session)
            return
        user = data.get(AUTH_USER_KEY)
        try:
            if user is not None and str(user) != session.user_id:
                # Bind the user to the session (for listing and revocation) as Django logs in.
                session = await self.store.regenerate(session, user_id=str(user))
                engine._session_key = session.id  # noqa: SLF001
            else:
                await self.store.save(session)
        except (SessionNotFound, VersionConflict) as exc:
            raise UpdateError from exc
        engine.sessionflow_session = session

    async def delete(self, engine: Any, session_key: str | None) -> None:  # noqa: ANN401
        """Delete a session by key (the engine's own when None)."""
        key = session_key or engine.session_key
        if key is None:
            return
        try:
            await self.store.delete(key)
        except InvalidSessionId:
            return
        if key == engine.session_key:
            engine.sessionflow_session = None

    async def cycle_key(self, engine: Any, data: dict[str, Any]) -> None:  # noqa: ANN401
        """Move the session to a new key, keeping its data (Django calls it at login)."""
        session = engine.sessionflow_session
        if session is None:
            await self.create(engine, data)
            return
        if not self._replace_data(session, data):
            await self._end_now(engine, session)
            return
        moved = await self.store.regenerate(session)
        engine.sessionflow_session = moved
        engine._session_key = moved.id  # noqa: SLF001
        engine._session_cache = data  # noqa: SLF001

    def _replace_data(self, session: Session, data: dict[str, Any]) -> bool:
        """Give `session` Django's `data` and the end its `set_expiry` asks for.

        Returns False if that end has already passed.
        """
        for name in [name for name in session if name not in data]:
            del session[name]
        session.update(data)
        end = self._end(data, session.created_at)
        if end is None:
            return False
        if abs(end - session.absolute_expires_at) > _SAME_END:
            session.expire_at(end)
        return True

    def _end(self, data: dict[str, Any], created_at: float | None = None) -> float | None:
        """Return the end `set_expiry` asks for (at most the policy's), None if it passed.

        `created_at` is the session's creation; None for one about to be created.
        """
        now = self.store.clock.now()
        start = now if created_at is None else created_at
        end = django_session_end(
            data.get(EXPIRY_KEY), now=now, ceiling=start + self.store.policy.absolute_timeout
        )
        return None if end <= now else end

    async def _end_now(self, engine: Any, session: Session) -> None:  # noqa: ANN401
        """End a session whose `set_expiry` moment has passed: delete it, drop its key."""
        await self.store.delete(session)
        engine.sessionflow_session = None
        engine._session_key = None  # noqa: SLF001
