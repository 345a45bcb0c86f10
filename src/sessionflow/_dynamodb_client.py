"""The botocore settings sessionflow recommends for DynamoDB clients, and its error mapping."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sessionflow._errors import BackendError, one_line


def dynamodb_client_config(
    *,
    max_attempts: int = 5,
    connect_timeout: float = 2.0,
    read_timeout: float = 5.0,
    max_pool_connections: int = 50,
    parameter_validation: bool = False,
) -> Config:
    """Return a botocore `Config` with standard-mode retries and short timeouts.

    Standard mode retries throttling and transient errors with backoff; it never retries a
    failed condition (`ConditionalCheckFailedException`), which is how a version check
    must behave. botocore's check of each request against the API model before sending
    is off by default: sessionflow builds every request itself, the check costs about a
    third of the client's CPU on a batch of 100 items, and DynamoDB validates every
    request anyway (a malformed one is refused with ``ValidationException``).
    """
    return Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
        parameter_validation=parameter_validation,
    )


def error_code(exc: ClientError) -> str:
    """Return the error code DynamoDB answered with (``ConditionalCheckFailedException``...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def dynamodb_errors() -> Iterator[None]:
    """Turn botocore's errors into `BackendError` (with DynamoDB's code when it answered)."""
    try:
        yield
    except ClientError as exc:
        raise BackendError(
            f"DynamoDB refused the request: {error_code(exc)}: {one_line(str(exc))}"
        ) from exc
    except BotoCoreError as exc:
        raise BackendError(f"DynamoDB request failed: {one_line(str(exc))}") from exc
