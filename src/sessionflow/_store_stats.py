"""Counters a store keeps about itself."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sessionflow._events import SessionEventKind


@dataclass
class StoreStats:
    """Counters a store keeps about itself (exported by `StoreStatsCollector`)."""

    unreadable_records: int = 0
    merged_conflicts: int = 0
    raised_conflicts: int = 0
    events: Counter[SessionEventKind] = field(default_factory=Counter)
    """Lifecycle events by kind (counted whether or not a listener is set)."""
    listener_failures: int = 0
    """Events whose listener raised (logged; the store's change stands)."""
