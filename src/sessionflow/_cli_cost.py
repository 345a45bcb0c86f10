"""``sessionflow cost``: monthly cost of Redis, DynamoDB and the hybrid tier from measured traffic.

Exit codes: 0 done; 2 bad arguments, an unreadable report or price table, or metrics that
could not be scraped.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sessionflow._cli_limits import LONGEST_WAIT_SECONDS
from sessionflow._cost_inputs import Scaling, from_load_report, from_metrics
from sessionflow._cost_model import (
    DEFAULT_PRICES,
    Knobs,
    PriceTable,
    Workload,
    bundled_tables,
    estimate_all,
)
from sessionflow._cost_playbook import audit_playbook
from sessionflow._errors import ConfigError, one_line

cost_app = typer.Typer(
    name="cost",
    help="Price session storage from measured traffic (docs/operations.md).",
    no_args_is_help=True,
)
console = Console()

PRICES_OPTION = typer.Option(
    DEFAULT_PRICES, "--prices", help="A bundled price table's name, or a TOML file of your own."
)
JSON_OPTION = typer.Option(None, "--json", help="Also write the result as JSON here.")


def _write_json(path: Path, data: Any) -> None:  # noqa: ANN401 - any JSON-ready value
    try:
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    except OSError as exc:
        raise _fail(f"cannot write {path}: {exc.strerror or exc}") from exc
    console.print(f"written: {path}")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]sessionflow cost: {escape(one_line(message))}[/red]", soft_wrap=True)
    return typer.Exit(2)


def _workload(
    report: Path | None,
    target: str | None,
    metrics_url: str | None,
    window: float,
    scaling: Scaling,
    backend: str | None,
) -> Workload:
    if (report is None) == (metrics_url is None):
        raise ConfigError("give one source: --report (a load test) or --metrics-url (a process)")
    if report is not None:
        try:
            data = orjson.loads(report.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read the load report {report}: {exc}") from exc
        return from_load_report(data, scaling, target=target)
    assert metrics_url is not None  # noqa: S101 - checked above
    before = _fetch(metrics_url)
    started = time.monotonic()
    console.print(f"scraping {escape(metrics_url)} again in {window:g} s ...")
    time.sleep(window)
    after = _fetch(metrics_url)
    return from_metrics(before, after, time.monotonic() - started, scaling, backend=backend)


def _fetch(url: str) -> str:
    import httpx  # noqa: PLC0415

    try:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
        raise ConfigError(f"cannot scrape {url}: {exc}") from exc
    return response.text


@cost_app.command("estimate")
def estimate(
    sessions: int = typer.Option(..., min=0, help="Sessions stored in production."),
    report: Path | None = typer.Option(None, help="A `sessionflow bench load` report.json."),
    target: str | None = typer.Option(None, help="Which target of the report (default: first)."),
    metrics_url: str | None = typer.Option(
        None, help="A sessionflow /metrics URL, scraped twice --window seconds apart."
    ),
    window: float = typer.Option(
        60.0, min=1, max=LONGEST_WAIT_SECONDS, help="Seconds between the two scrapes."
    ),
    backend: str | None = typer.Option(None, help="Only this `backend` label of the metrics."),
    scale: float = typer.Option(1.0, min=0.000001, help="Multiply the measured request rates."),
    peak_factor: float | None = typer.Option(None, min=1, help="Peak rate over mean rate."),
    item_bytes: float | None = typer.Option(None, min=1, help="DynamoDB item size per session."),
    redis_bytes_per_session: float | None = typer.Option(
        None, min=1, help="Redis memory per session."
    ),
    hot_fraction: float = typer.Option(0.2, min=0, max=1, help="Hybrid: share of sessions hot."),
    hot_sessions: int | None = typer.Option(
        None,
        min=0,
        help="Hybrid: the hot set's size (default: a tier's gauge, else --hot-fraction).",
    ),
    hybrid_read_share: float = typer.Option(
        0.05, min=0, max=1, help="Hybrid: share of reads that reach DynamoDB (promotions)."
    ),
    hybrid_write_share: float = typer.Option(
        0.21, min=0, max=1, help="Hybrid: share of writes that reach DynamoDB (write-back: ~0.21)."
    ),
    replicas: int = typer.Option(1, min=0, help="ElastiCache replicas per shard."),
    target_utilization: float = typer.Option(0.7, min=0.05, max=1, help="Provisioned headroom."),
    dax_nodes: int = typer.Option(3, min=1, help="DAX cluster size."),
    dax_node_type: str | None = typer.Option(None, help="DAX node type (default: the cheapest)."),
    dax_hit_rate: float = typer.Option(0.0, min=0, max=1, help="Share of reads DAX answers."),
    prices: str = PRICES_OPTION,
    json_out: Path | None = JSON_OPTION,
) -> None:
    """Print monthly cost: Redis only, DynamoDB on-demand, provisioned, +DAX, hybrid tier."""
    try:
        table = PriceTable.load(prices)
        scaling = Scaling(
            sessions=sessions,
            scale=scale,
            peak_factor=peak_factor,
            item_bytes=item_bytes,
            redis_bytes_per_session=redis_bytes_per_session,
            hot_fraction=hot_fraction,
            hot_sessions=hot_sessions,
            hybrid_read_share=hybrid_read_share,
            hybrid_write_share=hybrid_write_share,
        )
        workload = _workload(report, target, metrics_url, window, scaling, backend)
        knobs = Knobs(
            replicas=replicas,
            target_utilization=target_utilization,
            dax_nodes=dax_nodes,
            dax_node_type=dax_node_type,
            dax_hit_rate=dax_hit_rate,
        )
        estimates = estimate_all(workload, table, knobs)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    _print_estimates(workload, table, estimates)
    if json_out is not None:
        result = {
            "prices": {"name": table.name, "recorded": table.recorded, "sources": table.sources},
            "workload": {**workload.__dict__, "notes": list(workload.notes)},
            "estimates": [each.to_json() for each in estimates],
        }
        _write_json(json_out, result)


def _print_estimates(workload: Workload, table: PriceTable, estimates: list[Any]) -> None:
    console.print(
        f"workload: {workload.read_units_per_second:,.1f} read units/s, "
        f"{workload.write_units_per_second:,.1f} write units/s, peak {workload.peak_factor:.1f}x, "
        f"{workload.sessions:,} sessions of {workload.item_bytes:,.0f} B "
        f"({workload.redis_bytes_per_session:,.0f} B in Redis); {workload.source}"
    )
    for note in workload.notes:
        console.print(f"  note: {note}")
    result = Table("option", "monthly $", "line items", title="monthly cost", show_lines=True)
    for each in estimates:
        items = "\n".join(f"{i.what}: {i.quantity} = ${i.monthly:,.2f}" for i in each.items)
        result.add_row(each.option, f"{each.monthly:,.2f}", items)
    console.print(result)
    for each in estimates:
        for assumption in each.assumptions:
            console.print(f"[dim]{escape(each.option)}: {escape(assumption)}[/dim]")
    console.print(f"prices: {table.name}, recorded {table.recorded}")
    for service, source in table.sources.items():
        console.print(f"  {service}: {escape(source)}")


@cost_app.command("playbook")
def playbook(json_out: Path | None = JSON_OPTION) -> None:
    """Recompute the migration playbook's cost table from its own quantities and prices."""
    audit = audit_playbook()
    table = Table("store", "line", "basis", "stated $", "computed $", "", title="playbook table")
    for line in audit.lines:
        computed = "-" if line.computed is None else f"{line.computed:,.2f}"
        mark = ""
        if line.consistent is not None and line.implied_quantity is not None:
            implied = f"[red]the stated $ implies {line.implied_quantity:,.1f}[/red]"
            mark = "[green]ok[/green]" if line.consistent else implied
        table.add_row(line.store, line.what, line.basis, f"{line.stated:,.0f}", computed, mark)
    console.print(table)
    data = audit.to_json()
    console.print(
        f"totals: Redis ${data['redis_monthly']:,.0f}, DynamoDB ${data['dynamodb_monthly']:,.0f}, "
        f"saving ${data['monthly_savings']:,.0f}/month, ${data['annual_savings']:,.0f}/year "
        f"({data['reduction']:.0%})"
    )
    console.print(
        f"return on the migration: year 1 ${data['roi_year_1']:,.0f} (stated "
        f"${data['stated_roi']['year_1']:,.0f}); 3 years ${data['roi_year_3']:,.0f}, "
        f"{data['roi_year_3_percent']:.0f}% (stated ${data['stated_roi']['year_3']:,.0f}, "
        f"{data['stated_roi']['year_3_percent']:.0f}%)"
    )
    console.print(
        f"{len(audit.inconsistent)} line(s) do not follow from their own quantity and price"
    )
    if json_out is not None:
        _write_json(json_out, data)


@cost_app.command("prices")
def prices_command(prices: str = PRICES_OPTION) -> None:
    """Show a price table (the bundled ones are listed first)."""
    console.print("bundled: " + ", ".join(bundled_tables()))
    try:
        table = PriceTable.load(prices)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"{table.name}, recorded {table.recorded}, {table.hours_per_month:g} h/month")
    console.print(
        f"DynamoDB on-demand: ${table.on_demand_read_per_million}/M reads, "
        f"${table.on_demand_write_per_million}/M writes; provisioned "
        f"${table.provisioned_rcu_hour}/RCU-h, ${table.provisioned_wcu_hour}/WCU-h; storage "
        f"${table.storage_gb_month}/GB-month ({table.free_storage_gb:g} GB free)"
    )
    for node in table.cache_nodes:
        console.print(f"  {node.name}: ${node.hourly}/h, {node.memory_gib} GiB")
    for node in table.dax_nodes:
        console.print(f"  {node.name}: ${node.hourly:.3f}/h")
    for service, source in table.sources.items():
        console.print(f"  {service}: {escape(source)}")
