"""Plain ASGI session middleware on an `AsyncSessionStore` (Starlette, FastAPI, any ASGI app).

The session is loaded only when the application asks for it and saved only when it changed,
after the application produced its response and before the headers go out. A cookie whose id
the store does not know is never adopted: asking for a session then creates a new one.

    app = SessionMiddleware(app, store=AsyncSessionStore(AsyncRedisBackend(client)))

    async def endpoint(request):
        session = await request_session(request.scope).get()   # creates one if needed
        session["cart"] = [...]
        ...
        await request_session(request.scope).regenerate(user_id="ada")  # at login
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, Literal

from sessionflow._async.store import AsyncSessionStore
from sessionflow._errors import ConfigError, InvalidSessionId, SessionNotFound, VersionConflict
from sessionflow._ids import validate_session_id
from sessionflow._session import Session

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "sessionflow.session"
_COOKIE_NAME_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


@dataclass(frozen=True)
class CookieSettings:
    """How the session cookie is written. The defaults are the secure ones.

    Args:
        name: the cookie name (an RFC 6265 token).
        path: the cookie path.
        domain: None keeps the cookie host-only (recommended).
        secure: send only over HTTPS.
        httponly: hide from JavaScript.
        samesite: ``"lax"``, ``"strict"`` or ``"none"`` (which requires `secure`).
        persistent: give the cookie a Max-Age equal to the store's absolute timeout; False
            makes it a browser-session cookie.
    """

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool = True
    httponly: bool = True
    samesite: Literal["lax", "strict", "none"] = "lax"
    persistent: bool = True

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= _COOKIE_NAME_CHARS:
            raise ConfigError(f"cookie name {self.name!r} is not a valid token")
        if self.samesite not in ("lax", "strict", "none"):
            raise ConfigError("samesite must be 'lax', 'strict' or 'none'")
        if self.samesite == "none" and not self.secure:
            raise ConfigError("samesite='none' requires secure=True (browsers reject it)")

    def header(self, value: str, max_age: int | None) -> str:
        """Return a Set-Cookie header value; `max_age` 0 clears the cookie."""
        parts = [f"{self.name}={value}", f"Path={self.path}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
            if max_age == 0:
                parts.append("Expires=Thu, 01 Jan 1970 00:00:00 GMT")
        if self.secure:
            parts.append("Secure")
        if self.httponly:
            parts.append("HttpOnly")
        parts.append(f"SameSite={self.samesite.capitalize()}")
        return "; ".join(parts)


def parse_cookie_header(header: str) -> dict[str, str]:
    """Parse a Cookie request header into name/value pairs; malformed pairs are skipped.

    Lenient the way browsers are: no quoting rules, the first occurrence of a name wins.
    """
    cookies: dict[str, str] = {}
    for chunk in header.split(";"):
        name, separator, value = chunk.partition("=")
        name, value = name.strip(), value.strip()
        if not separator or not name or name in cookies:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':  # noqa: PLR2004
            value = value[1:-1]
        cookies[name] = value
    return cookies


def _cookie_value(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"cookie":
            found = parse_cookie_header(value.decode("latin-1")).get(name)
            if found is not None:
                return found
    return None


class RequestSession:
    """The session of one request: loaded on first use, committed by the middleware."""

    def __init__(self, store: AsyncSessionStore, presented_id: str | None) -> None:
        self._store = store
        self._presented = presented_id
        self._session: Session | None = None
        self._loaded = False
        self._issue_cookie = False
        self._clear_cookie = False

    @property
    def store(self) -> AsyncSessionStore:
        """The store behind this session."""
        return self._store

    async def load(self) -> Session | None:
        """Return the client's session, or None if it sent none, an unknown or a dead one."""
        if not self._loaded:
            self._loaded = True
            if self._presented is not None:
                try:
                    validate_session_id(self._presented)
                except InvalidSessionId:
                    # Malformed ids never reach storage.
                    self._clear_cookie = True
                else:
                    self._session = await self._store.get(self._presented)
                    self._clear_cookie = self._session is None
        return self._session

    async def get(self) -> Session:
        """Return the client's session, creating a new one (and its cookie) if there is none."""
        session = await self.load()
        if session is None:
            session = await self._store.create()
            self._session, self._issue_cookie, self._clear_cookie = session, True, False
        return session

    async def regenerate(self, *, user_id: str | None = None) -> Session:
        """Move the session to a new id (call at login); creates one if there is none."""
        session = await self.load()
        if session is None:
            session = await self._store.create(user_id=user_id)
        else:
            session = await self._store.regenerate(session, user_id=user_id)
        self._session, self._issue_cookie, self._clear_cookie = session, True, False
        return session

    async def logout(self, *, everywhere: bool = False) -> None:
        """Delete the session (and with `everywhere`, every session of its user)."""
        session = await self.load()
        if session is not None:
            if everywhere and session.user_id is not None:
                await self._store.revoke_user(session.user_id)
            await self._store.delete(session)
        self._session, self._issue_cookie = None, False
        self._clear_cookie = self._presented is not None

    async def commit(self, cookie: CookieSettings) -> str | None:
        """Save what changed; return the Set-Cookie header to send, if any."""
        if self._session is not None:
            await self._store.save(self._session)
        if self._issue_cookie and self._session is not None:
            max_age = int(self._store.policy.absolute_timeout) if cookie.persistent else None
            return cookie.header(self._session.id, max_age)
        if self._clear_cookie:
            return cookie.header("", 0)
        return None


def request_session(scope: Scope) -> RequestSession:
    """Return the `RequestSession` the middleware attached to a request's scope.

    With Starlette or FastAPI pass ``request.scope``; as a FastAPI dependency:
    ``def session(request: Request) -> RequestSession: return request_session(request.scope)``.
    """
    try:
        found = scope[SCOPE_KEY]
    except KeyError:
        raise ConfigError("no session in this request: is SessionMiddleware installed?") from None
    if not isinstance(found, RequestSession):
        raise ConfigError(f"scope[{SCOPE_KEY!r}] is not a RequestSession")
    return found


class SessionMiddleware:
    """ASGI middleware that gives each HTTP request a `RequestSession`.

    A save that loses to a concurrent request changing the same attributes, or that finds
    its session deleted meanwhile, turns the response into ``409 Conflict`` with a one-line
    reason: the change was not stored, and the client is told so instead of seeing success.

    Args:
        app: the ASGI application.
        store: the async store sessions live in.
        cookie: how the cookie is written.
    """

    def __init__(
        self, app: ASGIApp, *, store: AsyncSessionStore, cookie: CookieSettings | None = None
    ) -> None:
        self.app = app
        self.store = store
        self.cookie = cookie or CookieSettings()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the application with a request session, then commit it."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        handle = RequestSession(self.store, _cookie_value(scope, self.cookie.name))
        scope[SCOPE_KEY] = handle
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        refused = False

        async def send_with_session(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                try:
                    header = await handle.commit(self.cookie)
                except (VersionConflict, SessionNotFound) as exc:
                    refused = True
                    await _send_conflict(send, str(exc))
                    return
                if header is not None:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"set-cookie", header.encode())]
            elif refused:
                return  # the application's body belongs to the response we replaced
            await send(message)

        await self.app(scope, receive, send_with_session)


async def _send_conflict(send: Send, reason: str) -> None:
    body = f"session not saved: {reason}; retry the request\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 409,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
