"""The service's Redis client after Redis restarts or fails over under it.

A restart leaves every pooled connection dead; the first command on one fails with
"Connection closed by server". The client resends a command once on a new connection
after a connection error (never after a timeout: a Redis that stopped answering fails the
request within the socket timeout), which is safe for sessionflow's writes: each is a
compare-and-set script, so a resend of one that did land is refused, never applied twice.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sessionflow import (
    AsyncMemoryBackend,
    AsyncMigratingBackend,
    AsyncRedisBackend,
    AsyncSessionStore,
    BackendError,
    ManualClock,
    SessionExists,
    Stage,
)
from sessionflow._async.control import AsyncMemoryControlPlane
from sessionflow._async.redis_control import AsyncRedisControlPlane
from sessionflow._redis_clients import redis_client
from sessionflow._redis_failures import leaked_by_redis_py
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


def _defined_in(module: str, source: str, **names: object) -> Any:
    """Define the function in `source` as if in `module` (its frames then name it)."""
    namespace: dict[str, Any] = {"__name__": module, **names}
    exec(source, namespace)
    return namespace["run"]


def _raised(innermost: str, error: BaseException) -> BaseException:
    """What escapes when redis-py's connection code calls into `innermost`, which fails."""
    inner = _defined_in(innermost, "def run():\n    raise error\n", error=error)
    outer = _defined_in("redis.asyncio.connection", "def run():\n    inner()\n", inner=inner)
    try:
        outer()
    except BaseException as exc:
        return exc
    raise AssertionError("nothing was raised")


@pytest.mark.parametrize(
    ("innermost", "error", "leaked"),
    [
        ("redis.asyncio.connection", AttributeError("'NoneType' has no 'writelines'"), True),
        ("asyncio.selector_events", TypeError("'NoneType' object is not callable"), True),
        ("redis.asyncio.connection", ValueError("not a connection failure"), False),
        ("sessionflow._codec", AttributeError("a bug of ours, called from redis-py"), False),
    ],
)
def test_which_errors_count_as_connection_failures_redis_py_let_through(
    innermost: str, error: BaseException, leaked: bool
) -> None:
    assert leaked_by_redis_py(_raised(innermost, error)) is leaked
    assert not leaked_by_redis_py(AttributeError("raised here, in no redis-py frame"))


class _ClosedUnderTheCommand:
    """A client whose every call fails the way redis-py 8.1 does when a connection is
    closed while it connects (seen while a Cluster's slots move)."""

    def __getattr__(self, name: str) -> Any:
        return _defined_in(
            "redis.asyncio.connection",
            "async def run(*args, **kwargs):\n    None.writelines\n",
        )

    def register_script(self, _script: str) -> Any:
        return self.__getattr__("script")

    def get_connection_kwargs(self) -> dict[str, Any]:
        return {}


async def test_a_leaked_connection_failure_is_a_backend_error_and_the_fleet_keeps_its_stage() -> (
    None
):
    backend = AsyncRedisBackend(_ClosedUnderTheCommand())
    with pytest.raises(BackendError, match="the connection failed under the command"):
        await backend.get("0" * 64)
    control = AsyncRedisControlPlane(_ClosedUnderTheCommand())
    with pytest.raises(BackendError, match="control plane unreachable: the connection failed"):
        await control.read_stage()
    clock = ManualClock(start=0.0)
    memory = AsyncMemoryControlPlane(Stage.LIVE)
    migrating = AsyncMigratingBackend(
        AsyncMemoryBackend(), AsyncMemoryBackend(), memory, stage_ttl=1, clock=clock
    )
    assert await migrating.stage() is Stage.LIVE
    migrating.control = control  # the control plane's connection now fails under it
    clock.advance(2)
    assert await migrating.stage() is Stage.LIVE
    assert migrating.stats.stage_read_errors == 1


async def test_a_scan_across_a_restart_makes_another_pass() -> None:
    """A SCAN cursor is good only on the instance that gave it: after a restart (here
    with the data reloaded from its append-only file) the pass is scanned again."""
    with RedisServer(extra_args=("--appendonly", "yes")) as server:
        async with redis_client(server.url) as client:
            backend = AsyncRedisBackend(client)
            store = AsyncSessionStore(backend)
            keys = {(await store.create({"n": n})).key for n in range(60)}
            seen: set[str] = set()
            page = await backend.scan(None, count=5)
            seen |= {record.key for record in page.records}
            server.restart()
            passes, cursor = 1, page.cursor
            while cursor is not None:
                page = await backend.scan(cursor, count=5)
                seen |= {record.key for record in page.records}
                position = json.loads(page.cursor) if page.cursor else {}
                passes += (position.get("node"), position.get("cursor")) == (0, 0)
                cursor = page.cursor
            assert passes == 2
            assert seen == keys
