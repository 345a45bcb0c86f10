"""Clients the tests share: DynamoDB at an endpoint (both flavours), a running service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aioboto3
import boto3
import httpx

from sessionflow import dynamodb_client_config
from sessionflow.local_servers import DUMMY_AWS

ROOT = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def async_dynamodb_client_at(endpoint_url: str, **config: Any) -> AsyncIterator[Any]:
    session = aioboto3.Session(**DUMMY_AWS)
    async with session.client(
        "dynamodb", endpoint_url=endpoint_url, config=dynamodb_client_config(**config)
    ) as client:
        yield client


@contextmanager
def sync_dynamodb_client_at(endpoint_url: str, **config: Any) -> Iterator[Any]:
    client = boto3.client(
        "dynamodb", endpoint_url=endpoint_url, config=dynamodb_client_config(**config), **DUMMY_AWS
    )
    try:
        yield client
    finally:
        client.close()


@contextmanager
def running_service(port: int, *, output: list[str] | None = None, **environ: str) -> Iterator[str]:
    """Run `sessionflow serve` (memory backend unless `environ` says otherwise) on `port`.

    Yields its base URL once /healthz answers; stops the process by its PID on exit, then
    appends what it printed to `output`.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "sessionflow.cli", "serve", "--port", str(port)],
        env={**os.environ, "SESSIONFLOW_BACKEND": "memory", **environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)
        printed = process.stdout.read().decode()  # type: ignore[union-attr]
        process.stdout.close()  # type: ignore[union-attr]
        if output is not None:
            output.append(printed)


def sessionflow_command(
    args: list[str], *, environ: Mapping[str, str] | None = None, before: str = ""
) -> subprocess.Popen[str]:
    """Start ``sessionflow args`` in a process of its own; its output (both streams) as text.

    `before` is Python the process runs first (signal dispositions); `environ` adds to the
    environment. The caller stops it by its PID.
    """
    return subprocess.Popen(
        [sys.executable, "-c", before + "from sessionflow.cli import main; main()", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1", **(environ or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
