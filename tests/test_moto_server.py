"""The zero-install demo's moto server under concurrent requests.

boto3 keeps several connections open, and the demo's stores send requests from several
threads; moto's tables are not safe under concurrent requests, so the server lets one
through at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import boto3

from sessionflow import dynamodb_client_config
from sessionflow.local_servers import DUMMY_AWS, MotoDynamoDB

TABLE = "moto-concurrency"


def test_scans_beside_puts_all_succeed() -> None:
    with MotoDynamoDB() as server:
        client = boto3.client(
            "dynamodb",
            endpoint_url=server.endpoint_url,
            config=dynamodb_client_config(max_pool_connections=16, max_attempts=1),
            **DUMMY_AWS,
        )
        client.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )

        def item(key: str) -> dict[str, dict[str, str]]:
            return {"k": {"S": key}, "v": {"S": "x" * 50}}

        def put(worker: int) -> int:
            for i in range(40):
                client.transact_write_items(
                    TransactItems=[
                        {"Put": {"TableName": TABLE, "Item": item(f"{worker}-{i}-{j}")}}
                        for j in range(5)
                    ]
                )
            return 200

        def scan(_: int) -> int:
            for _ in range(10):
                client.scan(TableName=TABLE)
            return 10

        with ThreadPoolExecutor(max_workers=8) as pool:
            puts = [pool.submit(put, worker) for worker in range(4)]
            scans = [pool.submit(scan, worker) for worker in range(4)]
            assert sum(f.result() for f in puts) == 800  # a 500 from moto raises here
            assert sum(f.result() for f in scans) == 40
        assert client.scan(TableName=TABLE, Select="COUNT")["Count"] == 800
