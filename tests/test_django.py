"""The Django session engine, driven through the example project's test client."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from sessionflow import (
    AsyncMemoryBackend,
    AsyncSessionStore,
    ManualClock,
    RedisBackend,
    SessionStore,
)
from tests.conftest import Servers

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "django_app.py"
spec = importlib.util.spec_from_file_location("django_example", EXAMPLE)
assert spec is not None
assert spec.loader is not None
django_example = importlib.util.module_from_spec(spec)
sys.modules["django_example"] = django_example
spec.loader.exec_module(django_example)

REDIS_PORT: list[int] = []
CLOCK = ManualClock()  # the engine's stores' time: expiry tests move it


def make_store() -> SessionStore:
    return SessionStore(RedisBackend(redis.Redis(port=REDIS_PORT[0]), prefix="django"), clock=CLOCK)


def make_async_store() -> AsyncSessionStore:
    return AsyncSessionStore(AsyncMemoryBackend(), clock=CLOCK)


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


def test_a_response_that_hands_out_a_session_is_never_stored(client) -> None:
    """Vary: Cookie keys a cache by the request's cookie: the first anonymous visitor's
    response, cached under "no cookie", would give their session to the next."""
    first = client.get("/", secure=True)
    assert cookie_of(first) is not None
    assert "no-store" in first["Cache-Control"]
    again = client.get("/", secure=True)  # Django sends the same cookie again: cacheable
    assert cookie_of(again).value == client.cookies["sessionid"].value
    assert not again.has_header("Cache-Control")
    login = client.post("/login", {"user": "7"}, secure=True)  # a new key
    assert "no-store" in login["Cache-Control"]
    logout = client.post("/logout", secure=True)  # the cookie cleared
    assert cookie_of(logout).value == ""
    assert "no-store" in logout["Cache-Control"]


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


@pytest.fixture
def clock() -> ManualClock:
    """The engines' clock, caught up with the real one: Redis ends keys by real time, so a
    session given a short life by a clock still at collection time would vanish at once."""
    CLOCK.advance(max(0.0, time.time() - CLOCK.now()))
    return CLOCK


def _stored_end(key: str) -> float:
    from sessionflow.django import configured_store

    session = configured_store().get(key, touch=False)
    assert session is not None
    return session.absolute_expires_at


def test_set_expiry_seconds_ends_the_session_on_the_server_too(django_project, clock) -> None:
    """Django's database engine ends a session `set_expiry(n)` seconds after its last save;
    a stolen cookie must not outlive what the application asked for."""
    from sessionflow.django import SessionStore as Engine

    engine = Engine()
    engine["cart"] = ["laptop"]
    engine.set_expiry(60)
    engine.save()
    key = engine.session_key
    assert _stored_end(key) == clock.now() + 60
    clock.advance(50)
    later = Engine(key)
    later["cart"] = ["laptop", "mouse"]
    later.save()  # a change moves the end, as Django's database engine does
    assert _stored_end(key) == clock.now() + 60
    clock.advance(50)
    assert Engine(key)["cart"] == ["laptop", "mouse"]  # read only: the end stays
    clock.advance(11)
    assert not Engine().exists(key)
    gone = Engine(key)
    assert gone.load() == {}
    assert gone.session_key is None


def test_set_expiry_to_a_date_none_and_zero(django_project, clock) -> None:
    import datetime as dt

    from sessionflow.django import SessionStore as Engine

    engine = Engine()
    engine["a"] = 1
    engine.save()
    key = engine.session_key
    policy_end = _stored_end(key)
    moment = dt.datetime.fromtimestamp(clock.now() + 120, tz=dt.UTC)
    engine.set_expiry(moment)
    engine.save()
    assert _stored_end(key) == moment.timestamp()
    engine.set_expiry(None)  # back to the store's policy
    engine.save()
    assert _stored_end(key) == policy_end
    engine.set_expiry(0)  # a browser-session cookie; the server keeps its policy
    engine.save()
    assert _stored_end(key) == policy_end
    engine.set_expiry(dt.timedelta(days=365))  # longer than the policy: the policy's
    engine.save()
    assert _stored_end(key) == policy_end


def test_set_expiry_to_a_past_moment_ends_the_session_now(django_project, clock) -> None:
    import datetime as dt

    from sessionflow.django import SessionStore as Engine

    engine = Engine()
    engine["a"] = 1
    engine.save()
    key = engine.session_key
    engine.set_expiry(dt.datetime.fromtimestamp(clock.now() - 1, tz=dt.UTC))
    engine.save()
    assert not Engine().exists(key)
    fresh = Engine()
    fresh.set_expiry(-5)  # never stored: Django counts it as already ended
    fresh["b"] = 2
    fresh.save()
    assert fresh.session_key is None or not Engine().exists(fresh.session_key)


def test_login_keeps_the_shorter_life_set_before_it(client, clock) -> None:
    client.get("/", secure=True)
    client.post("/login", {"user": "9", "remember": ""}, secure=True)
    key = client.cookies["sessionid"].value
    assert _stored_end(key) == clock.now() + django_example.UNREMEMBERED_SECONDS
    clock.advance(django_example.UNREMEMBERED_SECONDS)
    assert client.get("/whoami", secure=True).json() == {}


async def test_async_engine_set_expiry(django_project, clock) -> None:
    from sessionflow.django import SessionStore as Engine
    from sessionflow.django import configured_async_store

    engine = Engine()
    await engine.aset("a", 1)
    await engine.aset_expiry(30)
    await engine.asave()
    store = configured_async_store()
    assert store is not None
    session = await store.get(engine.session_key, touch=False)
    assert session is not None
    assert session.absolute_expires_at == clock.now() + 30
    clock.advance(30)
    assert not await engine.aexists(engine.session_key)


@pytest.mark.parametrize(
    ("expiry", "expected"),
    [
        (10**400, "ceiling"),
        (float("nan"), "ceiling"),
        (float("inf"), "ceiling"),
        ("not a date", "ceiling"),
        ([], "ceiling"),
        (True, "ceiling"),
        (-(10**400), "now"),
        (float("-inf"), "now"),
        (30, "now+30"),
        (2.5, "now+2.5"),
    ],
)
def test_odd_expiry_values_never_break_a_save(django_project, expiry, expected) -> None:
    from sessionflow._django_expiry import django_session_end

    now, ceiling = 1_000_000.0, 1_003_600.0
    want = {"ceiling": ceiling, "now": now, "now+30": now + 30, "now+2.5": now + 2.5}[expected]
    assert django_session_end(expiry, now=now, ceiling=ceiling) == want


def test_a_naive_expiry_date_is_in_djangos_time_zone(django_project) -> None:
    import datetime as dt

    from django.utils import timezone

    from sessionflow._django_expiry import django_session_end

    aware = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.get_current_timezone())
    naive = aware.replace(tzinfo=None).isoformat()
    assert django_session_end(naive, now=0.0, ceiling=1e12) == aware.timestamp()
