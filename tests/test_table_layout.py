"""An existing DynamoDB table of another layout is refused when sessionflow opens it.

Without the check, a service pointed at someone else's table started, answered its health
check, and failed every request with a 503 "store unavailable".
"""

from __future__ import annotations

import uuid

import boto3
import pytest
from typer.testing import CliRunner

from sessionflow import ConfigError, DynamoDBBackend
from sessionflow._dynamodb_client import dynamodb_client_config
from sessionflow._dynamodb_layout import table_definition
from sessionflow._sync.conversations.dynamodb import DynamoDBConversations
from sessionflow.cli import app
from sessionflow.local_servers import DUMMY_AWS, free_port
from tests.conftest import Servers

AWS_ENVIRONMENT = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


def _client(servers: Servers):
    return boto3.client(
        "dynamodb",
        endpoint_url=servers.dynamodb.endpoint_url,
        config=dynamodb_client_config(),
        **DUMMY_AWS,
    )


def _table(client, **definition) -> str:
    name = f"other-{uuid.uuid4().hex[:8]}"
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **definition)
    return name


def _keyed_by_id(client) -> str:
    return _table(
        client,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
    )


def test_a_table_keyed_otherwise_is_a_config_error(servers: Servers) -> None:
    client = _client(servers)
    name = _keyed_by_id(client)
    with pytest.raises(ConfigError, match=r"exists with another layout: its key is id \(HASH, S\)"):
        DynamoDBBackend(client, table_name=name).ensure_table()


def test_a_table_without_the_user_index_is_a_config_error(servers: Servers) -> None:
    client = _client(servers)
    ours = table_definition("x", streams=False)
    name = _table(
        client,
        AttributeDefinitions=ours["AttributeDefinitions"][:1],
        KeySchema=ours["KeySchema"],
    )
    with pytest.raises(ConfigError, match=r"it has no index 'user_id-created_at-index'"):
        DynamoDBBackend(client, table_name=name).ensure_table()


def test_a_table_expiring_items_by_another_attribute_is_a_config_error(servers: Servers) -> None:
    client = _client(servers)
    ours = table_definition("x", streams=False)
    ours.pop("TableName")
    ours.pop("BillingMode", None)
    name = _table(client, **ours)
    DynamoDBBackend(client, table_name=name).ensure_table()  # our own layout: accepted
    other = _table(client, **ours)
    client.update_time_to_live(
        TableName=other, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"}
    )
    with pytest.raises(ConfigError, match=r"expires items by 'expires'"):
        DynamoDBBackend(client, table_name=other).ensure_table()


def test_a_conversation_table_keyed_otherwise_is_a_config_error(servers: Servers) -> None:
    client = _client(servers)
    name = _keyed_by_id(client)
    with pytest.raises(ConfigError, match=r"its key is id \(HASH, S\), sessionflow's is owner"):
        DynamoDBConversations(client, table_name=name).ensure_table()


def test_serve_refuses_a_table_of_another_layout_with_exit_2(servers: Servers) -> None:
    name = _keyed_by_id(_client(servers))
    result = CliRunner().invoke(
        app,
        ["serve", "--port", str(free_port())],
        env={
            "SESSIONFLOW_BACKEND": "dynamodb",
            "SESSIONFLOW_DYNAMODB_ENDPOINT": servers.dynamodb.endpoint_url,
            "SESSIONFLOW_DYNAMODB_TABLE": name,
            "COLUMNS": "400",
            **AWS_ENVIRONMENT,
        },
    )
    assert result.exit_code == 2
    assert result.output.startswith(f"sessionflow serve: DynamoDB table '{name}' exists with")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("environ", "said"),
    [
        ({"SESSIONFLOW_BACKEND": "redis", "SESSIONFLOW_REDIS_URL": "redis://127.0.0.1:{port}/0"},
         "cannot connect to Redis"),
        ({"SESSIONFLOW_BACKEND": "dynamodb", "SESSIONFLOW_DYNAMODB_ENDPOINT": "http://127.0.0.1:{port}"},
         "Could not connect to the endpoint URL"),
    ],
    ids=["redis", "dynamodb"],
)  # fmt: skip
def test_serve_with_a_store_that_does_not_answer_exits_3_with_one_line(environ, said) -> None:
    closed = free_port()  # nothing listens there
    result = CliRunner().invoke(
        app,
        ["serve", "--port", str(free_port())],
        env={
            **{key: value.format(port=closed) for key, value in environ.items()},
            "SESSIONFLOW_STORE_TIMEOUT": "1",
            "COLUMNS": "400",
            **AWS_ENVIRONMENT,
        },
    )
    assert result.exit_code == 3
    assert result.output.startswith("sessionflow serve: a store did not answer: ")
    assert said in result.output
    assert len(result.output.strip().splitlines()) == 1
