"""The migration drill: a live fleet moved from Redis to DynamoDB under traffic and faults.

It starts its own servers, seeds sessions in Redis, runs a traffic generator through a
fleet of migrating processes (each caching the stage on its own), walks every stage with
a rollback from live to shadow and forward again, pauses and restarts DynamoDB, kills the
backfill and resumes it, and finally checks both stores against the generator's ledger of
acknowledged operations: lost, resurrected and stale-overwritten sessions must all be 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.migration import AsyncMigration
from sessionflow._async.store import AsyncSessionStore
from sessionflow._codec import Codec
from sessionflow._errors import CorruptRecord, MigrationRefused, SessionflowError
from sessionflow._migration_reports import checkpoint_name
from sessionflow._policy import SessionPolicy

POLICY = SessionPolicy(idle_timeout=3600, absolute_timeout=4 * 3600, touch_interval=1)
OPERATIONS = (
    ("read", 50),
    ("update", 20),
    ("touch", 10),
    ("create", 8),
    ("delete", 6),
    ("regenerate", 6),
)


@dataclass
class DrillSettings:
    """How big and how long the drill is."""

    sessions: int = 50_000
    seconds_per_stage: float = 4.0
    workers: int = 32
    rate: float = 400.0
    """Operations per second the users aim for together (paced, so jobs get CPU too)."""
    processes: int = 4
    stage_ttl: float = 1.0
    faults: bool = True
    dynamodb: str = "auto"
    report: Path | None = None
    seed: int = 7


@dataclass
class LedgerEntry:
    """What the generator was told about one session: its attributes, or that it is gone."""

    attributes: dict[str, Any]
    deleted: bool = False
    uncertain: bool = False
    """An operation on it failed: the outcome is unknown, so it is not checked."""


@dataclass
class Phase:
    """Traffic statistics of one phase of the drill."""

    name: str
    histogram: HdrHistogram = field(default_factory=lambda: HdrHistogram(1, 60_000_000, 3))
    operations: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return the phase's figures (latencies in milliseconds)."""
        count = self.histogram.get_total_count()
        return {
            "phase": self.name,
            "seconds": round(self.seconds, 2),
            "operations": sum(self.operations.values()),
            "p50_ms": self.histogram.get_value_at_percentile(50) / 1000 if count else None,
            "p99_ms": self.histogram.get_value_at_percentile(99) / 1000 if count else None,
            "errors": dict(self.errors),
        }


class Traffic:
    """Concurrent users through the fleet; keeps a ledger of what was acknowledged."""

    def __init__(self, stores: list[AsyncSessionStore], ledger: dict[str, LedgerEntry]) -> None:
        self.stores = stores
        self.ledger = ledger
        self.phase = Phase("seeded")
        self.phases: list[Phase] = []
        self._stop = asyncio.Event()
        self.missing_reads = 0
        self._interval = 0.0
        self._owned: list[list[str]] = []
        self._names = [name for name, _ in OPERATIONS]
        self._weights = [weight for _, weight in OPERATIONS]

    def start_phase(self, name: str) -> None:
        """Close the current phase and start counting a new one."""
        self.phase.seconds = time.monotonic() - self.phase.started
        if sum(self.phase.operations.values()):
            self.phases.append(self.phase)
        self.phase = Phase(name)

    async def run(self, workers: int, rng: random.Random, rate: float) -> None:
        """Run `workers` users until `stop`, together near `rate` operations per second.

        Each user owns a share of the sessions, so the ledger knows every outcome.
        """
        ids = list(self.ledger)
        self._owned = [ids[w::workers] for w in range(workers)]
        self._interval = workers / rate
        await asyncio.gather(*(self._user(w, random.Random(rng.random())) for w in range(workers)))

    def stop(self) -> None:
        """Ask every user to finish its current operation and stop."""
        self._stop.set()

    async def _user(self, worker: int, rng: random.Random) -> None:
        owned = self._owned[worker]
        await asyncio.sleep(rng.uniform(0, self._interval))
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += self._interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            operation = rng.choices(self._names, self._weights)[0]
            store = rng.choice(self.stores)
            live = [i for i in rng.sample(owned, min(3, len(owned))) if self._usable(i)]
            if operation != "create" and not live:
                operation = "create"
            began = time.perf_counter()
            try:
                await self._do(operation, store, owned, live[0] if live else "", rng)
            except AcknowledgedSessionMissing:
                self.phase.errors["AcknowledgedSessionMissing"] += 1
                self.missing_reads += 1
            except SessionflowError as exc:
                self.phase.errors[type(exc).__name__] += 1
                if live and operation != "read":
                    self.ledger[live[0]].uncertain = True
            finally:
                elapsed = int((time.perf_counter() - began) * 1_000_000)
                self.phase.histogram.record_value(max(1, min(elapsed, 60_000_000)))
                self.phase.operations[operation] += 1

    def _usable(self, session_id: str) -> bool:
        entry = self.ledger[session_id]
        return not entry.deleted and not entry.uncertain

    async def _do(
        self,
        operation: str,
        store: AsyncSessionStore,
        owned: list[str],
        session_id: str,
        rng: random.Random,
    ) -> None:
        if operation == "create":
            attributes = {"n": 0, "cart": [rng.randrange(100)]}
            created = await store.create(attributes, user_id=f"user{rng.randrange(500)}")
            self.ledger[created.id] = LedgerEntry(dict(attributes))
            owned.append(created.id)
            return
        entry = self.ledger[session_id]
        if operation == "delete":
            await store.delete(session_id)
            entry.deleted = True
            return
        session = await store.get(session_id, touch=operation == "touch")
        if session is None:
            raise AcknowledgedSessionMissing("an acknowledged session read as missing")
        if operation == "update":
            session["n"] = entry.attributes["n"] + 1
            await store.save(session)
            entry.attributes["n"] += 1
        elif operation == "regenerate":
            moved = await store.regenerate(session)
            entry.deleted = True
            self.ledger[moved.id] = LedgerEntry(dict(entry.attributes))
            owned.append(moved.id)


class AcknowledgedSessionMissing(SessionflowError):  # noqa: N818 - reads as a fact
    """The traffic generator read no session where its ledger says one is live."""


@dataclass
class LedgerCheck:
    """The comparison of one store with the ledger."""

    store: str
    checked: int = 0
    lost: int = 0
    resurrected: int = 0
    stale: int = 0
    uncertain: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True if nothing was lost, resurrected or overwritten with stale data."""
        return self.lost == self.resurrected == self.stale == 0


async def check_ledger(
    backend: AsyncBackend, name: str, ledger: dict[str, LedgerEntry], now: float
) -> LedgerCheck:
    """Compare every session of the ledger with what `backend` holds."""
    from sessionflow._ids import storage_key  # noqa: PLC0415 - keeps the module's imports light

    codec = Codec()
    result = LedgerCheck(name)
    items = [(storage_key(session_id), entry) for session_id, entry in ledger.items()]
    for start in range(0, len(items), 500):
        chunk = items[start : start + 500]
        records = await backend.get_many([key for key, _ in chunk])
        for (key, entry), record in zip(chunk, records, strict=True):
            if entry.uncertain:
                result.uncertain += 1
                continue
            result.checked += 1
            if isinstance(record, CorruptRecord):
                result.lost += 1
                continue
            alive = record is not None and record.is_live(now)
            if entry.deleted:
                if alive:
                    result.resurrected += 1
                    _example(result, f"resurrected {key[:12]}")
                continue
            if record is None or not alive:
                result.lost += 1
                _example(result, f"lost {key[:12]}")
                continue
            if codec.decode_fields(record.attributes) != entry.attributes:
                result.stale += 1
                _example(result, f"stale {key[:12]}")
    return result


def _example(result: LedgerCheck, text: str) -> None:
    if len(result.examples) < 10:  # noqa: PLR2004 - a screenful
        result.examples.append(text)


@dataclass
class DrillServers:
    """The servers of a drill and how to reach them."""

    redis_url: str
    dynamodb_endpoint: str
    dynamodb: Any
    """The DynamoDB server object (pause/resume/restart when it is DynamoDB Local)."""
    faults_possible: bool


@asynccontextmanager
async def drill_servers(choice: str) -> AsyncIterator[DrillServers]:
    """Start Redis and a DynamoDB (Local on disk, so a restart keeps tables; or moto)."""
    from sessionflow.local_servers import (  # noqa: PLC0415
        DynamoDBLocal,
        MotoDynamoDB,
        RedisServer,
        find_dynamodb_local,
    )

    use_local = choice == "local" or (choice == "auto" and find_dynamodb_local() is not None)
    with RedisServer() as redis_server:
        dynamodb: Any = DynamoDBLocal(on_disk=True) if use_local else MotoDynamoDB()
        with dynamodb:
            yield DrillServers(redis_server.url, dynamodb.endpoint_url, dynamodb, use_local)


class Drill:
    """Runs the drill and collects its report."""

    def __init__(self, settings: DrillSettings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.ledger: dict[str, LedgerEntry] = {}
        self.report: dict[str, Any] = {"settings": _settings_dict(settings), "events": []}
        self.rng = random.Random(settings.seed)

    def event(self, text: str, **figures: Any) -> None:  # noqa: ANN401
        """Print a step and keep it in the report."""
        self.say(text)
        self.report["events"].append(
            {"at": round(time.monotonic() - self._began, 2), "event": text, **figures}
        )

    async def run(self) -> dict[str, Any]:
        """Run the whole drill; return the report (``passed`` says whether it held)."""
        from sessionflow._async.redis_control import AsyncRedisControlPlane  # noqa: PLC0415
        from sessionflow._migration_config import StoreConfig  # noqa: PLC0415
        from sessionflow._open_backend import open_backend, redis_client  # noqa: PLC0415

        self._began = time.monotonic()
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "drill")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "drill")
        async with drill_servers(self.settings.dynamodb) as servers, AsyncExitStack() as stack:
            self.servers = servers
            old_config = StoreConfig("redis", redis_url=servers.redis_url, redis_prefix="drill")
            new_config = StoreConfig(
                "dynamodb", dynamodb_endpoint=servers.dynamodb_endpoint, dynamodb_table="drill"
            )
            self.old = await open_backend(old_config, stack)
            self.new = await open_backend(new_config, stack)
            client = await stack.enter_async_context(redis_client(servers.redis_url))
            self.control = AsyncRedisControlPlane(client, migration="drill")
            self.migration = AsyncMigration(self.old, self.new, self.control, heartbeat_max_age=5)
            self.config_file = self._write_config(servers)
            self.event(
                f"servers up: Redis, {'DynamoDB Local' if servers.faults_possible else 'moto'}"
            )
            await self._seed()
            fleet = [
                AsyncMigratingBackend(
                    self.old,
                    self.new,
                    self.control,
                    stage_ttl=self.settings.stage_ttl,
                    compare_sample=0.05,
                    mirror_timeout=1.0,
                    process_id=f"drill-process-{i}",
                )
                for i in range(self.settings.processes)
            ]
            for backend in fleet:
                stack.push_async_callback(backend.aclose)
            self.fleet = fleet
            stores = [AsyncSessionStore(b, policy=POLICY) for b in fleet]
            self.traffic = Traffic(stores, self.ledger)
            traffic = asyncio.create_task(
                self.traffic.run(self.settings.workers, self.rng, self.settings.rate)
            )
            repairer = asyncio.create_task(self._repair_forever())
            try:
                await self._walk()
            finally:
                self.traffic.stop()
                await traffic
                repairer.cancel()
                await asyncio.gather(repairer, return_exceptions=True)
            await self._final_check()
        return self.report

    def _write_config(self, servers: DrillServers) -> Path:
        path = Path(tempfile.mkdtemp(prefix="sessionflow-drill-")) / "migration.toml"
        path.write_text(
            "[migration]\n"
            'name = "drill"\n'
            "[migration.old]\n"
            'backend = "redis"\n'
            f'redis_url = "{servers.redis_url}"\n'
            'redis_prefix = "drill"\n'
            "[migration.new]\n"
            'backend = "dynamodb"\n'
            f'dynamodb_endpoint = "{servers.dynamodb_endpoint}"\n'
            'dynamodb_table = "drill"\n'
        )
        return path

    async def _seed(self) -> None:
        began = time.monotonic()
        store = AsyncSessionStore(self.old, policy=POLICY)
        total = self.settings.sessions
        for start in range(0, total, 500):
            batch = [
                {"n": 0, "cart": [self.rng.randrange(100)]} for _ in range(min(500, total - start))
            ]
            created = await asyncio.gather(
                *(store.create(a, user_id=f"user{self.rng.randrange(500)}") for a in batch)
            )
            for session, attributes in zip(created, batch, strict=True):
                self.ledger[session.id] = LedgerEntry(attributes)
        self.event(
            f"seeded {total:,} sessions in Redis", seconds=round(time.monotonic() - began, 2)
        )

    async def _repair_forever(self) -> None:
        while True:
            try:
                await self.migration.repair()
            except SessionflowError as exc:
                self.say(f"repairer waits: {exc}")
            await asyncio.sleep(0.5)

    async def _stage(self, name: str, *, advance: bool = True, rollback: bool = False) -> None:
        if advance:
            record = await self._change(rollback=rollback)
            converged = await self.migration.wait_converged(self.settings.stage_ttl * 5 + 5)
            self.event(f"stage -> {record.stage} (converged: {converged})")
        self.traffic.start_phase(name)
        await asyncio.sleep(self.settings.seconds_per_stage)

    async def _change(self, *, rollback: bool) -> Any:  # noqa: ANN401 - a StageRecord
        """Advance or roll back; while refused (copies still queued), repair and retry."""
        for attempt in range(40):
            try:
                if rollback:
                    return await self.migration.rollback()
                return await self.migration.advance()
            except MigrationRefused as exc:
                if attempt == 39:  # noqa: PLR2004
                    raise
                self.say(f"stage change waits: {exc.reason}")
                await self.migration.repair()
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _walk(self) -> None:
        await self._stage("off", advance=False)
        await self._stage("dualwrite")
        await self._faults()
        await self._backfill()
        await self._stage("shadow")
        report = await self.migration.verify(mode="full", repair=True)
        self.event(
            f"verify: {report.checked} checked, {report.inconsistent} inconsistent, "
            f"{report.repaired} repaired, rate {report.rate:.5%}",
            verify=report.to_dict(),
        )
        await self._stage("cutover")
        await self._stage("live")
        began = time.monotonic()
        await self._stage("rollback-cutover", rollback=True)
        await self._stage("rollback-shadow", rollback=True)
        steps = await self.migration.validate()
        self.event(
            f"rolled back live -> shadow in {time.monotonic() - began:.1f} s; validation "
            + ", ".join(f"{s.name} {'ok' if s.ok else 'FAILED ' + s.detail}" for s in steps),
            validation=[{"step": s.name, "ok": s.ok, "detail": s.detail} for s in steps],
        )
        self.report["validation_ok"] = all(s.ok for s in steps)
        await self._stage("cutover-again")
        await self._stage("live-again")
        await self._stage("rampdown")
        await self._check_both()
        await self._stage("complete")

    async def _faults(self) -> None:
        if not (self.settings.faults and self.servers.faults_possible):
            self.event("faults skipped (they need DynamoDB Local)")
            return
        dynamodb = self.servers.dynamodb
        self.traffic.start_phase("dualwrite+dynamodb-paused")
        dynamodb.pause()
        self.event("DynamoDB paused (SIGSTOP)")
        await asyncio.sleep(max(2.0, self.settings.seconds_per_stage / 2))
        dynamodb.resume()
        depth = await self.control.repair_depth()
        self.event(f"DynamoDB resumed (SIGCONT); repair queue {depth.count} key(s)")
        self.traffic.start_phase("dualwrite+dynamodb-restarted")
        await asyncio.to_thread(dynamodb.restart)
        self.event("DynamoDB restarted")
        await asyncio.sleep(self.settings.seconds_per_stage / 2)
        self.traffic.start_phase("dualwrite")

    async def _backfill(self) -> None:
        """Run the backfill as a separate process, kill it midway, then resume it."""
        name = checkpoint_name(0, 1)
        rate = max(200, self.settings.sessions // 8)
        command = [
            sys.executable, "-m", "sessionflow.cli", "migrate", "backfill",
            "-c", str(self.config_file), "--page-size", "200", "--max-rate", str(rate),
        ]  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            *command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "COLUMNS": "120"},
        )
        scanned = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.returncode is None:
            checkpoint = await self.control.read_document(name)
            scanned = int(checkpoint["scanned"]) if checkpoint else 0
            if scanned >= min(1000, self.settings.sessions // 4):
                break
            await asyncio.sleep(0.1)
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
        await process.wait()
        self.event(f"backfill process killed (SIGKILL) at checkpoint {scanned:,} records")
        began = time.monotonic()
        result = await self.migration.backfill()
        self.event(
            f"backfill resumed from {scanned:,} and finished: {result.scanned:,} scanned, "
            f"{result.copied:,} copied, {result.newer_kept:,} newer kept, {result.expired} "
            f"expired, {result.quarantine.total} quarantined",
            seconds=round(time.monotonic() - began, 2),
            backfill=result.to_dict(),
        )

    async def _settle(self) -> None:
        for backend in self.fleet:
            await backend.drain()
        await self.migration.repair()

    async def _check_both(self) -> None:
        self.traffic.stop()
        await asyncio.sleep(0.2)
        await self._settle()
        now = time.time()
        for name, backend in (("redis", self.old), ("dynamodb", self.new)):
            result = await check_ledger(backend, name, self.ledger, now)
            self._record_check(result, "at rampdown")
        self.traffic._stop.clear()  # noqa: SLF001 - resume the same users
        self._resume = asyncio.create_task(
            self.traffic.run(self.settings.workers, self.rng, self.settings.rate)
        )

    async def _final_check(self) -> None:
        await asyncio.gather(self._resume, return_exceptions=True)
        self.traffic.start_phase("done")
        await self._settle()
        result = await check_ledger(self.new, "dynamodb", self.ledger, time.time())
        self._record_check(result, "at complete")
        checks = self.report["checks"]
        errors: Counter[str] = Counter()
        for phase in self.traffic.phases:
            errors.update(phase.errors)
        self.report["phases"] = [phase.to_dict() for phase in self.traffic.phases]
        self.report["errors_by_cause"] = dict(errors)
        self.report["operations"] = sum(sum(p.operations.values()) for p in self.traffic.phases)
        self.report["acknowledged_sessions_read_as_missing"] = self.traffic.missing_reads
        self.report["secondary_copies"] = {
            "copied": sum(b.mirror.stats.copied for b in self.fleet),
            "failed": sum(b.mirror.stats.failed for b in self.fleet),
            "timed_out": sum(b.mirror.stats.timed_out for b in self.fleet),
            "queued_for_repair": sum(b.mirror.stats.queued_for_repair for b in self.fleet),
        }
        self.report["passed"] = bool(
            all(c["lost"] == c["resurrected"] == c["stale"] == 0 for c in checks)
            and self.report.get("validation_ok")
            and self.traffic.missing_reads == 0
        )

    def _record_check(self, result: LedgerCheck, when: str) -> None:
        self.event(
            f"ledger check of {result.store} {when}: {result.checked:,} sessions, "
            f"lost {result.lost}, resurrected {result.resurrected}, stale {result.stale} "
            f"({result.uncertain} with a failed operation not checked)"
        )
        self.report.setdefault("checks", []).append(
            {
                "store": result.store,
                "when": when,
                "checked": result.checked,
                "lost": result.lost,
                "resurrected": result.resurrected,
                "stale": result.stale,
                "uncertain": result.uncertain,
                "examples": result.examples,
            }
        )


def _settings_dict(settings: DrillSettings) -> dict[str, Any]:
    return {
        "sessions": settings.sessions,
        "seconds_per_stage": settings.seconds_per_stage,
        "workers": settings.workers,
        "rate": settings.rate,
        "processes": settings.processes,
        "stage_ttl": settings.stage_ttl,
        "faults": settings.faults,
    }


def run_drill(settings: DrillSettings, say: Callable[[str], None]) -> dict[str, Any]:
    """Run the drill; write the JSON report if asked; return it.

    Per-copy warnings of the migration logger are silenced: the report counts them.
    """
    migration_log = logging.getLogger("sessionflow.migration")
    level = migration_log.level
    migration_log.setLevel(logging.ERROR)
    try:
        report = asyncio.run(Drill(settings, say).run())
    finally:
        migration_log.setLevel(level)
    if settings.report is not None:
        settings.report.write_text(json.dumps(report, indent=2))
    return report


__all__ = ["DrillSettings", "LedgerCheck", "check_ledger", "run_drill"]
