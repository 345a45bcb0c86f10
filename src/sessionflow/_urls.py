"""Checks of the store URLs a setting names, and their redaction for messages.

A URL is checked when the settings are read, so a typo is a one-line `ConfigError` when the
service, a migration command or the tier starts, not a traceback on its first connection.
Redis URLs go through redis-py's own parser, the one the client will use.

A Sentinel-managed Redis is named the way Lettuce (Spring's Redis client) names it:
``redis-sentinel://[[user]:password@]host[:port][,host[:port]...][/db]#master``, with
``rediss-sentinel://`` for TLS to the master, the sentinels' port 26379 by default, and
``?sentinel_password=`` when the sentinels require one of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from sessionflow._errors import ConfigError

SENTINEL_SCHEMES = ("redis-sentinel", "rediss-sentinel")
SENTINEL_PORT = 26379


@dataclass(frozen=True)
class SentinelURL:
    """The parts of a ``redis-sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def is_sentinel_url(url: str) -> bool:
    """Tell whether `url` names a Sentinel-managed master (``redis-sentinel://``)."""
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url: str, setting: str = "redis_url") -> SentinelURL:
    """Split a ``redis-sentinel://`` URL; `ConfigError` naming `setting` if it is malformed."""

    def refuse(reason: str) -> ConfigError:
        return ConfigError(f"{setting} {redact(url)!r}: {reason}")

    parts = urlsplit(url)
    if parts.scheme.lower() not in SENTINEL_SCHEMES:
        raise refuse(f"use {' or '.join(f'{scheme}://' for scheme in SENTINEL_SCHEMES)}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    sentinels = tuple(_sentinel_address(host, refuse) for host in hosts.split(","))
    if not parts.fragment:
        raise refuse("name the master after '#' (redis-sentinel://host:26379/0#mymaster)")
    database = parts.path.strip("/") or "0"
    if not database.isdigit():
        raise refuse("the database must be a number")
    query = parse_qs(parts.query)
    unknown = sorted(set(query) - {"sentinel_password"})
    if unknown:
        raise refuse(f"unknown option(s) {', '.join(unknown)}")
    username, _, password = userinfo.partition(":")
    return SentinelURL(
        sentinels=sentinels,
        master=unquote(parts.fragment),
        db=int(database),
        username=unquote(username) or None,
        password=unquote(password) or None,
        sentinel_password=query.get("sentinel_password", [None])[-1],
        tls=parts.scheme.lower() == "rediss-sentinel",
    )


def _sentinel_address(host: str, refuse: Callable[[str], ConfigError]) -> tuple[str, int]:
    try:
        parts = urlsplit(f"//{host}")
        port = parts.port
    except ValueError as exc:
        raise refuse(str(exc)) from exc
    if not parts.hostname:
        raise refuse("a sentinel address names no host")
    return parts.hostname, SENTINEL_PORT if port is None else port


def redact(url: str) -> str:
    """Hide a URL's credentials (``redis://:secret@host`` -> ``redis://***@host``).

    Passwords in the query (``?sentinel_password=``, redis-py's ``?password=``) too.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rsplit("@", 1)[-1] if "@" in url else url
    if parts.netloc and "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
    if "password" in parts.query:
        options = (option.partition("=") for option in parts.query.split("&"))
        parts = parts._replace(
            query="&".join(
                f"{name}={'***' if 'password' in name else value}" if sep else name
                for name, sep, value in options
            )
        )
    return urlunsplit(parts)


def check_redis_url(setting: str, url: str, *, cluster: bool = False) -> None:
    """Raise `ConfigError` unless `url` is a Redis URL redis-py can connect with.

    The scheme (``redis://``, ``rediss://``, ``unix://``), the port, the IPv6 brackets and
    the query options are redis-py's checks; this adds a host for TCP and a numeric
    database, which redis-py would otherwise ignore and connect to database 0. A
    ``redis-sentinel://`` URL is checked by `parse_sentinel_url`.
    """
    if is_sentinel_url(url):
        if cluster:
            raise ConfigError(f"{setting} {redact(url)!r}: a Cluster has no sentinels")
        parse_sentinel_url(url, setting)
        return
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


def check_store_urls(backend: str, redis_url: str, dynamodb_endpoint: str | None) -> None:
    """Check the URLs a store's settings name: its Redis (for a Redis backend), its endpoint."""
    if backend in ("redis", "redis-cluster"):
        check_redis_url("redis_url", redis_url, cluster=backend == "redis-cluster")
    if dynamodb_endpoint is not None:
        check_endpoint_url("dynamodb_endpoint", dynamodb_endpoint)


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
