"""Flask integration: a `SessionInterface` on a sync `SessionStore`.

    app.session_interface = SessionflowInterface(SessionStore(RedisBackend(client)))

``flask.session`` then behaves as usual (a dict that is saved when it changed), plus
``session.regenerate(user_id=...)`` at login, ``session.logout(everywhere=...)`` and
``session.expire_at(epoch_seconds)`` for a shorter life.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flask.sessions import SessionInterface, SessionMixin

from sessionflow._cookies import CookieSettings
from sessionflow._errors import SessionNotFound, VersionConflict
from sessionflow._id_header import HeaderSettings, id_transport
from sessionflow._sync.request_session import RequestSession
from sessionflow._sync.store import SessionStore

if TYPE_CHECKING:
    from flask import Flask, Request, Response

    from sessionflow._session import Session


PERMANENT_KEY = "_permanent"
"""Where `session.permanent` is kept in the session's data (Flask's own name)."""


class FlaskSession(SessionMixin):
    """``flask.session``: loaded on first access, created on first write.

    Args:
        request_session: the request's session.
        default_permanent: what `permanent` reads as until the application sets it (the
            interface passes its cookie's `persistent`).
    """

    def __init__(self, request_session: RequestSession, *, default_permanent: bool = True) -> None:
        self._request = request_session
        self._default_permanent = default_permanent
        self._pending_permanent: bool | None = None
        self.modified = False
        self.accessed = False

    @property
    def permanent(self) -> bool:
        """Whether the session's cookie outlives the browser (Max-Age) or ends with it.

        Kept in the session as Flask keeps it, but setting it never creates a session on
        its own: Flask applications often set it on every request (``before_request``),
        which would store a session for every visitor, health checks included. Without a
        session the value waits, and is kept if this request creates one.
        """
        session = self._read()
        if session is not None and PERMANENT_KEY in session:
            return bool(session[PERMANENT_KEY])
        if self._pending_permanent is not None:
            return self._pending_permanent
        return self._default_permanent

    @permanent.setter
    def permanent(self, value: bool) -> None:
        session = self._read()
        if session is None:
            self._pending_permanent = bool(value)
        elif session.get(PERMANENT_KEY) is not bool(value):
            session[PERMANENT_KEY] = bool(value)
            self.modified = True

    def _writable(self) -> Session:
        """Return the session to write to, creating it (with a waiting `permanent`)."""
        session = self._request.get()
        self._keep_pending(session)
        return session

    def _keep_pending(self, session: Session) -> None:
        if self._pending_permanent is not None:
            session[PERMANENT_KEY] = self._pending_permanent
            self._pending_permanent = None

    @property
    def new(self) -> bool:  # type: ignore[override]  # Flask declares a plain attribute
        """True if this request created the session."""
        return self._request.created

    @property
    def sessionflow_session(self) -> Session | None:
        """The underlying sessionflow `Session`, if there is one."""
        return self._request.load()

    def _read(self) -> Session | None:
        self.accessed = True
        return self._request.load()

    def __getitem__(self, name: str) -> Any:  # noqa: ANN401
        session = self._read()
        if session is None:
            raise KeyError(name)
        return session[name]

    def __setitem__(self, name: str, value: Any) -> None:  # noqa: ANN401
        self.accessed = self.modified = True
        self._writable()[name] = value

    def __delitem__(self, name: str) -> None:
        session = self._read()
        if session is None:
            raise KeyError(name)
        del session[name]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        session = self._read()
        return iter(() if session is None else list(session))

    def __len__(self) -> int:
        session = self._read()
        return 0 if session is None else len(session)

    def clear(self) -> None:
        """End the session, as Flask's logout idiom (``session.clear()``) means it.

        The stored session is deleted, not kept empty (its id, and its binding to a user,
        would outlive the logout) and its cookie is cleared; a write after this starts a
        new session with a new id.
        """
        self._pending_permanent = None
        self._request.logout()
        self.accessed = self.modified = True

    def regenerate(self, *, user_id: str | None = None) -> None:
        """Move the session to a new id (call at login); creates one if there is none."""
        self._keep_pending(self._request.regenerate(user_id=user_id))
        self.modified = True

    def expire_at(self, when: float) -> None:
        """End the session at `when` (epoch seconds), sooner than the store's policy.

        The server ends it then, and the cookie is sent again with that life (see
        `Session.expire_at`); creates the session if there is none.
        """
        self._writable().expire_at(when)
        self.accessed = self.modified = True

    def logout(self, *, everywhere: bool = False) -> None:
        """Delete the session (and with `everywhere`, every session of its user)."""
        self._request.logout(everywhere=everywhere)
        self.modified = True


class SessionflowInterface(SessionInterface):
    """Stores Flask sessions in a sessionflow `SessionStore`.

    A save that loses to a concurrent request changing the same attribute, or finds its
    session deleted meanwhile, turns the response into ``409 Conflict`` with a one-line
    reason instead of a success whose change was dropped.

    Args:
        store: the sync store sessions live in.
        cookie: how the cookie is written (secure defaults; Flask's ``SESSION_COOKIE_*``
            settings are not consulted).
        header: carry the id in this header instead of a cookie, for API and mobile
            clients (see `HeaderSettings`; giving both is a `ConfigError`).
    """

    def __init__(
        self,
        store: SessionStore,
        cookie: CookieSettings | None = None,
        *,
        header: HeaderSettings | None = None,
    ) -> None:
        self.store = store
        self.cookie, self.header = id_transport(cookie, header)

    def open_session(self, app: Flask, request: Request) -> FlaskSession:  # noqa: ARG002
        """Attach a lazily loaded session to the request."""
        if self.header is not None:
            presented = self.header.presented(request.headers.getlist(self.header.name))
        else:
            presented = request.cookies.getlist(self.cookie.name)
        return FlaskSession(
            RequestSession(self.store, presented), default_permanent=self.cookie.persistent
        )

    def save_session(
        self,
        app: Flask,  # noqa: ARG002 - Flask's signature
        session: SessionMixin,
        response: Response,
    ) -> None:
        """Save what changed and give the client its new id, or tell it to forget its id."""
        assert isinstance(session, FlaskSession)  # noqa: S101 - open_session made it
        try:
            update = session._request.settle()  # noqa: SLF001 - our own pair
        except (VersionConflict, SessionNotFound) as exc:
            response.status_code = 409
            response.set_data(f"session not saved: {exc}; retry the request\n")
            response.mimetype = "text/plain"
            return
        if session.accessed:
            response.vary.add("Cookie" if self.header is None else self.header.name)
        if update is None:
            return
        # Vary alone would let a shared cache give the first anonymous visitor's new
        # session to every anonymous visitor after (see the ASGI middleware).
        response.cache_control.no_store = True
        if self.header is not None:
            response.headers[self.header.name] = update.session_id or ""
        else:
            cookie = self.cookie.for_session(
                update.session_id, update.remaining, persistent=session.permanent
            )
            response.headers.add("Set-Cookie", cookie)
