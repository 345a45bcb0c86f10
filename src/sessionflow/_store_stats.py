"""Counters a store keeps about itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StoreStats:
    """Counters a store keeps about itself (exported as metrics by the instrumented wrapper)."""

    unreadable_records: int = 0
    merged_conflicts: int = 0
    raised_conflicts: int = 0
