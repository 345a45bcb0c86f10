"""The validate route served straight from ASGI answers exactly as the FastAPI route does."""

from __future__ import annotations

import gc

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from sessionflow import (
    AsyncInstrumentedBackend,
    AsyncMemoryBackend,
    AsyncSessionStore,
    BackendMetrics,
    ConfigError,
    ManualClock,
)
from sessionflow._service_hot import MAX_HOT_BODY
from sessionflow.service import SERVICE_GC_THRESHOLD, VALIDATE_PATH, create_app, run_service

# FastAPI reads any application/*+json body as JSON; the hot route takes only
# application/json, so this content type reaches the FastAPI route with the same body.
FASTAPI_ROUTE = {"content-type": "application/vnd.sessionflow+json"}
HOT_ROUTE = {"content-type": "application/json"}


@pytest.fixture
async def service(clock: ManualClock):
    backend = AsyncInstrumentedBackend(
        AsyncMemoryBackend(clock=clock), name="memory", metrics=BackendMetrics(CollectorRegistry())
    )
    store = AsyncSessionStore(backend, clock=clock)
    transport = httpx.ASGITransport(app=create_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        yield store, client


async def both(client: httpx.AsyncClient, body: bytes) -> tuple[httpx.Response, httpx.Response]:
    hot = await client.post(VALIDATE_PATH, content=body, headers=HOT_ROUTE)
    routed = await client.post(VALIDATE_PATH, content=body, headers=FASTAPI_ROUTE)
    return hot, routed


async def test_a_live_session_gets_the_same_answer_from_both(service) -> None:
    store, client = service
    session = await store.create({"cart": ["sku-1"]}, user_id="ada")
    hot, routed = await both(client, b'{"id": "%s"}' % session.id.encode())
    assert hot.status_code == routed.status_code == 200
    assert hot.headers["content-type"] == "application/json"
    assert set(hot.json()) == set(routed.json())
    assert hot.json()["user_id"] == "ada"
    assert hot.json()["attributes"] is None
    assert hot.json()["version"] == routed.json()["version"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"id": "not-an-id"}', 400, "invalid_session_id"),
        (b'{"id": "%s"}' % (b"A" * 43), 404, "session_not_found"),  # well-formed, unknown
        (b"{}", 422, "invalid_request"),
        (b'{"id": "%s"}' % (b"x" * 500), 422, "invalid_request"),
        (b'{"id": 7}', 422, "invalid_request"),
        (b"[]", 422, "invalid_request"),
        (b"{not json", 422, "invalid_request"),
    ],
)
async def test_bad_input_gets_the_same_error_from_both(service, body, status, code) -> None:
    _, client = service
    hot, routed = await both(client, body)
    assert (hot.status_code, hot.json()["error"]) == (status, code)
    assert (routed.status_code, routed.json()["error"]) == (status, code)
    assert hot.json()["detail"]
    if code != "invalid_request":  # the store's own errors: word for word
        assert hot.json() == routed.json()


async def test_a_missing_field_names_the_field(service) -> None:
    _, client = service
    hot, routed = await both(client, b"{}")
    assert hot.json()["detail"] == routed.json()["detail"] == "body.id: Field required"


async def test_an_oversized_body_is_413_and_read_to_its_end(service) -> None:
    _, client = service
    body = b'{"id": "' + b"x" * (MAX_HOT_BODY * 4) + b'"}'
    response = await client.post(VALIDATE_PATH, content=body, headers=HOT_ROUTE)
    assert response.status_code == 413
    assert response.json()["error"] == "content_too_large"


async def test_the_hot_route_takes_json_with_a_charset(service) -> None:
    store, client = service
    session = await store.create({})
    response = await client.post(
        VALIDATE_PATH,
        content=b'{"id": "%s"}' % session.id.encode(),
        headers={"content-type": "Application/JSON; charset=utf-8"},
    )
    assert response.status_code == 200


async def test_it_touches_as_the_route_does(service) -> None:
    store, client = service
    session = await store.create({})
    store.clock.advance(store.policy.touch_interval + 1)
    before = (await store.get(session.id, touch=False)).last_access
    await client.post(VALIDATE_PATH, json={"id": session.id})
    assert (await store.get(session.id, touch=False)).last_access > before


async def test_other_methods_and_routes_pass_through(service) -> None:
    _, client = service
    assert (await client.get(VALIDATE_PATH)).status_code == 405
    assert (await client.get("/healthz")).text == "ok\n"
    assert VALIDATE_PATH in (await client.get("/openapi.json")).json()["paths"]


def test_run_service_freezes_start_up_objects_and_raises_the_young_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, object] = {}

    def fake_run(app: object, **options: object) -> None:
        seen.update(options, threshold=gc.get_threshold(), frozen=gc.get_freeze_count())

    thresholds = gc.get_threshold()
    monkeypatch.setattr(uvicorn, "run", fake_run)
    try:
        run_service(object(), host="127.0.0.1", port=8000, access_log=False)
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert seen["threshold"] == (SERVICE_GC_THRESHOLD, *thresholds[1:])
    assert isinstance(seen["frozen"], int)
    assert seen["frozen"] > 1000  # the imported modules
    assert (seen["host"], seen["port"], seen["access_log"]) == ("127.0.0.1", 8000, False)


def test_run_service_refuses_a_threshold_that_turns_collection_off() -> None:
    with pytest.raises(ConfigError, match="gc_threshold"):
        run_service(object(), host="127.0.0.1", port=8000, gc_threshold=0)
