"""DynamoDB clients for an endpoint, in both flavours (the generated tests call the sync one)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aioboto3
import boto3

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
