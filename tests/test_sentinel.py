"""The Redis backend through a Sentinel-managed master, across a failover."""

from __future__ import annotations

import pytest
from redis.sentinel import Sentinel

from sessionflow import BackendError, ManualClock, RedisBackend, SessionStore
from sessionflow.local_servers import RedisSentinelGroup


@pytest.fixture(scope="module")
def sentinel_group():
    with RedisSentinelGroup() as group:
        yield group


def test_sessions_survive_a_sentinel_failover(sentinel_group: RedisSentinelGroup) -> None:
    sentinel = Sentinel(sentinel_group.sentinels, socket_timeout=2)
    master = sentinel.master_for(RedisSentinelGroup.MASTER_NAME, socket_timeout=2)
    store = SessionStore(RedisBackend(master), clock=ManualClock())
    session = store.create({"cart": ["laptop-123"]}, user_id="sentinel-user")
    session["cart"].append("mouse-456")
    store.save(session)
    assert master.wait(1, 2000) == 1  # the replica has the writes before the failover

    old_port = sentinel.discover_master(RedisSentinelGroup.MASTER_NAME)[1]
    sentinel_group.failover()
    assert sentinel.discover_master(RedisSentinelGroup.MASTER_NAME)[1] != old_port

    loaded = _retry_get(store, session.id)
    assert loaded is not None
    assert loaded["cart"] == ["laptop-123", "mouse-456"]
    loaded["step"] = 2
    assert store.save(loaded)
    assert [s.handle for s in store.list_user("sentinel-user")] == [session.key]
    master.close()


def _retry_get(store: SessionStore, session_id: str):
    # The connection to the demoted master is dropped once; redis-py's Sentinel client
    # then asks the sentinel again. One retry covers it.
    for _ in range(20):
        try:
            return store.get(session_id)
        except BackendError:
            continue
    raise AssertionError("the store never reached the new master")
