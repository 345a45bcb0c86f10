"""The ``sessionflow`` command line."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from rich.console import Console

from sessionflow import __version__
from sessionflow._cli_migrate import migrate_app

app = typer.Typer(
    name="sessionflow",
    help="Server-side sessions on Redis and DynamoDB, and moving between them.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
app.add_typer(migrate_app)


class DynamoDBChoice(StrEnum):
    """Which local DynamoDB the demo uses."""

    auto = "auto"
    local = "local"
    moto = "moto"


@app.command()
def demo(
    dynamodb: DynamoDBChoice = typer.Option(
        DynamoDBChoice.auto,
        help="auto: DynamoDB Local when installed (npm + Java), else moto in-process.",
    ),
) -> None:
    """Run the session lifecycle on memory, Redis, Redis Cluster and DynamoDB.

    Starts its own local servers on free loopback ports and stops them when done.
    """
    from sessionflow._demo import run_demo  # noqa: PLC0415 - keeps `--help` fast

    try:
        ok = run_demo(console, dynamodb=dynamodb.value)
    except Exception as exc:
        console.print(f"[red]demo could not run: {type(exc).__name__}: {exc}[/red]")
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
    port: int = typer.Option(8080, help="The port to listen on."),
) -> None:
    """Run the HTTP session service (on a local Redis it starts itself, unless configured)."""
    from sessionflow._errors import ConfigError  # noqa: PLC0415 - keeps `--help` fast
    from sessionflow._service_config import ServiceConfig  # noqa: PLC0415

    try:
        settings = ServiceConfig.load(config)
        import uvicorn  # noqa: PLC0415

        from sessionflow.service import build_app  # noqa: PLC0415
    except ConfigError as exc:
        console.print(f"[red]sessionflow serve: {exc}[/red]")
        raise typer.Exit(2) from exc
    except ImportError as exc:
        console.print(f"[red]sessionflow serve needs the 'server' extra: {exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(f"sessionflow service on http://{host}:{port} with {settings.redacted()}")
    uvicorn.run(build_app(settings), host=host, port=port, log_level="info")


@app.command()
def version() -> None:
    """Print the installed version."""
    console.print(__version__)


def main() -> None:
    """Entry point of the ``sessionflow`` script."""
    app()


if __name__ == "__main__":
    main()
