"""The async Redis clients sessionflow opens from a URL: a server, or a Sentinel master.

The service, the command-line jobs, the drill and the benchmarks all connect through
`redis_client`, so they share its pool, timeouts and resend rule.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sessionflow._urls import SentinelURL, is_sentinel_url, parse_sentinel_url

REDIS_POOL_SIZE = 100
REDIS_POOL_WAIT = 10.0
REDIS_SOCKET_TIMEOUT = 10.0  # a reply that never comes is an error, not a request stuck forever
REDIS_CONNECT_TIMEOUT = 3.0


def redis_client(url: str, *, socket_timeout: float = REDIS_SOCKET_TIMEOUT) -> Any:  # noqa: ANN401
    """Return an async Redis client (an async context manager that closes it) for `url`.

    A ``redis-sentinel://`` URL gives the master's client through its sentinels
    (`sentinel_master`); any other, a client of that server (`standalone_client`).
    """
    if is_sentinel_url(url):
        return sentinel_master(parse_sentinel_url(url), socket_timeout=socket_timeout)
    return standalone_client(url, socket_timeout=socket_timeout)


def _resend_once() -> Any:  # noqa: ANN401 - redis-py's Retry
    """One resend on a new connection after a connection error, none after a timeout."""
    from redis.asyncio.retry import Retry  # noqa: PLC0415
    from redis.backoff import NoBackoff  # noqa: PLC0415
    from redis.exceptions import ConnectionError as RedisConnectionError  # noqa: PLC0415

    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


@asynccontextmanager
async def sentinel_master(
    address: SentinelURL, *, socket_timeout: float = REDIS_SOCKET_TIMEOUT
) -> AsyncIterator[Any]:
    """Yield a client of the master the sentinels name; close it and theirs on exit.

    redis-py's Sentinel pool asks the sentinels for the master as it hands out connections
    and leaves those to a demoted one, so requests follow a failover; the one resend after
    a connection error covers a master that restarted in place.
    """
    from redis.asyncio.sentinel import Sentinel  # noqa: PLC0415

    timeouts = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, REDIS_CONNECT_TIMEOUT),
    }
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(address.sentinels),
        sentinel_kwargs={**timeouts, "password": address.sentinel_password},
        **timeouts,
    )
    master = sentinel.master_for(
        address.master,
        db=address.db,
        username=address.username,
        password=address.password,
        ssl=address.tls,
        retry=_resend_once(),
    )
    try:
        yield master
    finally:
        await master.aclose()
        for client in sentinel.sentinels:
            await client.aclose()


def standalone_client(url: str, *, socket_timeout: float = REDIS_SOCKET_TIMEOUT) -> Any:  # noqa: ANN401
    """Return an async Redis client whose pool waits for a free connection when all are busy.

    redis-py's default pool raises "Too many connections" at its limit; a burst of
    concurrent requests should queue for `REDIS_POOL_WAIT` seconds instead. Replies and
    connections time out too, so a Redis that stops answering fails a request with
    `BackendError` instead of holding it forever.

    A command that fails with a connection error (a pooled connection Redis closed: a
    restart, a failover, an idle timeout) is sent once more on a new connection. Every
    write sessionflow sends is a compare-and-set script, so a resend of one that had
    landed is refused, never applied twice. A timeout is not retried.
    """
    from redis.asyncio import BlockingConnectionPool, Redis  # noqa: PLC0415

    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_POOL_SIZE,
        timeout=REDIS_POOL_WAIT,
        socket_timeout=socket_timeout,
        socket_connect_timeout=min(socket_timeout, REDIS_CONNECT_TIMEOUT),
        retry=_resend_once(),
    )
    return Redis.from_pool(pool)
