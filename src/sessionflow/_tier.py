"""What the hot/cold tier shares across flavours: policies, lifecycle states, counters. No I/O."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sessionflow._errors import ConfigError
from sessionflow._quarantine import Quarantine
from sessionflow._record import SessionRecord


class Durability(enum.StrEnum):
    """When a change made in the hot tier reaches the cold tier."""

    WRITE_THROUGH = "write-through"
    """Every create, save, touch and delete reaches the cold tier before it is acknowledged."""
    WRITE_BACK = "write-back"
    """Creates and saves are flushed at least every sync interval and on demotion; touches
    stay in the hot tier; deletes are always written through."""


def parse_durability(text: str) -> Durability:
    """Return the policy `text` names; `ConfigError` listing the choices if none."""
    try:
        return Durability(text)
    except ValueError:
        choices = ", ".join(d.value for d in Durability)
        raise ConfigError(f"durability must be one of {choices}, not {text!r}") from None


class Lifecycle(enum.StrEnum):
    """Where a session is in the hot/cold lifecycle (ADR-0010's state diagram)."""

    CREATING = "creating"
    """In the hot tier only: created under write-back and not yet flushed."""
    HOT = "hot"
    """In the hot tier, not used since it was created."""
    ACTIVE = "active"
    """In the hot tier and used within the active window (5 minutes by default)."""
    INACTIVE = "inactive"
    """In the hot tier, unused for longer than the active window: due for demotion later."""
    COLD = "cold"
    """In the cold tier only: promoted on its next use."""
    EXPIRED = "expired"
    """Past its idle or absolute expiry, or deleted."""


def hot_lifecycle(
    record: SessionRecord, *, now: float, active_window: float, in_cold: bool
) -> Lifecycle:
    """Classify a record found in the hot tier."""
    if record.tombstone or record.expires_at <= now:
        return Lifecycle.EXPIRED
    if not in_cold:
        return Lifecycle.CREATING
    if record.last_access <= record.created_at:
        return Lifecycle.HOT
    if now - record.last_access < active_window:
        return Lifecycle.ACTIVE
    return Lifecycle.INACTIVE


def cold_lifecycle(record: SessionRecord, *, now: float) -> Lifecycle:
    """Classify a record found only in the cold tier."""
    if record.tombstone or record.expires_at <= now:
        return Lifecycle.EXPIRED
    return Lifecycle.COLD


@dataclass
class TierStats:
    """Counters of a tiered backend and its jobs (metrics read them)."""

    hot_hits: int = 0
    cold_hits: int = 0
    misses: int = 0
    promotions: int = 0
    demotions: int = 0
    demotions_skipped: int = 0
    """Sessions the sweeper left hot because they were used while it worked."""
    flushed: int = 0
    flush_lag_max: float = 0.0
    """The longest a flushed change waited for the cold tier, in the last flush (seconds)."""
    degraded_reads: int = 0
    """Reads served by the cold tier because the hot tier failed."""
    degraded_writes: int = 0
    """Creates, saves, touches and deletes made in the cold tier because the hot tier failed."""
    hot_outages: int = 0
    """Times the hot tier was found unreachable after working."""
    outage_repairs: int = 0
    """Hot copies dropped after an outage because the cold tier had a newer version."""
    handoffs: int = 0
    """Sessions taken over from another region's hot tier when promoted here."""
    peer_failures: int = 0
    """Other regions' hot tiers that could not be asked during a promotion."""
    stale_writes: int = 0
    """Write-through saves refused because the cold tier had a newer version (a stale hot copy)."""
    cold_write_failures: int = 0
    cold_refusals: int = 0
    """Copies the cold tier refused for good (too large, or invalid there): kept hot only."""
    unreadable: int = 0
    hot_sessions: int = 0
    dirty_sessions: int = 0
    lifecycle: dict[str, int] = field(default_factory=dict)


@dataclass
class SweepReport:
    """What one sweep or flush did."""

    examined: int = 0
    demoted: int = 0
    left_hot: int = 0
    expired: int = 0
    tombstones: int = 0
    flushed: int = 0
    unreadable: int = 0
    failed: int = 0
    """Copies that failed for now (the cold tier unreachable, a corrupt item in the way):
    kept hot, or left dirty, for the next run."""
    flush_failed: int = 0
    """In a sweep that flushed first (``sessionflow tier sweep`` under write-back): the
    flush's copies that failed for now, left dirty for the next run."""
    quarantine: Quarantine = field(default_factory=Quarantine)
    """Sessions the cold tier refuses for good (too large, or invalid there), with the
    reason: they stay in the hot tier, served as before, and leave the job's work list
    until they change or are used again."""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready form."""
        data = dict(self.__dict__)
        data["quarantine"] = self.quarantine.to_dict()
        return data


class HotTierHealth:
    """A circuit breaker for the hot tier, and the window after an outage when it is doubted.

    After a failure the hot tier is skipped (requests go to the cold tier) until
    `retry_after` seconds have passed; then one request tries it again. For `verify_for`
    seconds after it answers again, hot copies are checked against the cold tier: a Redis
    that restarted from a snapshot, or a replica promoted by Sentinel, can hold copies older
    than what was acknowledged meanwhile. The hot tier's instance (Redis: its run id) is
    also read every `check_instance_every` seconds; a change starts the same window, for
    the failovers a client follows without an error.
    """

    def __init__(
        self,
        *,
        retry_after: float = 1.0,
        verify_for: float = 60.0,
        check_instance_every: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if retry_after < 0 or verify_for < 0 or check_instance_every < 0:
            raise ConfigError(
                "retry_after, verify_for and check_instance_every must not be negative"
            )
        self.retry_after = retry_after
        self.verify_for = verify_for
        self.check_instance_every = check_instance_every
        self._instance: str | None = None
        self._next_instance_check = 0.0
        self._monotonic = monotonic
        self._down_since: float | None = None
        self._next_try = 0.0
        self._doubt_until = 0.0

    @property
    def down(self) -> bool:
        """True while the hot tier is believed unreachable."""
        return self._down_since is not None

    def should_try(self) -> bool:
        """Return True if a request should use the hot tier now (up, or a retry is due)."""
        if self._down_since is None:
            return True
        now = self._monotonic()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_after  # one request probes; the others keep off
        return True

    def failed(self) -> bool:
        """Record a failure; True if the hot tier was believed up until now."""
        now = self._monotonic()
        self._next_try = now + self.retry_after
        if self._down_since is None:
            self._down_since = now
            return True
        return False

    def answered(self) -> bool:
        """Record a success; True if this ends an outage."""
        if self._down_since is None:
            return False
        self._down_since = None
        self._doubt_until = self._monotonic() + self.verify_for
        return True

    def instance_check_due(self) -> bool:
        """Return True at most once per `check_instance_every` seconds."""
        now = self._monotonic()
        if now < self._next_instance_check:
            return False
        self._next_instance_check = now + self.check_instance_every
        return True

    def instance_seen(self, instance: str) -> bool:
        """Record the hot tier's instance; True (and doubt its copies) if it changed.

        A failover that the client followed without an error (redis-py retries) or a quick
        restart shows only here.
        """
        changed = self._instance is not None and instance != self._instance
        self._instance = instance
        if changed:
            self._doubt_until = self._monotonic() + self.verify_for
        return changed

    def doubted(self) -> bool:
        """Return True in the window after an outage when hot copies are checked."""
        return self._monotonic() < self._doubt_until
