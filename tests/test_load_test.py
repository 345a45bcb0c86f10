"""`sessionflow bench load`: phases, the mix, open-model timing, targets and the report."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from sessionflow._async.backends.memory import AsyncMemoryBackend
from sessionflow._errors import ConfigError
from sessionflow._load_plan import PRESETS, Mix, Phase, parse_duration, parse_phases, scaled
from sessionflow._load_report import to_markdown, write_report
from sessionflow._load_run import SATURATED, SEED_CONCURRENCY, LoadRun
from sessionflow._load_targets import StoreTarget, TargetError, TargetSpec
from sessionflow._load_test import redact, run_load_test
from sessionflow.cli import app
from sessionflow.local_servers import free_port
from tests.clients import running_service
from tests.conftest import tier_settings

runner = CliRunner()
READS = Mix({"read": 1})


# -- the plan ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), ("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1.5h", 5400.0), ("250ms", 0.25)],
)
def test_durations_read_like_artillery(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["2x", "", "-1", 0, -5, True, "1e400"])
def test_bad_durations_are_refused(bad: object) -> None:
    with pytest.raises(ConfigError, match="duration"):
        parse_duration(bad)  # type: ignore[arg-type]


def test_phases_parse_from_artillery_json() -> None:
    phases = parse_phases(
        '[{"duration": "2m", "arrivalRate": 100},'
        ' {"name": "ramp", "duration": 30, "arrivalRate": 10, "rampTo": 50}]'
    )
    assert phases == [Phase("phase 1", 120, 100), Phase("ramp", 30, 10, ramp_to=50)]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{}", "non-empty JSON list"),
        ("[]", "non-empty JSON list"),
        ("[1]", "must be an object"),
        ('[{"duration": 5}]', "needs a duration and an arrivalRate"),
        ('[{"duration": 5, "arrivalRate": 1, "users": 3}]', "unknown field"),
        ('[{"duration": 5, "arrivalRate": -1}]', "arrivalRate must be"),
        ('[{"duration": 5, "arrivalRate": "fast"}]', "must be a number"),
        ('[{"duration": 5, "arrivalRate": 0}]', "sends nothing"),
        ("[{", "JSON list"),
    ],
)
def test_bad_phases_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        parse_phases(text)


def test_a_constant_phase_paces_its_arrivals_evenly() -> None:
    arrivals = list(Phase("p", 2, 10).arrivals())
    assert len(arrivals) == 20
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(arrivals)}
    assert gaps == {0.1}


def test_a_ramp_sends_its_integral_and_speeds_up() -> None:
    phase = Phase("ramp", 10, 0, ramp_to=100)
    arrivals = list(phase.arrivals())
    assert phase.expected_arrivals == 500
    assert abs(len(arrivals) - 500) <= 10
    first_half = sum(1 for t in arrivals if t < 5)
    assert first_half < len(arrivals) / 3  # a quarter of the integral lies in the first half


def test_mixes_parse_and_refuse_nonsense() -> None:
    mix = Mix.parse("read=70, update=20,create=10")
    assert mix.operations == ["create", "read", "update"]
    assert mix.describe() == "create 10%, read 70%, update 20%"
    for bad, reason in [
        ("read", "look like read=70"),
        ("read=abc", "look like read=70"),
        ("fly=3", "unknown operation"),
        ("read=0", "at least one positive"),
        ("read=-1", ">= 0"),
        ("read=1e308,update=1e308", "add up to a finite number"),  # each finite, not the sum
    ]:
        with pytest.raises(ConfigError, match=reason):
            Mix.parse(bad)


def test_presets_carry_the_seeds_figures() -> None:
    playbook = PRESETS["playbook"].phases
    assert [(p.duration, p.arrival_rate) for p in playbook] == [(120, 100), (300, 200), (120, 500)]
    assert PRESETS["case-study"].phases[-1].arrival_rate == 6000
    assert "read" not in PRESETS["case-study"].mix.weights  # the case study's test is writes
    short = scaled(playbook, time_scale=0.01, rate_scale=0.5)
    assert [(p.duration, p.arrival_rate) for p in short] == [(1.2, 50), (3, 100), (1.2, 250)]


def test_target_specs_take_an_optional_name() -> None:
    assert TargetSpec.parse("memory") == TargetSpec("memory", "memory")
    assert TargetSpec.parse("old=redis://127.0.0.1:1/0") == TargetSpec(
        "old", "redis://127.0.0.1:1/0"
    )
    assert TargetSpec.parse("redis://127.0.0.1:1/0?x=1").name == "redis"
    sentinel = "redis-sentinel://127.0.0.1:26379/0?sentinel_password=s#sessions"
    assert TargetSpec.parse(sentinel) == TargetSpec("redis", sentinel)
    assert TargetSpec.parse("dynamodb+http://127.0.0.1:8000/t").name == "dynamodb"
    assert TargetSpec.parse("http://127.0.0.1:8080").name == "service"
    assert TargetSpec.parse("config:settings/prod.toml").name == "prod"
    with pytest.raises(ConfigError, match="unknown target"):
        TargetSpec.parse("cassandra://127.0.0.1")
    with pytest.raises(ConfigError, match="empty target"):
        TargetSpec.parse("x=")


def test_passwords_never_reach_the_report() -> None:
    assert redact("redis://:s3cret@127.0.0.1:6379/0") == "redis://***@127.0.0.1:6379/0"
    assert redact("memory") == "memory"
    assert redact("redis-sentinel://u:pw@h/0?sentinel_password=s#m") == (
        "redis-sentinel://***@h/0?sentinel_password=***#m"
    )


# -- the generator, on stub targets (pure timing logic) ---------------------------------


class SlowTarget:
    """Serves one request at a time, each taking `service_time`: a saturated server."""

    def __init__(self, service_time: float, *, found: bool = True) -> None:
        self.service_time = service_time
        self.found = found
        self.lock = asyncio.Lock()
        self.created = 0

    async def _serve(self) -> None:
        async with self.lock:
            await asyncio.sleep(self.service_time)

    async def create(self, _attributes: Mapping[str, Any]) -> str:
        self.created += 1
        return f"id-{self.created}"

    async def read(self, _session_id: str) -> bool:
        await self._serve()
        return self.found

    async def update(self, _session_id: str, _attributes: Mapping[str, Any]) -> bool:
        raise TargetError("timeout")

    async def touch(self, _session_id: str) -> bool:
        return True

    async def delete(self, _session_id: str) -> bool:
        return True

    async def regenerate(self, _session_id: str) -> str | None:
        return None

    def consumed_capacity(self) -> dict[str, float] | None:
        return None

    async def redis_bytes_per_session(self, _session_ids: Sequence[str]) -> float | None:
        return None


async def test_latency_counts_from_the_scheduled_time_so_a_saturated_target_shows_its_queue() -> (
    None
):
    # 100 requests/s at 20 ms each, one at a time: the target can serve 50/s, so requests
    # queue. A closed-model generator would report ~20 ms; the open model reports the wait.
    target = SlowTarget(0.02)
    run = LoadRun(target, [Phase("overload", 1.0, 100)], READS, seed_sessions=3)
    report = await run.run()
    read = report["operations"]["read"]
    assert read["count"] == 100
    assert read["p50_ms"] > 200
    assert read["max_ms"] > 900
    assert report["phases"][0]["achieved_rate"] < 60  # about 50/s were served in the phase


class CountingTarget(SlowTarget):
    """Creates instantly and remembers the most tasks the event loop held during a create."""

    def __init__(self) -> None:
        super().__init__(0.0)
        self.most_tasks = 0

    async def create(self, attributes: Mapping[str, Any]) -> str:
        self.most_tasks = max(self.most_tasks, len(asyncio.all_tasks()))
        await asyncio.sleep(0)
        return await super().create(attributes)


async def test_seeding_keeps_a_bounded_number_of_creates_pending() -> None:
    # Seeding used to make one pending task per session up front: memory grew with
    # --sessions before a single request went out (and a huge count exhausted it).
    target = CountingTarget()
    run = LoadRun(target, [Phase("p", 0.1, 10)], READS, seed_sessions=5000)
    await run.run()
    assert target.created >= 5000
    assert target.most_tasks <= SEED_CONCURRENCY + 8


def test_a_load_run_refuses_more_seed_sessions_than_it_can_hold() -> None:
    with pytest.raises(ConfigError, match="seeds at most 10,000,000 sessions"):
        LoadRun(SlowTarget(0.0), [Phase("p", 1.0, 1)], READS, seed_sessions=10_000_001)


async def test_arrivals_beyond_max_in_flight_are_counted_as_errors_not_dropped() -> None:
    run = LoadRun(SlowTarget(0.05), [Phase("p", 0.5, 100)], READS, seed_sessions=2, max_in_flight=5)
    report = await run.run()
    read = report["operations"]["read"]
    assert read["count"] == 50
    assert read["errors"][SATURATED] >= 30  # about 10 served in 0.5 s, 5 waiting
    assert report["error_rate"] == read["error_rate"]


async def test_failures_are_counted_by_cause() -> None:
    mix = Mix({"read": 1, "update": 1})
    run = LoadRun(SlowTarget(0.0, found=False), [Phase("p", 0.5, 100)], mix, seed_sessions=5)
    report = await run.run()
    assert set(report["operations"]["read"]["errors"]) == {"not found"}
    assert set(report["operations"]["update"]["errors"]) == {"timeout"}
    assert report["errors"] == report["requests"] == 50


async def test_a_memory_store_run_reports_every_operation_without_errors() -> None:
    mix = Mix(dict.fromkeys(("create", "read", "update", "touch", "delete", "regenerate"), 1))
    run = LoadRun(StoreTarget(AsyncMemoryBackend()), [Phase("a", 1, 150), Phase("b", 1, 300)], mix,
                  seed_sessions=100)  # fmt: skip
    report = await run.run()
    assert report["errors"] == 0
    assert report["requests"] == 450
    assert set(report["operations"]) == {
        "create",
        "read",
        "update",
        "touch",
        "delete",
        "regenerate",
    }
    assert [p["sent"] for p in report["phases"]] == [150, 300]
    assert [row["second"] for row in report["timeline"]] == [0, 1]
    assert sum(row["requests"] for row in report["timeline"]) == 450
    assert 440 <= sum(row["answered"] for row in report["timeline"]) <= 450
    assert "redis_bytes_per_session" not in report  # memory is not Redis
    assert report["dynamodb_item_bytes"] > 400


# -- real targets -----------------------------------------------------------------------


@pytest.mark.servers
async def test_redis_and_dynamodb_side_by_side(servers, tmp_path) -> None:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "local")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "local")
    targets = [
        TargetSpec("redis", servers.redis.url),
        TargetSpec(
            "dynamodb",
            f"{servers.dynamodb.endpoint_url.replace('http', 'dynamodb+http')}/load-test",
        ),
    ]
    report = await run_load_test(
        targets, [Phase("p", 1.5, 80)], PRESETS["smoke"].mix, description="test",
        seed_sessions=300,
    )  # fmt: skip
    redis, dynamodb = report["targets"]["redis"], report["targets"]["dynamodb"]
    assert redis["errors"] == dynamodb["errors"] == 0
    assert redis["consumed_capacity"] is None
    assert 300 < redis["redis_bytes_per_session"] < 5_000  # a ~500-byte session and its key
    assert dynamodb["consumed_capacity"]["get"] > 0
    # the seeding is not part of the run: one write unit per create the run sent (and logins)
    creates = dynamodb["requests_by_operation"]["create"]
    assert creates <= dynamodb["consumed_capacity"]["create"] < creates + 40
    written = write_report(report, tmp_path)
    assert {p.name for p in written} == {
        "report.json",
        "report.md",
        "latency-over-time.png",
        "latency-distribution.png",
    }
    for png in written[2:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tmp_path / "report.md").read_text()
    assert "| redis | read |" in markdown
    assert "DynamoDB consumed capacity" in markdown


@pytest.fixture
def service_url() -> Iterator[str]:
    with running_service(free_port()) as url:
        yield url


async def test_the_service_over_http(service_url: str) -> None:
    report = await run_load_test(
        [TargetSpec.parse(service_url)], [Phase("p", 1, 100)], PRESETS["smoke"].mix,
        description="test", seed_sessions=50,
    )  # fmt: skip
    run = report["targets"]["service"]
    assert run["errors"] == 0, run["operations"]
    assert run["requests"] == 100
    assert run["consumed_capacity"] is None


async def test_an_unreachable_service_is_an_error_per_request_not_a_crash() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    report_task = run_load_test(
        [TargetSpec.parse(url)], [Phase("p", 0.2, 50)], Mix({"read": 1}), description="t",
        seed_sessions=0,
    )  # fmt: skip
    report = await report_task
    run = report["targets"]["service"]
    assert run["operations"]["create"]["errors"] == {"connection": 10}


# -- the command ------------------------------------------------------------------------


def test_bench_load_writes_the_report_and_enforces_limits(tmp_path) -> None:
    out = tmp_path / "report"
    phases = '[{"duration": 1, "arrivalRate": 60}]'
    args = ["bench", "load", "-t", "memory", "--phases", phases, "--out", str(out), "--no-live",
            "--sessions", "50"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["plan"]["phases"] == [{"name": "phase 1", "duration": 1.0, "arrivalRate": 60.0}]
    assert report["targets"]["memory"]["requests"] == 60
    assert (out / "latency-over-time.png").exists()
    assert "sessionflow load test" in (out / "report.md").read_text()
    strict = runner.invoke(app, [*args, "--max-p99-ms", "0.000001", "--no-plots"])
    assert strict.exit_code == 1
    assert "p99" in strict.output


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--preset", "nope"], "unknown preset"),
        (["--phases", '[{"duration": "2x", "arrivalRate": 1}]'], "duration"),
        (["--mix", "read=abc"], "look like read=70"),
        (["-t", "cassandra://127.0.0.1"], "unknown target"),
        (["-t", "a=memory", "-t", "a=memory"], "names must differ"),
        (["-t", "redis://127.0.0.1:1/0"], "BackendError"),  # nothing listens: seeding fails
        (["-t", "http://127.0.0.1:1"], "TargetError"),
        (["--time-scale", "inf"], "duration must be at most 604,800 s"),
        (["--time-scale", "1e300"], "duration must be at most 604,800 s"),
        (["--phases", '[{"duration": "169h", "arrivalRate": 1}]'], "at most 604,800 s"),
        (["--mix", "read=1e308,update=1e308"], "add up to a finite number"),
        (["-t", "memory", "--sessions", "100000000000000"],
         "seeds at most 10,000,000 sessions, not 100,000,000,000,000"),
    ],
)  # fmt: skip
def test_bench_load_refuses_bad_input_with_exit_2(tmp_path, args: list[str], reason: str) -> None:
    result = runner.invoke(app, ["bench", "load", "--no-live", "--out", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert reason in result.output


def test_bench_load_refuses_a_report_directory_it_cannot_make_before_it_runs(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(
        app, ["bench", "load", "--no-live", "-t", "memory", "--out", str(blocker / "report")]
    )
    assert result.exit_code == 2, result.output
    reason = f"cannot write the report to {blocker / 'report'}: Not a directory"
    assert result.output == f"sessionflow bench load: {reason}\n"


def test_markdown_lists_phases_and_operations() -> None:
    report = {
        "plan": {"description": "d", "mix": "read 100%", "payload_bytes": 10, "seed_sessions": 1},
        "targets": {
            "t": {
                "phases": [{"name": "p", "target_rate": 10.0, "achieved_rate": 9.5, "sent": 10,
                            "error_rate": 0.1, "p50_ms": 1.0, "p99_ms": 2.0}],
                "operations": {"read": {"count": 10, "p50_ms": 1.0, "p95_ms": 1.5, "p99_ms": 2.0,
                                        "max_ms": 3.0, "errors": {"timeout": 1},
                                        "error_rate": 0.1}},
                "consumed_capacity": None,
            }
        },
    }  # fmt: skip
    text = to_markdown(report, images=["latency-over-time.png"])
    assert "| t | p | 10 | 10 | 10 | 10.00% | 1.00 | 2.00 |" in text
    assert "10.00% (timeout 1)" in text
    assert "![latency-over-time.png](latency-over-time.png)" in text


@pytest.mark.servers
async def test_a_settings_file_target_runs_through_the_hybrid_tier(
    servers, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    settings = tmp_path / "tier.yaml"
    settings.write_text(yaml.safe_dump(tier_settings(servers, durability="write-through")))
    report = await run_load_test(
        [TargetSpec.parse(f"tier=config:{settings}")], [Phase("p", 1, 60)],
        PRESETS["smoke"].mix, description="tier", seed_sessions=200,
    )  # fmt: skip
    run = report["targets"]["tier"]
    assert run["errors"] == 0, run["operations"]
    # the composite reports its parts: DynamoDB's capacity (write-through writes every
    # change to it) and the hot Redis's memory
    ops = run["requests_by_operation"]
    assert (
        run["consumed_capacity"]["put_guarded"] >= ops.get("update", 0) + ops.get("create", 0) > 0
    )
    assert run["redis_bytes_per_session"] > 0
