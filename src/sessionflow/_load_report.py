"""A load test's report: JSON (everything), Markdown (the tables) and PNG plots.

Plots: latency over time (p50 and p99 per second, phases marked, target against achieved
rate) and the latency distribution per operation (HdrHistogram's percentile curve), one
line per target, so several backends compare side by side.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

PLOT_FILES = ("latency-over-time.png", "latency-distribution.png")


def write_report(report: dict[str, Any], directory: Path, *, plots: bool = True) -> list[Path]:
    """Write report.json, report.md and (with matplotlib installed) the plots; return paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "report.json", directory / "report.md"]
    written[0].write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    images: list[str] = []
    if plots:
        images = [path.name for path in write_plots(report, directory)]
        written += [directory / name for name in images]
    written[1].write_text(to_markdown(report, images=images))
    return written


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _rows(header: Iterable[str], rows: Iterable[Iterable[str]]) -> list[str]:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def to_markdown(report: dict[str, Any], *, images: Iterable[str] = ()) -> str:
    """Render the report's tables: phases per target, then operations per target."""
    plan = report["plan"]
    lines = [
        "# sessionflow load test",
        "",
        f"Plan: {plan['description']}  ",
        (
            f"Mix: {plan['mix']}; payload about {plan['payload_bytes']} bytes; "
            f"{plan['seed_sessions']:,} sessions seeded per target.  "
        ),
        (
            "Latency is measured from each request's scheduled time (open model: no "
            "coordinated omission)."
        ),
        "",
        "## Phases",
        "",
    ]
    lines += _rows(
        ("target", "phase", "target /s", "achieved /s", "requests", "errors", "p50 ms", "p99 ms"),
        (
            (
                name,
                phase["name"],
                f"{phase['target_rate']:,.0f}",
                f"{phase['achieved_rate']:,.0f}",
                f"{phase['sent']:,}",
                f"{phase['error_rate']:.2%}",
                _ms(phase["p50_ms"]),
                _ms(phase["p99_ms"]),
            )
            for name, run in report["targets"].items()
            for phase in run["phases"]
        ),
    )
    lines += ["", "## Operations (all phases)", ""]
    lines += _rows(
        ("target", "operation", "count", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"),
        (
            (
                name,
                op,
                f"{stats['count']:,}",
                _ms(stats["p50_ms"]),
                _ms(stats["p95_ms"]),
                _ms(stats["p99_ms"]),
                _ms(stats["max_ms"]),
                _errors(stats),
            )
            for name, run in report["targets"].items()
            for op, stats in run["operations"].items()
        ),
    )
    capacity = {
        name: run["consumed_capacity"]
        for name, run in report["targets"].items()
        if run.get("consumed_capacity")
    }
    if capacity:
        lines += ["", "## DynamoDB consumed capacity", ""]
        lines += _rows(
            ("target", "operation", "capacity units"),
            (
                (name, op, f"{units:,.1f}")
                for name, by_op in capacity.items()
                for op, units in by_op.items()
            ),
        )
    if images:
        lines += ["", "## Plots", ""] + [f"![{name}]({name})" for name in images]
    return "\n".join(lines) + "\n"


def _errors(stats: dict[str, Any]) -> str:
    if not stats["errors"]:
        return "0"
    causes = ", ".join(f"{cause} {count}" for cause, count in sorted(stats["errors"].items()))
    return f"{stats['error_rate']:.2%} ({causes})"


def write_plots(report: dict[str, Any], directory: Path) -> list[Path]:
    """Draw the two plots; an empty list when matplotlib is not installed."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - an optional extra

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return []
    paths = [directory / name for name in PLOT_FILES]
    figure = _latency_over_time(plt, report)
    figure.savefig(paths[0], dpi=110)
    plt.close(figure)
    figure = _latency_distribution(plt, report)
    figure.savefig(paths[1], dpi=110)
    plt.close(figure)
    return paths


def _latency_over_time(plt: Any, report: dict[str, Any]) -> Any:  # noqa: ANN401 - matplotlib
    targets = report["targets"]
    figure, axes = plt.subplots(
        len(targets), 1, figsize=(11, 3.2 * len(targets)), sharex=True, squeeze=False
    )
    for ax, (name, run) in zip(axes[:, 0], targets.items(), strict=True):
        timeline = run["timeline"]
        seconds = [row["second"] for row in timeline]
        ax.plot(seconds, [row["p50_ms"] for row in timeline], label="p50", color="tab:blue")
        ax.plot(seconds, [row["p99_ms"] for row in timeline], label="p99", color="tab:red")
        ax.set_yscale("log")
        ax.set_ylabel("latency ms")
        ax.set_title(name, loc="left")
        rate = ax.twinx()
        rate.plot(seconds, [row["target_rate"] for row in timeline], "--", color="grey",
                  label="target /s")  # fmt: skip
        rate.plot(seconds, [row["answered"] for row in timeline], color="tab:green", alpha=0.6,
                  label="answered /s")  # fmt: skip
        rate.set_ylabel("requests /s")
        start = 0.0
        for phase in run["phases"]:
            ax.axvline(start, color="black", alpha=0.2)
            ax.text(start, 1.0, f" {phase['name']}", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=8)  # fmt: skip
            start += phase["duration"]
        lines = ax.get_legend_handles_labels()
        more = rate.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8,
                  bbox_to_anchor=(0, 0.9))  # fmt: skip
    axes[-1, 0].set_xlabel("seconds since the start")
    figure.tight_layout()
    return figure


def _latency_distribution(plt: Any, report: dict[str, Any]) -> Any:  # noqa: ANN401 - matplotlib
    operations: list[str] = []
    for run in report["targets"].values():
        operations += [op for op in run["operations"] if op not in operations]
    columns = min(3, max(1, len(operations)))
    rows = (len(operations) + columns - 1) // columns or 1
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for index, op in enumerate(operations):
        ax = axes[index // columns, index % columns]
        for name, run in report["targets"].items():
            points = [
                (p, value)
                for p, value in run["operations"].get(op, {}).get("distribution", [])
                if p < 100  # noqa: PLR2004 - the maximum has no place on a 1/(1-p) axis
            ]
            if points:
                ax.plot([1 / (1 - p / 100) for p, _ in points], [v for _, v in points],
                        marker=".", label=name)  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks([1, 2, 10, 100, 1000, 10000])
        ax.set_xticklabels(["0%", "50%", "90%", "99%", "99.9%", "99.99%"], fontsize=7)
        ax.set_title(op)
        ax.set_ylabel("latency ms")
        ax.legend(fontsize=7)
    for index in range(len(operations), rows * columns):
        axes[index // columns, index % columns].set_visible(False)
    figure.suptitle("latency by percentile (HdrHistogram)")
    figure.tight_layout()
    return figure
