"""What migration jobs report and checkpoint, and how they classify a key's two copies. No I/O.

Reports name sessions only by a short prefix of the storage hash (`key_hint`), never by id,
and name differing attributes, never their values.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sessionflow._control import ProcessBeat, RepairDepth, StageRecord
from sessionflow._quarantine import Quarantine
from sessionflow._record import SessionRecord


@dataclass
class BackfillProgress:
    """One backfill worker's checkpoint: where its scan stands and what it did so far."""

    worker: int = 0
    workers: int = 1
    cursor: str | None = None
    done: bool = False
    scanned: int = 0
    copied: int = 0
    newer_kept: int = 0
    tombstones: int = 0
    expired: int = 0
    quarantine: Quarantine = field(default_factory=Quarantine)
    started_at: float = field(default_factory=time.time)
    updated_at: float = 0.0
    seconds: float = 0.0
    """Time spent copying, summed over resumed runs."""

    @property
    def name(self) -> str:
        """The checkpoint's document name."""
        return checkpoint_name(self.worker, self.workers)

    @property
    def rate(self) -> float:
        """Records scanned per second of copying."""
        return self.scanned / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        data = dataclasses.asdict(self)
        data["quarantine"] = self.quarantine.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackfillProgress:
        """Rebuild a checkpoint."""
        values = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data}
        values["quarantine"] = Quarantine.from_dict(data.get("quarantine"))
        return cls(**values)


def checkpoint_name(worker: int, workers: int) -> str:
    """Return the document name of a backfill worker's checkpoint."""
    return f"backfill/{worker}-of-{workers}"


@dataclass
class VerifyReport:
    """What a verification found: counts of missing, extra and differing sessions."""

    mode: str
    stage: str
    checked: int = 0
    missing: int = 0
    extra: int = 0
    differing: int = 0
    expired: int = 0
    in_flight: int = 0
    """Differences a re-check showed were copies still under way."""
    repaired: int = 0
    quarantine: Quarantine = field(default_factory=Quarantine)
    examples: list[dict[str, Any]] = field(default_factory=list)
    at: float = 0.0
    seconds: float = 0.0
    threshold: float = 0.0001
    remaining: int = 0
    """Inconsistent sessions left after the repair (all of them without ``--repair``)."""

    @property
    def inconsistent(self) -> int:
        """Sessions missing, extra or differing."""
        return self.missing + self.extra + self.differing

    @property
    def rate(self) -> float:
        """The share of checked sessions found inconsistent."""
        return self.inconsistent / self.checked if self.checked else 0.0

    @property
    def passed(self) -> bool:
        """True if what is left inconsistent is within the threshold."""
        return (self.remaining / self.checked if self.checked else 0.0) <= self.threshold

    def count(self, kind: str, key_hint: str, fields: list[str]) -> None:
        """Count one inconsistent session and keep it as an example (up to 20)."""
        setattr(self, kind, getattr(self, kind) + 1)
        if len(self.examples) < 20:  # noqa: PLR2004 - a screenful
            self.examples.append({"key": key_hint, "kind": kind, "fields": fields})

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form, with the derived figures."""
        data = dataclasses.asdict(self)
        data["quarantine"] = self.quarantine.to_dict()
        data.update(inconsistent=self.inconsistent, rate=self.rate, passed=self.passed)
        return data


@dataclass
class RepairReport:
    """What one run of the repairer did."""

    outcomes: Counter[str] = field(default_factory=Counter)
    failed: int = 0
    remaining: int = 0
    seconds: float = 0.0
    quarantine: Quarantine = field(default_factory=Quarantine)
    """Keys whose copy the store refused (too large, or invalid there): off the queue."""

    @property
    def handled(self) -> int:
        """Keys reconciled."""
        return sum(self.outcomes.values())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        return {
            "handled": self.handled,
            "outcomes": dict(self.outcomes),
            "failed": self.failed,
            "remaining": self.remaining,
            "seconds": self.seconds,
            "quarantine": self.quarantine.to_dict(),
        }


@dataclass
class MigrationStatus:
    """Everything `sessionflow migrate status` shows."""

    stage: StageRecord
    processes: list[ProcessBeat]
    repair: RepairDepth
    backfill: list[BackfillProgress]
    backfill_finished: bool
    verification: dict[str, Any] | None
    mismatches: list[dict[str, Any]]
    now: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        return {
            "stage": self.stage.stage.value,
            "revision": self.stage.revision,
            "changed_at": self.stage.changed_at,
            "note": self.stage.note,
            "processes": [
                {"process": p.process, "stage": p.stage.value, "age": self.now - p.seen_at}
                for p in self.processes
            ],
            "repair_queue": {
                "depth": self.repair.count,
                "oldest_age": self.repair.oldest_age(self.now),
            },
            "backfill": {
                "finished": self.backfill_finished,
                "workers": [progress.to_dict() for progress in self.backfill],
            },
            "verification": self.verification,
            "recent_mismatches": self.mismatches,
        }


def visible(record: SessionRecord | None, now: float) -> SessionRecord | None:
    """Return the record if it is a live, unexpired session, else None."""
    return record if record is not None and record.is_live(now) else None


def difference(
    truth: SessionRecord | None, copy: SessionRecord | None, now: float
) -> tuple[str, list[str]] | None:
    """Classify a key's copy against the authoritative record; None if they agree.

    Returns ("missing" | "extra" | "differing", field names). A tombstone against a live
    copy is "differing" (field ``deleted``): that copy could bring a session back.
    """
    if truth is not None and truth.tombstone:
        return ("differing", ["deleted"]) if visible(copy, now) else None
    if copy is not None and copy.tombstone:
        return ("differing", ["deleted"]) if visible(truth, now) else None
    truth, copy = visible(truth, now), visible(copy, now)
    if truth is None:
        return None if copy is None else ("extra", [])
    if copy is None:
        return ("missing", [])
    fields = sorted(
        name
        for name in set(truth.attributes) | set(copy.attributes)
        if truth.attributes.get(name) != copy.attributes.get(name)
    )
    if truth.user_id != copy.user_id:
        fields.insert(0, "user_id")
    if truth.absolute_expires_at != copy.absolute_expires_at:
        fields.insert(0, "absolute_expires_at")
    if truth.version != copy.version:
        fields.insert(0, "version")
    return ("differing", fields) if fields else None


@dataclass
class Throttle:
    """Keeps a job under a rate of records per second and of capacity units per second."""

    max_records: float | None = None
    max_units: float | None = None
    started: float = field(default_factory=time.monotonic)

    def delay(self, records: int, units: float, now: float | None = None) -> float:
        """Return the seconds to wait so `records` and `units` so far stay under the limits."""
        elapsed = (time.monotonic() if now is None else now) - self.started
        wanted = 0.0
        if self.max_records:
            wanted = max(wanted, records / self.max_records)
        if self.max_units:
            wanted = max(wanted, units / self.max_units)
        return max(0.0, wanted - elapsed)
