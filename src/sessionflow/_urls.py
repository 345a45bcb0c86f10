"""Checks of the store URLs a setting names, and their redaction for messages.

A URL is checked when the settings are read, so a typo is a one-line `ConfigError` when the
service, a migration command or the tier starts, not a traceback on its first connection.
Redis URLs go through redis-py's own parser, the one the client will use.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from sessionflow._errors import ConfigError


def redact(url: str) -> str:
    """Hide a URL's credentials (``redis://:secret@host`` -> ``redis://***@host``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rsplit("@", 1)[-1] if "@" in url else url
    if not parts.netloc or "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"***@{host}"))


def check_redis_url(setting: str, url: str) -> None:
    """Raise `ConfigError` unless `url` is a Redis URL redis-py can connect with.

    The scheme (``redis://``, ``rediss://``, ``unix://``), the port, the IPv6 brackets and
    the query options are redis-py's checks; this adds a host for TCP and a numeric
    database, which redis-py would otherwise ignore and connect to database 0.
    """
    try:
        from redis.connection import parse_url  # noqa: PLC0415 - the redis extra
    except ImportError:
        return  # opening the store says which extra is missing
    try:
        options = parse_url(url)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"{setting} {redact(url)!r}: {exc}") from exc
    if "path" not in options and "host" not in options:
        raise ConfigError(f"{setting} {redact(url)!r}: names no host")
    database = urlsplit(url).path.strip("/")
    if database and "path" not in options and not database.isdigit():
        raise ConfigError(f"{setting} {redact(url)!r}: the database must be a number")


def check_endpoint_url(setting: str, url: str) -> None:
    """Raise `ConfigError` unless `url` is an ``http(s)://host[:port]`` endpoint."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"{setting} {redact(url)!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{setting} {redact(url)!r}: use http://host:port or https://host")
    if port == 0:
        raise ConfigError(f"{setting} {redact(url)!r}: port 0 is not a port")
