"""The migration drill: a live fleet moved from Redis to DynamoDB under traffic and faults.

It starts its own servers, seeds items in Redis, runs a traffic generator through a fleet
of migrating processes (each caching the stage on its own), walks every stage with a
rollback from live to shadow and forward again, pauses and restarts DynamoDB, kills the
backfill and resumes it, and finally checks both stores against the generator's ledger of
acknowledged operations: lost, resurrected and stale-overwritten items must all be 0.
The data type is a workload: sessions (`_drill_sessions`) or conversation lists
(`_drill_conversations`); the walk, the faults and the checks are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hdrh.histogram import HdrHistogram

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._concurrency import async_stop_if_cancelled
from sessionflow._drill_conversations import ConversationWorkload
from sessionflow._drill_ledger import (
    AcknowledgedItemMissing,
    DrillWorkload,
    LedgerCheck,
    check_ledger,
)
from sessionflow._drill_sessions import SessionWorkload
from sessionflow._errors import ConfigError, MigrationRefused, SessionflowError
from sessionflow._migration_config import StoreConfig
from sessionflow._migration_reports import checkpoint_name

_T = TypeVar("_T")

MAX_ITEMS = 10_000_000
MAX_WORKERS = 10_000
MAX_PROCESSES = 256
MAX_RATE = 1_000_000.0
STEP_LIMIT = 180.0
"""Seconds a closing step of the drill (traffic winding down, copies, repair, a check) may take."""


@dataclass
class DrillSettings:
    """How big and how long the drill is."""

    items: int = 50_000
    """Sessions (or conversation entries) seeded in Redis."""
    data: str = "sessions"
    """``sessions`` or ``conversations``."""
    seconds_per_stage: float = 4.0
    workers: int = 32
    rate: float = 400.0
    """Operations per second the users aim for together (paced, so jobs get CPU too)."""
    processes: int = 4
    stage_ttl: float = 1.0
    faults: bool = True
    report: Path | None = None
    seed: int = 7

    def __post_init__(self) -> None:
        # The drill keeps a ledger entry per item, a task per user and a migrating backend
        # (with its stage cache and heartbeat) per process: bound them before any server
        # starts, so a typo is one line instead of an exhausted machine.
        for name, value, most in (
            ("items", self.items, MAX_ITEMS),
            ("workers", self.workers, MAX_WORKERS),
            ("processes", self.processes, MAX_PROCESSES),
        ):
            if not 1 <= value <= most:
                raise ConfigError(f"the drill takes 1 to {most:,} {name}, not {value:,}")
        if not (math.isfinite(self.rate) and 0 < self.rate <= MAX_RATE):
            raise ConfigError(
                f"the drill's rate must be above 0 and at most {MAX_RATE:,.0f} operations "
                f"per second, not {self.rate:g}"
            )


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
    """Concurrent users through the fleet; the workload keeps the ledger of acknowledged writes."""

    def __init__(self, workload: DrillWorkload) -> None:
        self.workload = workload
        self.phase = Phase("seeded")
        self.phases: list[Phase] = []
        self._stop = asyncio.Event()
        self.missing_reads = 0
        self._interval = 0.0
        self._owned: list[list[str]] = []
        self._names = [name for name, _ in workload.operations]
        self._weights = [weight for _, weight in workload.operations]

    def start_phase(self, name: str) -> None:
        """Close the current phase and start counting a new one."""
        self.phase.seconds = time.monotonic() - self.phase.started
        if sum(self.phase.operations.values()):
            self.phases.append(self.phase)
        self.phase = Phase(name)

    async def run(self, workers: int, rng: random.Random, rate: float) -> None:
        """Run `workers` users until `stop`, together near `rate` operations per second.

        Each user owns a share of the items, so the ledger knows every outcome.
        """
        keys = list(self.workload.ledger)
        self._owned = [keys[w::workers] for w in range(workers)]
        self._interval = workers / rate
        await asyncio.gather(*(self._user(w, random.Random(rng.random())) for w in range(workers)))

    def stop(self) -> None:
        """Ask every user to finish its current operation and stop."""
        self._stop.set()

    async def _user(self, worker: int, rng: random.Random) -> None:
        owned = self._owned[worker]
        workload = self.workload
        await asyncio.sleep(rng.uniform(0, self._interval))
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += self._interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            operation = rng.choices(self._names, self._weights)[0]
            key = "" if operation == workload.creating else workload.choose(operation, owned, rng)
            if key is None:
                operation, key = workload.creating, ""
            began = time.perf_counter()
            try:
                await workload.operate(
                    operation, rng.randrange(len(workload.fleet)), key, owned, rng
                )
            except AcknowledgedItemMissing:
                self.phase.errors["AcknowledgedItemMissing"] += 1
                self.missing_reads += 1
            except SessionflowError as exc:
                self.phase.errors[type(exc).__name__] += 1
                if key and operation not in workload.reads:
                    workload.ledger[key].uncertain = True
            finally:
                elapsed = int((time.perf_counter() - began) * 1_000_000)
                self.phase.histogram.record_value(max(1, min(elapsed, 60_000_000)))
                self.phase.operations[operation] += 1


async def _finish_before_cancelling(work: Awaitable[_T]) -> _T:
    """Await `work`; when cancelled meanwhile, let it finish, then pass the cancellation on.

    For a server restart in a worker thread, which no cancellation stops: stopping the
    servers while it runs could leave the restarted process behind.
    """
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.gather(task, return_exceptions=True)
        raise


@dataclass
class DrillServers:
    """The servers of a drill and how to reach them."""

    redis_url: str
    dynamodb_endpoint: str
    dynamodb: Any
    """DynamoDB Local, for the faults (pause, resume, restart)."""


@asynccontextmanager
async def drill_servers() -> AsyncIterator[DrillServers]:
    """Start Redis and DynamoDB Local (on disk, so a restart keeps the tables).

    Only DynamoDB Local: its process can be paused and restarted, and moto copies a whole
    table for every transaction, which a backfill of transactions cannot wait for.
    `ConfigError` if DynamoDB Local is not installed.
    """
    from sessionflow.local_servers import DynamoDBLocal, RedisServer  # noqa: PLC0415

    dynamodb = DynamoDBLocal(on_disk=True)  # before Redis: says at once if it is missing
    with RedisServer() as redis_server, dynamodb:
        yield DrillServers(redis_server.url, dynamodb.endpoint_url, dynamodb)


class Drill:
    """Runs the drill and collects its report."""

    def __init__(self, settings: DrillSettings, say: Callable[[str], None]) -> None:
        self.settings = settings
        self.say = say
        self.workload = workload_for(settings.data)
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
        self._began = time.monotonic()
        loop = asyncio.get_running_loop()
        # `kill -USR1 <pid>` prints what every task waits on, without stopping the drill.
        loop.add_signal_handler(signal.SIGUSR1, dump_tasks, "SIGUSR1")
        try:
            return await self._run()
        finally:
            loop.remove_signal_handler(signal.SIGUSR1)

    async def _run(self) -> dict[str, Any]:
        from sessionflow._async.redis_control import AsyncRedisControlPlane  # noqa: PLC0415
        from sessionflow._redis_clients import redis_client  # noqa: PLC0415

        os.environ.setdefault("AWS_ACCESS_KEY_ID", "drill")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "drill")
        async with drill_servers() as servers, AsyncExitStack() as stack:
            self.servers = servers
            old_config, new_config = self.workload.store_configs(
                servers.redis_url, servers.dynamodb_endpoint
            )
            client = await stack.enter_async_context(redis_client(servers.redis_url))
            self.control = AsyncRedisControlPlane(client, migration="drill")
            self.migration = await self.workload.open(old_config, new_config, self.control, stack)
            scratch = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="sessionflow-drill-"))
            )
            self.config_file = self._write_config(scratch, old_config, new_config)
            self.event("servers up: Redis, DynamoDB Local")
            began = time.monotonic()
            await self.workload.seed(self.migration, self.settings.items, self.rng)
            self.event(
                f"seeded {self.settings.items:,} {self.workload.noun} in Redis",
                seconds=round(time.monotonic() - began, 2),
            )
            fleet = [
                AsyncMigratingBackend(
                    self.migration.old,
                    self.migration.new,
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
            self.workload.start_fleet(fleet)
            self.traffic = Traffic(self.workload)
            traffic = asyncio.create_task(
                self.traffic.run(self.settings.workers, self.rng, self.settings.rate)
            )
            repairs_done = asyncio.Event()
            repairer = asyncio.create_task(self._repair_until(repairs_done))
            try:
                await self._walk()
            finally:
                self.traffic.stop()
                repairs_done.set()
                await self._bounded(traffic, "the traffic's last operations")
                await self._bounded(repairer, "the repairer's last pass")
            await self._final_check()
        return self.report

    def _write_config(self, directory: Path, old: StoreConfig, new: StoreConfig) -> Path:
        """Write the migration settings the backfill process reads, in `directory`."""
        path = directory / "migration.toml"
        lines = ["[migration]", 'name = "drill"', f'data = "{self.workload.data}"']
        for side, store in (("old", old), ("new", new)):
            lines.append(f"[migration.{side}]")
            lines.append(f'backend = "{store.backend}"')
            if store.backend == "dynamodb":
                lines.append(f'dynamodb_endpoint = "{store.dynamodb_endpoint}"')
                lines.append(f'dynamodb_table = "{store.dynamodb_table}"')
            else:
                lines.append(f'redis_url = "{store.redis_url}"')
                lines.append(f'redis_prefix = "{store.redis_prefix}"')
        path.write_text("\n".join(lines) + "\n")
        return path

    async def _repair_until(self, done: asyncio.Event) -> None:
        """Drain the repair queue every half second until `done` is set.

        It stops at its own pace instead of being cancelled: a cancellation landing inside
        a client library's request may be swallowed there, and the loop would run on.
        """
        while not done.is_set():
            try:
                await self.migration.repair()
            except SessionflowError as exc:
                self.say(f"repairer waits: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await done.wait()

    async def _stage(self, name: str, *, advance: bool = True, rollback: bool = False) -> None:
        await async_stop_if_cancelled()
        if advance:
            record = await self._change(rollback=rollback)
            converged = await self.migration.wait_converged(self.settings.stage_ttl * 5 + 5)
            self.event(f"stage -> {record.stage} (converged: {converged})")
        self.traffic.start_phase(name)
        await asyncio.sleep(self.settings.seconds_per_stage)

    async def _change(self, *, rollback: bool) -> Any:  # noqa: ANN401 - a StageRecord
        """Advance or roll back; while refused (copies still queued), repair and retry."""
        for attempt in range(40):
            await async_stop_if_cancelled()
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
        if not self.settings.faults:
            self.event("faults skipped (--no-faults)")
            return
        dynamodb = self.servers.dynamodb
        self.traffic.start_phase("dualwrite+dynamodb-paused")
        dynamodb.pause()
        self.event("DynamoDB paused (SIGSTOP)")
        try:
            await asyncio.sleep(max(2.0, self.settings.seconds_per_stage / 2))
        finally:
            # A drill stopped here must not leave its clean-up (the traffic's and the
            # repairer's last requests) waiting on a frozen server.
            dynamodb.resume()
        depth = await self.control.repair_depth()
        self.event(f"DynamoDB resumed (SIGCONT); repair queue {depth.count} key(s)")
        self.traffic.start_phase("dualwrite+dynamodb-restarted")
        await _finish_before_cancelling(asyncio.to_thread(dynamodb.restart))
        self.event("DynamoDB restarted")
        await asyncio.sleep(self.settings.seconds_per_stage / 2)
        self.traffic.start_phase("dualwrite")

    async def _backfill(self) -> None:
        """Run the backfill as a separate process, kill it midway, then resume it."""
        name = checkpoint_name(0, 1)
        rate = max(200, self.settings.items // 8)
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
            if scanned >= min(1000, self.settings.items // 4):
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
            await self._bounded(backend.drain(), "a process's background copies")
        await self._bounded(self.migration.repair(), "the repair queue's last keys")

    async def _check_both(self) -> None:
        self.traffic.stop()
        await asyncio.sleep(0.2)
        await self._settle()
        now = time.time()
        for name, backend in (("redis", self.migration.old), ("dynamodb", self.migration.new)):
            self._record_check(await self._check(backend, name, now), "at rampdown")
        self.traffic._stop.clear()  # noqa: SLF001 - resume the same users
        self._resume = asyncio.create_task(
            self.traffic.run(self.settings.workers, self.rng, self.settings.rate)
        )

    async def _final_check(self) -> None:
        await self._bounded(
            asyncio.gather(self._resume, return_exceptions=True), "the traffic's last operations"
        )
        self.traffic.start_phase("done")
        await self._settle()
        result = await self._check(self.migration.new, "dynamodb", time.time())
        self._record_check(result, "at complete")
        checks = self.report["checks"]
        errors: Counter[str] = Counter()
        for phase in self.traffic.phases:
            errors.update(phase.errors)
        self.report["phases"] = [phase.to_dict() for phase in self.traffic.phases]
        self.report["errors_by_cause"] = dict(errors)
        self.report["operations"] = sum(sum(p.operations.values()) for p in self.traffic.phases)
        self.report["acknowledged_items_read_as_missing"] = self.traffic.missing_reads
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

    async def _check(self, backend: AsyncBackend, name: str, now: float) -> LedgerCheck:
        check = check_ledger(
            backend,
            name,
            self.workload.ledger,
            record_key=self.workload.record_key,
            contents=self.workload.contents,
            now=now,
        )
        return await self._bounded(check, f"the ledger check of {name}")

    async def _bounded(self, work: Awaitable[_T], what: str) -> _T:
        """Await `work` for at most `STEP_LIMIT` seconds; past that, say what waits, and fail.

        A drill that stops moving must fail with a reason, never hang: the stacks of every
        task still waiting go to standard error for the diagnosis.
        """
        try:
            async with asyncio.timeout(STEP_LIMIT):
                return await work
        except TimeoutError:
            dump_tasks(f"drill step stuck: {what}")
            raise DrillStuck(f"{what} did not finish within {STEP_LIMIT:.0f} s") from None

    def _record_check(self, result: LedgerCheck, when: str) -> None:
        self.event(
            f"ledger check of {result.store} {when}: {result.checked:,} {self.workload.noun}, "
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


class DrillStuck(SessionflowError):  # noqa: N818 - reads as a fact
    """A step of the drill did not finish in time (the stacks of waiting tasks were printed)."""


def dump_tasks(title: str) -> None:
    """Print the stack of every task of the running loop to standard error."""
    stream = sys.__stderr__ or sys.stderr
    print(f"=== {title}: {len(asyncio.all_tasks())} task(s) ===", file=stream, flush=True)
    for task in asyncio.all_tasks():
        state = "cancelling" if task.cancelling() else "pending"
        print(f"--- {task.get_name()} ({state})", file=stream)
        for where in _await_chain(task.get_coro()):
            print(f"  {where}", file=stream)
    stream.flush()


def _await_chain(awaitable: object) -> list[str]:
    """Where a task waits: each coroutine it awaits down to the innermost, as file:line."""
    chain: list[str] = []
    while awaitable is not None and len(chain) < 50:  # noqa: PLR2004 - enough to diagnose
        frame = next(
            (
                getattr(awaitable, name)
                for name in ("cr_frame", "ag_frame", "gi_frame")
                if getattr(awaitable, name, None) is not None
            ),
            None,
        )
        if frame is None:
            chain.append(repr(awaitable)[:200])
            break
        code = frame.f_code
        chain.append(f"{code.co_filename}:{frame.f_lineno} in {code.co_name}")
        awaitable = next(
            (
                getattr(awaitable, name)
                for name in ("cr_await", "ag_await", "gi_yieldfrom")
                if getattr(awaitable, name, None) is not None
            ),
            None,
        )
    return chain


def workload_for(data: str) -> DrillWorkload:
    """Return the drill's workload for a data type (``sessions`` or ``conversations``)."""
    if data == "sessions":
        return SessionWorkload()
    if data == "conversations":
        return ConversationWorkload()
    raise ConfigError(f"the drill moves sessions or conversations, not {data!r}")


def _settings_dict(settings: DrillSettings) -> dict[str, Any]:
    return {
        "data": settings.data,
        "items": settings.items,
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
    if settings.report is not None and not settings.report.parent.is_dir():
        raise ConfigError(f"cannot write the report to {settings.report}: no such directory")
    migration_log = logging.getLogger("sessionflow.migration")
    level = migration_log.level
    migration_log.setLevel(logging.ERROR)
    try:
        report = asyncio.run(Drill(settings, say).run())
    finally:
        migration_log.setLevel(level)
    if settings.report is not None:
        try:
            settings.report.write_text(json.dumps(report, indent=2))
        except OSError as exc:
            raise ConfigError(f"cannot write the report to {settings.report}: {exc}") from exc
    return report


__all__ = ["DrillSettings", "LedgerCheck", "check_ledger", "run_drill", "workload_for"]
