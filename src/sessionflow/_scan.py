"""What scans and guarded copies share across backends. No I/O.

Long jobs (backfill, verify, repair) walk a backend in pages and copy records with
`put_guarded`. A scan page carries an opaque cursor, a JSON string a job can checkpoint;
a job split over `workers` processes gives each the records whose storage key falls in its
share, decided by the key hash, so the shares never overlap and never move.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sessionflow._errors import ConfigError, CorruptRecord, SessionflowError
from sessionflow._policy import check_count
from sessionflow._record import SessionRecord


class GuardedWrite(enum.StrEnum):
    """What `put_guarded` did."""

    WRITTEN = "written"
    """The record was absent or older: the copy landed."""
    NEWER_KEPT = "newer_kept"
    """The target already held this version or a newer one: nothing was written."""
    TOMBSTONE_KEPT = "tombstone_kept"
    """The target holds a tombstone: a deleted session is never brought back."""


GuardedResult = GuardedWrite | SessionflowError
"""One record's outcome in `put_guarded_many`: a verdict, or the error that refused the record."""


@dataclass(frozen=True, slots=True)
class ScanPage:
    """One page of a scan: records (tombstones included) and the cursor of the next page.

    Unreadable records come back as their `CorruptRecord`, for the caller to quarantine.
    `cursor` is None on the last page.
    """

    records: list[SessionRecord | CorruptRecord]
    cursor: str | None


MAX_WORKERS = 1_000_000
"""The most workers a job may be split over: DynamoDB's limit on parallel-scan segments."""
SMALLEST_SAMPLE = 1 / MAX_WORKERS
"""The smallest share a sampled verification reads: one of `MAX_WORKERS` hash shares."""
SAMPLE_RANGE = f"from {SMALLEST_SAMPLE:f} (one session in {MAX_WORKERS:,}) to 1"
MAX_PAGE = 10_000
"""The most records a scan page or a job's batch may hold: a job keeps its pages in memory."""
MAX_IN_FLIGHT = 256
"""The most batches a job keeps in flight at once (each up to a page of records)."""


def check_scan(count: int, worker: int, workers: int) -> None:
    """Raise `ConfigError` unless a scan's page size and share are ones a backend serves."""
    check_count("count", count, most=MAX_PAGE)
    check_share(worker, workers)


def check_share(worker: int, workers: int) -> None:
    """Raise `ConfigError` unless 0 <= worker < workers <= `MAX_WORKERS`."""
    if workers > MAX_WORKERS:
        raise ConfigError(
            f"a job splits over at most {MAX_WORKERS:,} workers (DynamoDB's parallel-scan "
            f"segments), not {workers:,}"
        )
    if workers < 1 or not 0 <= worker < workers:
        raise ConfigError(f"worker must be in 0..{workers - 1} for {workers} workers")


def in_share(key: str, worker: int, workers: int) -> bool:
    """Return True if the storage key `key` belongs to `worker` of `workers`."""
    return workers == 1 or int(key[:8], 16) % workers == worker


def guard_verdict(existing: SessionRecord | None, incoming: SessionRecord) -> GuardedWrite:
    """Decide a guarded copy: never overwrite newer data, never resurrect a deleted session."""
    if existing is None:
        return GuardedWrite.WRITTEN
    if existing.tombstone and not incoming.tombstone:
        return GuardedWrite.TOMBSTONE_KEPT
    if existing.version >= incoming.version:
        return GuardedWrite.NEWER_KEPT
    return GuardedWrite.WRITTEN
