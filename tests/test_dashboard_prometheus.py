"""Every dashboard query runs on a real Prometheus scraping real sessionflow traffic."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

import aioboto3
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis as AsyncRedis

from sessionflow import AsyncDynamoDBBackend, AsyncRedisBackend, dynamodb_client_config
from sessionflow._dashboard import (
    Workload,
    evaluate,
    evaluate_range,
    load_dashboard,
    panel_queries,
    serve_metrics,
)
from sessionflow.local_servers import DUMMY_AWS, PrometheusServer, free_port

# The repairer's counters appear once a copy to the secondary store failed, which nothing
# in this workload makes happen; its queries must still be valid. Every other panel must
# show data.
FAILURE_ONLY = {"Repairs by outcome"}

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None and not os.environ.get("SESSIONFLOW_REQUIRE_PROMETHEUS"),
    reason="prometheus is not installed (Debian: apt install prometheus; CI installs it)",
)


@pytest.mark.servers
async def test_every_panel_query_is_valid_promql_and_shows_the_workload(servers) -> None:
    registry = CollectorRegistry()
    port = free_port()
    session = aioboto3.Session(**DUMMY_AWS)
    async with (
        AsyncRedis(port=servers.redis.port) as client,
        session.client(
            "dynamodb",
            endpoint_url=servers.dynamodb.endpoint_url,
            config=dynamodb_client_config(),
        ) as ddb,
    ):
        redis = AsyncRedisBackend(client, prefix="dash")
        dynamodb = AsyncDynamoDBBackend(ddb, table_name="dashboard")
        await dynamodb.ensure_table()
        workload = Workload(registry, redis, dynamodb)
        with (
            serve_metrics(registry, port) as target,
            PrometheusServer([target], scrape_interval=0.5) as prometheus,
        ):
            await workload.run(6.0)
            await asyncio.sleep(1.5)  # the last scrapes
            panels = panel_queries(load_dashboard(), rate_interval="4s")
            empty = []
            for panel in panels:
                results = [evaluate(prometheus.url, expr) for expr, _ in panel.queries]
                if not any(results) and panel.title not in FAILURE_ONLY:
                    empty.append(panel.title)
            assert empty == []
            now = time.time()
            tiers = evaluate_range(
                prometheus.url,
                next(p for p in panels if p.title == "Per-tier latency p99").queries[0][0],
                now - 6,
                now,
                1,
            )
            assert {series["metric"]["backend"] for series in tiers} == {"hot", "cold"}
    assert workload.migration_stats.backfill_copied > 0
    assert workload.tier_stats.demotions > 0


def test_an_invalid_query_is_reported_with_prometheus_message(tmp_path) -> None:
    with (
        PrometheusServer([f"127.0.0.1:{free_port()}"]) as prometheus,
        pytest.raises(ValueError, match="bad_data"),
    ):
        evaluate(prometheus.url, "sum by (")
