"""The Django session engine, driven through the example project's test client."""

from __future__ import annotations

import importlib.util
import sys
import threading
from pathlib import Path

import pytest
import redis

from sessionflow import AsyncMemoryBackend, AsyncSessionStore, RedisBackend, SessionStore
from tests.conftest import Servers

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_app.py"
spec = importlib.util.spec_from_file_location("django_example", EXAMPLE)
assert spec is not None
assert spec.loader is not None
django_example = importlib.util.module_from_spec(spec)
sys.modules["django_example"] = django_example
spec.loader.exec_module(django_example)

REDIS_PORT: list[int] = []


def make_store() -> SessionStore:
    return SessionStore(RedisBackend(redis.Redis(port=REDIS_PORT[0]), prefix="django"))


def make_async_store() -> AsyncSessionStore:
    return AsyncSessionStore(AsyncMemoryBackend())


@pytest.fixture(scope="module")
def django_project(servers: Servers):
    REDIS_PORT.append(servers.redis.port)
    django_example.configure(f"{__name__}.make_store", f"{__name__}.make_async_store")
    from django.test import Client

    return Client


@pytest.fixture
def client(django_project):
    return django_project(HTTP_HOST="testserver", secure=True)


def cookie_of(response):
    return response.cookies.get("sessionid")


def test_counter_with_secure_cookie(client) -> None:
    assert client.get("/", secure=True).json() == {"views": 1}
    second = client.get("/", secure=True)
    assert second.json() == {"views": 2}
    cookie = cookie_of(client.get("/", secure=True))
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert len(cookie.value) == 43  # a sessionflow id: 256 bits


def test_login_cycles_the_key_and_binds_the_user(client) -> None:
    from sessionflow.django import configured_store

    client.get("/", secure=True)
    before = client.cookies["sessionid"].value
    client.post("/login", {"user": "42"}, secure=True)
    after = client.cookies["sessionid"].value
    assert before != after
    store = configured_store()
    assert store.get(before) is None
    assert client.get("/whoami", secure=True).json() == {"views": 1, "_auth_user_id": "42"}
    assert [s.user_id for s in store.list_user("42")] == ["42"]


def test_logout_everywhere(django_project) -> None:
    laptop = django_project(HTTP_HOST="testserver")
    phone = django_project(HTTP_HOST="testserver")
    laptop.post("/login", {"user": "7"}, secure=True)
    phone.post("/login", {"user": "7"}, secure=True)
    from sessionflow.django import configured_store

    assert len(configured_store().list_user("7")) == 2
    laptop.post("/logout?everywhere=1", secure=True)
    assert phone.get("/whoami", secure=True).json() == {}
    assert configured_store().list_user("7") == []


def test_unknown_and_malformed_keys_start_a_new_session(django_project) -> None:
    from sessionflow import new_session_id

    for planted in (new_session_id(), "short", "x" * 43):
        client = django_project(HTTP_HOST="testserver")
        client.cookies["sessionid"] = planted
        response = client.get("/", secure=True)
        assert response.json() == {"views": 1}
        assert response.cookies["sessionid"].value != planted


def _two_concurrent_writes(django_project, paths: list[str]):
    barrier = threading.Barrier(2)
    django_example.BEFORE_WRITE.append(lambda: barrier.wait(timeout=10))
    try:
        first = django_project(HTTP_HOST="testserver")
        first.get("/", secure=True)
        key = first.cookies["sessionid"].value
        results = {}

        def post(path: str) -> None:
            own = django_project(HTTP_HOST="testserver", raise_request_exception=False)
            own.cookies["sessionid"] = key
            results[path] = own.post(path, secure=True)

        threads = [threading.Thread(target=post, args=(path,)) for path in paths]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        django_example.BEFORE_WRITE.clear()
    return results, first.get("/whoami", secure=True).json()


def test_concurrent_requests_changing_different_keys_both_land(django_project) -> None:
    results, final = _two_concurrent_writes(django_project, ["/prefs/theme/dark", "/prefs/lang/fr"])
    assert [r.status_code for r in results.values()] == [200, 200]
    assert final == {"views": 1, "theme": "dark", "lang": "fr"}


def test_a_lost_same_key_race_is_refused_not_dropped(django_project) -> None:
    results, final = _two_concurrent_writes(
        django_project, ["/prefs/theme/dark", "/prefs/theme/light"]
    )
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 400]  # Django answers a failed save with SessionInterrupted
    (winner,) = [path for path, r in results.items() if r.status_code == 200]
    assert final["theme"] == winner.rsplit("/", 1)[1]


async def test_async_engine_methods(django_project) -> None:
    from sessionflow.django import SessionStore as Engine

    engine = Engine()
    await engine.aset("cart", ["laptop-123"])
    await engine.asave()
    key = engine.session_key
    assert key is not None
    assert await engine.aexists(key)
    again = Engine(key)
    assert await again.aget("cart") == ["laptop-123"]
    await again.acycle_key()
    assert again.session_key != key
    assert not await engine.aexists(key)
    assert await Engine(again.session_key).aget("cart") == ["laptop-123"]
    await again.adelete()
    assert not await again.aexists(again.session_key)
    await Engine.aclear_expired()


def test_sync_engine_contract(django_project) -> None:
    from django.contrib.sessions.backends.base import UpdateError

    from sessionflow.django import SessionStore as Engine

    engine = Engine()
    engine["a"] = 1
    engine.save()
    key = engine.session_key
    assert Engine().exists(key)
    assert not Engine().exists("not-a-key")
    loaded = Engine(key)
    assert loaded["a"] == 1
    loaded.delete()
    assert not Engine().exists(key)
    stale = Engine(key)
    assert stale.load() == {}
    assert stale.session_key is None  # a dead key is dropped, never adopted
    engine["a"] = 2
    with pytest.raises(UpdateError):
        engine.save()
    Engine.clear_expired()
