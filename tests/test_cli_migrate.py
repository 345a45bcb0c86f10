"""``sessionflow migrate`` end to end: Redis to DynamoDB Local through the command line."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from redis import Redis
from typer.testing import CliRunner

from sessionflow import RedisBackend, SessionStore
from sessionflow.cli import app
from sessionflow.local_servers import free_port
from tests.conftest import POLICY, Servers, redis_to_dynamodb_settings

runner = CliRunner()


@pytest.fixture
def config(servers: Servers, tmp_path: Path) -> Path:
    name = uuid.uuid4().hex[:10]
    path = tmp_path / "migration.toml"
    path.write_text(redis_to_dynamodb_settings(servers, name, stage_ttl=1, heartbeat_max_age=5))
    return path


@pytest.fixture(autouse=True)
def dummy_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")


def _seed(servers: Servers, config: Path, count: int) -> list[str]:
    prefix = next(
        line.split('"')[1] for line in config.read_text().splitlines() if "redis_prefix" in line
    )
    with Redis(port=servers.redis.port) as client:
        store = SessionStore(RedisBackend(client, prefix=prefix), policy=POLICY)
        return [store.create({"i": i}, user_id=f"u{i % 5}").id for i in range(count)]


def _invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["migrate", *args], catch_exceptions=False)
    return result.exit_code, result.output


def test_a_migration_walks_forward_and_back_from_the_command_line(
    servers: Servers, config: Path, tmp_path: Path
) -> None:
    _seed(servers, config, 120)
    code, out = _invoke("status", "-c", str(config))
    assert code == 0, out
    assert "stage off" in out
    code, out = _invoke("backfill", "-c", str(config))
    assert code == 1
    assert "refused: backfill runs in dualwrite or shadow" in out
    assert _invoke("advance", "-c", str(config))[0] == 0
    quarantine = tmp_path / "quarantine.jsonl"
    code, out = _invoke(
        "backfill", "-c", str(config), "--page-size", "50", "--quarantine-file", str(quarantine)
    )
    assert code == 0, out
    assert "120 scanned, 120 copied" in out
    assert quarantine.read_text() == ""
    code, out = _invoke("verify", "-c", str(config), "--json")
    assert code == 0, out
    assert '"missing": 0' in out
    assert _invoke("advance", "-c", str(config))[0] == 0  # shadow
    code, out = _invoke("verify", "-c", str(config))
    assert code == 0, out
    assert "120 checked" in out
    code, out = _invoke("advance", "-c", str(config))  # cutover: all gates pass
    assert code == 0, out
    assert "stage is now cutover" in out
    code, out = _invoke("status", "-c", str(config), "--json")
    status = json.loads(out)
    assert status["stage"] == "cutover"
    assert status["backfill"]["finished"] is True
    assert status["verification"]["passed"] is True
    code, out = _invoke("rollback", "-c", str(config))
    assert code == 0, out
    assert "stage is now shadow" in out
    assert "post-change validation" in out
    assert "FAILED" not in out
    code, out = _invoke("repair", "-c", str(config))
    assert code == 0, out
    assert "0 left" in out


def test_split_backfills_end_with_a_full_bar_of_their_own_share(
    servers: Servers, config: Path
) -> None:
    """The bar's total was the whole database's key count, shared Redis and all: a worker
    of two finished at under half of it, its ETA twice too long all along."""
    _seed(servers, config, 60)
    assert _invoke("advance", "-c", str(config))[0] == 0
    scanned = []
    for worker in ("0/2", "1/2"):
        code, out = _invoke("backfill", "-c", str(config), "--worker", worker)
        assert code == 0, out
        count = int(out.split(" done: ")[1].split(" scanned")[0])
        assert f"{count}/{count}" in out, out
        scanned.append(count)
    assert sum(scanned) == 60
    assert min(scanned) > 0


def test_advance_refuses_cutover_before_the_backfill(servers: Servers, config: Path) -> None:
    assert _invoke("advance", "-c", str(config))[0] == 0
    assert _invoke("advance", "-c", str(config))[0] == 0
    code, out = _invoke("advance", "-c", str(config))
    assert code == 1
    assert out.strip().splitlines()[0] == (
        "refused: the backfill has not finished (--force overrides)"
    )
    code, out = _invoke("advance", "-c", str(config), "--force")
    assert code == 0, out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["backfill", "--worker", "3/2"], "--worker 3/2"),
        (["backfill", "--worker", "x"], "--worker must look like 0/4"),
        (
            ["backfill", "--worker", "0/0"],
            "--worker 0/0: n, the number of workers, must be at least 1",
        ),
        (["backfill", "--worker", "0/1/2"], "--worker must look like 0/4"),
        (
            ["backfill", "--worker", "0/1000001"],
            "--worker 0/1000001: n, the number of workers, must be at most 1,000,000",
        ),
        (["backfill", "--page-size", "10001"], "--page-size"),
        (["backfill", "--concurrency", "1000000"], "--concurrency"),
        (["verify", "--mode", "everything"], "--mode must be full or sample"),
        (["verify", "--sample", "0"], "--sample must be from 0.000001 (one session in"),
        # a share of 10,000,000 hash shares: more than a scan can be split into
        (["verify", "--mode", "sample", "--sample", "1e-7"], "--sample must be from 0.000001"),
        (["rollback", "--to", "sideways"], "unknown stage 'sideways'"),
        (
            ["backfill", "--quarantine-file", "/no-such-directory/quarantine.jsonl"],
            "--quarantine-file: cannot write /no-such-directory/quarantine.jsonl: No such file",
        ),
    ],
)
def test_bad_arguments_exit_2_with_one_line(config: Path, args: list[str], message: str) -> None:
    code, out = _invoke(*args, "-c", str(config))
    assert code == 2
    assert message in out


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ('[migration]\nname = "x"\n[migration.old]\nbackend = "redis"\n',
         "[migration.new] is missing"),
        (('[migration]\n[migration.old]\nbackend = "dynamodb"\n'
         '[migration.new]\nbackend = "dynamodb"\ndynamodb_table = "bbb"\n'),
         "control_url is needed"),
        (('[migration]\n[migration.old]\nbackend = "redis"\nredis_prefix = "{x}"\n'
         '[migration.new]\nbackend = "dynamodb"\n'),
         "key prefix must be non-empty and free of braces, not '{x}'"),
        (('[migration]\n[migration.old]\nbackend = "redis"\n'
         '[migration.new]\nbackend = "dynamodb"\ndynamodb_table = "eu sessions"\n'),
         "table name must be 3 to 255 letters"),
        (('[migration]\n[migration.old]\nbackend = "redis"\n'
         '[migration.new]\nbackend = "dynamodb"\ndynamodb_region = "-us-east-1"\n'),
         "dynamodb_region must be an AWS region name like us-east-1, not '-us-east-1'"),
        (('[migration]\nstage_ttl = nan\n[migration.old]\nbackend = "redis"\n'
         '[migration.new]\nbackend = "dynamodb"\n'),
         "migration.stage_ttl must be a number of seconds from 0 up to 100 years, not nan"),
        (('[migration]\nheartbeat_max_age = inf\n[migration.old]\nbackend = "redis"\n'
         '[migration.new]\nbackend = "dynamodb"\n'),
         "migration.heartbeat_max_age must be a positive number of seconds"),
        (('[migration]\nverify_threshold = inf\n[migration.old]\nbackend = "redis"\n'
         '[migration.new]\nbackend = "dynamodb"\n'),
         "migration.verify_threshold must be a number between 0 and 1, not inf"),
        (('[migration]\nverify_threshold = nan\n[migration.old]\nbackend = "redis"\n'
         '[migration.new]\nbackend = "dynamodb"\n'),
         "migration.verify_threshold must be a number between 0 and 1, not nan"),
        (('[migration]\ncompare_sample = nan\n[migration.old]\nbackend = "redis"\n'
         '[migration.new]\nbackend = "dynamodb"\n'),
         "migration.compare_sample must be a number between 0 and 1, not nan"),
        (('[migration]\n[migration.old]\nbackend = "redis"\nredis_url = "redis://:pw@h:x/0"\n'
         '[migration.new]\nbackend = "dynamodb"\ndynamodb_endpoint = "http://[::1"\n'),
         "redis_url 'redis://***@h:x/0': Port could not be cast"),
    ],
)  # fmt: skip
def test_bad_settings_exit_2(tmp_path: Path, settings: str, reason: str) -> None:
    path = tmp_path / "m.toml"
    path.write_text(settings)
    code, out = _invoke("status", "-c", str(path))
    assert code == 2
    assert reason in out
    assert ":pw@" not in out


def test_an_unreachable_store_exits_3(tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    port = free_port()
    path.write_text(
        f'[migration]\n[migration.old]\nbackend = "redis"\nredis_url = "redis://127.0.0.1:{port}"\n'
        f'[migration.new]\nbackend = "memory"\n'
    )
    code, out = _invoke("status", "-c", str(path))
    assert code == 3
    assert "unreachable" in out


def test_conversation_lists_migrate_from_the_command_line(servers: Servers, tmp_path: Path) -> None:
    from sessionflow import RedisConversations  # noqa: PLC0415

    name = uuid.uuid4().hex[:10]
    path = tmp_path / "conversations.toml"
    path.write_text(redis_to_dynamodb_settings(servers, name, data="conversations"))
    with Redis(port=servers.redis.port) as client:
        store = RedisConversations(client, prefix=f"p{name}")
        for i in range(60):
            store.record(f"owner-{i % 3}", f"opponent-{i}", {"i": i}, 1000.0 + i)
        store.delete("owner-0", "opponent-0")
        client.hset(store.keys("owner-1")[1], "garbled", b"not an entry")
    assert _invoke("advance", "-c", str(path))[0] == 0
    quarantine = tmp_path / "quarantine.jsonl"
    code, out = _invoke("backfill", "-c", str(path), "--quarantine-file", str(quarantine))
    assert code == 0, out
    assert "61 scanned, 60 copied" in out, out
    reasons = [json.loads(line)["reason"] for line in quarantine.read_text().splitlines()]
    assert reasons == ["unreadable: not a conversation entry"]
    code, out = _invoke("verify", "-c", str(path))
    assert code == 0, out
    code, out = _invoke("validate", "-c", str(path))
    assert code == 0, out


def test_an_unknown_data_type_exits_2(servers: Servers, tmp_path: Path) -> None:
    path = tmp_path / "m.toml"
    path.write_text(redis_to_dynamodb_settings(servers, "carts", data="carts"))
    code, out = _invoke("status", "-c", str(path))
    assert code == 2
    assert "migration.data must be one of sessions, conversations, not 'carts'" in out


@pytest.mark.parametrize(
    "args",
    [
        ["advance", "--wait", "nan"],
        ["advance", "--wait", "-1"],
        ["rollback", "--wait", "inf"],
        ["repair", "--follow", "nan"],
        ["repair", "--follow", "-5"],
    ],
)
def test_a_period_that_is_no_number_of_seconds_exits_2_before_touching_a_store(
    tmp_path: Path, args: list[str]
) -> None:
    """NaN never ends a wait; a negative period drains the repair queue in a busy loop."""
    code, out = _invoke(*args, "-c", str(tmp_path / "absent.toml"))
    assert code == 2
    assert f"Invalid value for '{args[1]}'" in out
