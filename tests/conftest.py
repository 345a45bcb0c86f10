"""Test servers and backends.

Real Redis (standalone and a 3-master cluster) and DynamoDB Local start once per test
session on free loopback ports and stop by PID at the end. The contract suite asks for
`async_store` (async source) or `sync_store` (generated), parametrized over every backend.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass

import aioboto3
import boto3
import pytest

from sessionflow import (
    AsyncBackend,
    AsyncSessionStore,
    Backend,
    Durability,
    DynamoDBBackend,
    ManualClock,
    SessionPolicy,
    SessionStore,
    Stage,
    dynamodb_client_config,
)
from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal, RedisClusterServers, RedisServer
from tests._async.backend_factory import TABLE, async_build_backend
from tests._sync.backend_factory import sync_build_backend

# "instrumented" is the metrics wrapper around a memory backend: a composite is a backend too.
# "redis-pipelined" is Redis with auto-pipelining (async only; skipped in the sync suite): over
# the multiplexed read connection on a standalone server, through pipelines on a Cluster.
# "migrating-<stage>" is a migrating backend between two memory stores at each stage;
# "redis-to-dynamodb-<stage>" the headline pair on the real servers.
LEAF_BACKENDS = [
    "memory",
    "instrumented",
    "redis",
    "redis-pipelined",
    "redis-cluster",
    "redis-cluster-pipelined",
    "dynamodb",
]
MIGRATING_BACKENDS = [f"migrating-{stage}" for stage in Stage] + [
    f"redis-to-dynamodb-{stage}" for stage in Stage
]
# "...-background": cold reads answered before their promotion finishes (write-back).
TIERED_BACKENDS = (
    [f"tiered-{d}" for d in Durability]
    + [f"redis-dynamodb-tiered-{d}" for d in Durability]
    + ["tiered-background", "redis-dynamodb-tiered-background"]
)
BACKENDS = LEAF_BACKENDS + MIGRATING_BACKENDS + TIERED_BACKENDS
POLICY = SessionPolicy(idle_timeout=600, absolute_timeout=3600, touch_interval=30)


@dataclass
class Servers:
    redis: RedisServer
    cluster: RedisClusterServers
    dynamodb: DynamoDBLocal

    @property
    def cluster_port(self) -> int:
        return self.cluster.nodes[0].port


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    with RedisServer() as redis_server, RedisClusterServers(3) as cluster, DynamoDBLocal() as ddb:
        DynamoDBBackend(_boto3_client(ddb.endpoint_url), table_name=TABLE).ensure_table()
        yield Servers(redis_server, cluster, ddb)


def _boto3_client(endpoint_url: str):
    return boto3.client(
        "dynamodb", endpoint_url=endpoint_url, config=dynamodb_client_config(), **DUMMY_AWS
    )


@pytest.fixture(scope="session")
def sync_dynamodb_client(servers: Servers):
    client = _boto3_client(servers.dynamodb.endpoint_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
async def async_dynamodb_client(servers: Servers):
    session = aioboto3.Session(**DUMMY_AWS)
    async with session.client(
        "dynamodb", endpoint_url=servers.dynamodb.endpoint_url, config=dynamodb_client_config()
    ) as client:
        yield client


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def user() -> str:
    return f"user-{uuid.uuid4().hex}"


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def async_backend(
    backend_kind: str, servers: Servers, clock: ManualClock, prefix: str, async_dynamodb_client
) -> AsyncIterator[AsyncBackend]:
    async with AsyncExitStack() as stack:
        yield await async_build_backend(
            backend_kind, servers, clock, prefix, stack=stack, dynamodb_client=async_dynamodb_client
        )


@pytest.fixture
def sync_backend(
    backend_kind: str, servers: Servers, clock: ManualClock, prefix: str, sync_dynamodb_client
) -> Iterator[Backend]:
    with ExitStack() as stack:
        yield sync_build_backend(
            backend_kind, servers, clock, prefix, stack=stack, dynamodb_client=sync_dynamodb_client
        )


@pytest.fixture
def async_store(async_backend: AsyncBackend, clock: ManualClock) -> AsyncSessionStore:
    return AsyncSessionStore(async_backend, policy=POLICY, clock=clock)


@pytest.fixture
def sync_store(sync_backend: Backend, clock: ManualClock) -> SessionStore:
    return SessionStore(sync_backend, policy=POLICY, clock=clock)


def redis_to_dynamodb_settings(servers: Servers, name: str, **migration: object) -> str:
    """Return a ``[migration]`` settings table moving Redis to DynamoDB Local on `servers`.

    `name` makes the migration, prefix and table unique; `migration` adds settings.
    """
    extra = "".join(f"{key} = {value!r}\n" for key, value in migration.items())
    return f"""
[migration]
name = "m{name}"
{extra}
[migration.old]
backend = "redis"
redis_url = "{servers.redis.url}"
redis_prefix = "p{name}"

[migration.new]
backend = "dynamodb"
dynamodb_endpoint = "{servers.dynamodb.endpoint_url}"
dynamodb_table = "t{name}"
"""


def tier_settings(servers: Servers, *, durability: str, **service: object) -> dict[str, object]:
    """A service settings mapping that serves through one region's tier on the test servers."""
    return {
        "backend": "memory",
        **service,
        "session_config": {
            "hot_storage": {
                "regions": ["eu-west-1"],
                "redis_urls": {"eu-west-1": servers.redis.url},
                "redis_prefix": f"tier{uuid.uuid4().hex[:8]}",
            },
            "cold_storage": {
                "dynamodb_table": TABLE,
                "dynamodb_endpoint": servers.dynamodb.endpoint_url,
            },
            "sync": {"durability": durability},
        },
    }
