"""Creating a DynamoDB table that may already exist (the session and conversation tables)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sessionflow._dynamodb_client import dynamodb_errors, error_code


async def create_table_if_missing(
    client: Any,  # noqa: ANN401 - a boto3 / aioboto3 DynamoDB client
    definition: dict[str, Any],
    *,
    wait_seconds: float = 60,
) -> None:
    """Create the table `definition` describes unless it exists; wait until it is active.

    Another process creating it at the same moment is waited for like our own creation.
    """
    table = definition["TableName"]
    with dynamodb_errors():
        try:
            await client.describe_table(TableName=table)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            try:
                await client.create_table(**definition)
            except ClientError as create_exc:
                if error_code(create_exc) != "ResourceInUseException":
                    raise
        waiter = client.get_waiter("table_exists")
        await waiter.wait(
            TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": max(1, int(wait_seconds))}
        )
