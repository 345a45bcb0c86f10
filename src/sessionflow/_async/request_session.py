"""One web request's view of its session, shared by the web integrations."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

from sessionflow._async.store import AsyncSessionStore
from sessionflow._errors import BackendError, InvalidSessionId, SessionNotFound
from sessionflow._id_header import ClientUpdate
from sessionflow._ids import validate_session_id
from sessionflow._session import Session, deadline_moved

logger = logging.getLogger("sessionflow")

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
        issues_ids: False where no response can carry a new id to the client (a
            WebSocket after its handshake): `get` without a session and `regenerate` are
            refused instead of making a session nobody holds the id of.
    """

    def __init__(
        self,
        store: AsyncSessionStore,
        presented: str | Sequence[str] | None,
        *,
        issues_ids: bool = True,
    ) -> None:
        self._store = store
        self._issues_ids = issues_ids
        self._keep_alive_after = -math.inf
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
    def current(self) -> Session | None:
        """The session as far as this request has it (loaded, created or moved); no I/O."""
        return self._session

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
            self._check_can_issue("create a session")
            session = await self._store.create()
            self._session, self._issue_id, self._clear_id = session, True, False
        return session

    def _check_can_issue(self, what: str) -> None:
        if not self._issues_ids:
            raise SessionNotFound(
                f"cannot {what} here: no response can carry its id to the client "
                "(on a WebSocket, do it over HTTP before connecting)"
            )

    async def regenerate(self, *, user_id: str | None = None) -> Session:
        """Move the session to a new id (call at login); creates one if there is none."""
        self._check_can_issue("give the session a new id")
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

    async def keep_alive(self) -> bool:
        """Extend the session's idle life while a long-lived connection uses it.

        For a WebSocket: the session it was opened with stays alive as long as messages
        arrive, touched at most once per `SessionPolicy.touch_interval`. Returns False
        once the session has ended (logged out, revoked, past its absolute end), found at
        the next touch that is due; True while it lives, or if the connection has no
        session. A store that does not answer is not taken for an ended session: the
        touch is tried again an interval later.
        """
        session = self._session
        if session is None:
            return True
        now = self._store.clock.now()
        if now >= session.absolute_expires_at:
            return False
        if now < self._keep_alive_after:
            return True
        self._keep_alive_after = now + self._store.policy.touch_interval
        try:
            touched = await self._store.touch(session)
        except BackendError:
            logger.warning("could not extend a connection's session; trying again later")
            return True
        return touched or now - session.last_access < self._store.policy.touch_interval

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
