"""The Flask integration, driven through the example app's test client."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest
import redis
from flask import Flask, jsonify, request, session

from sessionflow import (
    ConfigError,
    CookieSettings,
    HeaderSettings,
    ManualClock,
    MemoryBackend,
    RedisBackend,
    SessionStore,
    new_session_id,
)
from sessionflow.flask import FlaskSession, SessionflowInterface
from tests.conftest import Servers

HTTPS = "https://localhost"
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flask_app.py"
spec = importlib.util.spec_from_file_location("flask_example", EXAMPLE)
assert spec is not None
assert spec.loader is not None
flask_example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(flask_example)


@pytest.fixture(params=["memory", "redis"])
def store(request, servers: Servers, prefix: str):
    if request.param == "memory":
        yield SessionStore(MemoryBackend())
        return
    client = redis.Redis(port=servers.redis.port)
    yield SessionStore(RedisBackend(client, prefix=prefix))
    client.close()


def session_cookie(response) -> str | None:
    for header in response.headers.getlist("Set-Cookie"):
        if header.startswith("session="):
            return header
    return None


def test_counter_and_cookie_flags(store) -> None:
    client = flask_example.create_app(store).test_client()
    first = client.get("/", base_url=HTTPS)
    second = client.get("/", base_url=HTTPS)
    assert first.json == {"views": 1}
    assert second.json == {"views": 2}
    cookie = session_cookie(first)
    assert cookie is not None
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert session_cookie(second) is None
    assert "Cookie" in second.headers["Vary"]
    # The response that issues the cookie is never stored by a shared cache (Vary alone
    # would let the first anonymous visitor's session be served to the next); the
    # session's later pages keep the application's caching.
    assert "no-store" in first.headers["Cache-Control"]
    assert "Cache-Control" not in second.headers


def test_of_several_session_cookies_the_first_live_one_is_used(store) -> None:
    client = flask_example.create_app(store).test_client()
    header = session_cookie(client.get("/", base_url=HTTPS))
    assert header is not None
    live = header.split(";")[0].split("=", 1)[1]
    fresh = flask_example.create_app(store).test_client(use_cookies=False)  # our header only
    response = fresh.get(
        "/", base_url=HTTPS, headers={"Cookie": f"session={new_session_id()}; session={live}"}
    )
    assert response.json["views"] == 2
    assert session_cookie(response) is None


def test_reading_without_a_session_creates_nothing(store) -> None:
    client = flask_example.create_app(store).test_client()
    response = client.get("/whoami", base_url=HTTPS)
    assert response.json == {}
    assert session_cookie(response) is None


def test_login_regenerates_and_keeps_the_data(store) -> None:
    client = flask_example.create_app(store).test_client()
    first = client.get("/", base_url=HTTPS)
    before = session_cookie(first).split(";")[0].split("=", 1)[1]
    login = client.post("/login", data={"user": "ada"}, base_url=HTTPS)
    after = session_cookie(login).split(";")[0].split("=", 1)[1]
    assert before != after
    assert store.get(before) is None
    assert client.get("/whoami", base_url=HTTPS).json == {"views": 1, "user": "ada"}
    assert [s.user_id for s in store.list_user("ada")] == ["ada"]


def test_logout_everywhere(store) -> None:
    app = flask_example.create_app(store)
    laptop, phone = app.test_client(), app.test_client()
    laptop.post("/login", data={"user": "grace"}, base_url=HTTPS)
    phone.post("/login", data={"user": "grace"}, base_url=HTTPS)
    assert len(store.list_user("grace")) == 2
    response = laptop.post("/logout?everywhere=1", base_url=HTTPS)
    assert "Max-Age=0" in session_cookie(response)
    assert phone.get("/whoami", base_url=HTTPS).json == {}
    assert store.list_user("grace") == []


def _two_concurrent_writes(store, paths: list[str]):
    barrier = threading.Barrier(2)
    app = flask_example.create_app(store, before_write=lambda: barrier.wait(timeout=10))
    client = app.test_client()
    client.get("/", base_url=HTTPS)
    cookie = client.get_cookie("session", domain="localhost").value
    results = {}

    def post(path: str) -> None:
        own = app.test_client()
        own.set_cookie("session", cookie, domain="localhost")
        results[path] = own.post(path, base_url=HTTPS)

    threads = [threading.Thread(target=post, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, client.get("/whoami", base_url=HTTPS).json


def test_concurrent_requests_changing_different_keys_both_land(store) -> None:
    results, final = _two_concurrent_writes(store, ["/prefs/theme/dark", "/prefs/lang/fr"])
    assert [r.status_code for r in results.values()] == [200, 200]
    assert final == {"views": 1, "theme": "dark", "lang": "fr"}


def test_a_lost_same_key_race_answers_409(store) -> None:
    results, final = _two_concurrent_writes(store, ["/prefs/theme/dark", "/prefs/theme/light"])
    statuses = sorted(r.status_code for r in results.values())
    assert statuses == [200, 409]
    (winner,) = [path for path, r in results.items() if r.status_code == 200]
    assert final["theme"] == winner.rsplit("/", 1)[1]
    (loser,) = [r for r in results.values() if r.status_code == 409]
    assert b"session not saved" in loser.data


def test_a_login_cookie_lives_as_long_as_the_session_left() -> None:
    clock = ManualClock()
    client = flask_example.create_app(SessionStore(MemoryBackend(), clock=clock)).test_client()
    client.get("/", base_url=HTTPS)
    clock.advance(1000)
    cookie = session_cookie(client.post("/login", data={"user": "ada"}, base_url=HTTPS))
    assert cookie is not None
    assert "Max-Age=42200" in cookie  # the policy's 12 hours ran from the session's creation


def test_a_login_without_remember_me_ends_on_the_server_and_in_the_browser() -> None:
    clock = ManualClock()
    store = SessionStore(MemoryBackend(), clock=clock)
    client = flask_example.create_app(store).test_client()
    client.get("/", base_url=HTTPS)
    login = client.post("/login", data={"user": "ada", "remember": "0"}, base_url=HTTPS)
    cookie = session_cookie(login)
    assert cookie is not None
    assert f"Max-Age={flask_example.UNREMEMBERED_SECONDS}" in cookie
    again = client.get("/whoami", base_url=HTTPS)
    assert again.json == {"user": "ada", "views": 1}
    assert session_cookie(again) is None  # the end did not move again
    clock.advance(1000)
    assert client.get("/whoami", base_url=HTTPS).json == {"user": "ada", "views": 1}
    clock.advance(flask_example.UNREMEMBERED_SECONDS - 1000)  # idle only 800 s: the end
    assert client.get("/whoami", base_url=HTTPS).json == {}


def test_the_id_can_travel_in_a_header_for_api_clients(store) -> None:
    app = flask_example.create_app(store, header=HeaderSettings())
    client = app.test_client(use_cookies=False)
    first = client.get("/", base_url=HTTPS)
    token = first.headers["X-Session-Token"]
    assert len(token) == 43
    assert session_cookie(first) is None
    assert "no-store" in first.headers["Cache-Control"]
    assert first.headers["Vary"] == "X-Session-Token"
    again = client.get("/", base_url=HTTPS, headers={"X-Session-Token": token})
    assert again.json == {"views": 2}
    assert "X-Session-Token" not in again.headers
    login = client.post(
        "/login", data={"user": "ada"}, base_url=HTTPS, headers={"X-Session-Token": token}
    )
    fresh = login.headers["X-Session-Token"]
    assert fresh != token
    assert store.get(token) is None
    stale = client.get("/whoami", base_url=HTTPS, headers={"X-Session-Token": token})
    assert stale.json == {}
    assert stale.headers["X-Session-Token"] == ""  # forget it
    planted = new_session_id()
    unknown = client.get("/", base_url=HTTPS, headers={"X-Session-Token": planted})
    assert unknown.headers["X-Session-Token"] not in (planted, "")
    out = client.post("/logout", base_url=HTTPS, headers={"X-Session-Token": fresh})
    assert out.headers["X-Session-Token"] == ""
    assert store.list_user("ada") == []


def test_a_cookie_and_a_header_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="not both"):
        SessionflowInterface(
            SessionStore(MemoryBackend()), CookieSettings(), header=HeaderSettings()
        )


def _permanent_app(store: SessionStore) -> Flask:
    """An app that sets ``session.permanent`` on every request, a common Flask idiom."""
    app = Flask(__name__)
    app.session_interface = SessionflowInterface(store)

    @app.before_request
    def make_permanent() -> None:
        session.permanent = request.args.get("remember", "1") == "1"

    @app.get("/health")
    def health():
        return "ok"

    @app.post("/login")
    def login():
        assert isinstance(session, FlaskSession)
        session.regenerate(user_id="ada")
        return "in"

    @app.get("/permanent")
    def permanent():
        return jsonify(permanent=session.permanent, data=dict(session))

    return app


def test_setting_permanent_on_every_request_creates_no_sessions() -> None:
    """Flask-Session stores a session for every visitor of such an app (health checks
    included); setting ``permanent`` alone creates nothing here."""
    backend = MemoryBackend()
    client = _permanent_app(SessionStore(backend)).test_client()
    for _ in range(3):
        response = client.get("/health", base_url=HTTPS)
        assert session_cookie(response) is None
    assert client.get("/permanent", base_url=HTTPS).json == {"permanent": True, "data": {}}
    assert backend.scan().records == []


def test_permanent_decides_whether_the_cookie_outlives_the_browser() -> None:
    store = SessionStore(MemoryBackend())
    client = _permanent_app(store).test_client()
    remembered = session_cookie(client.post("/login", base_url=HTTPS))
    assert remembered is not None
    assert "Max-Age=" in remembered
    assert client.get("/permanent", base_url=HTTPS).json["permanent"] is True
    forgetful = _permanent_app(store).test_client()
    once = session_cookie(forgetful.post("/login?remember=0", base_url=HTTPS))
    assert once is not None
    assert "Max-Age" not in once  # a browser-session cookie
    state = forgetful.get("/permanent?remember=0", base_url=HTTPS)
    assert state.json == {"permanent": False, "data": {"_permanent": False}}
    assert session_cookie(state) is None  # unchanged: not saved, not re-sent


def test_session_clear_logs_out_as_in_flasks_tutorial(store) -> None:
    """Flask's tutorial logs out with ``session.clear()``: the stored session must end with
    it, not stay behind empty (alive, and still listed under its user)."""
    app = Flask(__name__)
    app.session_interface = SessionflowInterface(store)

    @app.post("/login")
    def login():
        assert isinstance(session, FlaskSession)
        session.regenerate(user_id="lin")
        session["user"] = "lin"
        return "in"

    @app.post("/logout")
    def logout():
        session.clear()
        if request.args.get("flash"):
            session["flash"] = "logged out"  # a write after it: a new, anonymous session
        return "out"

    client = app.test_client()
    issued = session_cookie(client.post("/login", base_url=HTTPS))
    assert issued is not None
    old_id = issued.split(";")[0].split("=", 1)[1]
    out = client.post("/logout", base_url=HTTPS)
    assert "Max-Age=0" in session_cookie(out)
    assert store.get(old_id) is None
    assert store.list_user("lin") == []
    client.post("/login", base_url=HTTPS)
    flashed = session_cookie(client.post("/logout?flash=1", base_url=HTTPS))
    assert flashed is not None
    new_id = flashed.split(";")[0].split("=", 1)[1]
    fresh = store.get(new_id)
    assert fresh is not None
    assert fresh.to_dict() == {"flash": "logged out"}
    assert fresh.user_id is None
    assert store.list_user("lin") == []
