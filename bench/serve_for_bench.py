"""Run one of the benchmark's HTTP servers: the service, the plain-GET baseline or the floor.

    python bench/serve_for_bench.py service|service-unpipelined|baseline|floor PORT REDIS_URL

All run on uvicorn, one worker, access log off, started by the service's own `run_service`
(the same HTTP parser and event loop, the same garbage-collector freeze), so the only
difference is what an endpoint does: the service validates a session (HGETALL, expiry
check, touch when due); the baseline is a FastAPI endpoint doing one plain redis GET; the
floor answers at once, with no framework and no Redis. `GC_THRESHOLD_VARIABLE` in the
environment overrides `run_service`'s young-generation threshold (bench_service.py
--gc-threshold, for comparisons).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from sessionflow._redis_clients import redis_client
from sessionflow._service_config import ServiceConfig
from sessionflow.service import SERVICE_GC_THRESHOLD, build_app, run_service

GC_THRESHOLD_VARIABLE = "SESSIONFLOW_BENCH_GC_THRESHOLD"
FLOOR_BODY = b'{"valid":true}'
FLOOR_HEADERS = [(b"content-type", b"application/json"), (b"content-length", b"14")]


class IdBody(BaseModel):
    id: str


def baseline_app(redis_url: str) -> FastAPI:
    app = FastAPI()
    # the service's own client: a pool that queues a burst instead of raising "Too many
    # connections" (redis-py's default pool refuses past its limit and fails the request)
    client = redis_client(redis_url)

    @app.post("/v1/sessions/validate")
    async def validate(body: IdBody) -> dict[str, bool]:
        return {"valid": await client.get(f"baseline:{body.id}") is not None}

    @app.get("/healthz")
    async def healthz() -> str:
        return "ok"

    return app


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answer every request at once with a fixed body: the HTTP stack and nothing else."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": FLOOR_HEADERS})
    await send({"type": "http.response.body", "body": FLOOR_BODY})


def main() -> None:
    kind, port, redis_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    gc_threshold = int(os.environ.get(GC_THRESHOLD_VARIABLE, SERVICE_GC_THRESHOLD))
    app: Any
    if kind == "floor":
        app = floor_app
    elif kind == "baseline":
        app = baseline_app(redis_url)
    else:
        config = ServiceConfig(
            backend="redis", redis_url=redis_url, redis_auto_pipeline=kind == "service"
        )
        app = build_app(config)
    run_service(
        app,
        host="127.0.0.1",
        port=port,
        access_log=False,
        log_level="warning",
        gc_threshold=gc_threshold,
    )


if __name__ == "__main__":
    main()
