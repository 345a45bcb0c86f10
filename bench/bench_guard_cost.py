"""What a guarded write costs DynamoDB Local itself, with the client's cost taken out.

    python bench/bench_guard_cost.py [--items 10000] [--rounds 3] [--warmup-rounds 2]
                                     [--json out.json]

The backfill benchmark (bench_migration.py) compares sessionflow's guarded backfill with raw
`batch_write_item`. This one asks where the guarded ceiling comes from: the same prepared
session items (built once, in memory; no Redis, no sessionflow code on the way) go into a
fresh table per run in four ways, and each run reports items per second, the CPU time
DynamoDB Local's JVM spent per item (from /proc/<pid>/stat), and the benchmark process's
own CPU time per item:

1. `batch_write_item`, 25 items a request, 32 requests in flight (aioboto3): no guard
   possible, the raw ceiling;
2. `PutItem` without a condition, one item a request, 48 in flight, sent by a minimal
   client: the body serialized with orjson, signed with botocore's SigV4 signer, written on
   a kept-alive HTTP/1.1 connection and the answer read by Content-Length; a tenth of
   boto3's client CPU per request, so the server is the limit;
3. the same with the backfill's guard: `attribute_not_exists(session_id) OR (#v < :incoming
   AND attribute_not_exists(tombstone))`;
4. `transact_write_items` of 100 guarded puts, 2 in flight (aioboto3): the backfill's way.

2 versus 3 says what the condition costs; 1 versus 2 what one request per item costs.
The four runs rotate their order per round after unmeasured warm-up rounds (the JVM speeds
up over its first minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aioboto3
import orjson
from _dynamodb import guarded_put
from _process import process_cpu_seconds
from _results import write_results
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from sessionflow import dynamodb_client_config, new_session_id, storage_key
from sessionflow._codec import Codec
from sessionflow._dynamodb_layout import record_to_item, table_definition
from sessionflow._record import SessionRecord
from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal

Item = dict[str, Any]
MODES = ("batch_write_item", "put_item", "put_item_guarded", "transact_guarded")


def session_items(count: int) -> list[Item]:
    """`count` items as the DynamoDB backend stores a typical session."""
    codec = Codec()
    values = {
        "username": "user_1",
        "current_page": "/products/laptop",
        "page_views": 15,
        "cart": {"items": ["laptop-123|2|999.99", "mouse-456|1|29.99"], "total": "1029.97"},
    }
    attributes = {name: codec.encode(name, value).stored for name, value in values.items()}
    now = time.time()
    return [
        record_to_item(
            SessionRecord(
                key=storage_key(new_session_id()),
                version=3,
                user_id=f"u{index % 1000}",
                created_at=now,
                last_access=now,
                idle_expires_at=now + 1800,
                absolute_expires_at=now + 86400,
                attributes=attributes,
            )
        )
        for index in range(count)
    ]


def _json_default(value: object) -> str:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    raise TypeError(f"cannot serialize {type(value).__name__}")


class MinimalPutClient:
    """Signed `PutItem` requests on kept-alive HTTP/1.1 connections, nothing else.

    Only for this measurement: no retries, and any answer but 200 is an error.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.signer = SigV4Auth(
            Credentials(DUMMY_AWS["aws_access_key_id"], DUMMY_AWS["aws_secret_access_key"]),
            "dynamodb",
            DUMMY_AWS["region_name"],
        )
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def put(self, request: dict[str, Any]) -> None:
        body = orjson.dumps(request, default=_json_default)
        signed = AWSRequest(
            method="POST",
            url=self.url,
            data=body,
            headers={
                "X-Amz-Target": "DynamoDB_20120810.PutItem",
                "Content-Type": "application/x-amz-json-1.0",
            },
        )
        self.signer.add_auth(signed)
        headers = "".join(f"{name}: {value}\r\n" for name, value in signed.headers.items())
        reader, writer = (
            self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        )
        writer.write(
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{headers}"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        answer = await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"PutItem refused: {head.splitlines()[0]!r} {answer[:200]!r}")
        self.idle.append((reader, writer))

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


async def in_parallel(
    chunks: list[list[Item]], lanes: int, send: Callable[[list[Item]], Awaitable[None]]
) -> None:
    """Send every chunk, `lanes` at a time."""
    pending = iter(chunks)

    async def lane() -> None:
        for chunk in pending:
            await send(chunk)

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def write(
    mode: str, ddb: Any, minimal: MinimalPutClient, table: str, items: list[Item]
) -> None:
    """Write `items` into `table` the way `mode` names."""
    if mode == "batch_write_item":

        async def batch(chunk: list[Item]) -> None:
            request = {table: [{"PutRequest": {"Item": item}} for item in chunk]}
            while request:
                response = await ddb.batch_write_item(RequestItems=request)
                request = response.get("UnprocessedItems") or {}

        await in_parallel([items[i : i + 25] for i in range(0, len(items), 25)], 32, batch)
    elif mode in ("put_item", "put_item_guarded"):

        async def put(chunk: list[Item]) -> None:
            item = chunk[0]
            guard = mode.endswith("guarded")
            await minimal.put(
                guarded_put(table, item) if guard else {"TableName": table, "Item": item}
            )

        await in_parallel([[item] for item in items], 48, put)
    else:

        async def transact(chunk: list[Item]) -> None:
            await ddb.transact_write_items(
                TransactItems=[{"Put": guarded_put(table, item)} for item in chunk]
            )

        await in_parallel([items[i : i + 100] for i in range(0, len(items), 100)], 2, transact)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    items = session_items(args.items)
    with DynamoDBLocal() as server:
        minimal = MinimalPutClient(server.port)
        config = dynamodb_client_config(max_pool_connections=64, read_timeout=30)
        session = aioboto3.Session(**DUMMY_AWS)
        async with session.client(
            "dynamodb", endpoint_url=server.endpoint_url, config=config
        ) as ddb:
            tables = 0

            async def measure(mode: str) -> dict[str, float]:
                nonlocal tables
                tables += 1
                table = f"guardcost{tables}"
                await ddb.create_table(**table_definition(table, streams=False))
                jvm, mine, began = (
                    process_cpu_seconds(server.pid),
                    time.process_time(),
                    time.perf_counter(),
                )
                await write(mode, ddb, minimal, table, items)
                seconds = time.perf_counter() - began
                await ddb.delete_table(TableName=table)
                return {
                    "items_per_s": len(items) / seconds,
                    "server_ms_per_item": 1e3
                    * (process_cpu_seconds(server.pid) - jvm)
                    / len(items),
                    "client_ms_per_item": 1e3 * (time.process_time() - mine) / len(items),
                }

            for _ in range(args.warmup_rounds):
                for mode in MODES:
                    await measure(mode)
            rounds = []
            for round_ in range(args.rounds):
                order = MODES[round_ % len(MODES) :] + MODES[: round_ % len(MODES)]
                figures = {mode: await measure(mode) for mode in order}
                raw = figures["batch_write_item"]["items_per_s"]
                for mode in MODES:
                    figures[mode]["ratio_to_batch_write_item"] = figures[mode]["items_per_s"] / raw
                rounds.append(figures)
                print(json.dumps(figures, indent=1), flush=True)
        minimal.close()
    return {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "items": args.items,
        "rounds": rounds,
        "median": {
            mode: {
                name: statistics.median(r[mode][name] for r in rounds) for name in rounds[0][mode]
            }
            for mode in MODES
        },
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    arguments = parser.parse_args()
    result = asyncio.run(main(arguments))
    print(json.dumps(result["median"], indent=1))
    if arguments.json:
        write_results(arguments.json, result)
