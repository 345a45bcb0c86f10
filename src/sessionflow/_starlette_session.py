"""``request.session`` for code written for Starlette's own SessionMiddleware.

Starlette's middleware gives every request a plain dict in ``scope["session"]``; code
written for it (Authlib's OAuth client keeps its state there, admin panels their login)
reads and writes that dict without awaiting anything. `ScopeSession` is that dict on a
sessionflow session: the middleware loads the session before the application runs,
writes land on it, and whatever cannot happen without I/O (creating a session for the
first write, ending one at ``clear()``) waits until the middleware commits the request.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

from sessionflow._async.request_session import AsyncRequestSession


class ScopeSession(MutableMapping[str, Any]):
    """A request's session as a dict, for code that expects Starlette's ``request.session``.

    Reads and writes go to the request's session. Before there is one, writes are kept
    here and become a new session when the request commits (nothing is stored for a
    request that only reads). ``clear()`` is a logout, as Starlette's documentation uses
    it: the stored session ends (its cookie is cleared) when the request commits, and
    writes after it start a new session.
    """

    def __init__(self, request_session: AsyncRequestSession) -> None:
        self._request = request_session
        self._waiting: dict[str, Any] = {}
        self._ended = False

    def _data(self) -> MutableMapping[str, Any]:
        session = None if self._ended else self._request.current
        if session is None:
            return self._waiting
        if self._waiting:
            # The application created the session meanwhile (a login through
            # `request_session`): what waited was written first.
            session.update(self._waiting)
            self._waiting = {}
        return session

    def __getitem__(self, name: str) -> Any:  # noqa: ANN401 - any JSON-able value
        return self._data()[name]

    def __setitem__(self, name: str, value: Any) -> None:  # noqa: ANN401
        self._data()[name] = value

    def __delitem__(self, name: str) -> None:
        del self._data()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._data()))

    def __len__(self) -> int:
        return len(self._data())

    def clear(self) -> None:
        """End the session (a logout) when the request commits; later writes start anew."""
        self._ended = True
        self._waiting = {}

    async def apply(self) -> None:
        """Do what the request asked for that needs the store: end, then create."""
        if self._ended:
            await self._request.logout()
            self._ended = False
        if self._waiting:
            await self._request.get()
            self._data()  # lands what waited on the new session
