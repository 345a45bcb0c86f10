"""`sessionflow cost`: the price tables, the model's arithmetic, its inputs and the playbook."""

from __future__ import annotations

import math

import boto3
import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from typer.testing import CliRunner

from sessionflow import DynamoDBBackend, SessionStore, dynamodb_client_config
from sessionflow._cost_inputs import Scaling, from_load_report, from_metrics, units_per_request
from sessionflow._cost_model import (
    Knobs,
    PriceTable,
    Workload,
    bundled_tables,
    estimate_all,
)
from sessionflow._cost_playbook import audit_playbook
from sessionflow._errors import ConfigError
from sessionflow._metrics import BackendMetrics, CapacityCollector
from sessionflow._sync.backends.instrumented import InstrumentedBackend
from sessionflow.cli import app
from sessionflow.local_servers import DUMMY_AWS

runner = CliRunner()
PRICES = PriceTable.load()
MONTH_SECONDS = 730 * 3600


# -- the playbook -----------------------------------------------------------------------


def test_the_playbook_table_sums_to_its_own_totals() -> None:
    audit = audit_playbook()
    assert audit.total("redis") == 847
    assert audit.total("dynamodb") == 623
    assert audit.monthly_savings == 224
    assert audit.annual_savings == 2688
    assert round(audit.reduction * 100) == 26
    assert audit.roi(1) == -4312  # the playbook's year-one figure


def test_the_playbook_lines_that_do_not_follow_from_their_inputs_are_named() -> None:
    audit = audit_playbook()
    wrong = {line.what: line for line in audit.inconsistent}
    assert set(wrong) == {
        "Data transfer: cross-AZ",
        "Read units: on-demand",
        "Write units: on-demand",
        "Storage",
    }
    reads = wrong["Read units: on-demand"]
    assert reads.computed == pytest.approx(1.125)  # 4.5M reads at $0.25 per million
    assert reads.implied_quantity == pytest.approx(936)  # $234 buys 936M reads
    assert wrong["Storage"].computed == 25  # 100 GB at $0.25
    support = next(line for line in audit.lines if line.what.startswith("Support"))
    assert support.consistent is True  # 4 hours at $25
    data = audit.to_json()
    assert data["roi_year_3"] == 17_064  # three years of $10,688 less $15,000
    assert data["stated_roi"]["year_3"] == 27_064


def test_cost_playbook_command() -> None:
    result = runner.invoke(app, ["cost", "playbook"])
    assert result.exit_code == 0, result.output
    assert "Redis $847, DynamoDB $623, saving $224/month, $2,688/year (26%)" in result.output
    assert "4 line(s) do not follow" in result.output


# -- price tables -----------------------------------------------------------------------


def test_bundled_tables_load_with_sources_and_dates() -> None:
    assert {"aws-us-east-1-2026-11", "playbook-2024"} <= set(bundled_tables())
    assert PRICES.recorded == "2026-11-22"
    assert PRICES.on_demand_write_per_million == 0.625
    assert all(source.startswith("https://aws.amazon.com/") for source in PRICES.sources.values())
    memories = [node.memory_gib for node in PRICES.cache_nodes]
    assert memories == sorted(memories)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("name = 'x'", "lacks 'dynamodb'"),
        ("name = [", "not valid TOML"),
        (
            (
                "name='x'\nrecorded='y'\nhours_per_month=730\n[dynamodb]\n"
                "on_demand_read_per_million=-1\n[dax]\nnodes={}\n[elasticache]\nnodes={}"
            ),
            "must be a positive number",
        ),
    ],
)
def test_a_bad_price_table_is_refused(tmp_path, text: str, reason: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=reason):
        PriceTable.load(path)


def test_an_unknown_price_table_names_the_bundled_ones() -> None:
    with pytest.raises(ConfigError, match="bundled: aws-us-east-1-2026-11"):
        PriceTable.load("azure-2031")


# -- the model's arithmetic -------------------------------------------------------------


def workload(**overrides: object) -> Workload:
    fields: dict[str, object] = {
        "read_units_per_second": 1000.0,
        "write_units_per_second": 100.0,
        "sessions": 1_000_000,
        "item_bytes": 1000.0,
        "redis_bytes_per_session": 2000.0,
        "peak_factor": 2.0,
    }
    return Workload(**{**fields, **overrides})  # type: ignore[arg-type]


def by_option(estimates) -> dict[str, object]:
    return {each.option: each for each in estimates}


def test_each_option_is_priced_from_the_table() -> None:
    options = by_option(estimate_all(workload(), PRICES))
    on_demand = options["DynamoDB on-demand"]
    reads, writes, storage = (item.monthly for item in on_demand.items)
    assert reads == pytest.approx(1000 * MONTH_SECONDS / 1e6 * 0.125)  # $328.50
    assert writes == pytest.approx(100 * MONTH_SECONDS / 1e6 * 0.625)  # $164.25
    assert storage == 0  # 1 GB lies inside the free 25 GB
    provisioned = options["DynamoDB provisioned"]
    rcu, wcu, _ = provisioned.items
    assert rcu.quantity == "2,858 RCU"  # 1000 x 2 (peak) / 0.7, rounded up
    assert rcu.monthly == pytest.approx(2858 * 0.00013 * 730)
    assert wcu.monthly == pytest.approx(286 * 0.00065 * 730)
    redis = options["Redis only (ElastiCache)"]
    # 2 GB of sessions: a t4g.small keeps 1.03 GiB free, a t4g.medium 2.32 GiB
    assert redis.items[0].quantity.startswith("2 x cache.t4g.medium")
    assert redis.monthly == pytest.approx(2 * 0.065 * 730)


@pytest.mark.parametrize(
    "overrides",
    [
        {"read_units_per_second": 1e305},
        {"sessions": 10**305},
        {"redis_bytes_per_session": 1e305},
    ],
)
def test_a_workload_too_large_to_price_is_refused(overrides: dict[str, object]) -> None:
    # Each input is finite, but a price comes to more than a float holds: an estimate of
    # "$inf" (or "null" in the JSON report) is refused with the option it broke.
    with pytest.raises(ConfigError, match="too large to price"):
        estimate_all(workload(**overrides), PRICES)


def test_redis_shards_when_no_node_holds_the_data() -> None:
    big = workload(sessions=400_000_000)  # 800 GB in Redis
    redis = by_option(estimate_all(big, PRICES, Knobs(replicas=2)))["Redis only (ElastiCache)"]
    room = 105.81 * 2**30 * 0.75
    shards = math.ceil(400_000_000 * 2000 / room)
    assert redis.items[0].quantity.startswith(f"{shards * 3} x cache.r6g.4xlarge ({shards} shard")


def test_dax_takes_its_hit_rate_off_the_reads_and_adds_its_nodes() -> None:
    knobs = Knobs(dax_hit_rate=0.8, dax_nodes=3, dax_node_type="dax.r5.large")
    dax = by_option(estimate_all(workload(), PRICES, knobs))["DynamoDB provisioned + DAX"]
    rcu, _, nodes, _ = dax.items
    assert rcu.quantity == f"{math.ceil(200 * 2 / 0.7):,} RCU"
    assert nodes.monthly == pytest.approx(3 * 0.269 * 730)
    with pytest.raises(ConfigError, match="no DAX node type"):
        estimate_all(workload(), PRICES, Knobs(dax_node_type="dax.z9.huge"))


def test_the_hybrid_sizes_redis_for_the_hot_set_and_sends_dynamodb_its_share() -> None:
    hot = workload(hot_fraction=0.1, hybrid_read_share=0.05, hybrid_write_share=0.2)
    hybrid = by_option(estimate_all(hot, PRICES))["Hybrid tier (Redis hot, DynamoDB cold)"]
    redis, reads, writes, _ = hybrid.items
    assert redis.quantity.startswith("2 x cache.t4g.small")  # 0.19 GiB hot
    assert reads.monthly == pytest.approx(50 * MONTH_SECONDS / 1e6 * 0.125)
    assert writes.monthly == pytest.approx(20 * MONTH_SECONDS / 1e6 * 0.625)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"read_units_per_second": -1.0}, "finite number"),
        ({"item_bytes": math.nan}, "finite number"),
        ({"hot_fraction": 1.5}, "between 0 and 1"),
        ({"peak_factor": 0.5}, "peak factor"),
        ({"sessions": -1}, "sessions"),
    ],
)
def test_a_bad_workload_is_refused(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        workload(**overrides)


# -- inputs: a load report --------------------------------------------------------------


def load_report(capacity: dict[str, float] | None, **extra: object) -> dict[str, object]:
    run = {
        "seconds": 10.0,
        "requests_by_operation": {"read": 700, "update": 200, "create": 100},
        "dynamodb_item_bytes": 900,
        "consumed_capacity": capacity,
        "phases": [
            {"target_rate": 50.0, "duration": 10.0, "achieved_rate": 50.0},
            {"target_rate": 150.0, "duration": 10.0, "achieved_rate": 90.0},  # saturated
        ],
        **extra,
    }
    return {"targets": {"dynamodb": run}}


def test_a_load_report_with_measured_capacity_uses_it() -> None:
    report = load_report({"get": 900.0, "save": 200.0, "create": 100.0})
    work = from_load_report(report, Scaling(sessions=10, scale=2))
    assert work.read_units_per_second == 180  # 900 units / 10 s x 2
    assert work.write_units_per_second == 60
    assert work.peak_factor == 1.5  # the plan: 150/s peak against a 100/s mean
    assert work.source == "consumed capacity measured on dynamodb"


def test_a_load_report_without_capacity_is_priced_per_operation() -> None:
    work = from_load_report(load_report(None, redis_bytes_per_session=1500.0), Scaling(sessions=1))
    # read: 1 read; update: 1 read + 1 write; create: 1 write; a 900-byte item is 1 unit
    assert units_per_request(900) == (1.0, 1.0)
    assert work.read_units_per_second == 90
    assert work.write_units_per_second == 30
    assert work.redis_bytes_per_session == 1500


def test_a_bigger_item_costs_more_units() -> None:
    assert units_per_request(5000) == (2.0, 5.0)


@pytest.mark.parametrize(
    ("report", "reason"),
    [
        ({}, "no targets"),
        ([1, 2], "no targets"),
        ({"targets": {"a": {}}}, "incomplete"),
        ({"targets": {"a": [1]}}, "not a table of figures"),
        (load_report(None, seconds=0), "sent no requests"),
    ],
)
def test_a_bad_load_report_is_refused(report: object, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        from_load_report(report, Scaling(sessions=1))
    with pytest.raises(ConfigError, match="no target 'x'"):
        from_load_report(load_report(None), Scaling(sessions=1), target="x")


# -- inputs: scraped metrics, from a real instrumented DynamoDB backend ------------------


@pytest.mark.servers
def test_metrics_scraped_from_a_dynamodb_backend_give_its_consumed_capacity(servers) -> None:
    client = boto3.client(
        "dynamodb", endpoint_url=servers.dynamodb.endpoint_url, config=dynamodb_client_config(),
        **DUMMY_AWS,
    )  # fmt: skip
    dynamodb = DynamoDBBackend(client, table_name="cost-metrics")
    dynamodb.ensure_table()
    registry = CollectorRegistry()
    registry.register(CapacityCollector(dynamodb.capacity, "dynamodb"))
    store = SessionStore(
        InstrumentedBackend(dynamodb, name="dynamodb", metrics=BackendMetrics(registry))
    )
    before = generate_latest(registry).decode()
    for _ in range(20):
        session = store.create({"cart": ["x" * 100]})
        store.get(session.id)
    after = generate_latest(registry).decode()
    work = from_metrics(before, after, 10.0, Scaling(sessions=1), backend="dynamodb")
    assert work.source == "consumed capacity scraped from sessionflow's metrics"
    assert work.read_units_per_second == pytest.approx(2.0)  # 20 consistent reads in 10 s
    assert work.write_units_per_second == pytest.approx(2.0)  # 20 creates
    assert any("peak not measured" in note for note in work.notes)


def test_metrics_without_capacity_are_priced_from_backend_calls() -> None:
    def scrape(gets: int, saves: int) -> str:
        name = "sessionflow_backend_request_duration_seconds_count"
        return (
            f"# TYPE {name.removesuffix('_count')} histogram\n"
            f'{name}{{backend="redis",operation="get",outcome="hit"}} {gets}\n'
            f'{name}{{backend="redis",operation="save",outcome="ok"}} {saves}\n'
        )

    work = from_metrics(scrape(10, 5), scrape(110, 55), 10.0, Scaling(sessions=1, item_bytes=500))
    assert (work.read_units_per_second, work.write_units_per_second) == (10.0, 5.0)
    with pytest.raises(ConfigError, match="restarted"):
        from_metrics(scrape(110, 55), scrape(10, 5), 10.0, Scaling(sessions=1))
    with pytest.raises(ConfigError, match="no sessionflow backend traffic"):
        from_metrics(scrape(1, 1), scrape(1, 1), 10.0, Scaling(sessions=1))
    with pytest.raises(ConfigError, match="Prometheus"):
        from_metrics("}{ not metrics", scrape(1, 1), 10.0, Scaling(sessions=1))


# -- the command ------------------------------------------------------------------------


def test_cost_estimate_from_a_report(tmp_path) -> None:
    report = tmp_path / "report.json"
    report.write_bytes(orjson.dumps(load_report({"get": 900.0, "save": 300.0})))
    out = tmp_path / "cost.json"
    result = runner.invoke(
        app,
        ["cost", "estimate", "--report", str(report), "--sessions", "1000000", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    for option in ("Redis only", "DynamoDB on-demand", "provisioned + DAX", "Hybrid tier"):
        assert option in result.output
    assert "prices: aws-us-east-1-2026-11, recorded 2026-11-22" in result.output
    data = orjson.loads(out.read_bytes())
    assert len(data["estimates"]) == 5
    assert data["workload"]["read_units_per_second"] == 90


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--sessions", "1"], "give one source"),
        (["--sessions", "1", "--report", "missing.json"], "cannot read the load report"),
        (["--sessions", "1", "--report", "r.json", "--prices", "nope"], "no price table"),
        (["--sessions", "1", "--metrics-url", "http://127.0.0.1:9/metrics", "--window", "1"],
         "cannot scrape"),
        (["--sessions", "1", "--metrics-url", "http://[::1/metrics", "--window", "1"],
         "cannot scrape http://[::1/metrics: Invalid"),
        (["--sessions", "1", "--report", "list.json"], "not a sessionflow load report"),
        (["--sessions", "1", "--report", "r.json", "--prices", "latin1.toml"], "not UTF-8 text"),
        (["--sessions", "1", "--report", "r.json", "--json", "r.json/x.json"],
         "cannot write r.json/x.json: Not a directory"),
        (["--sessions", "1", "--metrics-url", "http://127.0.0.1:9/metrics", "--window", "inf"],
         "Invalid value for '--window'"),
        (["--sessions", "1", "--report", "r.json", "--item-bytes", "409601"],
         "a DynamoDB item holds at most 409,600 bytes, not 409,601"),
        (["--sessions", "1", "--report", "r.json", "--item-bytes", "1e300"],
         "a DynamoDB item holds at most 409,600 bytes"),
        (["--sessions", "1", "--report", "r.json", "--scale", "1e300"],
         "too large to price"),
    ],
)  # fmt: skip
def test_cost_estimate_refuses_bad_input_with_exit_2(tmp_path, monkeypatch, args, reason) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.json").write_bytes(orjson.dumps(load_report(None)))
    (tmp_path / "list.json").write_bytes(b"[1, 2]")
    (tmp_path / "latin1.toml").write_bytes("name = 'caf\u00e9'".encode("latin-1"))
    result = runner.invoke(app, ["cost", "estimate", *args])
    assert result.exit_code == 2, result.output
    assert reason in result.output


def test_cost_prices_shows_a_table() -> None:
    result = runner.invoke(app, ["cost", "prices", "--prices", "playbook-2024"])
    assert result.exit_code == 0, result.output
    assert "playbook-2024" in result.output
    assert "dax.r4.large" in result.output


def test_a_tier_process_metrics_give_the_measured_hot_set() -> None:
    def scrape(gets: int, hot: int) -> str:
        name = "sessionflow_backend_request_duration_seconds_count"
        return (
            f"# TYPE {name.removesuffix('_count')} histogram\n"
            f'{name}{{backend="tiered",operation="get",outcome="hit"}} {gets}\n'
            "# TYPE sessionflow_tier_sessions gauge\n"
            f'sessionflow_tier_sessions{{tier="hot"}} {hot}\n'
            'sessionflow_tier_sessions{tier="cold"} 900\n'
        )

    work = from_metrics(scrape(0, 90), scrape(100, 250), 10.0, Scaling(sessions=1000))
    assert work.hot_fraction == 0.25
    assert any("hot set measured: 250" in note for note in work.notes)
    given = from_metrics(
        scrape(0, 90), scrape(100, 250), 10.0, Scaling(sessions=1000, hot_sessions=100)
    )
    assert given.hot_fraction == 0.1
    with pytest.raises(ConfigError, match="hot sessions"):
        Scaling(sessions=10, hot_sessions=11)
