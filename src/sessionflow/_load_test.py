"""Run one load plan against several targets, one after the other, into one report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from sessionflow import __version__
from sessionflow._errors import ConfigError
from sessionflow._load_plan import Mix, Phase
from sessionflow._load_run import LiveStatus, LoadRun
from sessionflow._load_targets import TargetSpec, open_target
from sessionflow._policy import SessionPolicy
from sessionflow._urls import redact


async def run_load_test(
    targets: Sequence[TargetSpec],
    phases: Sequence[Phase],
    mix: Mix,
    *,
    description: str,
    seed_sessions: int = 1000,
    payload_bytes: int = 512,
    max_in_flight: int = 2000,
    seed: int = 1,
    policy: SessionPolicy | None = None,
    on_start: Callable[[TargetSpec], None] | None = None,
    on_status: Callable[[TargetSpec, LiveStatus], None] | None = None,
) -> dict[str, Any]:
    """Open each target, run the plan on it, close it; return the combined report.

    Every target gets the same phases, mix and random seed, so their figures compare.
    """
    names = [spec.name for spec in targets]
    if len(set(names)) != len(names):
        raise ConfigError(f"target names must differ (got {', '.join(names)}); use name=spec")
    report: dict[str, Any] = {
        "sessionflow": __version__,
        "created_at": time.time(),
        "plan": {
            "description": description,
            "phases": [phase.to_json() for phase in phases],
            "mix": mix.describe(),
            "payload_bytes": payload_bytes,
            "seed_sessions": seed_sessions,
            "max_in_flight": max_in_flight,
        },
        "targets": {},
    }
    for spec in targets:
        if on_start is not None:
            on_start(spec)
        status = None if on_status is None else _bind(on_status, spec)
        async with AsyncExitStack() as stack:
            target = await open_target(spec, stack, policy=policy)
            run = LoadRun(
                target,
                phases,
                mix,
                seed_sessions=seed_sessions,
                payload_bytes=payload_bytes,
                max_in_flight=max_in_flight,
                seed=seed,
                on_status=status,
            )
            report["targets"][spec.name] = {"spec": redact(spec.spec), **await run.run()}
    return report


def _bind(
    callback: Callable[[TargetSpec, LiveStatus], None], spec: TargetSpec
) -> Callable[[LiveStatus], None]:
    return lambda status: callback(spec, status)
