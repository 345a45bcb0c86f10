"""Auto-pipelining: concurrent session reads coalesced into one Redis round trip.

Every `hgetall` issued during one turn of the event loop joins a batch that is sent as a
single non-transactional pipeline when the loop next runs callbacks (or as soon as the batch
is full). Under concurrency this replaces N round trips by one, the way auto-pipelining
clients such as Lettuce and ioredis do.

While a batch is in Redis, the next one waits and gathers the reads that arrive meanwhile,
and goes the moment the first returns. So batches grow with the load by themselves: when
requests arrive one at a time, as they do from a gateway, each loop turn holds only one or
two reads, and sending every turn's batch at once would pay a round trip for each.

On a standalone server over TCP, TLS or a Unix socket (what a ``redis://``, ``rediss://``
or ``unix://`` URL names) the reads go instead over one multiplexed connection of their
own (`RedisReadChannel`): every loop turn's reads in one socket write, replies matched in
order. That costs the client a quarter to a third of redis-py's CPU per read, so there is
no need to hold a batch back while another is in Redis. Sentinel and Cluster clients keep
redis-py's pipelines.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from redis.exceptions import ResponseError

from sessionflow._errors import ConfigError
from sessionflow._redis_channel import RedisReadChannel, channel_target


class AsyncReadCoalescer:
    """Batches concurrent HGETALLs of one event loop into shared round trips.

    Over a `RedisReadChannel` when `channel_target` accepts the client (its `channel`),
    otherwise into redis-py pipelines.

    Args:
        client: a redis.asyncio client (standalone, Sentinel master or Cluster).
        max_batch: a pipeline this large is sent at once, without waiting for the loop turn
            to end or for the batches in flight.
        max_in_flight: pipelines in Redis at a time; the next one gathers reads meanwhile.
    """

    def __init__(
        self,
        client: Any,  # noqa: ANN401 - redis.asyncio.Redis or RedisCluster
        *,
        max_batch: int = 512,
        max_in_flight: int = 1,
    ) -> None:
        if max_batch < 1:
            raise ConfigError("max_batch must be at least 1")
        if max_in_flight < 1:
            raise ConfigError("max_in_flight must be at least 1")
        self._client = client
        self._max_batch = max_batch
        self._max_in_flight = max_in_flight
        self._pending: list[tuple[str, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._flushing: set[asyncio.Task[None]] = set()
        self._batches = 0
        self._reads = 0
        target = channel_target(client)
        self.channel = RedisReadChannel(target) if target is not None else None

    @property
    def batches(self) -> int:
        """Round trips so far: pipelines sent, or socket writes of the channel."""
        return self.channel.batches if self.channel is not None else self._batches

    @property
    def reads(self) -> int:
        """Reads so far."""
        return self.channel.reads if self.channel is not None else self._reads

    async def hgetall(self, redis_key: str) -> Any:  # noqa: ANN401 - redis-py's reply
        """Return the hash at `redis_key`, read in the current batch."""
        if self.channel is not None:
            return await self.channel.hgetall(redis_key)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((redis_key, future))
        if len(self._pending) >= self._max_batch:
            self._flush_now()
        elif not self._scheduled and len(self._flushing) < self._max_in_flight:
            self._scheduled = True
            loop.call_soon(self._flush_now)
        return await future

    async def aclose(self) -> None:
        """Close the multiplexed connection, if there is one (the client stays open)."""
        if self.channel is not None:
            await self.channel.aclose()

    def _flush_now(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._flushing.add(task)  # keep a reference until it finishes
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        """Send the reads that gathered while a batch was in flight."""
        self._flushing.discard(task)
        if self._pending and not self._scheduled:
            self._flush_now()

    async def _read(self, batch: list[tuple[str, asyncio.Future[Any]]]) -> list[Any]:
        """Read the batch's hashes; a command Redis refused is its reply's exception.

        A read alone, the usual case when requests arrive one at a time, goes without a
        pipeline: a pipeline of one costs the client about half as much again as the
        command itself.
        """
        if len(batch) == 1:
            try:
                return [await self._client.hgetall(batch[0][0])]
            except ResponseError as exc:
                return [exc]
        async with self._client.pipeline(transaction=False) as pipe:
            for redis_key, _ in batch:
                pipe.hgetall(redis_key)
            return cast("list[Any]", await pipe.execute(raise_on_error=False))

    async def _send(self, batch: list[tuple[str, asyncio.Future[Any]]]) -> None:
        self._batches += 1
        self._reads += len(batch)
        try:
            replies = await self._read(batch)
        except BaseException as exc:
            # The round trip failed (connection lost, loop shutting down): every reader of
            # this batch gets the error, none waits forever.
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its reader was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)


class ReadCoalescer:
    """The sync flavour has no event loop whose concurrent reads could be coalesced."""

    def __init__(self, client: Any, *, max_batch: int = 512) -> None:  # noqa: ANN401, ARG002
        raise ConfigError(
            "auto_pipeline coalesces the concurrent reads of an asyncio event loop: use "
            "AsyncRedisBackend, or a connection pool and threads with the sync client"
        )

    def hgetall(self, redis_key: str) -> Any:  # noqa: ANN401  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        raise NotImplementedError
