"""Draw docs/images/dashboard.png: the Grafana dashboard's panels, with real data.

    python scripts/render_dashboard.py [--seconds 60] [--out docs/images/dashboard.png]

Starts Redis, DynamoDB Local and Prometheus on loopback, runs the dashboard workload
(stores, a migration, a hybrid tier) while Prometheus scrapes it, then evaluates every
panel's queries over the run through Prometheus's HTTP API and draws them on the
dashboard's own grid. Grafana itself is not needed: the queries are the dashboard's.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any

import aioboto3
import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from sessionflow import AsyncDynamoDBBackend, AsyncRedisBackend, dynamodb_client_config
from sessionflow._dashboard import (
    PanelQueries,
    Workload,
    evaluate_range,
    load_dashboard,
    panel_queries,
    serve_metrics,
)
from sessionflow.local_servers import (
    DUMMY_AWS,
    DynamoDBLocal,
    PrometheusServer,
    RedisServer,
    free_port,
)

ROOT = Path(__file__).resolve().parent.parent
ROW_HEIGHT = 0.42  # inches per Grafana grid row
MAX_LEGEND = 8  # series; beyond this a legend hides the plot


async def record(port: int, seconds: float) -> tuple[float, float]:
    """Run the workload with its metrics on `port`; return the window it ran in."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    registry = CollectorRegistry()
    with RedisServer() as redis_server, DynamoDBLocal() as ddb_server:
        session = aioboto3.Session(**DUMMY_AWS)
        async with (
            Redis(port=redis_server.port) as client,
            session.client(
                "dynamodb", endpoint_url=ddb_server.endpoint_url, config=dynamodb_client_config()
            ) as ddb,
        ):
            dynamodb = AsyncDynamoDBBackend(ddb, table_name="dashboard")
            await dynamodb.ensure_table()
            workload = Workload(registry, AsyncRedisBackend(client, prefix="dash"), dynamodb)
            with serve_metrics(registry, port):
                began = time.time()
                await workload.run(seconds)
                await asyncio.sleep(3)  # the last scrapes
                return began, time.time()


def draw(prometheus_url: str, start: float, end: float, out: Path) -> None:
    """Evaluate every panel over the window and draw the dashboard's grid."""
    dashboard = load_dashboard()
    panels = {p.title: p for p in panel_queries(dashboard, rate_interval="5s")}
    layout = dashboard["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in layout)
    figure = plt.figure(figsize=(18, height * ROW_HEIGHT))
    grid = figure.add_gridspec(height, 24, hspace=0.0, wspace=0.0)
    for panel in layout:
        pos = panel["gridPos"]
        if panel["type"] == "row":
            ax = figure.add_subplot(grid[pos["y"] : pos["y"] + 1, :])
            ax.axis("off")
            ax.text(0, 0.2, panel["title"], fontsize=13, weight="bold")
            continue
        ax = figure.add_subplot(
            grid[pos["y"] + 1 : pos["y"] + pos["h"] - 1, pos["x"] : pos["x"] + pos["w"]]
        )
        _panel(ax, panels[panel["title"]], prometheus_url, start, end)
    figure.subplots_adjust(left=0.03, right=0.99, top=0.99, bottom=0.02)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)
    print(f"wrote {out}")


def _panel(ax: Any, panel: PanelQueries, url: str, start: float, end: float) -> None:  # noqa: ANN401 - a matplotlib Axes
    ax.set_title(panel.title, fontsize=8, loc="left")
    ax.tick_params(labelsize=6)
    drawn = 0
    for expr, legend in panel.queries:
        for series in evaluate_range(url, expr, start, end, 2):
            points = [(float(t) - start, float(v)) for t, v in series["values"]]
            points = [(t, v) for t, v in points if math.isfinite(v)]
            if not points:
                continue
            label = legend
            for name, value in series["metric"].items():
                label = label.replace("{{" + name + "}}", value)
            ax.plot([t for t, _ in points], [v for _, v in points], label=label[:40], lw=1)
            drawn += 1
    if drawn == 0:
        ax.text(0.5, 0.5, "no data (appears after a failure)", ha="center", va="center",
                fontsize=7, transform=ax.transAxes, color="grey")  # fmt: skip
    elif drawn <= MAX_LEGEND:
        ax.legend(fontsize=5, loc="upper left")
    ax.set_xlabel(f"seconds ({panel.unit})", fontsize=6)


def main() -> None:
    """Record the workload under Prometheus, then draw the panels."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "dashboard.png")
    args = parser.parse_args()
    port = free_port()
    with PrometheusServer([f"127.0.0.1:{port}"], scrape_interval=1.0) as prometheus:
        start, end = asyncio.run(record(port, args.seconds))
        draw(prometheus.url, start, end, args.out)


if __name__ == "__main__":
    main()
