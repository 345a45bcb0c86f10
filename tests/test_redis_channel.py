"""The multiplexed read connection behind auto-pipelining, against a real Redis server."""

from __future__ import annotations

import asyncio
import re
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trustme
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio import Sentinel
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.credentials import UsernamePasswordCredentialProvider
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

from sessionflow import AsyncRedisBackend, AsyncSessionStore, BackendError, new_session_id
from sessionflow._redis_channel import ChannelTarget, RedisReadChannel, channel_target
from sessionflow._redis_clients import redis_client
from sessionflow.local_servers import RedisServer, free_port


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """A Redis of these tests' own (they pause it and change its passwords), with a socket."""
    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "redis.sock")
        redis = RedisServer(extra_args=("--unixsocket", path, "--unixsocketperm", "700"))
        redis.start()
        yield redis
        redis.stop()


@pytest.fixture(scope="module")
def certificates() -> Iterator[Path]:
    """A CA, a certificate for 127.0.0.1 and a client certificate, as PEM files."""
    with tempfile.TemporaryDirectory() as directory:
        files = Path(directory)
        ca = trustme.CA()
        ca.cert_pem.write_to_path(files / "ca.pem")
        for name, identity in (("server", "127.0.0.1"), ("client", "sessionflow-client")):
            issued = ca.issue_cert(identity)
            issued.cert_chain_pems[0].write_to_path(files / f"{name}.pem")
            issued.private_key_pem.write_to_path(files / f"{name}-key.pem")
        yield files


def _tls_redis(files: Path, *, client_certificates: bool) -> tuple[RedisServer, int]:
    tls_port = free_port()
    redis = RedisServer(
        extra_args=(
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(files / "server.pem"),
            "--tls-key-file", str(files / "server-key.pem"),
            "--tls-ca-cert-file", str(files / "ca.pem"),
            "--tls-auth-clients", "yes" if client_certificates else "no",
        )
    )  # fmt: skip
    redis.start()
    return redis, tls_port


@pytest.fixture(scope="module")
def tls_server(certificates: Path) -> Iterator[tuple[RedisServer, int, str]]:
    """A Redis that also listens with TLS: (server, TLS port, the CA's certificate file)."""
    redis, tls_port = _tls_redis(certificates, client_certificates=False)
    yield redis, tls_port, str(certificates / "ca.pem")
    redis.stop()


@pytest.fixture(scope="module")
def mutual_tls_server(certificates: Path) -> Iterator[tuple[int, Path]]:
    """A Redis whose TLS port asks every client for a certificate: (TLS port, PEM files)."""
    redis, tls_port = _tls_redis(certificates, client_certificates=True)
    yield tls_port, certificates
    redis.stop()


@pytest.fixture
async def client(server: RedisServer) -> AsyncIterator[AsyncRedis]:
    redis = AsyncRedis(port=server.port)
    await redis.flushall()
    yield redis
    await redis.aclose()


@pytest.fixture
async def channel(server: RedisServer) -> AsyncIterator[RedisReadChannel]:
    read_channel = RedisReadChannel(ChannelTarget(port=server.port, timeout=5))
    yield read_channel
    await read_channel.aclose()


def test_plain_redis_and_unix_urls_qualify_with_their_settings() -> None:
    tcp = channel_target(redis_client("redis://someone:pw@127.0.0.1:7000/3"))
    assert tcp == ChannelTarget(
        host="127.0.0.1",
        port=7000,
        db=3,
        username="someone",
        password="pw",
        timeout=10.0,
        connect_timeout=3.0,
    )
    unix = channel_target(redis_client("unix:///run/redis.sock?db=2"))
    assert unix is not None
    assert (unix.path, unix.db) == ("/run/redis.sock", 2)


def test_a_rediss_url_qualifies_with_its_certificate_settings() -> None:
    target = channel_target(redis_client("rediss://127.0.0.1:7000/0?ssl_cert_reqs=none"))
    assert target is not None
    assert target.tls is not None
    assert target.tls.verify_mode == ssl.CERT_NONE


async def read_sessions_over_the_channel(url: str, count: int = 20) -> None:
    """Create `count` sessions and read them back concurrently through `url`'s channel."""
    client = redis_client(url)
    backend = AsyncRedisBackend(client, auto_pipeline=True)
    assert backend.coalescer is not None
    assert backend.coalescer.channel is not None  # not redis-py's pipelines
    store = AsyncSessionStore(backend)
    sessions = [await store.create({"i": i}) for i in range(count)]
    loaded = await asyncio.gather(*(store.get(s.id, touch=False) for s in sessions))
    assert [s["i"] for s in loaded if s is not None] == list(range(count))
    assert backend.coalescer.reads >= count
    await backend.aclose()
    await client.aclose()


async def refused_over_the_channel(url: str) -> BackendError:
    """Return the `BackendError` a read through `url`'s channel fails with."""
    client = redis_client(url)
    backend = AsyncRedisBackend(client, auto_pipeline=True)
    assert backend.coalescer is not None
    assert backend.coalescer.channel is not None
    with pytest.raises(BackendError) as refused:
        await AsyncSessionStore(backend).get(new_session_id())
    await backend.aclose()
    await client.aclose()
    return refused.value


async def test_sessions_read_over_tls(tls_server: tuple[RedisServer, int, str]) -> None:
    _, tls_port, ca_file = tls_server
    await read_sessions_over_the_channel(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca_file}")


async def test_an_untrusted_certificate_is_a_connection_error(
    tls_server: tuple[RedisServer, int, str],
) -> None:
    _, tls_port, _ = tls_server
    # the system's CAs only
    refused = await refused_over_the_channel(f"rediss://127.0.0.1:{tls_port}/0")
    assert "certificate" in str(refused)


async def test_sessions_read_with_a_client_certificate(
    mutual_tls_server: tuple[int, Path],
) -> None:
    tls_port, files = mutual_tls_server
    await read_sessions_over_the_channel(
        f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={files / 'ca.pem'}"
        f"&ssl_certfile={files / 'client.pem'}&ssl_keyfile={files / 'client-key.pem'}"
    )


async def test_a_missing_client_certificate_is_a_backend_error(
    mutual_tls_server: tuple[int, Path],
) -> None:
    tls_port, files = mutual_tls_server
    refused = await refused_over_the_channel(
        f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={files / 'ca.pem'}"
    )
    # TLS 1.3 finishes the client's handshake before the server checks its certificate: the
    # server's alert arrives, or only the reset that follows it, depending on timing
    assert re.search("certificate required|reset by peer", str(refused))


@pytest.mark.parametrize(
    "client_of",
    [
        pytest.param(lambda: AsyncRedis(protocol=3), id="resp3"),
        pytest.param(lambda: AsyncRedis(decode_responses=True), id="decoded"),
        pytest.param(
            lambda: AsyncRedis(credential_provider=UsernamePasswordCredentialProvider("u", "p")),
            id="credential-provider",
        ),
        pytest.param(
            lambda: Sentinel([("127.0.0.1", free_port())]).master_for("sessions"), id="sentinel"
        ),
        pytest.param(lambda: AsyncRedisCluster(host="127.0.0.1", port=free_port()), id="cluster"),
        pytest.param(object, id="not-a-redis-client"),
    ],
)
def test_other_clients_keep_redis_py(client_of) -> None:
    assert channel_target(client_of()) is None


async def test_one_loop_turns_reads_share_one_write(
    client: AsyncRedis, channel: RedisReadChannel
) -> None:
    for i in range(0, 100, 2):  # every other key exists
        await client.hset(f"k{i}", mapping={"i": str(i), "pad": "x" * i})
    await channel.hgetall("k0")  # connected: the reads below find the connection open
    replies = await asyncio.gather(*(channel.hgetall(f"k{i}") for i in range(100)))
    assert replies[1] == {}
    assert [int(r[b"i"]) for r in replies[::2]] == list(range(0, 100, 2))
    assert replies[98][b"pad"] == b"x" * 98
    assert (channel.batches, channel.reads) == (2, 101)


async def test_a_wrong_type_fails_its_own_read_only(
    client: AsyncRedis, channel: RedisReadChannel
) -> None:
    await client.hset("good", "f", "v")
    await client.set("bad", "a string")
    replies = await asyncio.gather(
        channel.hgetall("good"), channel.hgetall("bad"), channel.hgetall("good"),
        return_exceptions=True,
    )  # fmt: skip
    assert replies[0] == replies[2] == {b"f": b"v"}
    assert isinstance(replies[1], ResponseError)
    assert "WRONGTYPE" in str(replies[1])


async def test_a_cancelled_read_leaves_the_others_in_step(
    client: AsyncRedis, channel: RedisReadChannel
) -> None:
    for i in range(10):
        await client.hset(f"k{i}", "i", str(i))
    reads = [asyncio.ensure_future(channel.hgetall(f"k{i}")) for i in range(10)]
    await asyncio.sleep(0)  # connecting
    reads[4].cancel()
    results = await asyncio.gather(*reads, return_exceptions=True)
    assert isinstance(results[4], asyncio.CancelledError)
    assert [r[b"i"] for i, r in enumerate(results) if i != 4] == [
        str(i).encode() for i in range(10) if i != 4
    ]
    assert await channel.hgetall("k4") == {b"i": b"4"}  # the next reply is the next read's


async def test_database_number_and_unix_socket(server: RedisServer, client: AsyncRedis) -> None:
    await client.execute_command("SELECT", 3)
    await client.hset("in-db-3", "f", "v")
    path = server.extra_args[1]  # --unixsocket PATH
    channel = RedisReadChannel(ChannelTarget(path=path, db=3, client_name="sf-reads"))
    assert await channel.hgetall("in-db-3") == {b"f": b"v"}
    names = [c["name"] for c in await client.client_list()]
    assert "sf-reads" in names
    await channel.aclose()
    await client.execute_command("SELECT", 0)


async def test_password_and_acl_logins(server: RedisServer, client: AsyncRedis) -> None:
    await client.hset("secret", "f", "v")
    await client.acl_setuser("reader", enabled=True, passwords=["+reader-pw"], keys=["*"],
                             commands=["+hgetall", "+client|setname"])  # fmt: skip
    reader = RedisReadChannel(
        ChannelTarget(port=server.port, username="reader", password="reader-pw")
    )
    assert await reader.hgetall("secret") == {b"f": b"v"}
    await reader.aclose()
    wrong = RedisReadChannel(ChannelTarget(port=server.port, username="reader", password="nope"))
    with pytest.raises(AuthenticationError):
        await wrong.hgetall("secret")
    await client.config_set("requirepass", "default-pw")
    try:
        await client.execute_command("AUTH", "default-pw")
        plain = RedisReadChannel(ChannelTarget(port=server.port, password="default-pw"))
        assert await plain.hgetall("secret") == {b"f": b"v"}
        await plain.aclose()
        anonymous = RedisReadChannel(ChannelTarget(port=server.port))
        with pytest.raises(ResponseError, match="NOAUTH"):
            await anonymous.hgetall("secret")
        await anonymous.aclose()
    finally:
        await client.config_set("requirepass", "")
        await client.acl_deluser("reader")


async def test_a_lost_connection_is_reopened_and_the_read_sent_again(
    client: AsyncRedis, channel: RedisReadChannel
) -> None:
    await client.hset("k", "f", "v")
    await channel.hgetall("k")
    await client.client_kill_filter(_type="normal", skipme=True)  # the channel's connection
    assert await channel.hgetall("k") == {b"f": b"v"}


async def test_no_server_is_a_connection_error() -> None:
    channel = RedisReadChannel(ChannelTarget(port=free_port(), connect_timeout=1))
    results = await asyncio.gather(
        *(channel.hgetall("k") for _ in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, RedisConnectionError) for r in results)


async def test_a_frozen_server_times_reads_out_and_a_thawed_one_answers_again(
    server: RedisServer, client: AsyncRedis
) -> None:
    await client.hset("k", "f", "v")
    channel = RedisReadChannel(ChannelTarget(port=server.port, timeout=0.3))
    await channel.hgetall("k")
    server.pause()
    try:
        started = time.monotonic()
        results = await asyncio.gather(
            *(channel.hgetall("k") for _ in range(5)), return_exceptions=True
        )
        waited = time.monotonic() - started
    finally:
        server.resume()
    assert all(isinstance(r, RedisTimeoutError) for r in results)
    assert 0.3 <= waited < 3
    assert await channel.hgetall("k") == {b"f": b"v"}
    await channel.aclose()


async def test_closing_fails_the_reads_in_flight(
    server: RedisServer, channel: RedisReadChannel
) -> None:
    await channel.hgetall("k")
    server.pause()
    try:
        reads = [asyncio.ensure_future(channel.hgetall("k")) for _ in range(3)]
        await asyncio.sleep(0.05)
        await channel.aclose()
        results = await asyncio.gather(*reads, return_exceptions=True)
    finally:
        server.resume()
    assert all(isinstance(r, RedisConnectionError) for r in results)


async def test_a_read_right_after_closing_gets_its_own_reply(
    client: AsyncRedis, channel: RedisReadChannel
) -> None:
    await client.hset("old", "f", "old")
    await client.hset("new", "f", "new")
    await channel.hgetall("old")
    in_flight = asyncio.ensure_future(channel.hgetall("old"))
    await asyncio.sleep(0)  # written, not answered
    await channel.aclose()
    assert await channel.hgetall("new") == {b"f": b"new"}  # on a new connection
    with pytest.raises(RedisConnectionError):
        await in_flight


async def test_a_server_out_of_protocol_fails_the_reads_and_drops_the_connection() -> None:
    async def answer_garbage(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"?this is not RESP\r\n")
        await writer.drain()
        writer.close()

    garbage = await asyncio.start_server(answer_garbage, "127.0.0.1", 0)
    port = garbage.sockets[0].getsockname()[1]
    channel = RedisReadChannel(ChannelTarget(port=port))
    with pytest.raises((InvalidResponse, RedisConnectionError)):
        await channel.hgetall("k")
    garbage.close()
    await garbage.wait_closed()


def test_one_channel_serves_one_event_loop_after_another(server: RedisServer) -> None:
    channel = RedisReadChannel(ChannelTarget(port=server.port))

    async def read_and_close() -> dict[bytes, bytes]:
        reply = await channel.hgetall("absent")
        await channel.aclose()
        return reply

    assert asyncio.run(read_and_close()) == {}
    assert asyncio.run(read_and_close()) == {}  # a closed channel opens again when read
