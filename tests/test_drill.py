"""Small drills in the suite: Redis to DynamoDB Local under traffic, faults and a rollback.

One moves sessions, one conversation lists: the same walk, faults and ledger check.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sessionflow.cli import app

runner = CliRunner()


@pytest.mark.parametrize("data", ["sessions", "conversations"])
def test_a_small_drill_loses_nothing_and_writes_its_report(tmp_path: Path, data: str) -> None:
    report_path = tmp_path / "drill.json"
    result = runner.invoke(
        app,
        [
            "drill",
            "--data",
            data,
            "--items",
            "400",
            "--seconds-per-stage",
            "0.5",
            "--workers",
            "4",
            "--rate",
            "80",
            "--processes",
            "3",
            "--report",
            str(report_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "drill PASSED" in result.output
    report = json.loads(report_path.read_text())
    assert report["passed"] is True
    checks = {(c["store"], c["when"]): c for c in report["checks"]}
    assert set(checks) == {
        ("redis", "at rampdown"),
        ("dynamodb", "at rampdown"),
        ("dynamodb", "at complete"),
    }
    for check in checks.values():
        assert (check["lost"], check["resurrected"], check["stale"]) == (0, 0, 0)
        assert check["checked"] >= 400
    events = " | ".join(e["event"] for e in report["events"])
    for happened in (
        "DynamoDB paused (SIGSTOP)",
        "DynamoDB restarted",
        "backfill process killed (SIGKILL)",
        "backfill resumed from",
        "stage -> live",
        "stage -> shadow",
        "stage -> complete",
    ):
        assert happened in events
    phases = {p["phase"] for p in report["phases"]}
    assert {"off", "dualwrite", "shadow", "cutover", "live", "rampdown", "complete"} <= phases
    assert all(p["p99_ms"] is not None for p in report["phases"])
    assert report["acknowledged_items_read_as_missing"] == 0
    assert report["settings"]["data"] == data
    assert report["validation_ok"] is True
    assert report["secondary_copies"]["copied"] > 0


def test_a_stuck_step_fails_with_what_it_waits_on(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import asyncio  # noqa: PLC0415

    from sessionflow import _drill  # noqa: PLC0415

    monkeypatch.setattr(_drill, "STEP_LIMIT", 0.05)
    drill = _drill.Drill(_drill.DrillSettings(), print)

    async def stuck() -> None:
        await asyncio.Event().wait()  # never set: a copy that never finishes

    with pytest.raises(_drill.DrillStuck, match="the repairer's last pass did not finish"):
        asyncio.run(drill._bounded(stuck(), "the repairer's last pass"))
    assert "drill step stuck: the repairer's last pass" in capfd.readouterr().err


def test_the_drill_says_in_one_line_that_it_needs_dynamodb_local(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no node_modules here or above
    monkeypatch.delenv("SESSIONFLOW_DYNAMODB_LOCAL_DIR", raising=False)
    result = runner.invoke(app, ["drill", "--items", "100"], terminal_width=60)
    assert result.exit_code == 2
    assert result.output.startswith("sessionflow drill: DynamoDB Local not found")
    assert result.output.count("\n") == 1
    assert not (tmp_path / "drill-report.json").exists()


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--items", "100000000000"], "the drill takes 1 to 10,000,000 items, not 100,000,000,000"),
        (["--workers", "1000000000"], "the drill takes 1 to 10,000 workers, not 1,000,000,000"),
        (["--processes", "1000000"], "the drill takes 1 to 256 processes, not 1,000,000"),
        (["--rate", "inf"], "the drill's rate must be above 0 and at most 1,000,000 operations"),
    ],
)
def test_the_drill_refuses_sizes_it_cannot_hold_before_it_starts(
    tmp_path, args: list[str], reason: str
) -> None:
    """A ledger entry per item, a task per user, a migrating backend per process: a huge
    value used to start the servers and then exhaust the machine."""
    report = tmp_path / "drill.json"
    result = runner.invoke(app, ["drill", *args, "--report", str(report)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"sessionflow drill: {reason}")
    assert result.output.count("\n") == 1
    assert not report.exists()


def test_the_drill_refuses_a_report_path_it_cannot_write_before_it_starts(tmp_path) -> None:
    report = tmp_path / "missing" / "drill.json"
    result = runner.invoke(app, ["drill", "--items", "100", "--report", str(report)])
    assert result.exit_code == 2
    assert (
        result.output
        == f"sessionflow drill: cannot write the report to {report}: no such directory\n"
    )
