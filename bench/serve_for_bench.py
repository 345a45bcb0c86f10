"""Run one of the benchmark's HTTP servers: the sessionflow service or the plain-GET baseline.

    python bench/serve_for_bench.py service|service-unpipelined|baseline PORT REDIS_URL

Both are FastAPI on uvicorn, one worker, access log off, so the only difference is what an
endpoint does: the service validates a session (HGETALL, expiry check, touch when due); the
baseline does one plain redis GET.
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel

from sessionflow._open_backend import redis_client
from sessionflow._service_config import ServiceConfig
from sessionflow.service import build_app


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


def main() -> None:
    kind, port, redis_url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if kind == "baseline":
        app = baseline_app(redis_url)
    else:
        config = ServiceConfig(
            backend="redis", redis_url=redis_url, redis_auto_pipeline=kind == "service"
        )
        app = build_app(config)
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
