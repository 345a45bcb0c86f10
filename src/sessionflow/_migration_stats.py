"""Counters a migration keeps in process: what metrics export and reports print. No I/O."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field

from sessionflow._stages import Stage


@dataclass
class MigrationStats:
    """Counters of a migrating backend and the jobs of its process.

    Keys are drawn from small fixed sets (store "old"/"new", role, outcome, kind); a
    session id or its hash never appears here.
    """

    stage: Stage = Stage.OFF
    writes: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    """(store, role "primary"/"secondary", outcome "ok"/"error") -> count."""
    reads: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(store, outcome "hit"/"miss"/"error") -> count."""
    mismatches: Counter[str] = field(default_factory=Counter)
    """kind ("missing", "extra", "differs") -> shadow-read mismatches confirmed by a re-check."""
    false_positives: int = 0
    """Shadow-read differences that a re-check showed were copies in flight."""
    stage_read_errors: int = 0
    stage_records_restored: int = 0
    """Times this process found the control record gone back and wrote its own back."""
    repair_depth: int = 0
    repair_oldest_age: float = 0.0
    repaired: Counter[str] = field(default_factory=Counter)
    """reconcile outcome -> keys the repairer handled."""
    backfill_scanned: int = 0
    backfill_copied: int = 0
    backfill_rate: float = 0.0
    verify_checked: int = 0
    verify_inconsistent: int = 0
    verify_rate: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_write(self, store: str, role: str, *, ok: bool) -> None:
        """Count a write to `store` in `role`."""
        with self._lock:
            self.writes[store, role, "ok" if ok else "error"] += 1

    def count_read(self, store: str, outcome: str) -> None:
        """Count a read from `store`."""
        with self._lock:
            self.reads[store, outcome] += 1
