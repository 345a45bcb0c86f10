"""What a load test sends: phases of arrival rates (Artillery's shape), an operation mix, presets.

A phase is ``{"duration": "2m", "arrivalRate": 100, "rampTo": 200, "name": "warm"}``: the
arrival rate goes linearly from ``arrivalRate`` to ``rampTo`` (or stays) for ``duration``.
Durations are seconds or a number with ``s``, ``m`` or ``h``.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from sessionflow._errors import ConfigError

OPERATIONS = ("create", "read", "update", "touch", "delete", "regenerate")
"""Session operations a load test can send; ``read`` is the "validate session" of ADR-0010."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_RATE = 1_000_000.0
MAX_PHASE_SECONDS = 7 * 86_400.0
"""The longest phase a load test takes (a week)."""
MAX_SEED_SESSIONS = 10_000_000
"""The most sessions a load test seeds: their ids are kept in memory to be picked."""


def check_seed_sessions(count: int) -> None:
    """Refuse a seed count a load test cannot hold (`ConfigError`)."""
    if not 0 <= count <= MAX_SEED_SESSIONS:
        raise ConfigError(
            f"a load test seeds at most {MAX_SEED_SESSIONS:,} sessions, not {count:,}"
        )


def parse_duration(value: str | float) -> float:
    """Seconds from ``90``, ``"90"``, ``"90s"``, ``"2m"``, ``"1.5h"``; ConfigError otherwise."""
    if isinstance(value, bool):
        raise ConfigError(f"a duration must be a number or a string like '2m', not {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ConfigError(f"a duration must look like 30, '30s', '2m' or '1h', not {value!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"a duration must be positive, not {value!r}")
    return seconds


@dataclass(frozen=True)
class Phase:
    """A stretch of the test with an arrival rate, constant or ramped linearly."""

    name: str
    duration: float
    arrival_rate: float
    ramp_to: float | None = None

    def __post_init__(self) -> None:
        for label, rate in (("arrivalRate", self.arrival_rate), ("rampTo", self.ramp_to)):
            if rate is not None and not (0 <= rate <= MAX_RATE and math.isfinite(rate)):
                raise ConfigError(f"phase {self.name!r}: {label} must be 0..{MAX_RATE:,.0f}")
        if not self.duration > 0:
            raise ConfigError(f"phase {self.name!r}: duration must be positive")
        if not self.duration <= MAX_PHASE_SECONDS:
            raise ConfigError(
                f"phase {self.name!r}: duration must be at most {MAX_PHASE_SECONDS:,.0f} s "
                f"(a week), not {self.duration:g} s"
            )
        if self.arrival_rate == 0 and not self.ramp_to:
            raise ConfigError(f"phase {self.name!r}: an arrival rate of 0 sends nothing")

    def rate_at(self, elapsed: float) -> float:
        """Return the target arrival rate `elapsed` seconds into the phase."""
        if self.ramp_to is None:
            return self.arrival_rate
        share = min(max(elapsed / self.duration, 0.0), 1.0)
        return self.arrival_rate + (self.ramp_to - self.arrival_rate) * share

    @property
    def expected_arrivals(self) -> float:
        """How many requests the phase asks for (the integral of its rate)."""
        end = self.arrival_rate if self.ramp_to is None else self.ramp_to
        return (self.arrival_rate + end) / 2 * self.duration

    def arrivals(self) -> Iterator[float]:
        """Offsets (seconds from the phase's start) at which requests are due, evenly paced.

        The k-th request is due when the integral of the rate reaches k, so a ramp speeds
        up smoothly (from a rate of 0 too) and a long phase does not drift.
        """
        start = self.arrival_rate
        slope = 0.0 if self.ramp_to is None else (self.ramp_to - start) / self.duration
        for k in itertools.count():
            if slope == 0:
                due = k / start
            else:
                discriminant = start * start + 2 * slope * k
                if discriminant < 0:  # a ramp down has sent all it will
                    return
                due = (math.sqrt(discriminant) - start) / slope
            if due >= self.duration:
                return
            yield due

    def to_json(self) -> dict[str, Any]:
        """Return the phase in Artillery's shape (durations in seconds)."""
        shape: dict[str, Any] = {
            "name": self.name,
            "duration": self.duration,
            "arrivalRate": self.arrival_rate,
        }
        if self.ramp_to is not None:
            shape["rampTo"] = self.ramp_to
        return shape


def parse_phases(text: str) -> list[Phase]:
    """Phases from a JSON list in Artillery's shape; ConfigError with the phase at fault."""
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"phases must be a JSON list: {exc}") from exc
    if not isinstance(raw, list) or not raw:
        raise ConfigError("phases must be a non-empty JSON list of objects")
    return [_phase(index, entry) for index, entry in enumerate(raw, 1)]


def _phase(index: int, entry: object) -> Phase:
    if not isinstance(entry, dict):
        raise ConfigError(f"phase {index} must be an object, not {type(entry).__name__}")
    unknown = set(entry) - {"name", "duration", "arrivalRate", "rampTo"}
    if unknown:
        raise ConfigError(f"phase {index}: unknown field(s) {', '.join(sorted(unknown))}")
    if "duration" not in entry or "arrivalRate" not in entry:
        raise ConfigError(f"phase {index} needs a duration and an arrivalRate")
    name = str(entry.get("name") or f"phase {index}")
    return Phase(
        name=name,
        duration=parse_duration(entry["duration"]),
        arrival_rate=_rate(name, "arrivalRate", entry["arrivalRate"]),
        ramp_to=_rate(name, "rampTo", entry["rampTo"]) if "rampTo" in entry else None,
    )


def _rate(phase: str, label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"phase {phase!r}: {label} must be a number, not {value!r}")
    return float(value)


@dataclass(frozen=True)
class Mix:
    """Relative weights of the operations a test sends."""

    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        unknown = set(self.weights) - set(OPERATIONS)
        if unknown:
            raise ConfigError(
                f"unknown operation(s) {', '.join(sorted(unknown))}; "
                f"choose from {', '.join(OPERATIONS)}"
            )
        if any(not math.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ConfigError("operation weights must be finite and >= 0")
        total = sum(self.weights.values())
        if not math.isfinite(total):
            raise ConfigError("operation weights must add up to a finite number")
        if total <= 0:
            raise ConfigError("the operation mix needs at least one positive weight")

    @classmethod
    def parse(cls, text: str) -> Mix:
        """Parse a mix like ``"read=70,update=20,create=10"``."""
        weights: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, sep, value = part.partition("=")
            try:
                weights[name.strip()] = float(value) if sep else math.nan
            except ValueError:
                weights[name.strip()] = math.nan
            if math.isnan(weights[name.strip()]):
                raise ConfigError(f"a mix entry must look like read=70, not {part!r}")
        return cls(weights)

    @property
    def operations(self) -> list[str]:
        """The operations with a positive weight, in a fixed order."""
        return [op for op in OPERATIONS if self.weights.get(op, 0) > 0]

    def cumulative(self) -> tuple[list[str], list[float]]:
        """Operations and their cumulative weights, for `random.choices`."""
        ops = self.operations
        total = 0.0
        bounds = []
        for op in ops:
            total += self.weights[op]
            bounds.append(total)
        return ops, bounds

    def describe(self) -> str:
        """``read 70%, update 20%, ...``."""
        total = sum(self.weights.values())
        return ", ".join(f"{op} {self.weights[op] / total:.0%}" for op in self.operations)


WEB_MIX = Mix({"read": 70, "update": 12, "touch": 8, "create": 5, "delete": 3, "regenerate": 2})
"""A web application's sessions: mostly validation, some changes, a few logins and logouts."""

WRITE_MIX = Mix({"update": 60, "touch": 25, "create": 10, "delete": 5})
"""The case study's write-heavy load (carts and page views written on every request)."""


@dataclass(frozen=True)
class Preset:
    """A named test: its phases, its mix, and where it comes from."""

    description: str
    phases: Sequence[Phase]
    mix: Mix


PRESETS: dict[str, Preset] = {
    "playbook": Preset(
        "The migration playbook's Artillery phases: 2 min at 100/s, 5 min at 200/s, "
        "2 min at 500/s (targets p50 < 10 ms, p99 < 50 ms, errors < 0.1%).",
        (
            Phase("warm-up", 120, 100),
            Phase("sustained", 300, 200),
            Phase("peak", 120, 500),
        ),
        WEB_MIX,
    ),
    "case-study": Preset(
        "The case study's peak: a 30 s ramp to 6,000 writes/s, then 2 min at 6,000/s.",
        (Phase("ramp", 30, 100, ramp_to=6000), Phase("peak", 120, 6000)),
        WRITE_MIX,
    ),
    "smoke": Preset(
        "Three 5 s phases at 50, 100 and 200/s: checks a target works before a long run.",
        (Phase("50/s", 5, 50), Phase("100/s", 5, 100), Phase("200/s", 5, 200)),
        WEB_MIX,
    ),
}


def scaled(phases: Sequence[Phase], *, time_scale: float, rate_scale: float) -> list[Phase]:
    """Phases with durations and rates multiplied (a shorter or gentler run of a preset)."""
    if time_scale <= 0 or rate_scale <= 0:
        raise ConfigError("time and rate scales must be positive")
    return [
        Phase(
            p.name,
            p.duration * time_scale,
            p.arrival_rate * rate_scale,
            None if p.ramp_to is None else p.ramp_to * rate_scale,
        )
        for p in phases
    ]
