"""``sessionflow tier``: the hybrid tier's demotion sweeper, write-back flusher and counts.

Exit codes: 0 done; 2 bad settings or arguments; 3 a tier unreachable.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TextColumn, TimeElapsedColumn

from sessionflow._async.backends.tiered import AsyncTieredBackend
from sessionflow._cli_limits import LONGEST_WAIT_SECONDS
from sessionflow._cli_repeat import run_on_period
from sessionflow._errors import BackendError, ConfigError, one_line
from sessionflow._open_backend import open_tier
from sessionflow._scan import MAX_PAGE
from sessionflow._tier import SweepReport
from sessionflow._tier_config import TierConfig

tier_app = typer.Typer(
    name="tier",
    help="Run the hybrid tier's jobs: demotion, write-back flushing, counts (docs/tiering.md).",
    no_args_is_help=True,
)
console = Console()
_T = TypeVar("_T")

CONFIG_OPTION = typer.Option(
    ...,
    "--config",
    "-c",
    envvar="SESSIONFLOW_TIER_CONFIG",
    help="A YAML or TOML file with ADR-0010's session_config table.",
)
REGION_OPTION = typer.Option(None, help="The region whose hot Redis to work on (default: first).")
EVERY_OPTION = typer.Option(
    None,
    min=1,
    max=LONGEST_WAIT_SECONDS,
    help="Keep running: once every this many seconds (default: the sync interval).",
)


def _settings(config_path: Path, region: str | None) -> TierConfig:
    """Read the settings and check the region; exit 2 with the reason if they are not valid."""
    try:
        config = TierConfig.load(config_path)
        config.redis_url(region)
    except ConfigError as exc:
        console.print(f"[red]sessionflow tier: {escape(one_line(str(exc)))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    return config


def _run(
    config: TierConfig, region: str | None, job: Callable[[AsyncTieredBackend], Awaitable[_T]]
) -> _T:
    """Open the region's tier, run `job`; exit 3 with the reason if a tier is unreachable."""

    async def main() -> _T:
        async with open_tier(config, region=region) as backend:
            return await job(backend)

    try:
        return asyncio.run(main())
    except (BackendError, OSError) as exc:
        console.print(
            f"[red]a tier is unreachable: {escape(one_line(str(exc)))}[/red]", soft_wrap=True
        )
        raise typer.Exit(3) from exc


def _repeat(
    job: tuple[Path, str | None, int | None, float | None, bool],
    once: Callable[[AsyncTieredBackend, int], Awaitable[SweepReport]],
    describe: Callable[[SweepReport], str],
) -> None:
    """Run `once` with the batch size; with --every or --loop keep running it on a period."""
    config_path, region, batch_size, every, loop = job
    settings = _settings(config_path, region)
    size = batch_size or settings.batch_size
    period = every or (settings.sync_interval if loop else None)

    async def run(backend: AsyncTieredBackend) -> None:
        async def run_once() -> None:
            report = await once(backend, size)
            console.print(describe(report), soft_wrap=True)
            for entry in report.quarantine.entries:
                console.print(
                    f"[yellow]quarantined {entry['key']} ({entry['job']}), kept hot only: "
                    f"{escape(one_line(entry['reason']))}[/yellow]",
                    soft_wrap=True,
                )

        await run_on_period(run_once, period, job="the run", console=console)

    try:
        _run(settings, region, run)
    except KeyboardInterrupt:
        console.print("stopped")


BATCH_OPTION = typer.Option(
    None, min=1, max=MAX_PAGE, help="Sessions per batch (default: sync.batch_size)."
)
LOOP_OPTION = typer.Option(False, "--loop", help="Keep running every sync interval.")


@tier_app.command()
def sweep(
    config: Path = CONFIG_OPTION,
    region: str | None = REGION_OPTION,
    batch_size: int | None = BATCH_OPTION,
    every: float | None = EVERY_OPTION,
    loop: bool = LOOP_OPTION,
) -> None:
    """Demote sessions unused for the promotion threshold to the cold tier (resumable)."""

    async def once(backend: AsyncTieredBackend, size: int) -> SweepReport:
        flushed = await backend.flush(batch_size=size) if not backend.write_through else None
        report = await backend.sweep(batch_size=size)
        if flushed:
            report.flushed = flushed.flushed
            report.flush_failed = flushed.failed
            report.quarantine.extend(flushed.quarantine)
        return report

    _repeat((config, region, batch_size, every, loop), once, _describe_sweep)


@tier_app.command()
def flush(
    config: Path = CONFIG_OPTION,
    region: str | None = REGION_OPTION,
    batch_size: int | None = BATCH_OPTION,
    every: float | None = EVERY_OPTION,
    loop: bool = LOOP_OPTION,
) -> None:
    """Copy write-back changes the cold tier lacks."""

    async def once(backend: AsyncTieredBackend, size: int) -> SweepReport:
        return await backend.flush(batch_size=size)

    _repeat(
        (config, region, batch_size, every, loop),
        once,
        lambda r: (
            f"flushed {r.flushed} of {r.examined} dirty session(s), {r.failed} failed (left "
            f"dirty), {r.quarantine.total} quarantined, in {r.seconds:.2f}s"
        ),
    )


@tier_app.command()
def stats(config: Path = CONFIG_OPTION, region: str | None = REGION_OPTION) -> None:
    """Count sessions by lifecycle state (walks both tiers) and print JSON."""

    async def job(backend: AsyncTieredBackend) -> dict[str, object]:
        # On standard error, gone when done: standard output is the JSON alone.
        with Progress(
            TextColumn("counting: {task.fields[read]:,} records read in both tiers"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("count", total=None, read=0)
            counts = await backend.count_lifecycle(
                progress=lambda read: bar.update(task, read=read)
            )
        hot, dirty = await backend.index.sizes()
        return {
            "lifecycle": {str(state): count for state, count in counts.items()},
            "hot_indexed": hot,
            "dirty": dirty,
            "durability": str(backend.durability),
        }

    console.print_json(json.dumps(_run(_settings(config, region), region, job)))


def _describe_sweep(report: SweepReport) -> str:
    return (
        f"demoted {report.demoted} of {report.examined} examined, {report.left_hot} used "
        f"meanwhile (left hot), {report.expired} expired, {report.tombstones} tombstones, "
        f"{report.flushed} flushed first ({report.flush_failed} failed, left dirty), "
        f"{report.failed} failed (left hot), "
        f"{report.quarantine.total} quarantined, in {report.seconds:.2f}s"
    )
