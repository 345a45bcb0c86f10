"""``sessionflow migrate``: status, advance, rollback, backfill, verify, repair, validate.

Exit codes: 0 done; 1 refused, or verification/validation failed (one line says why);
2 bad settings or arguments; 3 a store or the control plane unreachable.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from sessionflow._async.migration import AsyncMigration, ValidationStep
from sessionflow._cli_limits import LONGEST_WAIT_SECONDS
from sessionflow._cli_repeat import run_on_period
from sessionflow._errors import BackendError, ConfigError, MigrationRefused, one_line
from sessionflow._migration_config import MigrationConfig
from sessionflow._migration_reports import BackfillProgress, MigrationStatus, VerifyReport
from sessionflow._open_backend import open_migration
from sessionflow._scan import MAX_IN_FLIGHT, MAX_PAGE, MAX_WORKERS, SAMPLE_RANGE, SMALLEST_SAMPLE
from sessionflow._stages import Stage, parse_stage

migrate_app = typer.Typer(
    name="migrate",
    help="Move sessions between two stores with zero downtime (see docs/migration.md).",
    no_args_is_help=True,
)
console = Console()
_T = TypeVar("_T")

CONFIG_OPTION = typer.Option(
    ...,
    "--config",
    "-c",
    envvar="SESSIONFLOW_MIGRATION_CONFIG",
    # help texts are rich markup: an unescaped '[migration]' would be read as a style
    help=r"A TOML or YAML file with \[migration], \[migration.old] and \[migration.new].",
)


def _load(config_path: Path) -> MigrationConfig:
    """Read the settings file; exit 2 with the reason if it is not valid."""
    try:
        return MigrationConfig.load(config_path)
    except ConfigError as exc:
        raise _fail(f"[red]sessionflow migrate: {escape(one_line(str(exc)))}[/red]", 2) from exc


def _run(config: MigrationConfig, job: Callable[[AsyncMigration], Awaitable[_T]]) -> _T:
    """Open the stores the settings name, run `job`; turn errors into exit codes."""

    async def main() -> _T:
        async with open_migration(config) as migration:
            return await job(migration)

    try:
        return asyncio.run(main())
    except MigrationRefused as exc:
        reason = escape(one_line(exc.reason))
        raise _fail(f"[red]refused: {reason}[/red] (--force overrides)", 1) from exc
    except ConfigError as exc:
        raise _fail(f"[red]sessionflow migrate: {escape(one_line(str(exc)))}[/red]", 2) from exc
    except BackendError as exc:
        raise _fail(f"[red]a store is unreachable: {escape(one_line(str(exc)))}[/red]", 3) from exc
    except OSError as exc:
        raise _fail(f"[red]a store is unreachable: {escape(one_line(str(exc)))}[/red]", 3) from exc


def _fail(message: str, code: int) -> typer.Exit:
    """Print a one-line reason (never wrapped) and return the exit to raise."""
    console.print(message, soft_wrap=True)
    return typer.Exit(code)


def _print_json(data: Any) -> None:  # noqa: ANN401 - any JSON-ready value
    console.print_json(json.dumps(data))


@migrate_app.command()
def status(
    config: Path = CONFIG_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show the stage, every live process, backfill, repair queue and last verification."""

    async def job(migration: AsyncMigration) -> MigrationStatus:
        return await migration.status()

    settings = _load(config)
    result = _run(settings, job)
    if as_json:
        _print_json(result.to_dict())
        return
    _print_status(result, settings)


def _print_status(result: MigrationStatus, config: MigrationConfig) -> None:
    data = result.to_dict()
    console.print(
        f"[bold]{config.name}[/bold]: {config.old.describe()} -> {config.new.describe()}\n"
        f"stage [bold]{data['stage']}[/bold] (revision {data['revision']}, "
        f"{data['note'] or 'no note'})"
    )
    processes = Table("process", "stage", "last heartbeat", title="processes")
    for process in data["processes"]:
        mark = "" if process["stage"] == data["stage"] else " [yellow](lagging)[/yellow]"
        processes.add_row(
            process["process"], process["stage"] + mark, f"{process['age']:.1f} s ago"
        )
    console.print(processes)
    queue = data["repair_queue"]
    console.print(f"repair queue: {queue['depth']} key(s), oldest {queue['oldest_age']:.1f} s")
    workers = data["backfill"]["workers"]
    if not workers:
        console.print("backfill: not started")
    for worker in workers:
        console.print(
            f"backfill worker {worker['worker']}/{worker['workers']}: "
            f"{'done' if worker['done'] else 'in progress'}, {worker['scanned']} scanned, "
            f"{worker['copied']} copied, {worker['newer_kept']} newer kept, "
            f"{worker['expired']} expired, {sum(worker['quarantine']['counts'].values())} "
            f"quarantined"
        )
    verification = data["verification"]
    if verification is None:
        console.print("verification: none yet")
    else:
        console.print(
            f"last verification: {'passed' if verification['passed'] else 'FAILED'} "
            f"({verification['mode']}, {verification['checked']} checked, "
            f"{verification['inconsistent']} inconsistent, rate {verification['rate']:.5%}, "
            f"{verification['remaining']} left)"
        )
    for mismatch in data["recent_mismatches"][:5]:
        console.print(
            f"mismatch {mismatch['kind']} {mismatch['key']} fields {mismatch['fields']} "
            f"at {mismatch['stage']}"
        )


@migrate_app.command()
def advance(
    config: Path = CONFIG_OPTION,
    force: bool = typer.Option(False, "--force", help="Skip the safety checks."),
    wait: float = typer.Option(
        0.0,
        min=0,
        max=LONGEST_WAIT_SECONDS,
        help="Seconds to wait for every process to run the new stage.",
    ),
) -> None:
    """Move the fleet one stage forward, if that is safe."""

    async def job(migration: AsyncMigration) -> bool:
        record = await migration.advance(force=force)
        console.print(f"stage is now [bold]{record.stage}[/bold] (revision {record.revision})")
        return await migration.wait_converged(wait) if wait else True

    if not _run(_load(config), job):
        raise _fail("[yellow]not every process runs the new stage yet[/yellow]", 1)


@migrate_app.command()
def rollback(
    config: Path = CONFIG_OPTION,
    to: str | None = typer.Option(
        None, help="Roll back stage by stage to this one (e.g. shadow: old store leads)."
    ),
    force: bool = typer.Option(False, "--force", help="Skip the convergence check."),
    wait: float = typer.Option(
        30.0,
        min=0,
        max=LONGEST_WAIT_SECONDS,
        help="Seconds to wait for the fleet to converge between two steps.",
    ),
) -> None:
    """Move the fleet one stage back (leaving cutover runs the reverse repair pass).

    A validation (create, read, update, delete through the new stage, checked in both
    stores) runs at the end and is printed.
    """
    target = _parse_target(to)

    async def job(migration: AsyncMigration) -> list[ValidationStep]:
        began = time.monotonic()
        while True:
            current = (await migration.control.read_stage()).stage
            if target is not None and current.position <= target.position:
                break
            with _verify_progress() as show:
                record = await migration.rollback(force=force, progress=show)
            console.print(f"stage is now [bold]{record.stage}[/bold]")
            if target is None or record.stage is target:
                break
            if not await migration.wait_converged(wait):
                raise MigrationRefused(f"the fleet did not converge on {record.stage}")
        console.print(f"rolled back in {time.monotonic() - began:.1f} s")
        return await migration.validate()

    steps = _run(_load(config), job)
    _print_validation(steps)
    if not all(step.ok for step in steps):
        raise typer.Exit(1)


def _parse_target(to: str | None) -> Stage | None:
    if to is None:
        return None
    try:
        return parse_stage(to)
    except ValueError as exc:
        raise _fail(f"[red]--to: {escape(one_line(str(exc)))}[/red]", 2) from exc


def _print_validation(steps: list[ValidationStep]) -> None:
    table = Table("validation step", "result", "detail", title="post-change validation")
    for step in steps:
        table.add_row(
            step.name, "[green]ok[/green]" if step.ok else "[red]FAILED[/red]", step.detail
        )
    console.print(table)


@migrate_app.command()
def validate(config: Path = CONFIG_OPTION) -> None:
    """Create, read, update and delete a throwaway session; check both stores."""

    async def job(migration: AsyncMigration) -> list[ValidationStep]:
        return await migration.validate()

    steps = _run(_load(config), job)
    _print_validation(steps)
    if not all(step.ok for step in steps):
        raise typer.Exit(1)


def _parse_worker(text: str) -> tuple[int, int]:
    try:
        worker, workers = (int(part) for part in text.split("/"))
    except ValueError as exc:
        raise _fail(f"[red]--worker must look like 0/4, not {escape(repr(text))}[/red]", 2) from exc
    if workers < 1:
        raise _fail(f"[red]--worker {text}: n, the number of workers, must be at least 1[/red]", 2)
    if workers > MAX_WORKERS:
        raise _fail(
            f"[red]--worker {text}: n, the number of workers, must be at most {MAX_WORKERS:,} "
            "(DynamoDB's parallel-scan segments)[/red]",
            2,
        )
    if not 0 <= worker < workers:
        raise _fail(f"[red]--worker {text}: the first number must be in 0..{workers - 1}[/red]", 2)
    return worker, workers


@migrate_app.command()
def backfill(
    config: Path = CONFIG_OPTION,
    worker: str = typer.Option("0/1", help="This worker's share, i/n (n workers in all)."),
    page_size: int = typer.Option(500, min=1, max=MAX_PAGE, help="Records per scan page."),
    batch_size: int = typer.Option(
        100, min=1, max=100, help="Records per guarded batch (one DynamoDB transaction)."
    ),
    concurrency: int = typer.Option(4, min=1, max=MAX_IN_FLIGHT, help="Guarded batches in flight."),
    max_rate: float | None = typer.Option(None, min=1, help="At most this many records/s."),
    max_capacity: float | None = typer.Option(
        None, min=1, help="At most this many DynamoDB capacity units/s."
    ),
    restart: bool = typer.Option(False, "--restart", help="Forget checkpoints; start over."),
    force: bool = typer.Option(False, "--force", help="Run outside dualwrite/shadow."),
    quarantine_file: Path | None = typer.Option(
        None, help="Append every quarantined record (JSON lines: key hint, reason) here."
    ),
) -> None:
    """Copy the old store into the new one: guarded, resumable, rate-limited."""
    share = _parse_worker(worker)
    try:
        sink = quarantine_file.open("a") if quarantine_file else None
    except OSError as exc:
        reason = escape(one_line(f"cannot write {quarantine_file}: {exc.strerror or exc}"))
        raise _fail(f"[red]--quarantine-file: {reason}[/red]", 2) from exc

    def quarantined(entry: dict[str, str]) -> None:
        if sink is not None:
            sink.write(json.dumps(entry) + "\n")

    async def job(migration: AsyncMigration) -> BackfillProgress:
        total = await approximate_records(migration)
        if total is not None:  # a worker reads its share of the records (split by hash)
            total = -(-total // share[1])
        with Progress(
            TextColumn("backfill {task.fields[share]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:,.0f} rec/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("backfill", total=total, share=worker, rate=0.0)

            def show(progress: BackfillProgress) -> None:
                bar.update(task, completed=progress.scanned, rate=progress.rate)

            done = await migration.backfill(
                worker=share[0],
                workers=share[1],
                page_size=page_size,
                batch_size=batch_size,
                concurrency=concurrency,
                max_rate=max_rate,
                max_capacity=max_capacity,
                restart=restart,
                force=force,
                progress=show,
                quarantined=quarantined,
            )
            # The total was an estimate (sampled on Redis, hours old on DynamoDB): the
            # finished bar shows what there was.
            bar.update(task, total=done.scanned, completed=done.scanned, rate=done.rate)
            return done

    try:
        result = _run(_load(config), job)
    finally:
        if sink is not None:
            sink.close()
    console.print(
        f"backfill {worker} done: {result.scanned} scanned, {result.copied} copied "
        f"({result.tombstones} tombstones), {result.newer_kept} newer kept, {result.expired} "
        f"expired skipped, {result.quarantine.total} quarantined "
        f"{dict(result.quarantine.counts) or ''} in {result.seconds:.1f} s "
        f"({result.rate:,.0f} rec/s)"
    )


async def approximate_records(migration: AsyncMigration) -> int | None:
    """Estimate the old store's record count for a progress bar (None if unknown)."""
    count = getattr(migration.old, "approximate_count", None)
    if count is None:
        return None
    try:
        return int(await count())
    except (BackendError, OSError):
        return None


@migrate_app.command()
def verify(
    config: Path = CONFIG_OPTION,
    mode: str = typer.Option("full", help="full, or sample (see --sample)."),
    sample: float = typer.Option(0.01, help="The share of sessions a sample checks."),
    repair: bool = typer.Option(False, "--repair", help="Fix what differs from the authority."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Compare both stores both ways; exit 1 if the inconsistency rate is over the threshold."""
    if mode not in ("full", "sample"):
        raise _fail(f"[red]--mode must be full or sample, not {escape(repr(mode))}[/red]", 2)
    if not SMALLEST_SAMPLE <= sample <= 1:
        raise _fail(f"[red]--sample must be {SAMPLE_RANGE}, not {sample!r}[/red]", 2)

    async def job(migration: AsyncMigration) -> VerifyReport:
        with _verify_progress() as show:
            return await migration.verify(mode=mode, sample=sample, repair=repair, progress=show)

    report = _run(_load(config), job)
    if as_json:
        _print_json(report.to_dict())
    else:
        console.print(
            f"verify ({report.mode}, stage {report.stage}): {report.checked} checked, "
            f"{report.missing} missing, {report.extra} extra, {report.differing} differing "
            f"-> rate {report.rate:.5%}; {report.repaired} repaired, {report.remaining} left; "
            f"{report.in_flight} in-flight differences dropped; "
            f"{report.quarantine.total} unreadable; {report.seconds:.1f} s"
        )
        for example in report.examples[:10]:
            console.print(f"  {example['kind']} {example['key']} {example['fields']}")
    if not report.passed:
        raise _fail(f"[red]verification failed: over the {report.threshold:.4%} threshold[/red]", 1)
    console.print("[green]verification passed[/green]")


class _verify_progress:  # noqa: N801 - used like a function: `with _verify_progress() as show`
    """A spinner-style progress line for verify and the reverse repair pass."""

    def __enter__(self) -> Callable[[VerifyReport], None]:
        self._progress = Progress(
            TextColumn("verify"),
            TextColumn("{task.fields[checked]:,} checked, {task.fields[bad]:,} inconsistent"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._progress.__enter__()
        task = self._progress.add_task("verify", total=None, checked=0, bad=0)

        def show(report: VerifyReport) -> None:
            self._progress.update(task, checked=report.checked, bad=report.inconsistent)

        return show

    def __exit__(self, *exc_info: object) -> None:
        self._progress.__exit__(None, None, None)


@migrate_app.command(name="repair")
def repair_command(
    config: Path = CONFIG_OPTION,
    follow: float = typer.Option(
        0.0,
        min=0,
        max=LONGEST_WAIT_SECONDS,
        help="Keep draining every this many seconds until interrupted (0: once).",
    ),
) -> None:
    """Drain the repair queue: reconcile every queued key from the authoritative store."""

    async def job(migration: AsyncMigration) -> int:
        remaining = 0

        async def run_once() -> None:
            nonlocal remaining
            report = await migration.repair()
            console.print(
                f"repaired {report.handled} key(s) {dict(report.outcomes) or ''}, "
                f"{report.failed} failed (kept queued), {report.remaining} left, "
                f"{report.quarantine.total} quarantined (refused by the store) in "
                f"{report.seconds:.1f} s"
            )
            for entry in report.quarantine.entries:
                console.print(f"  quarantined {entry['key']}: {escape(entry['reason'])}")
            remaining = report.remaining

        await run_on_period(run_once, follow or None, job="the repair", console=console)
        return remaining

    remaining = _run(_load(config), job)
    if remaining:
        raise typer.Exit(1)
