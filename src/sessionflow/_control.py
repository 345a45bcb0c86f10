"""What the migration's control plane records: the stage, heartbeats, repairs. No I/O."""

from __future__ import annotations

from dataclasses import dataclass

from sessionflow._stages import Stage


@dataclass(frozen=True, slots=True)
class StageRecord:
    """The fleet's stage as the control record holds it.

    `revision` grows by one with every change, so a change is a compare-and-set.
    """

    stage: Stage
    revision: int
    changed_at: float
    note: str = ""


@dataclass(frozen=True, slots=True)
class ProcessBeat:
    """A process's last report of the stage it runs."""

    process: str
    stage: Stage
    seen_at: float


@dataclass(frozen=True, slots=True)
class RepairItem:
    """A key whose copy in the secondary store may be behind, since `since` (epoch s)."""

    key: str
    since: float


@dataclass(frozen=True, slots=True)
class RepairDepth:
    """How many keys wait for repair, and since when the oldest waits (None if empty)."""

    count: int
    oldest_since: float | None

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest key has waited (0 when the queue is empty)."""
        return 0.0 if self.oldest_since is None else max(0.0, now - self.oldest_since)
