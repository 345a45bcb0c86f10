"""Clients the tests share: DynamoDB at an endpoint (both flavours), a running service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aioboto3
import boto3
import httpx

from sessionflow import dynamodb_client_config
from sessionflow.local_servers import DUMMY_AWS


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
def running_service(port: int, **environ: str) -> Iterator[str]:
    """Run `sessionflow serve` (memory backend unless `environ` says otherwise) on `port`.

    Yields its base URL once /healthz answers; stops the process by its PID on exit.
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
        process.stdout.close()  # type: ignore[union-attr]
