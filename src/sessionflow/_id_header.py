"""How the session id travels: what a response tells the client, and the id in a header.

No I/O. The cookie itself is `_cookies.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sessionflow._cookies import TOKEN_CHARS, CookieSettings
from sessionflow._errors import ConfigError

_TAKEN = frozenset(
    {
        "authorization",
        "cache-control",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "set-cookie",
        "transfer-encoding",
        "vary",
    }
)
"""Headers HTTP or the middleware already give a meaning to."""


@dataclass(frozen=True, slots=True)
class ClientUpdate:
    """What a response must tell the client about its session id.

    Attributes:
        session_id: the id the client must use from now on, or None if the id it sent
            names no session (it should forget it).
        remaining: seconds the session has left (0 with no session).
    """

    session_id: str | None
    remaining: float


def id_transport(
    cookie: CookieSettings | None, header: HeaderSettings | None
) -> tuple[CookieSettings, HeaderSettings | None]:
    """Return an integration's cookie settings and header; refuse being given both."""
    if cookie is not None and not isinstance(cookie, CookieSettings):
        raise ConfigError(f"cookie must be a CookieSettings, not {type(cookie).__name__}")
    if header is not None and not isinstance(header, HeaderSettings):
        raise ConfigError(
            f"header must be a HeaderSettings, like HeaderSettings({header!r}), "
            f"not {type(header).__name__}"
        )
    if cookie is not None and header is not None:
        raise ConfigError("the session id travels in a cookie or in a header, not both")
    return cookie or CookieSettings(), header


@dataclass(frozen=True)
class HeaderSettings:
    """Carry the session id in a header instead of a cookie.

    For clients that keep a token rather than cookies (mobile apps, other services), as
    Spring Session's ``HeaderHttpSessionIdResolver`` does: the client sends the id in the
    header, and a response that gives it a new id (a new session, a login) carries the id
    in the same header; a response whose client sent an id that names no session (it
    expired, or the user logged out) carries the header empty, meaning "forget it".

    Args:
        name: the header, in requests and responses (an RFC 9110 token, not one HTTP
            already uses, such as Cookie or Authorization).
    """

    name: str = "X-Session-Token"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or not set(self.name) <= TOKEN_CHARS:
            raise ConfigError(f"header name {self.name!r} is not a valid token")
        if self.name.lower() in _TAKEN:
            raise ConfigError(
                f"the session id needs a header of its own (like X-Session-Token), "
                f"not {self.name!r}"
            )

    @property
    def raw_name(self) -> bytes:
        """The name as ASGI carries it: lowercase ASCII bytes."""
        return self.name.lower().encode("ascii")

    def presented(self, values: Iterable[str]) -> list[str]:
        """Return the ids in a request's values of this header, in order.

        Several headers of the name count, and so do comma-separated values (what a proxy
        makes of them): ids never hold a comma.
        """
        return [part.strip() for value in values for part in value.split(",")]
