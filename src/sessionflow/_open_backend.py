"""Open a backend from settings: the service and the migration tools share this."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._errors import ConfigError
from sessionflow._ids import new_session_id, storage_key
from sessionflow._policy import check_seconds
from sessionflow._redis_clients import REDIS_SOCKET_TIMEOUT, redis_client

if TYPE_CHECKING:
    from sessionflow._async.backends.tiered import AsyncTieredBackend
    from sessionflow._async.conversations.base import AsyncMigratableConversations
    from sessionflow._async.migration import AsyncMigration
    from sessionflow._migration_config import MigrationConfig
    from sessionflow._migration_stats import MigrationStats
    from sessionflow._tier import TierStats
    from sessionflow._tier_config import TierConfig

DYNAMODB_CONNECT_TIMEOUT = 2.0
PEER_SOCKET_TIMEOUT = 2.0  # another region's hot tier is asked only on promotion


@dataclass(frozen=True)
class ClientTimeouts:
    """How long the stores' clients wait before a call fails.

    The defaults suit jobs (a backfill rides out a slow minute: five DynamoDB attempts of
    up to 5 s each). A service answering requests wants `for_requests`.
    """

    redis_socket: float = REDIS_SOCKET_TIMEOUT
    """Seconds a Redis reply may take."""
    dynamodb_read: float = 5.0
    """Seconds one DynamoDB attempt may wait for its answer."""
    dynamodb_attempts: int = 5
    """DynamoDB attempts per call, the first included (botocore's standard retries)."""

    @classmethod
    def for_requests(cls, seconds: float) -> ClientTimeouts:
        """Timeouts that fail a store call after about `seconds` when a store stops answering.

        Redis: one reply timeout of `seconds`. DynamoDB: two attempts (one retry rides out
        a dropped connection) with read timeouts of a quarter of `seconds`: an attempt
        through aiobotocore against a frozen DynamoDB Local took twice its read timeout and
        about half a second more. Measured end to end through the service: a 503 after
        1.7, 3.8 and 6.2 s for `seconds` of 1, 2 and 5.
        """
        check_seconds("a store timeout", seconds)
        return cls(redis_socket=seconds, dynamodb_read=seconds / 4, dynamodb_attempts=2)


JOB_TIMEOUTS = ClientTimeouts()


class StoreSettings(Protocol):
    """The settings that name a store (`ServiceConfig` and `StoreConfig` both have them)."""

    @property
    def backend(self) -> str: ...
    @property
    def redis_url(self) -> str: ...
    @property
    def redis_prefix(self) -> str: ...
    @property
    def redis_auto_pipeline(self) -> bool: ...
    @property
    def dynamodb_endpoint(self) -> str | None: ...
    @property
    def dynamodb_table(self) -> str: ...
    @property
    def dynamodb_region(self) -> str: ...


async def open_backend(
    config: StoreSettings, stack: AsyncExitStack, timeouts: ClientTimeouts = JOB_TIMEOUTS
) -> AsyncBackend:
    """Open the async session backend `config` describes; its clients close with `stack`.

    ``local`` starts a Redis server on loopback that stops with `stack`.
    """
    # Imports stay here: each backend needs only its own client library.
    if config.backend == "memory":
        from sessionflow._async.backends.memory import AsyncMemoryBackend  # noqa: PLC0415

        return AsyncMemoryBackend()
    if config.backend in ("local", "redis", "redis-cluster"):
        from sessionflow._async.backends.redis import AsyncRedisBackend  # noqa: PLC0415

        redis_backend = AsyncRedisBackend(
            await _redis_for(config, stack, timeouts),
            prefix=config.redis_prefix,
            auto_pipeline=config.redis_auto_pipeline,
        )
        stack.push_async_callback(redis_backend.aclose)  # before the client closes
        return redis_backend
    from sessionflow._async.backends.dynamodb import AsyncDynamoDBBackend  # noqa: PLC0415

    backend = AsyncDynamoDBBackend(
        await _dynamodb_for(config, stack, timeouts), table_name=config.dynamodb_table
    )
    await backend.ensure_table()
    return backend


async def open_conversations(
    config: StoreSettings, stack: AsyncExitStack, timeouts: ClientTimeouts = JOB_TIMEOUTS
) -> AsyncMigratableConversations:
    """Open the conversation-list store `config` describes (same settings as sessions)."""
    if config.backend == "memory":
        from sessionflow._async.conversations.memory import (  # noqa: PLC0415
            AsyncMemoryConversations,
        )

        return AsyncMemoryConversations()
    if config.backend in ("local", "redis", "redis-cluster"):
        from sessionflow._async.conversations.redis import (  # noqa: PLC0415
            AsyncRedisConversations,
        )

        return AsyncRedisConversations(
            await _redis_for(config, stack, timeouts), prefix=config.redis_prefix
        )
    from sessionflow._async.conversations.dynamodb import (  # noqa: PLC0415
        AsyncDynamoDBConversations,
    )

    store = AsyncDynamoDBConversations(
        await _dynamodb_for(config, stack, timeouts), table_name=config.dynamodb_table
    )
    await store.ensure_table()
    return store


async def _redis_for(config: StoreSettings, stack: AsyncExitStack, timeouts: ClientTimeouts) -> Any:  # noqa: ANN401
    """Open the Redis client `config` names (a local server for ``local``)."""
    if config.backend == "redis-cluster":
        from redis.asyncio.cluster import RedisCluster  # noqa: PLC0415

        cluster = RedisCluster.from_url(config.redis_url, socket_timeout=timeouts.redis_socket)
        return await stack.enter_async_context(cluster)
    url = config.redis_url
    if config.backend == "local":
        from sessionflow.local_servers import RedisServer  # noqa: PLC0415

        url = stack.enter_context(RedisServer()).url
    return await stack.enter_async_context(redis_client(url, socket_timeout=timeouts.redis_socket))


async def _dynamodb_for(
    config: StoreSettings, stack: AsyncExitStack, timeouts: ClientTimeouts
) -> Any:  # noqa: ANN401
    """Open the DynamoDB client `config` names (aioboto3, botocore's standard retries)."""
    import aioboto3  # noqa: PLC0415

    from sessionflow._dynamodb_client import dynamodb_client_config  # noqa: PLC0415

    session = aioboto3.Session(region_name=config.dynamodb_region)
    return await stack.enter_async_context(
        session.client(
            "dynamodb",
            endpoint_url=config.dynamodb_endpoint,
            config=dynamodb_client_config(
                max_attempts=timeouts.dynamodb_attempts,
                connect_timeout=min(DYNAMODB_CONNECT_TIMEOUT, timeouts.dynamodb_read),
                read_timeout=timeouts.dynamodb_read,
            ),
        )
    )


@asynccontextmanager
async def open_migration(
    config: MigrationConfig,
    *,
    stats: MigrationStats | None = None,
    timeouts: ClientTimeouts = JOB_TIMEOUTS,
) -> AsyncIterator[AsyncMigration]:
    """Open both stores and the control plane that `config` names; all close on exit."""
    from sessionflow._async.migration import AsyncMigration  # noqa: PLC0415
    from sessionflow._async.redis_control import AsyncRedisControlPlane  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        url = config.control_redis_url()
        if url is None:  # MigrationConfig refuses such settings; kept for direct callers
            raise ConfigError("a migration needs a Redis for its control record (control_url)")
        client = await stack.enter_async_context(
            redis_client(url, socket_timeout=timeouts.redis_socket)
        )
        control = AsyncRedisControlPlane(client, migration=config.name)
        options: dict[str, Any] = {
            "stats": stats,
            "heartbeat_max_age": config.heartbeat_max_age,
            "verify_threshold": config.verify_threshold,
        }
        if config.data == "conversations":
            yield AsyncMigration.for_conversations(
                await open_conversations(config.old, stack, timeouts),
                await open_conversations(config.new, stack, timeouts),
                control,
                **options,
            )
        else:
            yield AsyncMigration(
                await open_backend(config.old, stack, timeouts),
                await open_backend(config.new, stack, timeouts),
                control,
                **options,
            )


@asynccontextmanager
async def open_tier(
    config: TierConfig,
    *,
    region: str | None = None,
    stats: TierStats | None = None,
    timeouts: ClientTimeouts = JOB_TIMEOUTS,
) -> AsyncIterator[AsyncTieredBackend]:
    """Open the tiered backend of `region` (its hot Redis, the shared cold DynamoDB).

    The other regions' hot Redis servers are its peers: a session promoted here is taken
    over from them (see `AsyncTieredBackend`).
    """
    from sessionflow._async.backends.dynamodb import AsyncDynamoDBBackend  # noqa: PLC0415
    from sessionflow._async.backends.redis import AsyncRedisBackend  # noqa: PLC0415
    from sessionflow._async.backends.tiered import AsyncTieredBackend  # noqa: PLC0415
    from sessionflow._async.redis_tier_index import AsyncRedisTierIndex  # noqa: PLC0415

    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            redis_client(config.redis_url(region), socket_timeout=timeouts.redis_socket)
        )
        peer_timeout = min(PEER_SOCKET_TIMEOUT, timeouts.redis_socket)
        home = region or config.regions[0]
        peers = [
            AsyncRedisBackend(
                await stack.enter_async_context(
                    redis_client(config.redis_url(other), socket_timeout=peer_timeout)
                ),
                prefix=config.redis_prefix,
            )
            for other in config.regions
            if other != home
        ]
        cold = await open_backend(_ColdStore(config), stack, timeouts)
        assert isinstance(cold, AsyncDynamoDBBackend)  # noqa: S101 - _ColdStore names DynamoDB
        tiered = AsyncTieredBackend(
            AsyncRedisBackend(client, prefix=config.redis_prefix),
            cold,
            AsyncRedisTierIndex(client, prefix=config.redis_prefix),
            durability=config.durability,
            demote_after=config.promotion_threshold,
            active_window=config.active_window,
            stats=stats,
            peers=peers,
            background_promotions=config.background_promotions,
        )
        try:
            yield tiered
        finally:
            await tiered.settle()  # promotions in flight finish before the clients close


class _ColdStore:
    """The cold tier's store settings, as `open_backend` reads them."""

    backend = "dynamodb"
    redis_url = ""
    redis_prefix = ""
    redis_auto_pipeline = False

    def __init__(self, config: TierConfig) -> None:
        self.dynamodb_endpoint = config.dynamodb_endpoint
        self.dynamodb_table = config.dynamodb_table
        self.dynamodb_region = config.dynamodb_region


@dataclass
class ConfiguredStore:
    """The backend a service settings file describes, and the composite behind it (if any)."""

    backend: AsyncBackend
    name: str
    """``tiered``, ``migrating`` or the backend kind: the metrics' ``backend`` label."""
    migration: AsyncMigration | None = None
    tiered: AsyncTieredBackend | None = None


async def open_configured(
    config: StoreSettings,
    stack: AsyncExitStack,
    *,
    migration: MigrationConfig | None = None,
    tier: TierConfig | None = None,
    region: str | None = None,
    migration_stats: MigrationStats | None = None,
    tier_stats: TierStats | None = None,
    timeouts: ClientTimeouts = JOB_TIMEOUTS,
) -> ConfiguredStore:
    """Open what a settings file names: the hybrid tier, a migrating fleet member, or a store.

    The service and the load tester's ``config:`` targets both serve through this.
    """
    if migration is not None and tier is not None:
        raise ConfigError("a service serves through a migration or a tier, not both")
    if tier is not None:
        tiered = await stack.enter_async_context(
            open_tier(tier, region=region, stats=tier_stats, timeouts=timeouts)
        )
        return ConfiguredStore(tiered, "tiered", tiered=tiered)
    if migration is None:
        return ConfiguredStore(await open_backend(config, stack, timeouts), config.backend)
    from sessionflow._async.backends.migrating import AsyncMigratingBackend  # noqa: PLC0415

    job = await stack.enter_async_context(
        open_migration(migration, stats=migration_stats, timeouts=timeouts)
    )
    backend = await stack.enter_async_context(
        AsyncMigratingBackend(
            job.old,
            job.new,
            job.control,
            stage_ttl=migration.stage_ttl,
            compare_sample=migration.compare_sample,
            stats=migration_stats,
        )
    )
    return ConfiguredStore(backend, "migrating", migration=job)


EMBEDDED_BACKENDS = ("local", "memory")
"""Backends that start with the process: nothing outside it to check before serving."""


async def check_configured(
    config: StoreSettings,
    *,
    migration: MigrationConfig | None = None,
    tier: TierConfig | None = None,
    region: str | None = None,
    timeouts: ClientTimeouts = JOB_TIMEOUTS,
) -> None:
    """Open what a settings file names, read from every store once, and close it again.

    `sessionflow serve` calls this before it starts listening, so an unreachable store or
    a table of another layout is one line and an exit code, not a traceback from the
    server's start-up. Raises `ConfigError` or the store's `SessionflowError`.
    """
    probe = storage_key(new_session_id())  # a key no session has
    async with AsyncExitStack() as stack:
        opened = await open_configured(
            config, stack, migration=migration, tier=tier, region=region, timeouts=timeouts
        )
        if opened.migration is not None:
            # the stores and the control record directly: a read through the migrating
            # backend would report this short-lived process as a member of the fleet
            await opened.migration.old.get(probe)
            await opened.migration.new.get(probe)
            await opened.migration.control.read_stage()
        else:
            await opened.backend.get(probe)
