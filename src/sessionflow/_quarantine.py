"""Records a job set aside instead of copying: counted by reason, listed up to a cap. No I/O.

The migration jobs (backfill, verify, repair) and the tier's jobs (sweep, flush) quarantine
what a store refuses for good, so one record neither stops a job nor is retried for ever.
Entries name a session by `key_hint` only.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sessionflow._errors import InvalidAttribute, SessionTooLarge

QUARANTINE_KEPT = 1000
"""How many quarantined records a report lists (all are counted)."""

REFUSED_BY_STORE = (SessionTooLarge, InvalidAttribute)
"""What a store answers a copy that no retry will change (too large, or invalid there)."""


def refusal_reason(exc: BaseException) -> str:
    """Name a store's refusal as a quarantine reason (its kind is ``refused``)."""
    return f"refused: {exc}"


@dataclass
class Quarantine:
    """Records a job could not copy, with the reason; counted by reason, listed up to a cap."""

    counts: Counter[str] = field(default_factory=Counter)
    entries: list[dict[str, str]] = field(default_factory=list)

    def add(self, key_hint: str, reason: str, job: str) -> dict[str, str]:
        """Quarantine one record; return the entry (for a full report file)."""
        entry = {"key": key_hint, "reason": reason, "job": job}
        self.counts[_reason_kind(reason)] += 1
        if len(self.entries) < QUARANTINE_KEPT:
            self.entries.append(entry)
        return entry

    def extend(self, other: Quarantine) -> None:
        """Count in another job's quarantine (its entries too, up to the cap)."""
        self.counts.update(other.counts)
        self.entries.extend(other.entries[: max(0, QUARANTINE_KEPT - len(self.entries))])

    @property
    def total(self) -> int:
        """How many records were quarantined."""
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        return {"counts": dict(self.counts), "entries": self.entries}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Quarantine:
        """Rebuild from `to_dict`'s output (a resumed job continues its counts)."""
        if not data:
            return cls()
        return cls(Counter(data.get("counts", {})), list(data.get("entries", [])))


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]
