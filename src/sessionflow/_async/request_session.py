"""One web request's view of its session, shared by the web integrations."""

from __future__ import annotations

from collections.abc import Sequence

from sessionflow._async.store import AsyncSessionStore
from sessionflow._errors import InvalidSessionId
from sessionflow._id_header import ClientUpdate
from sessionflow._ids import validate_session_id
from sessionflow._session import Session, deadline_moved

MAX_PRESENTED_IDS = 4
"""Session cookies of one name looked up per request: bounded work whatever is sent."""


class AsyncRequestSession:
    """The session of one web request: loaded on first use, committed once at the end.

    The integrations (ASGI, Flask) share it: they differ only in where the id comes from
    (a cookie, or a header) and how the response carries it back.

    Args:
        store: the session store.
        presented: the id the client sent, or every one in order when it sent
            several cookies of that name (set for several paths, or for a parent domain):
            the first that names a live session is the request's, as in Spring Session.
            At most `MAX_PRESENTED_IDS` different ids are looked up.
    """

    def __init__(self, store: AsyncSessionStore, presented: str | Sequence[str] | None) -> None:
        self._store = store
        if presented is None:
            presented = ()
        elif isinstance(presented, str):
            presented = (presented,)
        self._presented = tuple(dict.fromkeys(presented))  # each id looked up once
        self._session: Session | None = None
        self._loaded = False
        self._issue_id = False
        self._clear_id = False

    @property
    def created(self) -> bool:
        """True if this request created the session (its cookie is about to be issued)."""
        return self._issue_id

    @property
    def accessed(self) -> bool:
        """True once the request looked for its session (the response depends on the cookie)."""
        return self._loaded

    @property
    def store(self) -> AsyncSessionStore:
        """The store behind this session."""
        return self._store

    async def load(self) -> Session | None:
        """Return the client's session, or None if it sent none, an unknown or a dead one."""
        if not self._loaded:
            self._loaded = True
            for presented in self._presented[:MAX_PRESENTED_IDS]:
                try:
                    validate_session_id(presented)
                except InvalidSessionId:
                    continue  # malformed ids never reach storage
                self._session = await self._store.get(presented)
                if self._session is not None:
                    break
            self._clear_id = self._session is None and bool(self._presented)
        return self._session

    async def get(self) -> Session:
        """Return the client's session, creating a new one (and its cookie) if there is none."""
        session = await self.load()
        if session is None:
            session = await self._store.create()
            self._session, self._issue_id, self._clear_id = session, True, False
        return session

    async def regenerate(self, *, user_id: str | None = None) -> Session:
        """Move the session to a new id (call at login); creates one if there is none."""
        session = await self.load()
        if session is None:
            session = await self._store.create(user_id=user_id)
        else:
            session = await self._store.regenerate(session, user_id=user_id)
        self._session, self._issue_id, self._clear_id = session, True, False
        return session

    async def logout(self, *, everywhere: bool = False) -> None:
        """Delete the session (and with `everywhere`, every session of its user)."""
        session = await self.load()
        if session is not None:
            if everywhere and session.user_id is not None:
                await self._store.revoke_user(session.user_id)
            await self._store.delete(session)
        self._session, self._issue_id = None, False
        self._clear_id = bool(self._presented)

    async def settle(self) -> ClientUpdate | None:
        """Save what changed; return what the client must be told about its id, if anything.

        A new id (a new or regenerated session), the same id with a new life (its end was
        moved by `Session.expire_at`), or that the id it sent is dead.
        """
        send_id = self._issue_id
        if self._session is not None:
            send_id = send_id or deadline_moved(self._session)
            await self._store.save(self._session)
        if send_id and self._session is not None:
            left = self._session.absolute_expires_at - self._store.clock.now()
            return ClientUpdate(self._session.id, left)
        if self._clear_id:
            return ClientUpdate(None, 0)
        return None
