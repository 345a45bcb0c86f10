"""The HTTP session service: its routes, errors, admin guard, config and a schema fuzz."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import redis.asyncio
import schemathesis
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from schemathesis.checks import not_a_server_error

from sessionflow import (
    AsyncInstrumentedBackend,
    AsyncMemoryBackend,
    AsyncRedisBackend,
    AsyncSessionStore,
    BackendMetrics,
    ConfigError,
    ManualClock,
    new_session_id,
)
from sessionflow._service_config import ServiceConfig
from sessionflow.local_servers import free_port
from sessionflow.service import build_app, create_app
from tests.clients import running_service

TOKEN = "a-long-admin-token-for-tests"


def make_service(registry: CollectorRegistry | None = None):
    registry = registry or CollectorRegistry()
    backend = AsyncInstrumentedBackend(
        AsyncMemoryBackend(), name="memory", metrics=BackendMetrics(registry)
    )
    return create_app(AsyncSessionStore(backend), admin_token=TOKEN, registry=registry)


@pytest.fixture
async def api():
    transport = httpx.ASGITransport(app=make_service())
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield client


async def test_session_lifecycle_over_http(api) -> None:
    created = await api.post("/v1/sessions", json={"user_id": "ada", "attributes": {"cart": []}})
    assert created.status_code == 201
    session_id = created.json()["id"]
    assert len(session_id) == 43
    valid = await api.post("/v1/sessions/validate", json={"id": session_id})
    assert valid.json()["user_id"] == "ada"
    assert valid.json()["attributes"] is None
    updated = await api.post(
        "/v1/sessions/update", json={"id": session_id, "set": {"cart": ["sku-1"], "x": 1}}
    )
    assert updated.json()["attributes"] == {"cart": ["sku-1"], "x": 1}
    unset = await api.post("/v1/sessions/update", json={"id": session_id, "unset": ["x"]})
    assert unset.json()["attributes"] == {"cart": ["sku-1"]}
    assert (await api.post("/v1/sessions/touch", json={"id": session_id})).status_code == 200
    moved = await api.post("/v1/sessions/regenerate", json={"id": session_id})
    new_id = moved.json()["id"]
    assert new_id != session_id
    gone = await api.post("/v1/sessions/read", json={"id": session_id})
    assert gone.status_code == 404
    listing = await api.get("/v1/users/ada/sessions")
    assert listing.headers["cache-control"] == "no-store"  # handles revoke: never cached
    listed = listing.json()
    assert len(listed) == 1
    assert set(listed[0]) == {"handle", "created_at", "last_access", "expires_at"}
    revoked = await api.post("/v1/users/ada/revoke", json={})
    assert revoked.json() == {"revoked": 1}
    deleted = await api.post("/v1/sessions/delete", json={"id": new_id})
    assert deleted.json() == {"deleted": False}


async def test_a_session_can_be_given_a_shorter_life() -> None:
    clock = ManualClock()
    app = create_app(AsyncSessionStore(AsyncMemoryBackend(), clock=clock), admin_token=TOKEN)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as api:
        start = clock.now()
        short = (await api.post("/v1/sessions", json={"expires_in": 60})).json()
        assert short["absolute_expires_at"] == start + 60
        policy = (await api.post("/v1/sessions", json={"expires_in": 1e9})).json()
        assert policy["absolute_expires_at"] == start + 12 * 3600  # never past the policy
        clock.advance(30)
        updated = await api.post("/v1/sessions/update", json={"id": policy["id"], "expires_in": 10})
        assert updated.json()["absolute_expires_at"] == clock.now() + 10
        clock.advance(10)
        for session in (short, policy):
            read = await api.post("/v1/sessions/read", json={"id": session["id"]})
            assert read.status_code == (200 if session is short else 404)
        clock.advance(20)
        read = await api.post("/v1/sessions/read", json={"id": short["id"]})
        assert read.status_code == 404


@pytest.mark.parametrize("literal", ["0", "-1", '"soon"', "true", "1" + "0" * 400, "1e300"])
async def test_a_life_that_is_not_a_positive_time_is_a_422(api, literal: str) -> None:
    """JSON numbers are written out: 1 followed by 400 zeros is a number json.dumps cannot
    write, and infinity once parsed."""
    json_body = {"content-type": "application/json"}
    created = await api.post(
        "/v1/sessions", content=f'{{"expires_in": {literal}}}', headers=json_body
    )
    assert created.status_code == 422
    assert "expires_in" in created.json()["detail"]
    session_id = (await api.post("/v1/sessions", json={})).json()["id"]
    body = f'{{"id": "{session_id}", "set": {{"a": 1}}, "expires_in": {literal}}}'
    updated = await api.post("/v1/sessions/update", content=body, headers=json_body)
    assert updated.status_code == 422
    assert "expires_in" in updated.json()["detail"]
    read = await api.post("/v1/sessions/read", json={"id": session_id})
    assert read.json()["attributes"] == {}  # nothing of a refused update was stored


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/sessions/read", {"id": "not-an-id"}, 400, "invalid_session_id"),
        ("/v1/sessions/read", {"id": new_session_id()}, 404, "session_not_found"),
        ("/v1/sessions/read", {}, 422, "invalid_request"),
        ("/v1/sessions/read", {"id": "x" * 500}, 422, "invalid_request"),
        ("/v1/sessions", {"attributes": {"": 1}}, 422, "invalid_attribute"),
        ("/v1/sessions", {"user_id": ""}, 422, "invalid_request"),
        ("/v1/handles/zz/revoke", None, 422, "invalid_attribute"),
    ],
)
async def test_bad_input_gets_a_clear_4xx(api, path, body, status, code) -> None:
    response = await api.post(path, json=body) if body is not None else await api.post(path)
    assert response.status_code == status
    assert response.json()["error"] == code
    assert response.json()["detail"]


@pytest.mark.parametrize("user_id", ["tenant-7/ada", "/lead", "trail/", "a%2Fb", "ü b"])
async def test_any_user_id_the_service_accepts_can_be_listed_and_revoked(api, user_id) -> None:
    created = await api.post("/v1/sessions", json={"user_id": user_id})
    assert created.status_code == 201
    path = f"/v1/users/{quote(user_id, safe='')}"
    listed = await api.get(f"{path}/sessions")
    assert listed.status_code == 200
    assert len(listed.json()) == 1
    assert (await api.post(f"{path}/revoke", json={})).json() == {"revoked": 1}
    assert (await api.get(f"{path}/sessions")).json() == []


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ('{"attributes": {"\\ud800": 1}}', "is not valid Unicode (a lone surrogate)"),
        ('{"attributes": {"a": "\\udfff"}}', "surrogates not allowed"),
        ('{"user_id": "ada\\ud800"}', "unable to parse raw data as a unicode string"),
        ('{"user_id": "' + "😀" * 300 + '"}', "1200 bytes in UTF-8, over the limit of 1024"),
    ],
    ids=["name-surrogate", "value-surrogate", "user-surrogate", "user-over-1024-bytes"],
)
async def test_text_the_stores_cannot_take_is_a_422_with_a_reason(api, body, detail) -> None:
    response = await api.post(
        "/v1/sessions", content=body.encode(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert detail in response.json()["detail"]


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
async def test_numbers_json_cannot_carry_are_refused_not_stored_as_null(api, number) -> None:
    # Python's JSON parser (FastAPI's) accepts these; stored, they would come back as null.
    body = f'{{"attributes": {{"total": {number}}}}}'
    response = await api.post(
        "/v1/sessions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json() == {
        "error": "invalid_attribute",
        "detail": "attribute 'total' holds NaN or an infinity, which JSON cannot carry",
    }


async def test_oversized_session_is_413(api) -> None:
    created = await api.post("/v1/sessions", json={})
    payload = {"blob": base64.b64encode(os.urandom(400_000)).decode()}  # incompressible
    response = await api.post(
        "/v1/sessions/update", json={"id": created.json()["id"], "set": payload}
    )
    assert response.status_code == 413


async def test_a_session_whose_compressed_values_hold_too_much_is_413() -> None:
    """Under the stored limit (zstd packs it into kilobytes), over the decoded one."""
    app = create_app(AsyncSessionStore(AsyncMemoryBackend()), max_body_bytes=20_000_000)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as api:
        response = await api.post("/v1/sessions", json={"attributes": {"a": "x" * 9_000_000}})
    assert response.status_code == 413
    assert response.json()["error"] == "session_too_large"
    assert "bytes decoded, over the 8388608-byte limit" in response.json()["detail"]


def _small_cap_api() -> httpx.AsyncClient:
    app = create_app(AsyncSessionStore(AsyncMemoryBackend()), max_body_bytes=1_000)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


@pytest.mark.parametrize("path", ["/v1/sessions", "/v1/sessions/validate"])
async def test_a_body_declared_over_the_cap_is_413_before_it_is_read(path: str) -> None:
    read = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal read
        for _ in range(3):
            read += 1
            yield b" " * 1_000

    async with _small_cap_api() as api:
        response = await api.post(
            path,
            content=body(),
            headers={"content-type": "application/json", "content-length": "3000"},
        )
        fits = await api.post("/v1/sessions", json={"attributes": {"a": "x" * 900}})
    assert response.status_code == 413
    assert response.json() == {
        "error": "content_too_large",
        "detail": "the request body is over the 1000-byte limit",
    }
    assert response.headers["connection"] == "close"
    assert read <= 1  # httpx's transport starts the stream; the service read none of it
    assert fits.status_code == 201


async def test_a_chunked_body_is_413_when_it_crosses_the_cap() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b'{"attributes": {"a": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}}'

    async with _small_cap_api() as api:
        response = await api.post(
            "/v1/sessions", content=body(), headers={"content-type": "application/json"}
        )
    assert response.status_code == 413
    assert response.json()["error"] == "content_too_large"
    assert response.headers["connection"] == "close"


def test_the_running_service_refuses_a_huge_body_without_reading_it() -> None:
    """uvicorn, a socket and a 1 GB promise: the answer comes before the body does."""
    port = free_port()
    with (
        running_service(port, SESSIONFLOW_MAX_BODY_BYTES="65536"),
        socket.create_connection(("127.0.0.1", port), timeout=10) as connection,
    ):
        connection.sendall(
            b"POST /v1/sessions HTTP/1.1\r\nHost: service\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n{"
        )
        answer = b""
        while chunk := connection.recv(65536):  # until the service closes the connection
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head.lower()
    assert b"over the 65536-byte limit" in body


async def test_admin_routes_need_the_token(api) -> None:
    assert (await api.get("/admin/stats")).status_code == 401
    wrong = await api.get("/admin/stats", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = await api.get("/admin/stats", headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200
    assert right.headers["cache-control"] == "no-store"
    assert right.json()["unreadable_records"] == 0
    refused = [f"Basic {TOKEN}", f"Bearer {TOKEN} ", f"Bearer  {TOKEN}", f"Bearer{TOKEN}", TOKEN]
    for header in refused:
        answer = await api.get("/admin/stats", headers={"Authorization": header})
        assert answer.status_code == 401, header
    for scheme in ("bearer", "BEARER"):  # a scheme's name is case-insensitive
        answer = await api.get("/admin/stats", headers={"Authorization": f"{scheme} {TOKEN}"})
        assert answer.status_code == 200


@pytest.mark.parametrize("token", ["", "short", " " * 20, "sixteen chars\tand a tab", "été-" * 5])
def test_an_admin_token_that_could_be_guessed_or_never_sent_is_refused(token: str) -> None:
    """An empty token would admit ``Authorization: Bearer``, a header with no token."""
    with pytest.raises(ConfigError, match="admin_token must be"):
        create_app(AsyncSessionStore(AsyncMemoryBackend()), admin_token=token)


async def test_health_readiness_and_metrics(api) -> None:
    assert (await api.get("/healthz")).text == "ok\n"
    assert (await api.get("/readyz")).json() == {"ready": True}
    await api.post("/v1/sessions", json={})
    metrics = (await api.get("/metrics")).text
    assert "sessionflow_backend_request_duration_seconds" in metrics
    assert "sessionflow_store_unreadable_records_total" in metrics


async def test_readiness_fails_when_the_store_is_down() -> None:
    client = redis.asyncio.Redis(
        port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    app = create_app(AsyncSessionStore(AsyncRedisBackend(client)))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as api:
        response = await api.get("/readyz")
        failing = await api.post("/v1/sessions", json={})
    assert response.status_code == 503
    assert failing.status_code == 503
    assert failing.json()["error"] == "store_unavailable"
    await client.aclose()


async def test_build_app_on_a_local_redis_with_no_configuration() -> None:
    app = build_app(ServiceConfig())
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        created = await client.post("/v1/sessions", json={"attributes": {"a": 1}})
        assert created.status_code == 201
        read = await client.post("/v1/sessions/read", json={"id": created.json()["id"]})
        assert read.json()["attributes"] == {"a": 1}
        assert (await client.get("/readyz")).json() == {"ready": True}
    # Before the lifespan opens the store, requests are refused with 503, not a crash.
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        assert (await client.post("/v1/sessions", json={})).status_code == 503


def test_config_from_toml_yaml_and_environment(tmp_path: Path) -> None:
    toml = tmp_path / "service.toml"
    toml.write_text('[sessionflow]\nbackend = "memory"\nidle_timeout = 600\n')
    assert ServiceConfig.load(toml, environ={}).idle_timeout == 600
    yaml_file = tmp_path / "service.yaml"
    yaml_file.write_text("backend: redis\nredis_url: redis://127.0.0.1:7000/0\n")
    config = ServiceConfig.load(yaml_file, environ={"SESSIONFLOW_ABSOLUTE_TIMEOUT": "3600"})
    assert (config.backend, config.absolute_timeout) == ("redis", 3600.0)
    assert ServiceConfig.load(None, environ={"SESSIONFLOW_BACKEND": "memory"}).backend == "memory"
    flag = ServiceConfig.load(None, environ={"SESSIONFLOW_REDIS_AUTO_PIPELINE": "false"})
    assert flag.redis_auto_pipeline is False
    # whole numbers however they are written: 2 MiB as a float, or in an exponent
    toml.write_text("[sessionflow]\nbackend = 'memory'\nmax_body_bytes = 2097152.0\n")
    assert ServiceConfig.load(toml, environ={}).max_body_bytes == 2_097_152
    exponent = ServiceConfig.load(None, environ={"SESSIONFLOW_MAX_BODY_BYTES": "2e6"})
    assert exponent.max_body_bytes == 2_000_000
    with pytest.raises(ConfigError, match="environment: max_sessions_per_user must be a whole"):
        ServiceConfig.load(None, environ={"SESSIONFLOW_MAX_SESSIONS_PER_USER": "2.5"})


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("backend = 'cassandra'", ".toml", "backend must be one of"),
        ("idle_timeout = 'soon'", ".toml", "must be a number"),
        ("colour = 'blue'", ".toml", "unknown setting"),
        ("[sessionflow", ".toml", "not valid TOML"),
        ("- a list", ".yaml", "table of settings"),
        ("backend: [redis\n", ".yaml", r"not valid YAML: .*line 2"),
        ("backend: 'memory\n", ".yml", "not valid YAML"),
        ("admin_token = 'short'", ".toml", "at least 16"),
        ("redis_auto_pipeline = 'maybe'", ".toml", "true or false"),
        ("idle_timeout = -1", ".toml", "positive"),
        ("backend = 'redis'\nredis_url = 'redis://[::1'", ".toml", "Invalid IPv6 URL"),
        ("backend = 'redis'\nredis_url = 'localhost:6379'", ".toml", "must specify one of"),
        ("backend = 'redis-cluster'\nredis_url = 'redis://h:6379/x'", ".toml", "a number"),
        ("backend = 'redis'\nredis_url = 'redis://'", ".toml", "names no host"),
        ("backend = 'redis'\nredis_url = 'redis-sentinel://h:26379/0'", ".toml", "after '#'"),
        ("backend = 'redis'\nredis_url = 'redis-sentinel://h:x/0#m'", ".toml", "cast to integer"),
        ("backend = 'redis-cluster'\nredis_url = 'redis-sentinel://h#m'", ".toml", "no sentinels"),
        ("backend = 'dynamodb'\ndynamodb_endpoint = 'http://h:p'", ".toml", "cast to integer"),
        ("max_body_bytes = 0", ".toml", "max_body_bytes must be at least 1"),
        # int(inf) raised OverflowError out of the check; int(2.7) quietly made a cap of 2
        ("max_body_bytes = inf", ".toml", "max_body_bytes must be a whole number, not inf"),
        ("max_sessions_per_user = 2.7", ".toml", "must be a whole number, not 2.7"),
        ("max_sessions_per_user: .nan", ".yaml", "must be a whole number, not nan"),
        ("idle_timeout = nan", ".toml", "idle_timeout must be a positive number of seconds"),
        ("absolute_timeout = inf", ".toml", "absolute_timeout must be a positive number"),
        ("idle_timeout: .nan", ".yaml", "idle_timeout must be a positive number of seconds"),
        ("store_timeout = inf", ".toml", "store_timeout must be a positive number of seconds"),
        ("redis_prefix = ''", ".toml", "key prefix must be non-empty and free of braces"),
        ("redis_prefix = 'a{b}'", ".toml", "key prefix must be non-empty and free of braces"),
        ("dynamodb_table = 'a b'", ".toml", "table name must be 3 to 255 letters"),
        # botocore raised InvalidRegionError out of the service's start, as a traceback
        (
            "dynamodb_region = '../../x'",
            ".toml",
            "dynamodb_region must be an AWS region name like us-east-1, not '../../x'",
        ),
        ("admin_token = '                    '", ".toml", "visible ASCII characters"),
        ("admin_token = 'abcdefghij klmnopq'", ".toml", "without spaces"),
        ("backend = 'memory'", ".ini", "^[^:]*service.ini: use a .toml, .yaml or .yml file$"),
    ],
)
def test_bad_config_is_a_one_line_config_error(tmp_path, text, suffix, message) -> None:
    path = tmp_path / f"service{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as raised:
        ServiceConfig.load(path, environ={})
    assert "\n" not in str(raised.value)


def test_a_config_file_that_is_not_text_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "service.toml"
    path.write_bytes(b"backend = '\xff\xfe'")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        ServiceConfig.load(path, environ={})


def test_admin_token_and_url_password_are_redacted() -> None:
    config = ServiceConfig(
        backend="redis", redis_url="redis://app:hunter2@10.0.0.5:6379/0", admin_token="x" * 20
    )
    shown = config.redacted()
    assert shown["admin_token"] == "***"
    assert shown["redis_url"] == "redis://***@10.0.0.5:6379/0"
    assert "hunter2" not in str(shown)
    sentinel = ServiceConfig(
        backend="redis", redis_url="redis-sentinel://:hunter2@h1,h2/0?sentinel_password=s3#m"
    )
    assert sentinel.redacted()["redis_url"] == (
        "redis-sentinel://***@h1,h2/0?sentinel_password=***#m"
    )


schema = schemathesis.openapi.from_asgi("/openapi.json", make_service())


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_requests_never_get_a_5xx(case) -> None:
    response = case.call()
    case.validate_response(response, checks=[not_a_server_error])
    if 400 <= response.status_code < 500:
        body = response.json()
        assert body["error"]
        assert body["detail"]
