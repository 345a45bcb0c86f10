"""The Grafana dashboard queries only metrics (and labels) the code really exports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from sessionflow._cost_model import PriceTable
from sessionflow._dynamodb_layout import CapacityMeter
from sessionflow._metrics import (
    BackendMetrics,
    CapacityCollector,
    MigrationCollector,
    StoreStatsCollector,
    TierCollector,
)
from sessionflow._migration_stats import MigrationStats
from sessionflow._stages import Stage
from sessionflow._store_stats import StoreStats
from sessionflow._tier import TierStats

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = json.loads((ROOT / "dashboards" / "sessionflow.json").read_text())
METRIC = re.compile(r"\bsessionflow_[a-z_]+")
BY = re.compile(r"\bby \(([^)]*)\)")
MATCHER = re.compile(r"\{([^}]*)\}")
PROMQL_WORDS = {"le"}


def exported() -> dict[str, set[str]]:
    """Every sample name a fully populated registry exposes, with its label names."""
    registry = CollectorRegistry()
    metrics = BackendMetrics(registry)
    with metrics.observe("redis", "get"):
        pass
    capacity = CapacityMeter()
    capacity.record("get", {"ConsumedCapacity": {"CapacityUnits": 1.0}})
    registry.register(CapacityCollector(capacity, "dynamodb"))
    registry.register(StoreStatsCollector(StoreStats(), "sessions"))
    stats = MigrationStats(stage=Stage.DUALWRITE)
    stats.count_write("old", "primary", ok=True)
    stats.reads[("new", "hit")] += 1
    stats.mismatches["differs"] += 1
    stats.repaired["copied"] += 1
    registry.register(MigrationCollector(stats))
    registry.register(TierCollector(TierStats(lifecycle={"hot": 1, "cold": 2})))
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    return names


def queries() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in DASHBOARD["panels"]
        for target in panel.get("targets", [])
    ]


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "build_dashboard.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_query_names_an_exported_metric() -> None:
    names = exported()
    used: set[str] = set()
    for title, expr in queries():
        found = METRIC.findall(expr)
        assert found, f"{title}: {expr} names no sessionflow metric"
        for name in found:
            assert name in names, f"{title}: {name} is not exported (exported: {sorted(names)})"
            used.add(name)
    # the dashboard shows every family of the migration and the tier, not a chosen few
    families = {name.removesuffix("_total") for name in names if "_bucket" not in name}
    unused = {
        name
        for name in families
        if name.startswith(("sessionflow_migration_", "sessionflow_tier_"))
        and name not in {u.removesuffix("_total") for u in used}
    }
    assert unused == set()


def test_every_grouping_and_matcher_label_exists_on_the_metrics_it_reads() -> None:
    names = exported()
    for title, expr in queries():
        labels = set().union(*(names[name] for name in METRIC.findall(expr)))
        grouped = {label.strip() for group in BY.findall(expr) for label in group.split(",")}
        matched = {
            re.split(r"[=!~]", matcher.strip())[0].strip()
            for block in MATCHER.findall(expr)
            for matcher in block.split(",")
            if matcher.strip()
        }
        unknown = (grouped | matched) - labels - PROMQL_WORDS
        assert unknown == set(), f"{title}: labels {unknown} are not on {METRIC.findall(expr)}"


def test_the_panels_the_seeds_ask_for_are_there() -> None:
    titles = " | ".join(panel["title"] for panel in DASHBOARD["panels"]).lower()
    for wanted in ("latency", "error rate", "dual-writes", "repair queue", "hot / cold ratio",
                   "consumed capacity", "cost"):  # fmt: skip
        assert wanted in titles, wanted


def test_the_layout_is_valid_grafana() -> None:
    panels = DASHBOARD["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}"
            assert all(target["refId"] for target in panel["targets"])


def test_the_cost_panels_use_the_bundled_prices() -> None:
    prices = PriceTable.load()
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert float(variables["read_price_per_million"]["query"]) == prices.on_demand_read_per_million
    assert float(variables["write_price_per_million"]["query"]) == (
        prices.on_demand_write_per_million
    )
    cost = [expr for title, expr in queries() if "cost" in title.lower()]
    assert all("$read_price_per_million" in e or "$write_price_per_million" in e for e in cost)
