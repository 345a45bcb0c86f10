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
from typing import Any

from sessionflow._asgi_send import send_whole
from sessionflow._async.request_session import AsyncRequestSession as RequestSession
from sessionflow._async.store import AsyncSessionStore
from sessionflow._cookies import CookieSettings, cookie_values, parse_cookie_header
from sessionflow._errors import ConfigError, SessionNotFound, VersionConflict
from sessionflow._id_header import ClientUpdate, HeaderSettings, id_transport
from sessionflow._starlette_session import ScopeSession

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

SCOPE_KEY = "sessionflow.session"

__all__ = [
    "SESSION_ENDED_CLOSE_CODE",
    "CookieSettings",
    "HeaderSettings",
    "RequestSession",
    "ScopeSession",
    "SessionMiddleware",
    "parse_cookie_header",
    "request_session",
]


SESSION_ENDED_CLOSE_CODE = 1008
"""How a WebSocket whose session ended is closed (RFC 6455: policy violation)."""


def _receive_keeping_alive(handle: RequestSession, receive: Receive, send: Send) -> Receive:
    """Wrap a WebSocket's `receive`: each message keeps its session alive.

    When the session has ended (logged out, revoked, past its end) the connection is
    closed with `SESSION_ENDED_CLOSE_CODE` and the application receives a disconnect, so
    logging out everywhere also ends the user's open WebSockets.
    """

    async def receive_keeping_alive() -> Message:
        message = await receive()
        if message["type"] == "websocket.receive" and not await handle.keep_alive():
            await send(
                {
                    "type": "websocket.close",
                    "code": SESSION_ENDED_CLOSE_CODE,
                    "reason": "session ended",
                }
            )
            return {"type": "websocket.disconnect", "code": SESSION_ENDED_CLOSE_CODE}
        return message

    return receive_keeping_alive


def _header_values(scope: Scope, name: bytes) -> list[str]:
    """Return the request's values of header `name` (lowercase), in order."""
    return [v.decode("latin-1") for k, v in scope.get("headers", ()) if k.lower() == name]


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

    The id travels in a cookie (`CookieSettings`, the default) or, for API and mobile
    clients, in a header (`HeaderSettings`). A response that gives the client a new id, or
    tells it to forget one, says ``Cache-Control: no-store`` (merged with the
    application's directives), and one whose request looked at its session varies on the
    cookie or header.

    On a WebSocket the handler gets the handshake's session; messages keep it alive and
    the connection is closed (`SESSION_ENDED_CLOSE_CODE`) once it has ended. A WebSocket
    cannot hand out a new id: `get()` without a session and `regenerate()` raise
    `SessionNotFound` there.

    A save that loses to a concurrent request changing the same attributes, or that finds
    its session deleted meanwhile, turns the response into ``409 Conflict`` with a one-line
    reason: the change was not stored, and the client is told so instead of seeing success.

    Args:
        app: the ASGI application.
        store: the async store sessions live in.
        cookie: how the cookie is written.
        header: carry the id in this header instead of a cookie (then no cookie is read
            or written; giving both is a `ConfigError`).
        starlette_session: also give every request Starlette's ``request.session`` (a
            dict on the session, see `ScopeSession`), for code written for Starlette's
            own SessionMiddleware such as Authlib's OAuth client. The session is then
            loaded before the application runs, on every request that sends an id.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: AsyncSessionStore,
        cookie: CookieSettings | None = None,
        header: HeaderSettings | None = None,
        starlette_session: bool = False,
    ) -> None:
        self.app = app
        self.store = store
        self.cookie, self.header = id_transport(cookie, header)
        self.starlette_session = starlette_session

    def _presented(self, scope: Scope) -> list[str]:
        if self.header is not None:
            return self.header.presented(_header_values(scope, self.header.raw_name))
        return cookie_values(_header_values(scope, b"cookie"), self.cookie.name)

    def _answer(self, update: ClientUpdate) -> tuple[bytes, bytes]:
        """Return the response header giving the client its new id, or clearing its id."""
        if self.header is not None:
            return self.header.raw_name, (update.session_id or "").encode("ascii")
        return b"set-cookie", self.cookie.for_session(update.session_id, update.remaining).encode()

    async def _open(self, scope: Scope) -> tuple[RequestSession, ScopeSession | None]:
        """Attach the request's session (and Starlette's dict of it) to its scope."""
        websocket = scope["type"] == "websocket"
        handle = RequestSession(self.store, self._presented(scope), issues_ids=not websocket)
        scope[SCOPE_KEY] = handle
        if not self.starlette_session:
            return handle, None
        as_dict = scope["session"] = ScopeSession(handle)
        await handle.load()  # Starlette's dict exists before the application runs
        return handle, as_dict

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the application with a request session, then commit it."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        handle, as_dict = await self._open(scope)
        if scope["type"] == "websocket":
            await self.app(scope, _receive_keeping_alive(handle, receive, send), send)
            return
        refused = False
        varies_on = b"Cookie" if self.header is None else self.header.name.encode("ascii")

        async def send_with_session(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start":
                try:
                    update = await _settle(handle, as_dict)
                except (VersionConflict, SessionNotFound) as exc:
                    refused = True
                    await _send_conflict(send, str(exc))
                    return
                headers = list(message.get("headers", ()))
                if handle.accessed:
                    headers = _vary_on(headers, varies_on)
                if update is not None:
                    headers = _not_stored(headers)
                    headers.append(self._answer(update))
                message["headers"] = headers
            elif refused:
                return  # the application's body belongs to the response we replaced
            await send(message)

        await self.app(scope, receive, send_with_session)


async def _settle(handle: RequestSession, as_dict: ScopeSession | None) -> ClientUpdate | None:
    """Save the request's session; return what its response must tell the client."""
    if as_dict is not None:
        await as_dict.apply()
    return await handle.settle()


def _vary_on(headers: list[tuple[bytes, bytes]], field: bytes) -> list[tuple[bytes, bytes]]:
    """Add `field` (Cookie, or the id's header) to the response's Vary: it depends on it.

    A shared cache would otherwise give one user's response to the next. An existing
    Vary keeps its fields; ``*`` already covers everything.
    """
    return _with_list_member(headers, b"vary", field, covered_by={b"*", field.lower()})


def _not_stored(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Add ``no-store`` to the Cache-Control of a response that sets the session cookie.

    ``Vary: Cookie`` does not protect it: the first anonymous visitor's response, cached
    under "no Cookie header", would hand that visitor's new session to every anonymous
    visitor after. ``no-store`` keeps shared caches from storing it whatever else the
    application's Cache-Control says.
    """
    return _with_list_member(headers, b"cache-control", b"no-store", covered_by={b"no-store"})


def _with_list_member(
    headers: list[tuple[bytes, bytes]], name: bytes, member: bytes, *, covered_by: set[bytes]
) -> list[tuple[bytes, bytes]]:
    """Add `member` to the comma-separated header `name` unless one of `covered_by` is in it."""
    for index, (found, value) in enumerate(headers):
        if found.lower() == name:
            members = {part.strip().lower() for part in value.split(b",")}
            if members & covered_by:
                return headers
            return [*headers[:index], (found, value + b", " + member), *headers[index + 1 :]]
    return [*headers, (name, member)]


async def _send_conflict(send: Send, reason: str) -> None:
    body = f"session not saved: {reason}; retry the request\n".encode()
    await send_whole(send, 409, body, content_type=b"text/plain; charset=utf-8")
