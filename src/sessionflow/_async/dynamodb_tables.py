"""Creating a DynamoDB table that may already exist (the session and conversation tables)."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sessionflow._dynamodb_client import dynamodb_errors, error_code
from sessionflow._errors import ConfigError


async def create_table_if_missing(
    client: Any,  # noqa: ANN401 - a boto3 / aioboto3 DynamoDB client
    definition: dict[str, Any],
    *,
    wait_seconds: float = 60,
) -> None:
    """Create the table `definition` describes unless it exists; wait until it is active.

    Another process creating it at the same moment is waited for like our own creation. A
    table that exists with other keys or without the indexes `definition` names raises
    `ConfigError`: every request on it would fail, one at a time, as a store error.
    """
    table = definition["TableName"]
    with dynamodb_errors():
        try:
            existing = await client.describe_table(TableName=table)
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise
            try:
                await client.create_table(**definition)
            except ClientError as create_exc:
                if error_code(create_exc) != "ResourceInUseException":
                    raise
        else:
            check_layout(existing["Table"], definition)
        waiter = client.get_waiter("table_exists")
        await waiter.wait(
            TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": max(1, int(wait_seconds))}
        )


def check_layout(described: dict[str, Any], definition: dict[str, Any]) -> None:
    """Raise `ConfigError` unless the described table has `definition`'s keys and indexes."""
    wanted_types = _attribute_types(definition)
    found_types = _attribute_types(described)
    problems = []
    found_keys = _keys(described["KeySchema"], found_types)
    wanted_keys = _keys(definition["KeySchema"], wanted_types)
    if found_keys != wanted_keys:
        problems.append(f"its key is {found_keys}, sessionflow's is {wanted_keys}")
    found_indexes = {
        index["IndexName"]: _keys(index["KeySchema"], found_types)
        for index in described.get("GlobalSecondaryIndexes", [])
    }
    for index in definition.get("GlobalSecondaryIndexes", []):
        name, keys = index["IndexName"], _keys(index["KeySchema"], wanted_types)
        if name not in found_indexes:
            problems.append(f"it has no index {name!r} ({keys})")
        elif found_indexes[name] != keys:
            problems.append(f"its index {name!r} is keyed {found_indexes[name]}, not {keys}")
    if problems:
        raise ConfigError(
            f"DynamoDB table {definition['TableName']!r} exists with another layout: "
            f"{'; '.join(problems)}. Name another table, or let sessionflow create it."
        )


def _attribute_types(table: dict[str, Any]) -> dict[str, str]:
    return {a["AttributeName"]: a["AttributeType"] for a in table.get("AttributeDefinitions", [])}


def _keys(schema: list[dict[str, str]], types: dict[str, str]) -> str:
    """Describe a key schema as ``pk (HASH, S)``, in schema order."""
    return ", ".join(
        f"{key['AttributeName']} ({key['KeyType']}, {types.get(key['AttributeName'], '?')})"
        for key in schema
    )
