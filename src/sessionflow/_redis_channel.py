"""One Redis connection that carries every concurrent read at once (multiplexing).

redis-py gives each command in flight a connection of its own from a pool, and its asyncio
connection reads replies through a stream reader: on a small machine about 100 µs of client
CPU for one HGETALL, most of it not the parsing. Redis answers the commands of one
connection in the order it received them, so any number of reads can share a connection
if their replies are matched to them in that order. That is what Lettuce and ioredis do,
and what this module does for the service's hottest command: every read of one event-loop
turn is written to the socket in one write; replies are parsed by hiredis as they arrive
and handed to their readers first in, first out.

Only what the session read path needs is here: HGETALL on a standalone server over TCP,
TLS or a Unix socket, RESP2, password or ACL login and a database number. Sentinel,
Cluster, RESP3 and credential providers stay with redis-py (`channel_target` says which
clients qualify).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio import BlockingConnectionPool, ConnectionPool
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    ResponseError,
)
from redis.exceptions import (
    ConnectionError as RedisConnectionError,
)
from redis.exceptions import (
    TimeoutError as RedisTimeoutError,
)

Reply = Any  # what hiredis parsed: bytes, int, list, None or a ResponseError


class ChannelClosedError(RedisConnectionError):
    """The channel was closed while this read waited for its reply (it is not sent again)."""


@dataclass(frozen=True)
class ChannelTarget:
    """Where and how a channel connects: what a plain redis-py pool's settings name."""

    host: str = "localhost"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    client_name: str | None = None
    timeout: float | None = None
    connect_timeout: float | None = None
    keepalive: bool = False
    tls: ssl.SSLContext | None = None


def channel_target(client: Any) -> ChannelTarget | None:  # noqa: ANN401 - any redis-py client
    """Return the target of a redis-py client a channel can stand in for reads, else None.

    A client qualifies when it talks RESP2 in bytes to one standalone server, over TCP, TLS
    or a Unix socket, with a fixed login: a client redis-py builds from a ``redis://``,
    ``rediss://`` or ``unix://`` URL does (TLS with the client's own certificate settings).
    Anything else (Sentinel, Cluster, RESP3, a credential provider, decoded replies)
    returns None, and the caller keeps redis-py's pipelines.
    """
    pool = getattr(client, "connection_pool", None)
    if type(pool) not in (ConnectionPool, BlockingConnectionPool):
        return None
    assert pool is not None  # noqa: S101 - for the type checker: the check above rules None out
    kwargs: dict[str, Any] = pool.connection_kwargs
    if (
        kwargs.get("credential_provider") is not None
        or kwargs.get("protocol") not in (None, 2, "2")
        or kwargs.get("decode_responses")
    ):
        return None
    common: dict[str, Any] = {
        "db": int(kwargs.get("db") or 0),
        "username": kwargs.get("username"),
        "password": kwargs.get("password"),
        "client_name": kwargs.get("client_name"),
        "timeout": kwargs.get("socket_timeout"),
        "connect_timeout": kwargs.get("socket_connect_timeout"),
        "keepalive": bool(kwargs.get("socket_keepalive")),
    }
    if pool.connection_class in (Connection, SSLConnection):
        tls = None
        if pool.connection_class is SSLConnection:
            # redis-py's own connection object turns its ssl_* settings into a context;
            # making one opens nothing.
            tls = SSLConnection(**kwargs).ssl_context.get()
        return ChannelTarget(
            host=kwargs.get("host", "localhost"),
            port=int(kwargs.get("port", 6379)),
            tls=tls,
            **common,
        )
    if pool.connection_class is UnixDomainSocketConnection:
        return ChannelTarget(path=kwargs["path"], **common)
    return None


def encode_command(*parts: bytes) -> bytes:
    """Return `parts` as one RESP command."""
    head = b"*%d\r\n" % len(parts)
    return head + b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)


class _ReplyProtocol(asyncio.Protocol):
    """Feeds the socket's bytes to the channel; tells it when the connection goes."""

    def __init__(self, channel: RedisReadChannel) -> None:
        self._channel = channel

    def data_received(self, data: bytes) -> None:
        if self._channel._protocol is self:  # noqa: SLF001 - a dropped connection's bytes
            self._channel._received(data)  # noqa: SLF001 - are no reply to anyone now

    def connection_lost(self, exc: Exception | None) -> None:
        self._channel._lost(self, exc)  # noqa: SLF001


class RedisReadChannel:
    """Reads Redis hashes for any number of concurrent callers over one connection.

    Commands issued in one event-loop turn go out in one socket write; Redis answers in
    order, so replies are matched to callers first in, first out. The connection opens on
    the first read and again after it is lost; a read whose connection is lost before its
    reply fails with redis-py's `ConnectionError`, one that waits longer than the client's
    socket timeout fails with its `TimeoutError` (and the connection is dropped, as
    redis-py drops it).

    Args:
        target: where to connect, usually `channel_target(client)`.
    """

    def __init__(self, target: ChannelTarget) -> None:
        self._target = target
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: _ReplyProtocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._ready = False
        self._reader = self._new_reader()
        self._waiting: deque[tuple[asyncio.Future[Reply], float]] = deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self.batches = 0  # socket writes: round trips shared by every read they carried
        self.reads = 0

    @staticmethod
    def _new_reader() -> hiredis.Reader:
        return hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)

    async def hgetall(self, redis_key: str) -> dict[bytes, bytes]:
        """Return the hash at `redis_key`; raise the error Redis answered (a wrong type).

        A read whose connection was lost before its reply is sent once more on a new
        connection (a read can be repeated safely); a second loss raises.
        """
        command = encode_command(b"HGETALL", redis_key.encode())
        try:
            reply = await self._command(command)
        except ChannelClosedError:
            raise
        except RedisConnectionError:
            reply = await self._command(command)
        if isinstance(reply, list):
            return dict(zip(reply[::2], reply[1::2], strict=True))
        if isinstance(reply, ResponseError):
            raise reply
        raise InvalidResponse(f"HGETALL answered {type(reply).__name__}")

    async def _command(self, command: bytes) -> Reply:
        if not self._ready or self._loop is not asyncio.get_running_loop():
            await self._connect()
        return await self._send(command)

    async def aclose(self) -> None:
        """Close the connection; reads in flight fail with `ConnectionError`."""
        transport = self._transport
        if transport is not None:
            self._drop(ChannelClosedError("the read channel was closed"))
            transport.close()

    def _send(self, command: bytes) -> asyncio.Future[Reply]:
        loop = self._loop
        assert loop is not None  # noqa: S101 - connected before sending
        future: asyncio.Future[Reply] = loop.create_future()
        self._waiting.append((future, loop.time()))
        self._outgoing.append(command)
        self.reads += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self._watchdog is None and self._target.timeout:
            self._watchdog = loop.call_later(self._target.timeout, self._check_timeout)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._outgoing and self._transport is not None:
            self._transport.write(b"".join(self._outgoing))
            self.batches += 1
        self._outgoing = []

    def _received(self, data: bytes) -> None:
        self._reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = self._reader.gets()
            except InvalidResponse as exc:  # not RESP: no later reply can be trusted
                self._abort(exc)
                return
            if reply is False:
                return
            if not waiting:
                self._abort(InvalidResponse("Redis sent a reply no read asked for"))
                return
            future, _ = waiting.popleft()
            if not future.done():  # its caller may have been cancelled
                future.set_result(reply)

    def _check_timeout(self) -> None:
        """Drop the connection when its oldest read has waited past the socket timeout."""
        self._watchdog = None
        if not self._waiting or self._loop is None:
            return
        timeout = self._target.timeout
        assert timeout is not None  # noqa: S101 - armed only with a timeout
        waited = self._loop.time() - self._waiting[0][1]
        if waited >= timeout:
            self._abort(RedisTimeoutError(f"no reply from Redis in {timeout:g} s"))
        else:
            self._watchdog = self._loop.call_later(timeout - waited, self._check_timeout)

    def _abort(self, failure: Exception) -> None:
        """Fail every read in flight now and drop the connection.

        Forgotten before it is aborted, so no read issued meanwhile can be queued on it,
        and its late connection_lost is ignored.
        """
        transport = self._transport
        self._drop(failure)
        if transport is not None:
            transport.abort()

    def _lost(self, protocol: _ReplyProtocol, exc: Exception | None) -> None:
        if protocol is not self._protocol:
            return  # a connection already dropped (closed, aborted or replaced)
        reason = f": {exc}" if exc else ""
        self._drop(RedisConnectionError(f"Redis closed the connection{reason}"))

    def _drop(self, failure: Exception) -> None:
        """Forget the connection and fail every read still waiting on it with `failure`."""
        for future, _ in self._forget_connection():
            if not future.done():
                future.set_exception(failure)

    def _forget_connection(self) -> deque[tuple[asyncio.Future[Reply], float]]:
        """Reset everything that belongs to one connection; return the reads it owed."""
        self._transport = None
        self._protocol = None
        self._ready = False
        self._reader = self._new_reader()
        self._outgoing = []
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting = self._waiting, deque()
        return waiting

    async def _connect(self) -> None:
        """Open the connection once for every caller waiting on it, and log in."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop: start afresh
            # The old loop's timer and futures are left as they are: that loop may be
            # closed, and cancelling or failing them would call into it.
            self._watchdog = None
            self._forget_connection()
            self._loop = loop
            self._connecting = None
            self._flush_scheduled = False
        if self._connecting is None:
            self._connecting = loop.create_future()
            connecting = self._connecting
            try:
                await self._open(loop)
            except asyncio.CancelledError:
                connecting.cancel()
                raise
            except BaseException as exc:
                connecting.set_exception(exc)
                connecting.exception()  # marked retrieved: each waiter raises it for itself
                raise
            finally:
                self._connecting = None
            connecting.set_result(None)
            return
        await asyncio.shield(self._connecting)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        target = self._target
        try:
            async with asyncio.timeout(target.connect_timeout):
                if target.path is not None:
                    transport, protocol = await loop.create_unix_connection(
                        lambda: _ReplyProtocol(self), target.path
                    )
                else:
                    transport, protocol = await loop.create_connection(
                        lambda: _ReplyProtocol(self), target.host, target.port, ssl=target.tls
                    )
        except TimeoutError as exc:
            raise RedisTimeoutError("timed out connecting to Redis") from exc
        except OSError as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from exc
        # asyncio and uvloop both turn Nagle's algorithm off on TCP already
        sock = transport.get_extra_info("socket")
        if target.keepalive and target.path is None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._transport = transport
        self._protocol = protocol
        try:
            await self._log_in()
        except BaseException as exc:
            transport.close()
            self._drop(RedisConnectionError(f"logging in to Redis failed: {exc}"))
            raise
        self._ready = True

    async def _log_in(self) -> None:
        target = self._target
        commands: list[tuple[bytes, ...]] = []
        if target.password is not None:
            login = (target.username, target.password) if target.username else (target.password,)
            commands.append((b"AUTH", *(part.encode() for part in login)))
        if target.db:
            commands.append((b"SELECT", str(target.db).encode()))
        if target.client_name:
            commands.append((b"CLIENT", b"SETNAME", target.client_name.encode()))
        replies = await asyncio.gather(*(self._send(encode_command(*c)) for c in commands))
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, ResponseError):
                if command[0] == b"AUTH":
                    raise AuthenticationError(str(reply))
                raise reply
