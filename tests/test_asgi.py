"""The ASGI middleware driven through real Starlette and FastAPI apps."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Annotated, Any, Self

import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.middleware.sessions import SessionMiddleware as StarletteSessions
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from sessionflow import (
    AsyncInstrumentedBackend,
    AsyncMemoryBackend,
    AsyncSessionStore,
    BackendError,
    BackendMetrics,
    ConfigError,
    ManualClock,
    SessionNotFound,
    SessionPolicy,
    new_session_id,
)
from sessionflow.asgi import (
    SESSION_ENDED_CLOSE_CODE,
    CookieSettings,
    HeaderSettings,
    RequestSession,
    SessionMiddleware,
    parse_cookie_header,
    request_session,
)
from sessionflow.local_servers import free_port

BASE = "https://testserver"


async def cached(request):
    """A page with the Cache-Control the query asks for."""
    session = await request_session(request.scope).get()
    return PlainTextResponse(
        f"{len(session)}", headers={"cache-control": request.query_params["cc"]}
    )


def make_app(
    store: AsyncSessionStore, barrier: asyncio.Barrier | None = None, **settings: Any
) -> SessionMiddleware:
    async def visit(request):
        session = await request_session(request.scope).get()
        session["views"] = session.get("views", 0) + 1
        return JSONResponse({"views": session["views"]})

    async def peek(request):
        session = await request_session(request.scope).load()
        return JSONResponse({"has": session is not None, "data": session and session.to_dict()})

    async def static(_request):
        return PlainTextResponse("the same for everyone")

    async def negotiated(request):
        await request_session(request.scope).load()
        return PlainTextResponse("hi", headers={"vary": "Accept-Encoding"})

    async def login(request):
        session = await request_session(request.scope).regenerate(
            user_id=request.query_params["user"]
        )
        return JSONResponse({"user": session.user_id})

    async def logout(request):
        everywhere = request.query_params.get("everywhere") == "1"
        await request_session(request.scope).logout(everywhere=everywhere)
        return PlainTextResponse("bye")

    async def put(request):
        session = await request_session(request.scope).get()
        if barrier is not None:
            await barrier.wait()  # both requests have read the same version
        session[request.path_params["name"]] = request.path_params["value"]
        return PlainTextResponse("ok")

    async def short(request):
        session = await request_session(request.scope).get()
        session.expire_at(request_session(request.scope).store.clock.now() + 300)
        return PlainTextResponse("short")

    routes = [
        Route("/short", short, methods=["POST"]),
        Route("/visit", visit),
        Route("/peek", peek),
        Route("/static", static),
        Route("/negotiated", negotiated),
        Route("/cached", cached),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/put/{name}/{value}", put, methods=["POST"]),
    ]
    return SessionMiddleware(Starlette(routes=routes), store=store, **settings)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def store(registry: CollectorRegistry) -> AsyncSessionStore:
    backend = AsyncInstrumentedBackend(
        AsyncMemoryBackend(), name="memory", metrics=BackendMetrics(registry)
    )
    return AsyncSessionStore(backend)


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE)


def storage_calls(registry: CollectorRegistry) -> float:
    total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("_count"):
                total += sample.value
    return total


async def test_no_session_is_created_until_the_app_asks(store, registry) -> None:
    async with client_for(make_app(store)) as client:
        response = await client.get("/peek")
    assert response.json() == {"has": False, "data": None}
    assert "set-cookie" not in response.headers
    assert storage_calls(registry) == 0


async def test_session_round_trip_with_secure_cookie_defaults(store) -> None:
    async with client_for(make_app(store)) as client:
        first = await client.get("/visit")
        second = await client.get("/visit")
    assert first.json() == {"views": 1}
    assert second.json() == {"views": 2}
    cookie = first.headers["set-cookie"]
    for flag in ("Path=/", "Secure", "HttpOnly", "SameSite=Lax", "Max-Age=43200"):
        assert flag in cookie
    assert "Domain" not in cookie
    assert "set-cookie" not in second.headers  # unchanged id: nothing to resend


async def test_a_response_that_read_the_session_varies_on_the_cookie(store) -> None:
    """A shared cache must not hand one user's page, or its Set-Cookie, to another: a
    response that looked at the session says ``Vary: Cookie`` (as Django's and Flask's do)."""
    async with client_for(make_app(store)) as client:
        created = await client.get("/visit")
        read = await client.get("/peek")
        untouched = await client.get("/static")
        merged = await client.get("/negotiated")
    assert created.headers["vary"] == "Cookie"
    assert read.headers["vary"] == "Cookie"
    assert "vary" not in untouched.headers  # never loaded: cacheable as before
    assert merged.headers.get_list("vary") == ["Accept-Encoding, Cookie"]


async def test_a_response_that_sets_the_cookie_is_never_stored_by_a_shared_cache(store) -> None:
    """``Vary: Cookie`` keys a cached response by the request's Cookie header; the first
    anonymous visitor's response (with a Set-Cookie of their new session) would be kept
    under "no Cookie" and handed, session and all, to every anonymous visitor after."""
    async with client_for(make_app(store)) as client:
        issued = await client.get("/cached", params={"cc": "public, max-age=60"})
        again = await client.get("/cached", params={"cc": "public, max-age=60"})
        said = await client.post("/logout")
        cleared = await client.get("/cached", params={"cc": "no-store"})
    assert "set-cookie" in issued.headers
    assert issued.headers.get_list("cache-control") == ["public, max-age=60, no-store"]
    assert "set-cookie" not in again.headers  # the same session: the page stays cacheable
    assert again.headers["cache-control"] == "public, max-age=60"
    assert said.headers["set-cookie"].startswith("session=;")  # clearing is not stored either
    assert said.headers["cache-control"] == "no-store"
    assert cleared.headers.get_list("cache-control") == ["no-store"]  # already there: kept


async def test_an_unknown_id_is_never_adopted(store) -> None:
    planted = new_session_id()
    async with client_for(make_app(store)) as client:
        response = await client.get("/visit", headers={"cookie": f"session={planted}"})
    issued = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    assert issued != planted
    assert await store.get(planted) is None
    assert await store.get(issued) is not None


async def test_a_stale_cookie_is_cleared(store) -> None:
    async with client_for(make_app(store)) as client:
        response = await client.get("/peek", headers={"cookie": f"session={new_session_id()}"})
    assert "Max-Age=0" in response.headers["set-cookie"]


async def test_of_several_cookies_of_the_name_the_first_live_one_is_the_session(store) -> None:
    """A dead cookie on a more specific path comes first and cannot be cleared from here."""
    async with client_for(make_app(store)) as client:
        first = await client.get("/visit")
    live = first.headers["set-cookie"].split(";")[0].split("=", 1)[1]
    dead, malformed = new_session_id(), "not-an-id"
    async with client_for(make_app(store)) as client:
        one_header = await client.get(
            "/visit", headers={"cookie": f"session={malformed}; session={dead}; session={live}"}
        )
        two_headers = await client.get(
            "/visit",
            headers=[("cookie", f"theme=dark; session={dead}"), ("cookie", f"session={live}")],
        )
    assert one_header.json() == {"views": 2}
    assert two_headers.json() == {"views": 3}
    assert "set-cookie" not in one_header.headers  # the live id is kept: nothing to clear
    assert "set-cookie" not in two_headers.headers


async def test_at_most_four_presented_ids_are_looked_up(store, registry) -> None:
    cookies = "; ".join(f"session={new_session_id()}" for _ in range(50))
    repeated = "; ".join([f"session={new_session_id()}"] * 50)
    async with client_for(make_app(store)) as client:
        response = await client.get("/peek", headers={"cookie": cookies})
        assert storage_calls(registry) == 4
        await client.get("/peek", headers={"cookie": repeated})
    assert response.json()["has"] is False
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert storage_calls(registry) == 5  # the same id fifty times: one lookup


@pytest.mark.parametrize("garbage", ["x", "a" * 43 + "!", "../../etc", "ünïcode" * 7])
async def test_malformed_cookies_never_reach_storage(store, registry, garbage: str) -> None:
    async with client_for(make_app(store)) as client:
        cookie = f"session={garbage}".encode()  # raw bytes, as a hostile client sends
        response = await client.get("/peek", headers={"cookie": cookie})
    assert response.status_code == 200
    assert response.json()["has"] is False
    assert storage_calls(registry) == 0


async def test_login_regenerates_the_id(store) -> None:
    async with client_for(make_app(store)) as client:
        await client.get("/visit")
        before = client.cookies["session"]
        response = await client.post("/login", params={"user": "ada"})
        after = client.cookies["session"]
        peek = await client.get("/peek")
    assert response.json() == {"user": "ada"}
    assert before != after
    assert await store.get(before) is None
    assert peek.json()["data"] == {"views": 1}
    assert [s.user_id for s in await store.list_user("ada")] == ["ada"]


async def test_logout_everywhere_ends_every_device(store) -> None:
    app = make_app(store)
    async with client_for(app) as laptop, client_for(app) as phone:
        await laptop.post("/login", params={"user": "ada"})
        await phone.post("/login", params={"user": "ada"})
        assert len(await store.list_user("ada")) == 2
        response = await laptop.post("/logout", params={"everywhere": "1"})
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert (await phone.get("/peek")).json()["has"] is False
    assert await store.list_user("ada") == []


async def test_concurrent_requests_changing_different_keys_both_land(store) -> None:
    app = make_app(store, barrier=asyncio.Barrier(2))
    async with client_for(app) as client:
        await client.get("/visit")
        first, second = await asyncio.gather(
            client.post("/put/theme/dark"), client.post("/put/lang/fr")
        )
        peek = await client.get("/peek")
    assert (first.status_code, second.status_code) == (200, 200)
    assert peek.json()["data"] == {"views": 1, "theme": "dark", "lang": "fr"}


async def test_a_lost_same_key_race_is_a_409_not_a_silent_loss(store) -> None:
    app = make_app(store, barrier=asyncio.Barrier(2))
    async with client_for(app) as client:
        await client.get("/visit")
        responses = await asyncio.gather(
            client.post("/put/theme/dark"), client.post("/put/theme/light")
        )
        peek = await client.get("/peek")
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 409]
    (loser,) = [r for r in responses if r.status_code == 409]
    assert "session not saved" in loser.text
    (winner,) = [r for r in responses if r.status_code == 200]
    winning_value = "dark" if winner.request.url.path.endswith("dark") else "light"
    assert peek.json()["data"]["theme"] == winning_value


def session_of(request: Request) -> RequestSession:
    return request_session(request.scope)


api = FastAPI()


@api.post("/cart/{sku}")
async def add_to_cart(
    sku: str, sessions: Annotated[RequestSession, Depends(session_of)]
) -> dict[str, list[str]]:
    session = await sessions.get()
    session["cart"] = [*session.get("cart", []), sku]
    return {"cart": session["cart"]}


async def test_fastapi_dependency(store) -> None:
    async with client_for(SessionMiddleware(api, store=store)) as client:
        await client.post("/cart/laptop-123")
        response = await client.post("/cart/mouse-456")
    assert response.json() == {"cart": ["laptop-123", "mouse-456"]}


def test_request_session_needs_the_middleware() -> None:
    with pytest.raises(ConfigError, match="SessionMiddleware"):
        request_session({"type": "http"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "bad name"},
        {"name": ""},
        {"samesite": "none", "secure": False},
        {"samesite": "x"},
        {"name": "__Host-session", "secure": False},
        {"name": "__host-session", "path": "/app"},
        {"name": "__Host-session", "domain": "example.com"},
        {"name": "__Secure-session", "secure": False},
    ],
)
def test_cookie_settings_are_validated(kwargs) -> None:
    with pytest.raises(ConfigError):
        CookieSettings(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        # written into Set-Cookie as they were: a ';' starts an attribute of its own, a
        # line break ends the header; a path not starting with '/' is ignored by browsers
        ({"domain": "example.com; SameSite=None"}, "cookie domain must be a host name"),
        ({"domain": "a\r\nSet-Cookie: x=1"}, "cookie domain must be a host name"),
        ({"domain": ""}, r"cookie domain must be a host name like example.com \(None keeps"),
        ({"domain": "exa mple.com"}, "cookie domain must be a host name"),
        ({"path": "app"}, "cookie path must start with '/'"),
        ({"path": "/app; Domain=evil.example"}, "cookie path must start with '/' and hold no"),
        ({"path": "/app\n"}, "cookie path must start with '/' and hold no"),
    ],
)
def test_cookie_path_and_domain_cannot_break_the_header(kwargs, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CookieSettings(**kwargs)


def test_a_parent_domain_and_a_sub_path_are_written_as_given() -> None:
    header = CookieSettings(domain=".example.com", path="/app/v1").header("v", None)
    assert "; Domain=.example.com;" in header
    assert "; Path=/app/v1;" in header


async def test_a_host_prefixed_cookie_is_written_the_way_browsers_accept_it(store) -> None:
    """__Host-: Secure, Path=/, no Domain; a sibling subdomain cannot toss one in."""
    app = make_app(store)
    app.cookie = CookieSettings(name="__Host-session")
    async with client_for(app) as client:
        first = await client.get("/visit")
        second = await client.get("/visit")
    header = first.headers["set-cookie"]
    assert header.startswith("__Host-session=")
    assert "Secure" in header
    assert "Path=/;" in header
    assert "Domain" not in header
    assert second.json() == {"views": 2}


@given(st.text(max_size=200))
def test_cookie_parsing_never_raises(header: str) -> None:
    parsed = parse_cookie_header(header)
    assert all(name and "=" not in name and ";" not in name for name in parsed)


@given(
    st.dictionaries(
        st.from_regex(r"[A-Za-z0-9_\-]{1,12}", fullmatch=True),
        st.from_regex(r"[A-Za-z0-9_\-]{0,43}", fullmatch=True),
        max_size=5,
    )
)
def test_cookie_parsing_round_trips_simple_pairs(cookies: dict[str, str]) -> None:
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    assert parse_cookie_header(header) == cookies


async def test_the_fastapi_example(store) -> None:
    example = _load_example("fastapi_app")
    app = example.create_app(store)
    async with client_for(app) as laptop, client_for(app) as phone:
        assert (await laptop.get("/cart")).json() == {"cart": []}
        await laptop.post("/cart/laptop-123")
        await laptop.post("/login/ada")
        await phone.post("/login/ada")
        assert (await laptop.get("/cart")).json() == {"cart": ["laptop-123"]}
        await phone.post("/logout", params={"everywhere": "true"})
        assert (await laptop.get("/cart")).json() == {"cart": []}
    assert await store.list_user("ada") == []


async def test_the_fastapi_examples_live_cart_follows_the_session() -> None:
    clock = ManualClock()
    store = AsyncSessionStore(AsyncMemoryBackend(clock=clock), policy=WS_POLICY, clock=clock)
    app = _load_example("fastapi_app").create_app(store)
    async with client_for(app) as laptop:
        await laptop.post("/login/ada")
        await laptop.post("/cart/laptop-123")
        cookie = f"session={laptop.cookies['session']}"
        async with ChatConnection(app, cookie, "/cart/live") as live:
            reply = await live.ask("refresh")
            assert reply["text"] == '{"cart":["laptop-123"]}'
            await laptop.post("/cart/mouse-456")  # changed over HTTP meanwhile
            reply = await live.ask("refresh")
            assert reply["text"] == '{"cart":["laptop-123","mouse-456"]}'
            await laptop.post("/logout", params={"everywhere": "true"})
            clock.advance(WS_POLICY.touch_interval)
            assert await live.ask("refresh") == CLOSED
    async with ChatConnection(app, None, "/cart/live", refused=True) as anonymous:
        assert anonymous.handshake["code"] == 1008


def _load_example(name: str):
    path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


async def test_a_shorter_end_resends_the_cookie_and_holds_on_the_server() -> None:
    """`expire_at` ("remember me" unticked): the cookie is sent again with the session's
    new life, and the server ends the session then too."""
    clock = ManualClock()
    store = AsyncSessionStore(AsyncMemoryBackend(), clock=clock)
    async with client_for(make_app(store)) as client:
        await client.get("/visit")
        clock.advance(100)
        shortened = await client.post("/short")
        assert "Max-Age=300" in shortened.headers["set-cookie"]
        again = await client.get("/visit")
        assert "set-cookie" not in again.headers  # the end did not move again
        clock.advance(60)
        login = await client.post("/login?user=ada")  # a new id keeps what is left
        assert "Max-Age=240" in login.headers["set-cookie"]
        clock.advance(240)
        assert (await client.get("/peek")).json() == {"has": False, "data": None}


async def test_a_login_cookie_lives_as_long_as_the_session_left() -> None:
    clock = ManualClock()
    store = AsyncSessionStore(AsyncMemoryBackend(), clock=clock)
    async with client_for(make_app(store)) as client:
        await client.get("/visit")
        clock.advance(1000)
        login = await client.post("/login?user=ada")
    # the policy's 12 hours ran from the session's creation, not from the login
    assert "Max-Age=42200" in login.headers["set-cookie"]


# -- the id in a header (API and mobile clients) --------------------------------------

TOKEN = "x-session-token"


@pytest.fixture
def header_app(store):
    return make_app(store, header=HeaderSettings())


async def test_the_id_travels_in_the_header_and_never_in_a_cookie(header_app) -> None:
    async with client_for(header_app) as client:
        first = await client.get("/visit")
        token = first.headers[TOKEN]
        again = await client.get("/visit", headers={TOKEN: token})
        by_cookie = await client.get("/visit", headers={"cookie": f"session={token}"})
    assert first.json() == {"views": 1}
    assert len(token) == 43
    assert "set-cookie" not in first.headers
    assert first.headers["cache-control"] == "no-store"  # it hands a session out
    assert first.headers["vary"] == "X-Session-Token"
    assert again.json() == {"views": 2}
    assert TOKEN not in again.headers  # the same id: nothing to send, cacheable per token
    assert "cache-control" not in again.headers
    # A cookie is not this middleware's transport: it starts a session of its own.
    assert by_cookie.json() == {"views": 1}
    assert by_cookie.headers[TOKEN] not in (token, "")


async def test_login_gives_a_new_token_and_the_old_one_is_dead(header_app, store) -> None:
    async with client_for(header_app) as client:
        token = (await client.get("/visit")).headers[TOKEN]
        login = await client.post("/login", params={"user": "ada"}, headers={TOKEN: token})
        fresh = login.headers[TOKEN]
        old = await client.get("/peek", headers={TOKEN: token})
        new = await client.get("/peek", headers={TOKEN: fresh})
    assert fresh != token
    assert login.headers["cache-control"] == "no-store"
    assert old.json() == {"has": False, "data": None}
    assert old.headers[TOKEN] == ""  # forget it
    assert new.json()["data"] == {"views": 1}
    assert [s.handle for s in await store.list_user("ada")] == [
        (await store.get(fresh)).key  # type: ignore[union-attr]
    ]


async def test_logout_tells_the_client_to_forget_its_token(header_app) -> None:
    async with client_for(header_app) as client:
        token = (await client.get("/visit")).headers[TOKEN]
        out = await client.post("/logout", headers={TOKEN: token})
        after = await client.get("/peek", headers={TOKEN: token})
    assert out.headers[TOKEN] == ""
    assert out.headers["cache-control"] == "no-store"
    assert after.json() == {"has": False, "data": None}


async def test_an_unknown_token_is_never_adopted(header_app) -> None:
    planted = new_session_id()
    async with client_for(header_app) as client:
        response = await client.get("/visit", headers={TOKEN: planted})
    assert response.headers[TOKEN] not in (planted, "")
    assert response.json() == {"views": 1}


@pytest.mark.parametrize("garbage", ["", " ", "x" * 5000, "a" * 42 + "!", "Bearer abc"])
async def test_malformed_tokens_never_reach_storage(store, registry, garbage: str) -> None:
    async with client_for(make_app(store, header=HeaderSettings())) as client:
        response = await client.get("/peek", headers={TOKEN: garbage})
    assert response.json() == {"has": False, "data": None}
    assert storage_calls(registry) == 0


async def test_of_several_tokens_the_first_live_one_is_the_session(header_app) -> None:
    async with client_for(header_app) as client:
        live = (await client.get("/visit")).headers[TOKEN]
        dead = new_session_id()
        joined = await client.get("/visit", headers={TOKEN: f"{dead}, {live}"})
        repeated = await client.get("/visit", headers=[(TOKEN, dead), (TOKEN, live)])
    assert joined.json() == {"views": 2}
    assert repeated.json() == {"views": 3}
    assert TOKEN not in joined.headers


async def test_a_header_name_of_your_own(store) -> None:
    async with client_for(make_app(store, header=HeaderSettings("Auth-Session"))) as client:
        token = (await client.get("/visit")).headers["auth-session"]
        again = await client.get("/visit", headers={"Auth-Session": token})
    assert again.json() == {"views": 2}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "not a valid token"),
        ("X Session", "not a valid token"),
        ("X-Séance", "not a valid token"),
        ("Cookie", "a header of its own"),
        ("set-cookie", "a header of its own"),
        ("Authorization", "a header of its own"),
        ("Vary", "a header of its own"),
    ],
)
def test_header_settings_are_validated(name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HeaderSettings(name)


def test_a_cookie_and_a_header_together_are_refused(store) -> None:
    with pytest.raises(ConfigError, match="not both"):
        SessionMiddleware(
            make_app(store), store=store, cookie=CookieSettings(), header=HeaderSettings()
        )


# -- WebSockets: the session of the handshake, kept alive, ended with the session -----------

WS_POLICY = SessionPolicy(idle_timeout=600, absolute_timeout=7200, touch_interval=60)


class PausableBackend(AsyncMemoryBackend):
    """A memory backend whose touches can be made to fail like a store that went away."""

    failing = False

    async def touch(self, key: str, *, last_access: float, idle_expires_at: float) -> bool:
        if self.failing:
            raise BackendError("the store does not answer")
        return await super().touch(key, last_access=last_access, idle_expires_at=idle_expires_at)


async def chat(websocket: WebSocket) -> None:
    """Answers each message with the user of the connection's session (or what went wrong)."""
    sessions = request_session(websocket.scope)
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            try:
                if text == "create":
                    await sessions.get()
                elif text == "login":
                    await sessions.regenerate(user_id="mallory")
                session = await sessions.load()
                user = "anonymous" if session is None else session.user_id
                await websocket.send_text(user or "no user")
            except SessionNotFound as exc:
                await websocket.send_text(f"refused: {exc}")
    except WebSocketDisconnect:
        pass


def chat_app(store: AsyncSessionStore) -> SessionMiddleware:
    async def login(request):
        await request_session(request.scope).regenerate(user_id="ada")
        return PlainTextResponse("in")

    routes = [Route("/login", login, methods=["POST"]), WebSocketRoute("/chat", chat)]
    return SessionMiddleware(Starlette(routes=routes), store=store)


class ChatConnection:
    """One WebSocket to an app (`chat_app`'s by default), driven message by message over
    plain ASGI. Entering it connects and, unless `refused`, expects the app to accept."""

    def __init__(
        self, app: SessionMiddleware, cookie: str | None, path: str = "/chat", *, refused=False
    ) -> None:
        headers = [] if cookie is None else [(b"cookie", cookie.encode())]
        self.scope = {
            "type": "websocket",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "subprotocols": [],
        }
        self.refused = refused
        self.app = app
        self.to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __aenter__(self) -> Self:
        self.task = asyncio.create_task(self.app(self.scope, self.to_app.get, self.from_app.put))
        await self.to_app.put({"type": "websocket.connect"})
        self.handshake = await asyncio.wait_for(self.from_app.get(), timeout=10)
        assert self.handshake["type"] == ("websocket.close" if self.refused else "websocket.accept")
        return self

    async def ask(self, text: str) -> dict[str, Any]:
        """Send `text`; return the app's answer (a websocket.send or websocket.close)."""
        await self.to_app.put({"type": "websocket.receive", "text": text})
        return await asyncio.wait_for(self.from_app.get(), timeout=10)

    async def __aexit__(self, *_: object) -> None:
        if not self.refused:
            await self.to_app.put({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self.task, timeout=10)


async def login_cookie(app: SessionMiddleware) -> str:
    async with client_for(app) as client:
        return (await client.post("/login")).headers["set-cookie"].split(";")[0]


def answer(text: str) -> dict[str, Any]:
    return {"type": "websocket.send", "text": text}


CLOSED = {"type": "websocket.close", "code": SESSION_ENDED_CLOSE_CODE, "reason": "session ended"}


async def test_messages_keep_a_websockets_session_alive_past_its_idle_timeout() -> None:
    clock = ManualClock()
    store = AsyncSessionStore(AsyncMemoryBackend(clock=clock), policy=WS_POLICY, clock=clock)
    app = chat_app(store)
    cookie = await login_cookie(app)
    async with ChatConnection(app, cookie) as connection:
        for _ in range(10):  # 3,000 s of chat: five idle timeouts
            clock.advance(300)
            assert await connection.ask("hi") == answer("ada")
    clock.advance(300)
    async with ChatConnection(app, cookie) as connection:
        assert await connection.ask("still there?") == answer("ada")


async def test_without_messages_the_session_idles_out_and_the_socket_closes() -> None:
    clock = ManualClock()
    store = AsyncSessionStore(AsyncMemoryBackend(clock=clock), policy=WS_POLICY, clock=clock)
    app = chat_app(store)
    async with ChatConnection(app, await login_cookie(app)) as connection:
        assert await connection.ask("hi") == answer("ada")
        clock.advance(601)
        assert await connection.ask("hello?") == CLOSED


async def test_logging_out_everywhere_closes_the_users_open_websockets() -> None:
    clock = ManualClock()
    store = AsyncSessionStore(AsyncMemoryBackend(clock=clock), policy=WS_POLICY, clock=clock)
    app = chat_app(store)
    async with ChatConnection(app, await login_cookie(app)) as connection:
        assert await connection.ask("hi") == answer("ada")
        assert await store.revoke_user("ada") == 1
        # Noticed at the next touch that is due, not on every message (no store call).
        assert await connection.ask("soon after") == answer("ada")
        clock.advance(WS_POLICY.touch_interval)
        assert await connection.ask("and now?") == CLOSED


async def test_a_store_that_does_not_answer_does_not_end_a_websocket() -> None:
    clock = ManualClock()
    backend = PausableBackend(clock=clock)
    store = AsyncSessionStore(backend, policy=WS_POLICY, clock=clock)
    app = chat_app(store)
    async with ChatConnection(app, await login_cookie(app)) as connection:
        assert await connection.ask("hi") == answer("ada")
        backend.failing = True
        clock.advance(120)
        assert await connection.ask("during the outage") == answer("ada")
        backend.failing = False
        clock.advance(120)
        assert await connection.ask("after it") == answer("ada")


async def test_a_websocket_cannot_create_or_regenerate_a_session() -> None:
    """No response can carry a new id to the client: it would be a session nobody holds."""
    store = AsyncSessionStore(AsyncMemoryBackend())
    app = chat_app(store)
    async with ChatConnection(app, None) as connection:
        refused = await connection.ask("create")
        assert refused["text"].startswith("refused: cannot create a session here")
        assert await connection.ask("who?") == answer("anonymous")
    async with ChatConnection(app, await login_cookie(app)) as connection:
        refused = await connection.ask("login")
        assert refused["text"].startswith("refused: cannot give the session a new id")
        assert await connection.ask("who?") == answer("ada")  # the session is untouched


async def test_a_real_server_closes_the_websocket_of_a_revoked_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same through uvicorn and a WebSocket client over loopback: the close reaches the
    client with its code and reason, and the server logs no protocol error."""
    clock = ManualClock()
    store = AsyncSessionStore(AsyncMemoryBackend(clock=clock), policy=WS_POLICY, clock=clock)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(chat_app(store), host="127.0.0.1", port=port, log_level="warning")
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not serving.done(), "the server did not start"
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            cookie = (await http.post("/login")).headers["set-cookie"].split(";")[0]
        async with connect(
            f"ws://127.0.0.1:{port}/chat", additional_headers={"Cookie": cookie}
        ) as websocket:
            await websocket.send("hi")
            assert await websocket.recv() == "ada"
            assert await store.revoke_user("ada") == 1
            clock.advance(WS_POLICY.touch_interval)
            await websocket.send("still here?")
            with pytest.raises(ConnectionClosed) as closed:
                await websocket.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "session ended")
    finally:
        server.should_exit = True
        await serving
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- request.session, for code written for Starlette's own SessionMiddleware ----------------


async def dict_counter(request):
    request.session["views"] = request.session.get("views", 0) + 1
    return JSONResponse({"views": request.session["views"]})


async def dict_oauth_start(request):
    """What Authlib's Starlette client does before redirecting to the provider."""
    request.session["_state_github_abc"] = {"data": {"redirect_uri": "/back"}, "exp": 1e12}
    return JSONResponse({"redirect": "https://provider.example/authorize?state=abc"})


async def dict_oauth_callback(request):
    state = request.session.pop("_state_github_abc", None)
    if state is None:
        return JSONResponse({"error": "mismatching_state"}, status_code=400)
    request.session["user"] = "octocat"
    return JSONResponse({"user": request.session["user"], "back": state["data"]["redirect_uri"]})


async def dict_whoami(request):
    return JSONResponse(dict(request.session))


async def dict_logout(request):
    request.session.clear()
    if request.query_params.get("flash"):
        request.session["flash"] = "logged out"  # after the logout: a new session
    return JSONResponse({"ok": True})


DICT_ROUTES = [
    Route("/count", dict_counter),
    Route("/oauth/start", dict_oauth_start),
    Route("/oauth/callback", dict_oauth_callback),
    Route("/whoami", dict_whoami),
    Route("/logout", dict_logout, methods=["POST"]),
]
DICT_STEPS = [
    ("GET", "/whoami"),
    ("GET", "/count"),
    ("GET", "/count"),
    ("GET", "/oauth/start"),
    ("GET", "/oauth/callback"),
    ("GET", "/oauth/callback"),  # the state was used up
    ("GET", "/whoami"),
    ("POST", "/logout"),
    ("GET", "/whoami"),
    ("GET", "/count"),
    ("POST", "/logout?flash=1"),
    ("GET", "/whoami"),
]


async def _walk(app) -> list[tuple[int, object]]:
    async with client_for(app) as client:
        return [
            ((answer := await client.request(method, path)).status_code, answer.json())
            for method, path in DICT_STEPS
        ]


async def test_request_session_behaves_as_under_starlettes_own_middleware(store) -> None:
    theirs = StarletteSessions(Starlette(routes=DICT_ROUTES), secret_key="k" * 32)
    ours = SessionMiddleware(Starlette(routes=DICT_ROUTES), store=store, starlette_session=True)
    walked = await _walk(ours)
    assert walked == await _walk(theirs)
    assert walked[6] == (200, {"views": 2, "user": "octocat"})
    assert walked[9] == (200, {"views": 1})  # after the logout: a new session
    assert walked[-1] == (200, {"flash": "logged out"})


async def test_request_session_writes_nothing_for_a_reader_and_clear_ends_the_session(
    store, registry
) -> None:
    app = SessionMiddleware(Starlette(routes=DICT_ROUTES), store=store, starlette_session=True)
    async with client_for(app) as client:
        read = await client.get("/whoami")
        assert "set-cookie" not in read.headers
        assert storage_calls(registry) == 0  # no id sent: nothing to load, nothing created
        await client.get("/oauth/start")
        old_id = client.cookies["session"]
        await client.get("/oauth/callback")
        assert (await store.get(old_id)) is not None
        out = await client.post("/logout")
        assert out.headers["set-cookie"].startswith("session=;")
        assert out.headers["cache-control"] == "no-store"
        assert await store.get(old_id) is None  # ended, not kept empty


async def test_request_session_and_the_async_api_share_one_session(store) -> None:
    async def login(request):
        request.session["before"] = "anonymous cart"  # no session yet: it waits
        await request_session(request.scope).regenerate(user_id="ada")
        request.session["after"] = "login"
        return JSONResponse(dict(request.session))

    routes = [Route("/login", login, methods=["POST"]), Route("/whoami", dict_whoami)]
    app = SessionMiddleware(Starlette(routes=routes), store=store, starlette_session=True)
    async with client_for(app) as client:
        answer = (await client.post("/login")).json()
        assert answer == {"before": "anonymous cart", "after": "login"}
        assert (await client.get("/whoami")).json() == answer
    (summary,) = await store.list_user("ada")
    assert summary.user_id == "ada"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"header": "X-Session-Token"}, r"HeaderSettings\('X-Session-Token'\)"),
        ({"cookie": "session"}, "cookie must be a CookieSettings"),
    ],
)
def test_settings_of_the_wrong_kind_are_refused_at_once(store, settings, message) -> None:
    with pytest.raises(ConfigError, match=message):
        SessionMiddleware(make_app(store), store=store, **settings)
