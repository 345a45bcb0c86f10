"""The service's Redis client after Redis restarts or fails over under it.

A restart leaves every pooled connection dead; the first command on one fails with
"Connection closed by server". The client resends a command once on a new connection
after a connection error (never after a timeout: a Redis that stopped answering fails the
request within the socket timeout), which is safe for sessionflow's writes: each is a
compare-and-set script, so a resend of one that did land is refused, never applied twice.
"""

from __future__ import annotations

import pytest

from sessionflow import AsyncRedisBackend, AsyncSessionStore, SessionExists
from sessionflow._redis_clients import redis_client
from sessionflow.local_servers import RedisServer


async def test_the_first_requests_after_a_redis_restart_succeed() -> None:
    with RedisServer() as server:
        async with redis_client(server.url) as client:
            store = AsyncSessionStore(AsyncRedisBackend(client))
            before = await store.create({"cart": ["a"]})  # leaves a connection in the pool
            server.restart()  # empty: persistence is off
            after = await store.create({"cart": ["b"]})
            after["cart"] = ["b", "c"]
            assert await store.save(after)
            assert await store.get(before.id) is None
            read = await store.get(after.id)
            assert read is not None
            assert read["cart"] == ["b", "c"]
            assert await store.delete(after.id)


async def test_a_resent_create_that_had_landed_is_refused_not_applied_twice() -> None:
    with RedisServer() as server:
        async with redis_client(server.url) as client:
            backend = AsyncRedisBackend(client)
            store = AsyncSessionStore(backend)
            session = await store.create({"cart": ["a"]})
            record = await backend.get(session.key)
            assert record is not None
            with pytest.raises(SessionExists):
                await backend.create(record)
