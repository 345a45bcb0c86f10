"""A small drill in the suite: Redis to DynamoDB Local under traffic, faults and a rollback."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sessionflow.cli import app

runner = CliRunner()


def test_a_small_drill_loses_nothing_and_writes_its_report(tmp_path: Path) -> None:
    report_path = tmp_path / "drill.json"
    result = runner.invoke(
        app,
        [
            "drill",
            "--sessions",
            "400",
            "--seconds-per-stage",
            "0.5",
            "--workers",
            "4",
            "--rate",
            "80",
            "--processes",
            "3",
            "--dynamodb",
            "local",
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
    assert report["acknowledged_sessions_read_as_missing"] == 0
