"""Django integration: a session engine on sessionflow.

    # settings.py
    SESSION_ENGINE = "sessionflow.django"
    SESSIONFLOW_STORE = "myproject.sessions.make_store"              # returns a SessionStore
    SESSIONFLOW_ASYNC_STORE = "myproject.sessions.make_async_store"  # optional
    SESSION_COOKIE_SECURE = True                                     # Django defaults to False

    MIDDLEWARE = [
        "sessionflow.django.NoStoreOnNewSession",       # above SessionMiddleware
        "django.contrib.sessions.middleware.SessionMiddleware",
        ...
    ]

`SessionStore` implements the whole `SessionBase` contract (exists, create, save, delete,
load, cycle_key, clear_expired) and the async variants. Saves are deltas merged with
concurrent requests; `login()` moves the session to a new key and binds it to the user,
so `revoke_user(user.pk)` logs the user out everywhere. Without SESSIONFLOW_ASYNC_STORE the
async methods run the sync ones in a thread (Django's default).
"""

from __future__ import annotations

import functools
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control
from django.utils.deprecation import MiddlewareMixin
from django.utils.module_loading import import_string

from sessionflow._async.django_engine import AsyncEngineOps
from sessionflow._async.store import AsyncSessionStore
from sessionflow._errors import ConfigError, InvalidSessionId
from sessionflow._ids import new_session_id, validate_session_id
from sessionflow._session import Session
from sessionflow._sync.django_engine import EngineOps
from sessionflow._sync.store import SessionStore as SyncStore


@functools.cache
def _factory(path: str) -> Any:  # noqa: ANN401 - whatever the configured callable returns
    return import_string(path)()


def configured_store() -> SyncStore:
    """Return the process's sync store, built once from ``settings.SESSIONFLOW_STORE``."""
    path = getattr(settings, "SESSIONFLOW_STORE", None)
    if not path:
        raise ConfigError("set SESSIONFLOW_STORE to the dotted path of a SessionStore factory")
    store = _factory(path)
    if not isinstance(store, SyncStore):
        raise ConfigError(f"{path} returned {type(store).__name__}, not a SessionStore")
    return store


def configured_async_store() -> AsyncSessionStore | None:
    """Return the async store from ``settings.SESSIONFLOW_ASYNC_STORE``, if configured."""
    path = getattr(settings, "SESSIONFLOW_ASYNC_STORE", None)
    if not path:
        return None
    store = _factory(path)
    if not isinstance(store, AsyncSessionStore):
        raise ConfigError(f"{path} returned {type(store).__name__}, not an AsyncSessionStore")
    return store


def revoke_user(user_id: object, *, keep: str | None = None) -> int:
    """Log a user out everywhere (optionally keeping one session key); return how many."""
    return configured_store().revoke_user(str(user_id), keep=keep)


class NoStoreOnNewSession(MiddlewareMixin):
    """Django middleware: a response that hands out a session is never stored by a cache.

    Django's `SessionMiddleware` adds ``Vary: Cookie``, which keys a cached response by
    the request's cookie. A response whose session cookie differs from the one the
    request sent (a new session, a login's new key, a logout) would be cached under the
    old value, and a CDN would hand the first anonymous visitor's new session to every
    anonymous visitor after. This adds ``Cache-Control: no-store`` to those responses
    only (Django's own cache middleware skips them for the same reason; a CDN does not).
    List it above ``SessionMiddleware``. Sync and async.
    """

    def process_response(
        self, request: HttpRequest, response: HttpResponseBase
    ) -> HttpResponseBase:
        """Mark the response ``no-store`` if it sets a session cookie the request lacked."""
        name = settings.SESSION_COOKIE_NAME
        sent = response.cookies.get(name)
        if sent is not None and sent.value != request.COOKIES.get(name):
            patch_cache_control(response, no_store=True)
        return response


class SessionStore(SessionBase):
    """Django's session engine class, backed by sessionflow."""

    def __init__(self, session_key: str | None = None) -> None:
        self.sessionflow_session: Session | None = None
        super().__init__(session_key)

    # Keys are sessionflow ids: 256 random bits, validated before they reach storage.
    def _validate_session_key(self, key: str | None) -> bool:
        if not key:
            return False
        try:
            validate_session_id(key)
        except InvalidSessionId:
            return False
        return True

    def _get_new_session_key(self) -> str:
        return new_session_id()

    async def _aget_new_session_key(self) -> str:
        return new_session_id()

    @staticmethod
    def _ops() -> EngineOps:
        return EngineOps(configured_store())

    @staticmethod
    def _aops() -> AsyncEngineOps | None:
        store = configured_async_store()
        return None if store is None else AsyncEngineOps(store)

    def load(self) -> dict[str, Any]:
        """Load the session data (empty, with no key, if the session is gone)."""
        return self._ops().load(self)

    def exists(self, session_key: str) -> bool:
        """Return True if a live session has this key."""
        return self._ops().exists(session_key)

    def create(self) -> None:
        """Store a new empty session under a fresh key."""
        self._ops().create(self)

    def save(self, must_create: bool = False) -> None:
        """Save the data (a delta, merged with concurrent requests)."""
        self._ops().save(self, self._get_session(no_load=must_create), must_create=must_create)

    def delete(self, session_key: str | None = None) -> None:
        """Delete the session under this key (the current one when None)."""
        self._ops().delete(self, session_key)

    def cycle_key(self) -> None:
        """Move the session to a new key, keeping its data."""
        self._ops().cycle_key(self, self._get_session())

    @classmethod
    def clear_expired(cls) -> None:
        """Nothing to do: Redis key TTLs and DynamoDB's TTL remove expired sessions."""

    async def aload(self) -> dict[str, Any]:
        """Async `load`."""
        ops = self._aops()
        return await (ops.load(self) if ops else super().aload())

    async def aexists(self, session_key: str) -> bool:
        """Async `exists`."""
        ops = self._aops()
        return await (ops.exists(session_key) if ops else super().aexists(session_key))

    async def acreate(self) -> None:
        """Async `create`."""
        ops = self._aops()
        await (ops.create(self) if ops else super().acreate())

    async def asave(self, must_create: bool = False) -> None:
        """Async `save`."""
        ops = self._aops()
        if ops is None:
            await super().asave(must_create)
            return
        data = await self._aget_session(no_load=must_create)
        await ops.save(self, data, must_create=must_create)

    async def adelete(self, session_key: str | None = None) -> None:
        """Async `delete`."""
        ops = self._aops()
        await (ops.delete(self, session_key) if ops else super().adelete(session_key))

    async def acycle_key(self) -> None:
        """Async `cycle_key`."""
        ops = self._aops()
        if ops is None:
            await super().acycle_key()
            return
        await ops.cycle_key(self, await self._aget_session())

    @classmethod
    async def aclear_expired(cls) -> None:
        """Nothing to do (see `clear_expired`)."""
