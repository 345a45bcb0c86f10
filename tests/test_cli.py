"""The command line and the demo story."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from sessionflow import Backend, __version__
from sessionflow._demo import run_story
from sessionflow.cli import app
from sessionflow.local_servers import free_port
from tests.clients import running_service

runner = CliRunner()


def test_demo_story_holds_on_every_backend(sync_backend: Backend, backend_kind: str) -> None:
    run = run_story(backend_kind, sync_backend, lambda key: f"record {key[:8]}")
    failed = [(step.action, step.outcome) for step in run.steps if not step.ok]
    assert failed == []
    assert len(run.steps) == 9


def test_demo_command_runs_on_its_own_servers() -> None:
    result = runner.invoke(app, ["demo", "--dynamodb", "moto", "--drill-sessions", "150"])
    assert result.exit_code == 0, result.output
    assert "all 36 steps behaved as expected on 4 backends" in result.output
    assert "migration drill skipped: it needs DynamoDB Local" in result.output


def test_demo_refuses_a_drill_size_before_it_runs_anything() -> None:
    result = runner.invoke(app, ["demo", "--dynamodb", "moto", "--drill-sessions", "10000000000"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("demo could not run: ConfigError: the drill takes 1 to")
    assert "lifecycle" not in result.output


def test_demo_rejects_an_unknown_emulator_with_a_usage_error() -> None:
    result = runner.invoke(app, ["demo", "--dynamodb", "cassandra"])
    assert result.exit_code == 2
    assert "cassandra" in result.output


def _commands(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


@pytest.mark.parametrize(
    ("path", "command"),
    [
        pytest.param(path, command, id=" ".join(["sessionflow", *path]))
        for path, command in _commands(typer.main.get_command(app), [])
    ],
)
def test_every_help_text_is_printed_whole(path: list[str], command: Any) -> None:
    """rich reads '[migration]' as a style and drops it, unless the help text escapes it."""
    shown = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "1000"}).output
    flat = " ".join(shown.replace("│", " ").split())
    texts = [param.help for param in command.params if getattr(param, "help", None)]
    texts += (command.help or "").split("\n\n")
    for text in texts:
        assert " ".join(text.replace("\\[", "[").split()) in flat


def test_version() -> None:
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize(
    ("name", "text", "reason"),
    [
        ("service.toml", "backend = 'cassandra'\n", "backend must be one of"),
        # PyYAML's own message spans lines and quotes the source; brackets are not markup
        ("service.yaml", "backend: [redis\n", "not valid YAML: expected ',' or ']'"),
        ("service.toml", "[sessionflow\n", "not valid TOML"),
    ],
)
def test_serve_refuses_a_bad_config_with_a_one_line_reason(tmp_path, name, text, reason) -> None:
    config = tmp_path / name
    config.write_text(text)
    result = runner.invoke(app, ["serve", "--config", str(config)], terminal_width=60)
    assert result.exit_code == 2
    assert reason in result.output
    assert result.output.count("\n") == 1


@pytest.mark.parametrize("port", ["65536", "99999", "-1"])
def test_serve_refuses_a_port_out_of_range(port: str) -> None:
    """uvloop would listen on the port modulo 65536 and print the number it was given."""
    result = runner.invoke(app, ["serve", "--port", port], env={"COLUMNS": "200"})
    assert result.exit_code == 2
    assert "Invalid value for '--port'" in result.output


def test_serve_refuses_an_address_it_cannot_listen_on_before_it_starts(monkeypatch) -> None:
    """uvicorn found out after the embedded Redis had started: a traceback-free but
    multi-line failure, exit 3. Now: one line, exit 2, nothing started."""
    monkeypatch.setenv("SESSIONFLOW_BACKEND", "memory")
    unknown = runner.invoke(app, ["serve", "--host", "999.1.1.1", "--port", "0"])
    assert unknown.exit_code == 2, unknown.output
    assert unknown.output.startswith("sessionflow serve: cannot listen on 999.1.1.1:0: ")
    assert unknown.output.count("\n") == 1
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = runner.invoke(app, ["serve", "--port", str(port)], env={"COLUMNS": "200"})
    assert busy.exit_code == 2, busy.output
    assert busy.output == (
        f"sessionflow serve: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_serve_refuses_a_region_without_a_tier(monkeypatch) -> None:
    """--region picks one of the tier's hot Redis servers; without a tier it did nothing."""
    monkeypatch.setenv("SESSIONFLOW_BACKEND", "memory")
    result = runner.invoke(app, ["serve", "--port", "0", "--region", "mars"], terminal_width=200)
    assert result.exit_code == 2, result.output
    assert "--region names a region of the hybrid tier" in result.output


def test_serve_on_port_0_does_not_claim_port_0() -> None:
    """The system picks the port: only uvicorn's line can name it, and it does."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sessionflow.cli", "serve", "--port", "0"],
        env={**os.environ, "SESSIONFLOW_BACKEND": "memory", "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Uvicorn running on" in line:
                break
        assert lines[0].startswith("sessionflow service on 127.0.0.1, on a free port"), lines
        port = int(lines[-1].split("http://127.0.0.1:")[1].split()[0])
        assert port > 0
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).text == "ok\n"
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


def test_serve_runs_the_service_until_stopped() -> None:
    with running_service(free_port()) as url:
        assert httpx.get(f"{url}/healthz", timeout=5).text == "ok\n"
        created = httpx.post(f"{url}/v1/sessions", json={}, timeout=5)
        assert created.status_code == 201
