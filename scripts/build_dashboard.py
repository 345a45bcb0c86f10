"""Write the Grafana dashboard (dashboards/sessionflow.json) from the panel list below.

    python scripts/build_dashboard.py          # rewrite the JSON
    python scripts/build_dashboard.py --check  # exit 1 if the committed JSON is stale

The on-demand prices of the cost panels come from the bundled price table, so the
dashboard and `sessionflow cost` agree; both are dashboard variables a user may change.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sessionflow._cost_model import DEFAULT_PRICES, PriceTable

OUT = Path(__file__).resolve().parent.parent / "dashboards" / "sessionflow.json"
RATE = "[$__rate_interval]"
LATENCY = "sessionflow_backend_request_duration_seconds"
CAPACITY = "sessionflow_dynamodb_consumed_capacity_units_total"
READ_OPS = 'operation=~"get|get_many|scan|user_keys"'
WRITE_OPS = 'operation!~"get|get_many|scan|user_keys"'
SECONDS_PER_MONTH = 730 * 3600


def target(expr: str, legend: str) -> dict[str, Any]:
    """One PromQL query of a panel."""
    return {"expr": expr, "legendFormat": legend}


def panel(
    title: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    width: int = 8,
    description: str = "",
) -> dict[str, Any]:
    """Build a Grafana panel on the Prometheus datasource variable."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)],
        "_width": width,
    }


def quantile(q: float, by: str, selector: str = "") -> str:
    """Build a latency quantile query of the backend histogram, grouped by `by`."""
    return f"histogram_quantile({q}, sum by (le, {by}) (rate({LATENCY}_bucket{selector}{RATE})))"


SECTIONS: list[tuple[str, list[dict[str, Any]]]] = [
    ("Sessions and stores", [
        panel("Latency p50 / p99 by store and operation", [
            target(quantile(0.5, "backend, operation"), "p50 {{backend}} {{operation}}"),
            target(quantile(0.99, "backend, operation"), "p99 {{backend}} {{operation}}"),
        ], unit="s", width=12),
        panel("Requests per second by store and outcome", [
            target(f"sum by (backend, outcome) (rate({LATENCY}_count{RATE}))",
                   "{{backend}} {{outcome}}"),
        ], unit="reqps", width=12),
        panel("Error rate by store", [
            # "or ... * 0": a store without failures shows 0, not "no data"
            target(f'(sum by (backend) (rate({LATENCY}_count{{outcome=~"error|corrupt|too_large"}}'
                   f"{RATE})) or sum by (backend) (rate({LATENCY}_count{RATE})) * 0) / "
                   f"sum by (backend) (rate({LATENCY}_count{RATE}))", "{{backend}}"),
        ], unit="percentunit", description="Failed calls over all calls (conflicts excluded)."),
        panel("Conflicts merged and raised", [
            target(f"sum by (store) (rate(sessionflow_store_merged_conflicts_total{RATE}))",
                   "merged {{store}}"),
            target(f"sum by (store) (rate(sessionflow_store_raised_conflicts_total{RATE}))",
                   "raised {{store}}"),
        ], unit="ops"),
        panel("Unreadable records (left in place, counted)", [
            target(f"sum by (store) (increase(sessionflow_store_unreadable_records_total{RATE}))",
                   "{{store}}"),
        ]),
    ]),
    ("Migration", [
        panel("Stage of each process", [
            target("sum by (stage) (sessionflow_migration_stage)", "{{stage}}"),
        ], kind="stat", width=6,
            description="How many processes run each stage; more than one means a rollout."),
        panel("Dual-writes by store, role and outcome", [
            target("sum by (store, role, outcome) "
                   f"(rate(sessionflow_migration_writes_total{RATE}))",
                   "{{store}} {{role}} {{outcome}}"),
        ], unit="ops", width=9),
        panel("Reads by store: hit, miss, error", [
            target(f"sum by (store, outcome) (rate(sessionflow_migration_reads_total{RATE}))",
                   "{{store}} {{outcome}}"),
        ], unit="ops", width=9),
        panel("Control record: read errors, restores (last stage kept)", [
            target("sum(increase(sessionflow_migration_stage_read_errors_total"
                   f"{RATE}))", "read errors"),
            target("sum(increase(sessionflow_migration_stage_records_restored_total"
                   f"{RATE}))", "written back after a loss"),
        ], width=6),
        panel("Repair queue depth", [
            target("max(sessionflow_migration_repair_queue_depth)", "keys waiting"),
        ], width=6),
        panel("Repair queue oldest age", [
            target("max(sessionflow_migration_repair_queue_oldest_age_seconds)", "oldest"),
        ], unit="s", width=6),
        panel("Repairs by outcome", [
            target(f"sum by (outcome) (rate(sessionflow_migration_repaired_total{RATE}))",
                   "{{outcome}}"),
        ], unit="ops", width=6),
        panel("Shadow-read mismatches", [
            target(f"sum by (kind) (increase(sessionflow_migration_mismatches_total{RATE}))",
                   "{{kind}}"),
            target("sum(increase(sessionflow_migration_mismatch_false_positives_total"
                   f"{RATE}))", "in flight (dropped on re-check)"),
        ], width=6),
        panel("Backfill progress", [
            target("max(sessionflow_migration_backfill_scanned_records)", "scanned"),
            target("max(sessionflow_migration_backfill_copied_records)", "copied"),
        ], width=6),
        panel("Backfill rate", [
            target("sum(sessionflow_migration_backfill_rate)", "records/s"),
        ], width=6),
        panel("Last verification", [
            target("max(sessionflow_migration_verify_checked_sessions)", "checked"),
            target("max(sessionflow_migration_verify_inconsistent_sessions)", "inconsistent"),
            target("max(sessionflow_migration_verify_inconsistency_rate)", "rate"),
        ], kind="stat", width=6),
    ]),
    ("Hybrid tier", [
        panel("Hot / cold ratio", [
            target('sum(sessionflow_tier_sessions{tier="hot"}) / '
                   'clamp_min(sum(sessionflow_tier_sessions{tier="cold"}), 1)', "hot per cold"),
        ], width=6),
        panel("Sessions by lifecycle state", [
            target("sum by (state) (sessionflow_tier_lifecycle_sessions)", "{{state}}"),
        ], width=6),
        panel("Reads by tier (hot hit rate)", [
            target(f"sum by (found) (rate(sessionflow_tier_reads_total{RATE}))", "{{found}}"),
            target(f'sum(rate(sessionflow_tier_reads_total{{found="hot"}}{RATE})) / '
                   f"sum(rate(sessionflow_tier_reads_total{RATE}))", "hot hit rate"),
        ], unit="ops", width=6),
        panel("Promotions and demotions", [
            target(f"sum(rate(sessionflow_tier_promotions_total{RATE}))", "promotions"),
            target(f"sum(rate(sessionflow_tier_demotions_total{RATE}))", "demotions"),
            target(f"sum(rate(sessionflow_tier_demotions_skipped_total{RATE}))",
                   "left hot (used while demoting)"),
        ], unit="ops", width=6),
        panel("Write-back: unflushed changes and flush lag", [
            target("sum(sessionflow_tier_dirty_sessions)", "dirty sessions"),
            target(f"sum(rate(sessionflow_tier_flushed_total{RATE}))", "flushed /s"),
            target("max(sessionflow_tier_flush_lag_seconds)", "flush lag (s)"),
        ]),
        panel("Per-tier latency p99", [
            target(quantile(0.99, "backend", '{backend=~"hot|cold"}'), "{{backend}}"),
        ], unit="s"),
        panel("Hot tier health", [
            target(f"sum(increase(sessionflow_tier_hot_outages_total{RATE}))", "outages"),
            target(f"sum(rate(sessionflow_tier_degraded_writes_total{RATE}))", "degraded writes"),
            target(f"sum(rate(sessionflow_tier_outage_repairs_total{RATE}))", "repairs"),
            target(f"sum(rate(sessionflow_tier_stale_writes_total{RATE}))", "stale writes"),
            target(f"sum(rate(sessionflow_tier_handoffs_total{RATE}))", "hand-offs"),
            target(f"sum(rate(sessionflow_tier_peer_failures_total{RATE}))", "peer failures"),
            target(f"sum(rate(sessionflow_tier_cold_write_failures_total{RATE}))",
                   "cold write failures"),
            target(f"sum(increase(sessionflow_tier_cold_refusals_total{RATE}))",
                   "cold refusals (kept hot only)"),
        ]),
    ]),
    ("DynamoDB capacity and cost", [
        panel("Consumed capacity units per second by operation", [
            target(f"sum by (operation) (rate({CAPACITY}{RATE}))", "{{operation}}"),
        ], width=12),
        panel("Estimated DynamoDB on-demand cost per month", [
            target(f"sum(rate({CAPACITY}{{{READ_OPS}}}[1h])) * {SECONDS_PER_MONTH} / 1e6 * "
                   "$read_price_per_million", "reads"),
            target(f"sum(rate({CAPACITY}{{{WRITE_OPS}}}[1h])) * {SECONDS_PER_MONTH} / 1e6 * "
                   "$write_price_per_million", "writes"),
        ], unit="currencyUSD", width=12,
            description="This process's last hour of consumed capacity at on-demand prices "
                        "(dashboard variables; `sessionflow cost` prices the whole picture)."),
    ]),
]  # fmt: skip


def dashboard() -> dict[str, Any]:
    """Build the dashboard: rows of panels laid out on Grafana's 24-column grid."""
    prices = PriceTable.load(DEFAULT_PRICES)
    panels: list[dict[str, Any]] = []
    y = 0
    for title, members in SECTIONS:
        panels.append({"type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        y += 1
        x = 0
        for template in members:
            member = dict(template)
            width = member.pop("_width")
            if x + width > 24:  # noqa: PLR2004 - Grafana's grid is 24 wide
                x, y = 0, y + 8
            member["gridPos"] = {"h": 8, "w": width, "x": x, "y": y}
            x += width
            panels.append(member)
        y += 8
    for number, each in enumerate(panels, 1):
        each["id"] = number
    constants = [
        ("read_price_per_million", prices.on_demand_read_per_million),
        ("write_price_per_million", prices.on_demand_write_per_million),
    ]
    return {
        "title": "sessionflow",
        "uid": "sessionflow",
        "description": "Session stores, migrations and the hybrid tier (docs/operations.md).",
        "tags": ["sessionflow", "sessions"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                *[
                    {
                        "name": name,
                        "type": "constant",
                        "query": str(value),
                        "hide": 2,
                        "description": f"USD, from the price table {prices.name}",
                    }
                    for name, value in constants
                ],
            ]
        },
        "panels": panels,
    }


def render() -> str:
    """Render the dashboard as the committed JSON text."""
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    """Write the JSON, or with --check report whether it is current."""
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.name} is stale: run python scripts/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
