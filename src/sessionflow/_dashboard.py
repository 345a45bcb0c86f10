"""The Grafana dashboard's queries, evaluated by a real Prometheus against real traffic.

`run_workload` exercises everything the dashboard shows (stores on Redis and DynamoDB,
a migration walking its stages with a backfill, a verification and repairs, a hybrid tier
promoting, demoting and flushing) while its metrics are served on loopback for Prometheus
to scrape. `evaluate` and `evaluate_range` then run each panel's queries through
Prometheus's HTTP API, as Grafana's Prometheus datasource would. The test suite checks the
dashboard this way; ``scripts/render_dashboard.py`` draws docs/images/dashboard.png.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._async.backends.instrumented import (
    AsyncInstrumentedBackend,
    AsyncInstrumentedEvictable,
)
from sessionflow._async.backends.memory import AsyncMemoryBackend
from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.backends.tiered import AsyncTieredBackend
from sessionflow._async.control import AsyncMemoryControlPlane
from sessionflow._async.migration import AsyncMigration
from sessionflow._async.store import AsyncSessionStore
from sessionflow._async.tier_index import AsyncMemoryTierIndex
from sessionflow._errors import SessionflowError
from sessionflow._metrics import (
    BackendMetrics,
    CapacityCollector,
    MigrationCollector,
    StoreStatsCollector,
    TierCollector,
)
from sessionflow._migration_stats import MigrationStats
from sessionflow._policy import SessionPolicy
from sessionflow._stages import Stage
from sessionflow._tier import Durability, TierStats

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "sessionflow.json"
_VARIABLE = re.compile(r"\$(\w+)")


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """Read a dashboard JSON file."""
    result: dict[str, Any] = json.loads(path.read_text())
    return result


@dataclass(frozen=True)
class PanelQueries:
    """A panel's title and its queries with Grafana's variables filled in."""

    title: str
    unit: str
    queries: list[tuple[str, str]]
    """(expression, legend) pairs."""


def panel_queries(dashboard: dict[str, Any], *, rate_interval: str) -> list[PanelQueries]:
    """Every non-row panel's queries, variables replaced as Grafana would."""
    values = {
        variable["name"]: str(variable["query"])
        for variable in dashboard["templating"]["list"]
        if variable["type"] == "constant"
    }
    values["__rate_interval"] = rate_interval

    def fill(expr: str) -> str:
        return _VARIABLE.sub(lambda match: values.get(match.group(1), match.group(0)), expr)

    return [
        PanelQueries(
            panel["title"],
            panel["fieldConfig"]["defaults"]["unit"],
            [(fill(t["expr"]), t.get("legendFormat", "")) for t in panel["targets"]],
        )
        for panel in dashboard["panels"]
        if panel["type"] != "row"
    ]


def evaluate(prometheus_url: str, expr: str) -> list[dict[str, Any]]:
    """Run an instant query; raise ValueError with Prometheus's message if it is invalid."""
    return _api(prometheus_url, "query", {"query": expr})


def evaluate_range(
    prometheus_url: str, expr: str, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    """Run a range query (the series a time-series panel draws)."""
    return _api(
        prometheus_url, "query_range", {"query": expr, "start": start, "end": end, "step": step}
    )


def _api(prometheus_url: str, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    import httpx  # noqa: PLC0415

    answer = httpx.get(f"{prometheus_url}/api/v1/{path}", params=params, timeout=10).json()
    if answer.get("status") != "success":
        raise ValueError(f"{answer.get('errorType')}: {answer.get('error')}")
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@contextmanager
def serve_metrics(registry: CollectorRegistry, port: int) -> Iterator[str]:
    """Serve `registry` on loopback for Prometheus; yield the scrape target ``host:port``."""
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


POLICY = SessionPolicy(idle_timeout=3600, absolute_timeout=7200, touch_interval=1)
PARKED_TIER_SESSIONS = 20


class Workload:
    """Traffic through every instrumented part, reporting to one registry."""

    def __init__(self, registry: CollectorRegistry, redis: AsyncBackend, dynamodb: Any) -> None:  # noqa: ANN401
        self.metrics = BackendMetrics(registry)
        self.rng = random.Random(3)
        self.stores = {
            name: AsyncSessionStore(
                AsyncInstrumentedBackend(backend, name=name, metrics=self.metrics), policy=POLICY
            )
            for name, backend in (("redis", redis), ("dynamodb", dynamodb))
        }
        for name, store in self.stores.items():
            registry.register(StoreStatsCollector(store.stats, name))
        registry.register(CapacityCollector(dynamodb.capacity, "dynamodb"))
        self.migration_stats = MigrationStats()
        registry.register(MigrationCollector(self.migration_stats))
        self.tier_stats = TierStats()
        registry.register(TierCollector(self.tier_stats))
        self.old = AsyncMemoryBackend()
        self.new = AsyncMemoryBackend()
        self.control = AsyncMemoryControlPlane(Stage.OFF)
        self.migration = AsyncMigration(
            self.old, self.new, self.control, stats=self.migration_stats
        )
        self.tier = AsyncTieredBackend(
            AsyncInstrumentedEvictable(AsyncMemoryBackend(), name="hot", metrics=self.metrics),
            AsyncInstrumentedBackend(AsyncMemoryBackend(), name="cold", metrics=self.metrics),
            AsyncMemoryTierIndex(),
            durability=Durability.WRITE_BACK,
            demote_after=2.0,
            active_window=1.0,
            stats=self.tier_stats,
        )

    async def run(self, seconds: float) -> None:
        """Send traffic for `seconds`, walking the migration's stages along the way."""
        async with AsyncExitStack() as stack:
            fleet = await stack.enter_async_context(
                AsyncMigratingBackend(
                    self.old, self.new, self.control, stage_ttl=0.2, compare_sample=0.5,
                    stats=self.migration_stats,
                )
            )  # fmt: skip
            migrating = AsyncSessionStore(fleet, policy=POLICY)
            tiered = AsyncSessionStore(self.tier, policy=POLICY)
            seeded = AsyncSessionStore(self.old, policy=POLICY)
            for _ in range(300):
                await seeded.create({"cart": [self.rng.randrange(100)]})
            # Sessions the traffic never touches again: idle past `demote_after` by the later
            # sweeps however fast the machine runs the traffic, so demotions always show.
            for _ in range(PARKED_TIER_SESSIONS):
                await tiered.create({"cart": [self.rng.randrange(100)]})
            began = time.monotonic()
            jobs = asyncio.create_task(self._jobs(seconds))
            ids: dict[str, list[str]] = {"redis": [], "dynamodb": [], "migrating": [], "tier": []}
            targets = {**self.stores, "migrating": migrating, "tier": tiered}
            while time.monotonic() - began < seconds:
                await asyncio.gather(
                    *(self._step(store, ids[name]) for name, store in targets.items())
                )
                await asyncio.sleep(0.01)
            await jobs

    async def _step(self, store: AsyncSessionStore, ids: list[str]) -> None:
        roll = self.rng.random()
        try:
            if not ids or roll < 0.15:  # noqa: PLR2004
                ids.append((await store.create({"cart": [self.rng.randrange(100)]})).id)
            elif roll < 0.8:  # noqa: PLR2004
                await store.get(self.rng.choice(ids))
            elif roll < 0.95:  # noqa: PLR2004
                session = await store.get(self.rng.choice(ids), touch=False)
                if session is not None:
                    session[f"page-{self.rng.randrange(4)}"] = self.rng.randrange(100)
                    await store.save(session)
            else:
                await store.delete(ids.pop(self.rng.randrange(len(ids))))
        except SessionflowError:
            pass  # a conflict or a stage change is counted by the metrics it feeds

    async def _jobs(self, seconds: float) -> None:
        """Walk the migration forward, backfill, verify, repair; sweep and flush the tier."""
        step = seconds / 6
        await self.migration.advance(force=True)  # dual writes
        await asyncio.sleep(step)
        await self.migration.backfill(page_size=50)
        await self.migration.repair()
        await self.migration.advance(force=True)  # shadow reads
        await asyncio.sleep(step)
        await self.migration.verify(mode="full", repair=True, recheck_delay=0.0)
        for _ in range(3):
            await self.tier.flush()
            await self.tier.sweep()
            await self.tier.count_lifecycle()
            await asyncio.sleep(step)
