"""The migration's control plane: the stage record, heartbeats, the repair queue, reports.

Every process of a fleet reads the stage from here (and caches it briefly), reports the
stage it runs, and queues the keys whose secondary copy failed. Jobs keep their
checkpoints and reports here. Two implementations: in memory (one process, tests; here)
and Redis (a fleet; `redis_control`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any, Protocol, cast

from sessionflow._control import ProcessBeat, RepairDepth, RepairItem, StageRecord
from sessionflow._errors import StageChanged
from sessionflow._stages import Stage

MISMATCH_LOG_LENGTH = 1000
"""How many recent shadow-read mismatches the control plane keeps."""


class AsyncControlPlane(Protocol):
    """Where a migration's fleet-wide state lives."""

    async def read_stage(self) -> StageRecord:
        """Return the stage record (``off`` at revision 0 if none was written yet)."""
        ...

    async def write_stage(
        self, stage: Stage, *, expected_revision: int, now: float, note: str = ""
    ) -> StageRecord:
        """Set the stage if the record is still at `expected_revision`; else `StageChanged`."""
        ...

    async def restore_stage(self, record: StageRecord) -> StageRecord:
        """Write `record` back if the stored one is older (a lower revision, or none).

        A process that ran a stage calls this when the record it reads went back (lost in
        a restart without persistence, or deleted). Returns the record stored afterwards:
        when several processes restore at once, the highest revision wins.
        """
        ...

    async def heartbeat(self, process: str, stage: Stage, now: float) -> None:
        """Record that `process` runs `stage` at `now`."""
        ...

    async def processes(self, now: float, max_age: float) -> list[ProcessBeat]:
        """Return the processes seen within `max_age` seconds; forget older ones."""
        ...

    async def enqueue_repairs(self, keys: Iterable[str], now: float) -> None:
        """Queue keys for repair (a key queued twice is held once, with the later time)."""
        ...

    async def repair_batch(self, limit: int) -> list[RepairItem]:
        """Return up to `limit` queued keys, oldest first, without removing them."""
        ...

    async def finish_repairs(self, items: Sequence[RepairItem]) -> None:
        """Remove repaired keys, except those queued again since they were taken."""
        ...

    async def repair_depth(self) -> RepairDepth:
        """Return the queue's length and the time its oldest key was queued."""
        ...

    async def read_document(self, name: str) -> dict[str, Any] | None:
        """Return a stored JSON document (checkpoint, report) or None."""
        ...

    async def write_document(self, name: str, document: dict[str, Any]) -> None:
        """Store a JSON document under `name`, replacing any previous one."""
        ...

    async def delete_documents(self, prefix: str) -> None:
        """Remove every document whose name starts with `prefix`."""
        ...

    async def record_mismatch(self, entry: dict[str, Any]) -> None:
        """Append a shadow-read mismatch (hash prefix and field names, never values)."""
        ...

    async def mismatches(self, limit: int = 50) -> list[dict[str, Any]]:
        """Return the most recent mismatches, newest first."""
        ...


INITIAL_STAGE = StageRecord(Stage.OFF, 0, 0.0)


class AsyncMemoryControlPlane:
    """A control plane in this process: for tests, the demo, and single-process apps."""

    def __init__(self, stage: Stage = Stage.OFF) -> None:
        self._lock = threading.Lock()
        self._stage = StageRecord(stage, 0, 0.0)
        self._beats: dict[str, ProcessBeat] = {}
        self._repairs: dict[str, float] = {}
        self._documents: dict[str, str] = {}
        self._mismatches: list[dict[str, Any]] = []

    async def read_stage(self) -> StageRecord:
        """See `AsyncControlPlane.read_stage`."""
        return self._stage

    async def write_stage(
        self, stage: Stage, *, expected_revision: int, now: float, note: str = ""
    ) -> StageRecord:
        """See `AsyncControlPlane.write_stage`."""
        with self._lock:
            if self._stage.revision != expected_revision:
                raise StageChanged("the stage changed since it was read")
            self._stage = StageRecord(stage, expected_revision + 1, now, note)
            return self._stage

    async def restore_stage(self, record: StageRecord) -> StageRecord:
        """See `AsyncControlPlane.restore_stage`."""
        with self._lock:
            if self._stage.revision < record.revision:
                self._stage = record
            return self._stage

    async def heartbeat(self, process: str, stage: Stage, now: float) -> None:
        """See `AsyncControlPlane.heartbeat`."""
        with self._lock:
            self._beats[process] = ProcessBeat(process, stage, now)

    async def processes(self, now: float, max_age: float) -> list[ProcessBeat]:
        """See `AsyncControlPlane.processes`."""
        with self._lock:
            for name in [n for n, b in self._beats.items() if b.seen_at < now - max_age]:
                del self._beats[name]
            return sorted(self._beats.values(), key=lambda beat: beat.process)

    async def enqueue_repairs(self, keys: Iterable[str], now: float) -> None:
        """See `AsyncControlPlane.enqueue_repairs`."""
        with self._lock:
            for key in keys:
                self._repairs[key] = now

    async def repair_batch(self, limit: int) -> list[RepairItem]:
        """See `AsyncControlPlane.repair_batch`."""
        with self._lock:
            ordered = sorted(self._repairs.items(), key=lambda item: (item[1], item[0]))
            return [RepairItem(key, since) for key, since in ordered[:limit]]

    async def finish_repairs(self, items: Sequence[RepairItem]) -> None:
        """See `AsyncControlPlane.finish_repairs`."""
        with self._lock:
            for item in items:
                if self._repairs.get(item.key) == item.since:
                    del self._repairs[item.key]

    async def repair_depth(self) -> RepairDepth:
        """See `AsyncControlPlane.repair_depth`."""
        with self._lock:
            oldest = min(self._repairs.values(), default=None)
            return RepairDepth(len(self._repairs), oldest)

    async def read_document(self, name: str) -> dict[str, Any] | None:
        """See `AsyncControlPlane.read_document`."""
        text = self._documents.get(name)
        return None if text is None else cast("dict[str, Any]", json.loads(text))

    async def write_document(self, name: str, document: dict[str, Any]) -> None:
        """See `AsyncControlPlane.write_document`."""
        self._documents[name] = json.dumps(document)

    async def delete_documents(self, prefix: str) -> None:
        """See `AsyncControlPlane.delete_documents`."""
        with self._lock:
            for name in [n for n in self._documents if n.startswith(prefix)]:
                del self._documents[name]

    async def record_mismatch(self, entry: dict[str, Any]) -> None:
        """See `AsyncControlPlane.record_mismatch`."""
        with self._lock:
            self._mismatches.insert(0, entry)
            del self._mismatches[MISMATCH_LOG_LENGTH:]

    async def mismatches(self, limit: int = 50) -> list[dict[str, Any]]:
        """See `AsyncControlPlane.mismatches`."""
        return list(self._mismatches[:limit])
