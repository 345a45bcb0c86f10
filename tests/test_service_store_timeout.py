"""A store that stops answering costs a request `store_timeout`, not the clients' job timeouts.

The stores are real processes frozen with SIGSTOP: connections stay open and nothing
answers, the hardest case for a client (no error arrives, only silence). With the job
timeouts (five DynamoDB attempts of 5 s each) a validate request waited 49 s for its 503.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from sessionflow import ConfigError
from sessionflow._open_backend import ClientTimeouts
from sessionflow._service_config import ServiceConfig
from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal, RedisServer
from sessionflow.service import VALIDATE_PATH, build_app

STORE_TIMEOUT = 1.0
BOUND = STORE_TIMEOUT + 3.0
"""The timeout, DynamoDB's retry backoff (up to a second) and room for a slow machine;
far below what the job timeouts would take."""
WARM_UP_BOUND = 60.0
"""How long a freshly started store may take to answer its first request within
`STORE_TIMEOUT`: DynamoDB Local's JVM compiles its request path on first use, and on a
busy two-core machine that first PutItem can take longer than a second."""


async def answered_once_warm(client: httpx.AsyncClient, method: str, path: str, body: Any) -> Any:
    """The store's first answer within `STORE_TIMEOUT`, asking again while it warms up."""
    deadline = time.monotonic() + WARM_UP_BOUND
    while True:
        response = await client.request(method, path, json=body)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response


@contextmanager
def frozen_store(kind: str) -> Iterator[tuple[Any, dict[str, Any]]]:
    """A real store server and the service settings that name it."""
    if kind == "redis":
        with RedisServer() as redis_server:
            yield redis_server, {"backend": "redis", "redis_url": redis_server.url}
    else:
        with DynamoDBLocal() as dynamodb:
            yield dynamodb, {"backend": "dynamodb", "dynamodb_endpoint": dynamodb.endpoint_url}


@pytest.mark.parametrize("kind", ["redis", "dynamodb"])
async def test_a_store_that_stops_answering_gets_a_503_within_the_store_timeout(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_AWS["aws_access_key_id"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_AWS["aws_secret_access_key"])
    with frozen_store(kind) as (server, settings):
        app = build_app(ServiceConfig(**settings, store_timeout=STORE_TIMEOUT))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://service") as client,
        ):
            created = await answered_once_warm(client, "POST", "/v1/sessions", {})
            assert created.status_code == 201, created.text
            session_id = created.json()["id"]
            server.pause()
            try:
                began = time.monotonic()
                frozen = await client.post(VALIDATE_PATH, json={"id": session_id})
                waited = time.monotonic() - began
                began = time.monotonic()
                ready = await client.get("/readyz")
                waited_ready = time.monotonic() - began
            finally:
                server.resume()
            assert frozen.status_code == 503
            assert frozen.json()["error"] == "store_unavailable"
            assert waited < BOUND
            assert ready.status_code == 503
            assert waited_ready < BOUND
            answered = await answered_once_warm(client, "POST", VALIDATE_PATH, {"id": session_id})
            assert answered.status_code == 200, answered.text


def test_request_timeouts_follow_the_store_timeout() -> None:
    timeouts = ClientTimeouts.for_requests(2.0)
    assert timeouts.redis_socket == 2.0
    assert timeouts.dynamodb_attempts * timeouts.dynamodb_read <= 2.0
    with pytest.raises(ConfigError, match="positive"):
        ClientTimeouts.for_requests(0)
    with pytest.raises(ConfigError, match="store_timeout"):
        ServiceConfig(backend="memory", store_timeout=-1)
