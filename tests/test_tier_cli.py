"""``sessionflow tier`` and ADR-0010's configuration shape, on Redis and DynamoDB Local."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
import pytest
import yaml
from redis import Redis
from typer.testing import CliRunner

from sessionflow import (
    ConfigError,
    DynamoDBBackend,
    Lifecycle,
    ManualClock,
    RedisBackend,
    RedisTierIndex,
    SessionPolicy,
    SessionStore,
    TieredBackend,
    dynamodb_client_config,
)
from sessionflow._tier import Durability
from sessionflow._tier_config import TierConfig
from sessionflow.cli import app
from sessionflow.local_servers import DUMMY_AWS
from tests.conftest import Servers

runner = CliRunner()
ADR_EXAMPLE = {
    "hot_storage": {
        "ttl": 7200,
        "promotion_threshold": 1800,
        "regions": ["us-east-1", "eu-west-1", "ap-southeast-1"],
        "redis_urls": {
            "us-east-1": "redis://127.0.0.1:7001/0",
            "eu-west-1": "redis://127.0.0.1:7002/0",
            "ap-southeast-1": "redis://127.0.0.1:7003/0",
        },
    },
    "cold_storage": {
        "ttl": 2592000,
        "compliance_retention": 7776000,
        "analytics_retention": 31536000,
    },
    "sync": {"batch_size": 100, "sync_interval": 300, "cross_region_delay": 30},
}


@pytest.fixture(autouse=True)
def dummy_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")


def test_the_adr_configuration_loads(tmp_path: Path) -> None:
    path = tmp_path / "tier.yaml"
    path.write_text(yaml.safe_dump({"session_config": ADR_EXAMPLE}))
    config = TierConfig.load(path)
    assert (config.hot_ttl, config.promotion_threshold, config.cold_ttl) == (7200, 1800, 2592000)
    assert config.regions == ("us-east-1", "eu-west-1", "ap-southeast-1")
    assert config.redis_url("eu-west-1") == "redis://127.0.0.1:7002/0"
    assert config.redis_url() == "redis://127.0.0.1:7001/0"
    assert (config.batch_size, config.sync_interval) == (100, 300)
    assert config.durability is Durability.WRITE_BACK
    with pytest.raises(ConfigError, match="no region 'mars'"):
        config.redis_url("mars")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hot_storage": {"ttl": 600}}, "hot_storage.ttl must be at least"),
        ({"hot_storage": {"ttl": "2h"}}, "hot_storage.ttl must be a number"),
        ({"hot_storage": {"color": 1}}, "unknown setting"),
        ({"cold_storage": {"ttl": 60}}, "cold_storage.ttl must be at least hot_storage.ttl"),
        ({"sync": {"batch_size": 0}}, "sync.batch_size must be from 1 to 10,000, not 0"),
        (
            {"cold_storage": {"dynamodb_region": "eu west"}},
            "cold_storage.dynamodb_region must be an AWS region name like us-east-1",
        ),
        ({"sync": {"batch_size": 10**12}}, "sync.batch_size must be from 1 to 10,000"),
        ({"sync": {"batch_size": 2.5}}, "whole number"),
        ({"sync": {"batch_size": math.inf}}, "sync.batch_size must be a whole number, not inf"),
        ({"sync": {"durability": "sometimes"}}, "durability must be one of"),
        ({"sync": {"sync_interval": -1}}, "sync.sync_interval must be a positive number"),
        ({"hot_storage": {"ttl": math.nan}}, "hot_storage.ttl must be a positive number"),
        ({"sync": {"active_window": math.inf}}, "sync.active_window must be a positive number"),
        (
            {"cold_storage": {"compliance_retention": math.nan}},
            r"cold_storage.compliance_retention must be a number of seconds from 0 up to 100 years",
        ),
        ({"hot_storage": {"regions": ["a", "a"]}}, "each once"),
        ({"hot_storage": {"regions": "us-east-1"}}, "list of region names"),
        ({"hot_storage": {"redis_urls": {"us-east-1": "redis://x"}}}, "no URL for region"),
        ({"replication": {}}, "unknown section"),
        (
            {"hot_storage": {"regions": ["eu"], "redis_urls": {"eu": "redis://h:port/0"}}},
            "hot_storage.redis_urls.eu 'redis://h:port/0': Port could not be cast",
        ),
        ({"cold_storage": {"dynamodb_endpoint": "localhost:8000"}}, "use http://host:port"),
        ({"sync": {"background_promotions": "yes"}}, "must be true or false"),
    ],
)
def test_bad_configuration_is_refused_with_its_path(change: dict, message: str) -> None:
    data = json.loads(json.dumps(ADR_EXAMPLE))
    for section, values in change.items():
        data.setdefault(section, {}).update(values)
    with pytest.raises(ConfigError, match=message):
        TierConfig.from_mapping(data)


@pytest.fixture
def tier_file(servers: Servers, tmp_path: Path) -> tuple[Path, str, str]:
    name = uuid.uuid4().hex[:10]
    path = tmp_path / "tier.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "session_config": {
                    "hot_storage": {
                        "ttl": 7200,
                        "promotion_threshold": 1,
                        "regions": ["local"],
                        "redis_urls": {"local": servers.redis.url},
                        "redis_prefix": f"p{name}",
                    },
                    "cold_storage": {
                        "dynamodb_endpoint": servers.dynamodb.endpoint_url,
                        "dynamodb_table": f"t{name}",
                    },
                    "sync": {"batch_size": 7, "durability": "write-back"},
                }
            }
        )
    )
    return path, f"p{name}", f"t{name}"


@contextmanager
def _write_back_tier(
    servers: Servers, tier_file: tuple[Path, str, str]
) -> Iterator[tuple[TieredBackend, SessionStore]]:
    """The tier the settings file names, and a store whose sessions were last used a
    minute ago: due for demotion (the threshold is 1 s)."""
    path, prefix, table = tier_file
    assert runner.invoke(app, ["tier", "stats", "-c", str(path)]).exit_code == 0  # makes the table
    ddb = boto3.client(
        "dynamodb",
        endpoint_url=servers.dynamodb.endpoint_url,
        config=dynamodb_client_config(),
        **DUMMY_AWS,
    )
    with Redis(port=servers.redis.port) as client:
        backend = TieredBackend(
            RedisBackend(client, prefix=prefix),
            DynamoDBBackend(ddb, table_name=table),
            RedisTierIndex(client, prefix=prefix),
            durability=Durability.WRITE_BACK,
        )
        a_minute_ago = ManualClock(time.time() - 60)
        yield (
            backend,
            SessionStore(backend, policy=SessionPolicy(idle_timeout=600), clock=a_minute_ago),
        )


def test_sweep_flush_and_stats_from_the_command_line(
    servers: Servers, tier_file: tuple[Path, str, str]
) -> None:
    path = tier_file[0]
    with _write_back_tier(servers, tier_file) as (backend, store):
        sessions = [store.create({"i": i}) for i in range(10)]

        flushed = runner.invoke(app, ["tier", "flush", "-c", str(path), "--batch-size", "4"])
        assert flushed.exit_code == 0, flushed.output
        assert "flushed 10 of 10 dirty session(s)" in flushed.output  # in batches of 4
        store.create({"i": 10})
        swept = runner.invoke(app, ["tier", "sweep", "-c", str(path)])
        assert swept.exit_code == 0, swept.output
        assert "1 flushed first" in swept.output
        stats = runner.invoke(app, ["tier", "stats", "-c", str(path)])
        assert stats.exit_code == 0, stats.output
        counts = json.loads(stats.output)
        assert counts["lifecycle"]["cold"] >= 7  # the sweep takes a batch of 7 at a time
        assert counts["durability"] == "write-back"
        for session in sessions:
            assert store.get(session.id, touch=False) is not None
        assert backend.lifecycle(sessions[-1].key) in (Lifecycle.HOT, Lifecycle.COLD)


def test_the_jobs_list_what_the_cold_tier_refuses_for_good_and_carry_on(
    servers: Servers, tier_file: tuple[Path, str, str]
) -> None:
    path = tier_file[0]
    with _write_back_tier(servers, tier_file) as (backend, store):
        hot = backend.hot
        assert isinstance(hot, RedisBackend)
        client = hot.client
        made = [store.create({"i": i}) for i in range(3)]
        record = hot.get(made[0].key)
        assert record is not None
        client.delete(hot.redis_key(record.key))  # written before user ids were limited:
        hot.put_guarded(record._replace(user_id="x" * 3000))  # over DynamoDB's index key limit

        swept = runner.invoke(app, ["tier", "sweep", "-c", str(path)])

        assert swept.exit_code == 0, swept.output
        assert (
            "2 flushed first (0 failed, left dirty), 0 failed (left hot), 2 quarantined"
            in swept.output
        )
        assert f"quarantined {record.key[:12]} (flush), kept hot only" in swept.output
        assert f"quarantined {record.key[:12]} (sweep), kept hot only" in swept.output
        assert "3000 bytes in UTF-8, over the 2048 bytes" in swept.output
        assert "demoted 2 of 3 examined" in swept.output
        assert hot.get(record.key) is not None
        again = runner.invoke(app, ["tier", "sweep", "-c", str(path)])
        assert again.exit_code == 0, again.output
        assert "demoted 0 of 0 examined" in again.output


def test_the_sweep_reports_the_changes_its_flush_left_dirty(
    servers: Servers, tier_file: tuple[Path, str, str]
) -> None:
    path, _, table = tier_file
    with _write_back_tier(servers, tier_file) as (backend, store):
        made = [store.create({"i": i}) for i in range(3)]
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=servers.dynamodb.endpoint_url,
            config=dynamodb_client_config(),
            **DUMMY_AWS,
        )
        # A corrupt item in the way of one copy: it fails at every try, but not for good.
        ddb.put_item(
            TableName=table,
            Item={"session_id": {"S": made[0].key}, "version": {"N": "7"}},
        )

        swept = runner.invoke(app, ["tier", "sweep", "-c", str(path)])

        assert swept.exit_code == 0, swept.output
        assert "2 flushed first (1 failed, left dirty), 1 failed (left hot)" in swept.output
        assert "demoted 2 of 3 examined" in swept.output
        assert backend.index.sizes()[1] == 1
        assert backend.hot.get(made[0].key) is not None


def test_tier_commands_fail_with_one_line_and_an_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "tier.yaml"
    bad.write_text("session_config:\n  sync: {batch_size: 0}\n")
    result = runner.invoke(app, ["tier", "sweep", "-c", str(bad)])
    assert result.exit_code == 2
    assert "sync.batch_size must be from 1 to 10,000, not 0" in result.output
    unreachable = tmp_path / "down.yaml"
    unreachable.write_text(
        yaml.safe_dump(
            {
                "session_config": {
                    "hot_storage": {"regions": ["x"], "redis_urls": {"x": "redis://127.0.0.1:1/0"}},
                    "cold_storage": {"dynamodb_endpoint": "http://127.0.0.1:1"},
                }
            }
        )
    )
    result = runner.invoke(app, ["tier", "flush", "-c", str(unreachable)])
    assert result.exit_code == 3
    assert "unreachable" in result.output


def test_background_promotions_are_a_sync_setting() -> None:
    data = json.loads(json.dumps(ADR_EXAMPLE))
    assert TierConfig.from_mapping(data).background_promotions is False
    data["sync"]["background_promotions"] = True
    assert TierConfig.from_mapping(data).background_promotions is True


@pytest.mark.parametrize("every", ["inf", "nan", "86401", "0.5"])
def test_a_repeat_period_out_of_range_exits_2(tmp_path: Path, every: str) -> None:
    """An infinite --every ran the job once and then slept for ever."""
    result = runner.invoke(app, ["tier", "sweep", "-c", str(tmp_path / "t.yaml"), "--every", every])
    assert result.exit_code == 2
    assert "Invalid value for '--every'" in result.output
