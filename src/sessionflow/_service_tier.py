"""The session service on the hybrid tier: its handle and admin routes."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from sessionflow._async.backends.tiered import AsyncTieredBackend
from sessionflow._errors import BackendError

MAX_JOB_BATCHES = 1000  # an admin request moves at most this many batches


class TierJobRequest(BaseModel):
    """Run the sweeper or the flusher once (admin)."""

    batch_size: int = Field(default=100, ge=1, le=1000)
    max_batches: int = Field(default=10, ge=1, le=MAX_JOB_BATCHES)


class TierHandle:
    """The tier a service serves through; set once the app's lifespan has opened it."""

    def __init__(self, region: str) -> None:
        self.region = region
        self.backend: AsyncTieredBackend | None = None

    def get(self) -> AsyncTieredBackend:
        """Return the tier; `BackendError` (503) while the service is starting."""
        if self.backend is None:
            raise BackendError("the service is starting: its tier is not open yet")
        return self.backend


def tier_routes(
    app: FastAPI, handle: TierHandle, require_admin: Callable[..., Awaitable[None]]
) -> None:
    """Add ``GET /admin/tier`` and ``POST /admin/tier/sweep`` and ``/flush``."""
    admin = [Depends(require_admin)]

    @app.get("/admin/tier", dependencies=admin)
    async def tier_status(lifecycle: bool = False) -> dict[str, Any]:
        """Return the tier's counters and index sizes.

        `lifecycle=true` also counts the sessions of both tiers by lifecycle state (it walks
        both tiers: slow on a big store).
        """
        backend = handle.get()
        hot, dirty = await backend.index.sizes()
        counters = dataclasses.asdict(backend.stats)
        counters.pop("lifecycle")
        status: dict[str, Any] = {
            "region": handle.region,
            "durability": str(backend.durability),
            "hot_tier_down": backend.health.down,
            "hot_sessions": hot,
            "dirty_sessions": dirty,
            "counters": counters,
        }
        if lifecycle:
            counts = await backend.count_lifecycle()
            status["lifecycle"] = {str(state): number for state, number in counts.items()}
        return status

    @app.post("/admin/tier/sweep", dependencies=admin)
    async def tier_sweep(body: TierJobRequest) -> dict[str, Any]:
        """Demote idle sessions now (at most `max_batches` batches); return the report."""
        backend = handle.get()
        report = await backend.sweep(batch_size=body.batch_size, max_batches=body.max_batches)
        return report.to_dict()

    @app.post("/admin/tier/flush", dependencies=admin)
    async def tier_flush(body: TierJobRequest) -> dict[str, Any]:
        """Copy write-back changes to the cold tier now (at most `max_batches` batches)."""
        backend = handle.get()
        report = await backend.flush(batch_size=body.batch_size, max_batches=body.max_batches)
        return report.to_dict()
