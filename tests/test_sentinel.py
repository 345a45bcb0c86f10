"""The Redis backend through a Sentinel-managed master, across a failover."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from redis.sentinel import Sentinel
from typer.testing import CliRunner

from sessionflow import BackendError, ManualClock, RedisBackend, SessionStore
from sessionflow._service_config import ServiceConfig
from sessionflow.cli import app as cli
from sessionflow.local_servers import RedisSentinelGroup
from sessionflow.service import VALIDATE_PATH, build_app


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


def sentinel_url(group: RedisSentinelGroup) -> str:
    """The ``redis-sentinel://`` URL of the group's master, as settings name it."""
    hosts = ",".join(f"{host}:{port}" for host, port in group.sentinels)
    return f"redis-sentinel://{hosts}/0#{RedisSentinelGroup.MASTER_NAME}"


async def test_the_service_follows_a_sentinel_failover(sentinel_group: RedisSentinelGroup) -> None:
    app = build_app(ServiceConfig(backend="redis", redis_url=sentinel_url(sentinel_group)))
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        created = await client.post("/v1/sessions", json={"attributes": {"cart": ["a"]}})
        session_id = created.json()["id"]
        update = {"id": session_id, "set": {"cart": ["a", "b"]}}
        assert (await client.post("/v1/sessions/update", json=update)).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        old_master = sentinel_group.master_port()
        await asyncio.to_thread(sentinel_group.failover)
        assert sentinel_group.master_port() != old_master

        # Every request after the failover is answered: redis-py's Sentinel pool asks the
        # sentinels for the master and leaves the connections to the demoted one.
        answers = [
            await client.post("/v1/sessions/update", json={"id": session_id, "set": {"n": i}})
            for i in range(5)
        ]
        assert [answer.status_code for answer in answers] == [200] * 5
        read = await client.post("/v1/sessions/read", json={"id": session_id})
        assert read.json()["attributes"] == {"cart": ["a", "b"], "n": 4}
        assert (await client.post(VALIDATE_PATH, json={"id": session_id})).status_code == 200


def test_a_migration_reads_its_stores_and_control_record_through_sentinels(
    sentinel_group: RedisSentinelGroup, tmp_path
) -> None:
    settings = tmp_path / "migration.toml"
    settings.write_text(
        "[migration]\n[migration.old]\n"
        f'backend = "redis"\nredis_url = "{sentinel_url(sentinel_group)}"\n'
        '[migration.new]\nbackend = "memory"\n'
    )
    result = CliRunner().invoke(cli, ["migrate", "status", "-c", str(settings)])
    assert result.exit_code == 0, result.output
    assert "off" in result.output
    validated = CliRunner().invoke(cli, ["migrate", "validate", "-c", str(settings)])
    assert validated.exit_code == 0, validated.output


def test_a_scan_across_a_failover_makes_another_pass(sentinel_group: RedisSentinelGroup) -> None:
    """The new master's SCAN cursors are not the old one's: the pass is scanned again."""
    sentinel = Sentinel(sentinel_group.sentinels, socket_timeout=2)
    master = sentinel.master_for(RedisSentinelGroup.MASTER_NAME, socket_timeout=2)
    backend = RedisBackend(master, prefix="scanfailover")
    store = SessionStore(backend)
    keys = {store.create({"n": n}).key for n in range(60)}
    assert master.wait(1, 2000) == 1
    page = backend.scan(None, count=5)
    seen = {record.key for record in page.records}
    sentinel_group.failover()
    passes, cursor = 1, page.cursor
    while cursor is not None:
        try:
            page = backend.scan(cursor, count=5)
        except BackendError:  # the connection to the demoted master is dropped once
            continue
        seen |= {record.key for record in page.records}
        position = json.loads(page.cursor) if page.cursor else {}
        passes += (position.get("node"), position.get("cursor")) == (0, 0)
        cursor = page.cursor
    assert passes == 2
    assert seen == keys
    master.close()
