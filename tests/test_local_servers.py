"""Local servers start on ports no outgoing connection takes, and a taken port costs a
retry, not a minute."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionflow import local_servers
from sessionflow.local_servers import (
    DynamoDBLocal,
    EarlyExitError,
    RedisServer,
    find_dynamodb_local,
    free_cluster_port,
    free_port,
)

needs_dynamodb_local = pytest.mark.skipif(
    find_dynamodb_local() is None, reason="needs DynamoDB Local"
)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another process listens on (a socket of this one, standing in for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        yield sock.getsockname()[1]


def _first_then_free(monkeypatch: pytest.MonkeyPatch, first: int) -> None:
    """Make the next port pick return `first` (taken meanwhile), then free ports."""
    picks = iter([first])
    real = local_servers.free_port
    monkeypatch.setattr(local_servers, "free_port", lambda: next(picks, None) or real())


def test_picked_ports_are_below_the_ephemeral_range() -> None:
    """Outgoing connections take source ports from the ephemeral range: a server port
    picked there can be taken before the server binds it."""
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(50):
        assert 10_000 <= free_port() < ephemeral_low
        port = free_cluster_port()
        assert port + 10_000 < ephemeral_low


def test_redis_on_a_taken_port_it_was_given_fails_at_once(taken_port: int) -> None:
    began = time.monotonic()
    with pytest.raises(EarlyExitError, match="exited early"), RedisServer(port=taken_port):
        pass
    assert time.monotonic() - began < 10


def test_redis_whose_picked_port_was_taken_meanwhile_starts_on_another(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    _first_then_free(monkeypatch, taken_port)
    with RedisServer() as server:
        assert server.port != taken_port
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            conn.sendall(b"PING\r\n")
            assert conn.recv(16).startswith(b"+PONG")
        port = server.port
        server.restart()  # once started, a restart keeps the port its clients know
        assert server.port == port


@needs_dynamodb_local
def test_dynamodb_local_on_a_taken_port_it_was_given_fails_at_once(taken_port: int) -> None:
    """It used to be found out only when the readiness wait gave up, a minute later."""
    began = time.monotonic()
    with pytest.raises(EarlyExitError, match="exited early"), DynamoDBLocal(port=taken_port):
        pass
    assert time.monotonic() - began < 30


@needs_dynamodb_local
def test_dynamodb_local_whose_picked_port_was_taken_meanwhile_starts_on_another(
    monkeypatch: pytest.MonkeyPatch, taken_port: int
) -> None:
    _first_then_free(monkeypatch, taken_port)
    began = time.monotonic()
    with DynamoDBLocal() as server:
        assert server.port != taken_port
        local_servers.wait_for_dynamodb(server.endpoint_url, timeout=10)
    assert time.monotonic() - began < 45
