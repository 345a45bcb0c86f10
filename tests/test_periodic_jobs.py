"""Periodic command-line jobs (`tier flush --every`, `migrate repair --follow`) outlive a
store that goes away and comes back."""

from __future__ import annotations

import asyncio
import io
import queue
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from sessionflow import BackendError
from sessionflow._cli_repeat import run_on_period
from sessionflow.local_servers import DUMMY_AWS, RedisServer
from tests.clients import sessionflow_command
from tests.conftest import Servers


async def test_on_a_period_a_failed_run_is_reported_and_the_next_one_comes() -> None:
    out = io.StringIO()
    console = Console(file=out, width=200)
    outcomes = [BackendError("redis down"), OSError("connection refused"), None, None]
    runs = 0
    all_ran = asyncio.Event()

    async def run_once() -> None:
        nonlocal runs
        outcome = outcomes[runs]
        runs += 1
        if runs == len(outcomes):
            all_ran.set()
        if outcome is not None:
            raise outcome

    task = asyncio.ensure_future(run_on_period(run_once, 0.01, job="the run", console=console))
    await asyncio.wait_for(all_ran.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = out.getvalue().splitlines()
    assert lines == [
        "the run failed, a store did not answer: redis down; next run in 0.01 s",
        "the run failed, a store did not answer: connection refused; next run in 0.01 s",
    ]


async def test_a_single_run_lets_its_failure_through() -> None:
    async def run_once() -> None:
        raise BackendError("redis down")

    console = Console(file=io.StringIO())
    with pytest.raises(BackendError):
        await run_on_period(run_once, None, job="the run", console=console)


def _reader(stream: io.TextIOBase) -> tuple[queue.Queue[str], threading.Thread]:
    """The lines of `stream` as they come, read by a thread that ends at its end."""
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    return lines, thread


def _wait_for(
    command: subprocess.Popen[str],
    lines: queue.Queue[str],
    text: str,
    seen: list[str],
    seconds: float = 60,
) -> None:
    """Wait until the command prints `text`; fail at once if it ends first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            if command.poll() is not None and lines.empty():
                pytest.fail(f"ended ({command.returncode}) before {text!r}:\n{''.join(seen)}")
            continue
        seen.append(line)
        if text in line:
            return
    pytest.fail(f"never printed {text!r}:\n{''.join(seen)}")


def test_tier_flush_every_second_outlives_its_redis_going_away(
    servers: Servers, tmp_path: Path
) -> None:
    """The write-back flusher is the only thing that takes changes to DynamoDB: a Redis
    restart used to end `tier flush --every` at its first failed run, and dirty sessions
    piled up until someone noticed."""
    name = uuid.uuid4().hex[:10]
    with RedisServer() as hot:
        path = tmp_path / "tier.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "session_config": {
                        "hot_storage": {"regions": ["local"], "redis_urls": {"local": hot.url}},
                        "cold_storage": {
                            "dynamodb_endpoint": servers.dynamodb.endpoint_url,
                            "dynamodb_table": f"t{name}",
                        },
                        "sync": {"durability": "write-back"},
                    }
                }
            )
        )
        command = sessionflow_command(
            ["tier", "flush", "-c", str(path), "--every", "1"],
            environ={
                "AWS_ACCESS_KEY_ID": DUMMY_AWS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": DUMMY_AWS["aws_secret_access_key"],
                "AWS_DEFAULT_REGION": DUMMY_AWS["region_name"],
            },
        )
        assert command.stdout is not None
        (lines, pump), seen = _reader(command.stdout), []
        try:
            _wait_for(command, lines, "dirty session(s)", seen)
            hot.crash()
            _wait_for(command, lines, "the run failed, a store did not answer", seen)
            assert command.poll() is None, "".join(seen)
            hot.start()
            _wait_for(command, lines, "dirty session(s)", seen)  # runs again once Redis is back
            assert command.poll() is None
        finally:
            command.send_signal(signal.SIGINT)
            try:
                command.wait(timeout=20)
            except subprocess.TimeoutExpired:
                command.kill()
                command.wait(timeout=10)
            pump.join(timeout=10)  # the command has ended: its output too
            command.stdout.close()
