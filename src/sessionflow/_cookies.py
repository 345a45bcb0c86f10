"""The session cookie: how it is written and how a Cookie header is read. No I/O."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from sessionflow._errors import ConfigError

TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
"""The characters of an RFC 9110 token: a cookie's or a header's name."""
# RFC 6265: a path is any character but controls and ';'; a domain is a host name (a
# leading dot is allowed and ignored). Both are written into Set-Cookie as they are.
_PATH = re.compile(r"/[\x20-\x3a\x3c-\x7e]*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"\.?(?:{_LABEL}\.)*{_LABEL}")


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
        persistent: give the cookie a Max-Age of what its session has left (the store's
            absolute timeout when it is new); False makes it a browser-session cookie.
    """

    name: str = "session"
    path: str = "/"
    domain: str | None = None
    secure: bool = True
    httponly: bool = True
    samesite: Literal["lax", "strict", "none"] = "lax"
    persistent: bool = True

    def __post_init__(self) -> None:
        if not self.name or not set(self.name) <= TOKEN_CHARS:
            raise ConfigError(f"cookie name {self.name!r} is not a valid token")
        if self.samesite not in ("lax", "strict", "none"):
            raise ConfigError("samesite must be 'lax', 'strict' or 'none'")
        if self.samesite == "none" and not self.secure:
            raise ConfigError("samesite='none' requires secure=True (browsers reject it)")
        if not isinstance(self.path, str) or not _PATH.fullmatch(self.path):
            raise ConfigError(
                "cookie path must start with '/' and hold no ';' or control characters, "
                f"not {self.path!r}"
            )
        if self.domain is not None and (
            not isinstance(self.domain, str) or not _DOMAIN.fullmatch(self.domain)
        ):
            raise ConfigError(
                "cookie domain must be a host name like example.com (None keeps the cookie "
                f"host-only), not {self.domain!r}"
            )
        self._check_prefix()

    def _check_prefix(self) -> None:
        """Refuse a ``__Host-`` or ``__Secure-`` name whose attributes browsers would reject.

        Browsers drop such a cookie without a word, so every response would start a new
        session. (They match the prefixes case-insensitively.)
        """
        lowered = self.name.lower()
        if lowered.startswith(("__host-", "__secure-")) and not self.secure:
            raise ConfigError(f"a cookie named {self.name!r} needs secure=True")
        if lowered.startswith("__host-") and (self.path != "/" or self.domain is not None):
            raise ConfigError(
                f"a cookie named {self.name!r} needs path='/' and no domain (host-only)"
            )

    def for_session(
        self, session_id: str | None, remaining: float, *, persistent: bool | None = None
    ) -> str:
        """Return the Set-Cookie header giving the client `session_id`, or clearing it (None).

        A persistent cookie lives `remaining` seconds (what its session has left, at
        least 1); otherwise it is a browser-session cookie. `persistent` decides for this
        one session (None: the settings' `persistent`).
        """
        if session_id is None:
            return self.header("", 0)
        if persistent is None:
            persistent = self.persistent
        max_age = max(1, math.ceil(remaining)) if persistent else None
        return self.header(session_id, max_age)

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
    for name, value in _pairs(header):
        cookies.setdefault(name, value)
    return cookies


def cookie_values(headers: list[str], name: str) -> list[str]:
    """Return every value of cookie `name` in `headers` (Cookie header values), in order.

    A browser sends several when cookies of one name were set for several paths or a
    parent domain, the most specific path first.
    """
    return [value for header in headers for found, value in _pairs(header) if found == name]


def _pairs(header: str) -> Iterator[tuple[str, str]]:
    for chunk in header.split(";"):
        name, separator, value = chunk.partition("=")
        name, value = name.strip(), value.strip()
        if not separator or not name:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':  # noqa: PLR2004
            value = value[1:-1]
        yield name, value
