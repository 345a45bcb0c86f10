"""The botocore settings sessionflow recommends for DynamoDB clients."""

from __future__ import annotations

from botocore.config import Config


def dynamodb_client_config(
    *,
    max_attempts: int = 5,
    connect_timeout: float = 2.0,
    read_timeout: float = 5.0,
    max_pool_connections: int = 50,
) -> Config:
    """Return a botocore `Config` with standard-mode retries and short timeouts.

    Standard mode retries throttling and transient errors with backoff; it never retries a
    failed condition (`ConditionalCheckFailedException`), which is how a version check
    must behave.
    """
    return Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
