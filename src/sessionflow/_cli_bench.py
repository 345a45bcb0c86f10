"""``sessionflow bench load``: phased, open-model load tests of any backend or the service.

Exit codes: 0 done (and within --max-error-rate / --max-p99-ms when given); 1 a limit was
exceeded; 2 bad arguments or a target that could not be opened.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from sessionflow._errors import ConfigError, SessionflowError, one_line
from sessionflow._load_plan import (
    PRESETS,
    Mix,
    Phase,
    check_seed_sessions,
    parse_phases,
    scaled,
)
from sessionflow._load_targets import TargetSpec

if TYPE_CHECKING:
    from sessionflow._load_run import LiveStatus

bench_app = typer.Typer(
    name="bench",
    help="Measure: phased load tests with latency plots (docs/operations.md).",
    no_args_is_help=True,
)
console = Console()


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]sessionflow bench load: {escape(one_line(message))}[/red]", soft_wrap=True)
    return typer.Exit(code)


def _plan(
    preset: str, phases: str | None, mix: str | None, time_scale: float, rate_scale: float
) -> tuple[str, list[Phase], Mix]:
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    chosen = PRESETS[preset]
    description = chosen.description if phases is None else "phases given on the command line"
    plan = scaled(
        parse_phases(phases) if phases is not None else chosen.phases,
        time_scale=time_scale,
        rate_scale=rate_scale,
    )
    if time_scale != 1 or rate_scale != 1:
        description += f" Scaled: time x{time_scale:g}, rate x{rate_scale:g}."
    return description, plan, Mix.parse(mix) if mix is not None else chosen.mix


class _Display:
    """The live view: one row per target, the running phase's progress and latency."""

    def __init__(self, targets: list[TargetSpec]) -> None:
        self.rows: dict[str, LiveStatus | None] = {spec.name: None for spec in targets}
        self.live = Live(self._render(), console=console, refresh_per_second=4, transient=False)

    def update(self, spec: TargetSpec, status: LiveStatus) -> None:
        self.rows[spec.name] = status
        self.live.update(self._render())

    def _render(self) -> Group:
        table = Table("target", "phase", "progress", "target /s", "sent", "done", "in flight",
                      "errors", "p50 ms", "p99 ms", title="sessionflow bench load")  # fmt: skip
        for name, status in self.rows.items():
            if status is None:
                table.add_row(name, "waiting", "", "", "", "", "", "", "", "")
                continue
            table.add_row(
                name,
                f"{status.phase} ({status.phase_index + 1}/{status.phases})",
                ProgressBar(total=status.duration, completed=status.elapsed, width=20),
                f"{status.target_rate:,.0f}",
                f"{status.sent:,}",
                f"{status.completed:,}",
                f"{status.in_flight:,}",
                f"{status.errors:,}",
                "-" if status.p50_ms is None else f"{status.p50_ms:.2f}",
                "-" if status.p99_ms is None else f"{status.p99_ms:.2f}",
            )
        return Group(table)


@bench_app.command("load")
def load(
    target: list[str] = typer.Option(
        ["local-redis"],
        "--target",
        "-t",
        help=r"\[name=]spec, repeatable: memory, local-redis, local-dynamodb, redis://..., "
        "redis-sentinel://...#master, redis-cluster://..., dynamodb+http://host:port/table, "
        "http://service, config:FILE.",
    ),
    preset: str = typer.Option("smoke", help=f"Phases and mix: {', '.join(PRESETS)}."),
    phases: str | None = typer.Option(
        None, help='Artillery-style JSON: [{"duration": "2m", "arrivalRate": 100, "rampTo": 200}].'
    ),
    mix: str | None = typer.Option(
        None, help="Operation weights, e.g. read=70,update=20,create=5,delete=5."
    ),
    time_scale: float = typer.Option(1.0, min=0.001, help="Multiply every phase's duration."),
    rate_scale: float = typer.Option(1.0, min=0.001, help="Multiply every arrival rate."),
    sessions: int = typer.Option(1000, min=1, help="Sessions created before the test starts."),
    payload_bytes: int = typer.Option(
        512, min=16, max=300_000, help="Attribute bytes per session."
    ),
    max_in_flight: int = typer.Option(
        2000, min=1, help="Requests outstanding at most; arrivals beyond count as errors."
    ),
    out: Path = typer.Option(Path("load-report"), help="Directory for report.json/.md and plots."),
    plots: bool = typer.Option(True, help="Draw PNG plots (needs matplotlib)."),
    live: bool = typer.Option(True, help="Show a live table while the test runs."),
    seed: int = typer.Option(1, help="Random seed of the operation sequence."),
    max_error_rate: float | None = typer.Option(
        None, min=0, max=1, help="Exit 1 if any target's error rate exceeds this (0.001 = 0.1%)."
    ),
    max_p99_ms: float | None = typer.Option(
        None, min=0, help="Exit 1 if any phase's p99 (ms) exceeds this."
    ),
) -> None:
    """Send phased, open-model load at one or more targets; write JSON, Markdown and plots."""
    from sessionflow._load_report import write_report  # noqa: PLC0415 - fast --help
    from sessionflow._load_test import run_load_test  # noqa: PLC0415

    try:
        specs = [TargetSpec.parse(text) for text in target]
        description, plan, chosen_mix = _plan(preset, phases, mix, time_scale, rate_scale)
        check_seed_sessions(sessions)
    except ConfigError as exc:
        raise _fail(str(exc)) from exc
    try:  # before the run: a report that cannot be written would lose it at the end
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _fail(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    display = _Display(specs) if live else None
    try:
        if display is not None:
            display.live.start()
        report = asyncio.run(
            run_load_test(
                specs,
                plan,
                chosen_mix,
                description=description,
                seed_sessions=sessions,
                payload_bytes=payload_bytes,
                max_in_flight=max_in_flight,
                seed=seed,
                on_start=None if live else _announce,
                on_status=None if display is None else display.update,
            )
        )
    except (SessionflowError, OSError) as exc:  # a target that cannot be opened or seeded
        raise _fail(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if display is not None:
            display.live.stop()
            console.print()
    _print_summary(report)
    try:
        written = write_report(report, out, plots=plots)
    except OSError as exc:
        raise _fail(f"cannot write the report to {out}: {exc}") from exc
    console.print("written: " + ", ".join(str(path) for path in written))
    breaches = _breaches(report, max_error_rate, max_p99_ms)
    for breach in breaches:
        console.print(f"[red]{escape(breach)}[/red]")
    raise typer.Exit(1 if breaches else 0)


def _announce(spec: TargetSpec) -> None:
    console.print(f"load test of {spec.name} ...")


def _print_summary(report: dict[str, Any]) -> None:
    table = Table("target", "phase", "target /s", "achieved /s", "errors", "p50 ms", "p99 ms")
    for name, run in report["targets"].items():
        for phase in run["phases"]:
            table.add_row(
                name,
                phase["name"],
                f"{phase['target_rate']:,.0f}",
                f"{phase['achieved_rate']:,.0f}",
                f"{phase['error_rate']:.2%}",
                "-" if phase["p50_ms"] is None else f"{phase['p50_ms']:.2f}",
                "-" if phase["p99_ms"] is None else f"{phase['p99_ms']:.2f}",
            )
    console.print(table)


def _breaches(
    report: dict[str, Any], max_error_rate: float | None, max_p99_ms: float | None
) -> list[str]:
    breaches = []
    for name, run in report["targets"].items():
        if max_error_rate is not None and run["error_rate"] > max_error_rate:
            breaches.append(f"{name}: error rate {run['error_rate']:.3%} > {max_error_rate:.3%}")
        worst = max(
            (phase["p99_ms"] for phase in run["phases"] if phase["p99_ms"] is not None),
            default=None,
        )
        if max_p99_ms is not None and worst is not None and worst > max_p99_ms:
            breaches.append(f"{name}: p99 {worst:.2f} ms > {max_p99_ms:.2f} ms")
    return breaches
