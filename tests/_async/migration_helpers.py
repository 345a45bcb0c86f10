"""Backends that misbehave on purpose, and a fleet of migrating processes over two stores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from typing import Any

from sessionflow import (
    AsyncBackend,
    AsyncMemoryBackend,
    AsyncMemoryControlPlane,
    AsyncMigratingBackend,
    AsyncSessionStore,
    BackendError,
    ManualClock,
    SessionRecord,
    Stage,
)
from sessionflow._async.migration import AsyncMigration
from sessionflow._scan import GuardedWrite
from tests.conftest import POLICY

_WRITES = ("create", "save", "touch", "delete", "put_guarded", "put_guarded_many")


class AsyncBrokenWrites:
    """Wraps a backend; while `broken`, every write raises `BackendError` (reads still work)."""

    def __init__(self, inner: AsyncBackend) -> None:
        self.inner = inner
        self.broken = False
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in _WRITES:
            return attribute

        async def write(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                self.refused += 1
                raise BackendError("injected failure")
            return await attribute(*args, **kwargs)

        return write


class AsyncHeldWrites:
    """Wraps a backend; while `holding`, writes are kept back (as if still on the wire).

    A held write reports success to its caller; `deliver` applies the held writes later,
    in any order, like a secondary that lags.
    """

    def __init__(self, inner: AsyncBackend) -> None:
        self.inner = inner
        self.holding = False
        self.held: list[Callable[[], Awaitable[object]]] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name not in _WRITES:
            return attribute

        async def write(*args: Any, **kwargs: Any) -> Any:
            if not self.holding:
                return await attribute(*args, **kwargs)

            async def later() -> object:
                try:
                    return await attribute(*args, **kwargs)
                except Exception as exc:
                    return exc

            self.held.append(later)
            if name == "put_guarded_many":
                return [GuardedWrite.WRITTEN] * len(args[0])
            return GuardedWrite.WRITTEN if name == "put_guarded" else True

        return write

    async def deliver(self, order: Collection[int] | None = None) -> None:
        """Apply held writes (all, oldest first, or those at the given positions)."""
        positions = list(range(len(self.held))) if order is None else list(order)
        chosen = [self.held[i] for i in positions]
        self.held = [w for i, w in enumerate(self.held) if i not in set(positions)]
        for write in chosen:
            await write()


class AsyncFleet:
    """Two memory stores, one control plane, and processes that each cache their own stage."""

    def __init__(self, clock: ManualClock, stage: Stage = Stage.OFF) -> None:
        self.clock = clock
        self.old = AsyncMemoryBackend(clock)
        self.new = AsyncMemoryBackend(clock)
        self.control = AsyncMemoryControlPlane(stage)
        self.migration = AsyncMigration(self.old, self.new, self.control, clock=clock)
        self.backends: list[AsyncMigratingBackend] = []

    def process(
        self, *, old: Any = None, new: Any = None, stage_ttl: float = 5.0, compare: float = 0.0
    ) -> tuple[AsyncMigratingBackend, AsyncSessionStore]:
        """Start a process over the stores (or wrappers of them); return its backend and store."""
        backend = AsyncMigratingBackend(
            old or self.old,
            new or self.new,
            self.control,
            clock=self.clock,
            stage_ttl=stage_ttl,
            compare_sample=compare,
            process_id=f"process-{len(self.backends)}",
        )
        self.backends.append(backend)
        return backend, AsyncSessionStore(backend, policy=POLICY, clock=self.clock)

    async def set_stage(self, stage: Stage) -> None:
        """Write the stage to the control record (processes see it when their cache ages)."""
        record = await self.control.read_stage()
        await self.control.write_stage(
            stage, expected_revision=record.revision, now=self.clock.now()
        )

    async def drain(self) -> None:
        """Let every process's background copies finish."""
        for backend in self.backends:
            await backend.drain()

    async def close(self) -> None:
        """Stop every process."""
        for backend in self.backends:
            await backend.aclose()


def records_agree(old: SessionRecord | None, new: SessionRecord | None) -> bool:
    """True if two stores hold the same session under a key (expiry aside).

    A tombstone and no record at all agree: neither store can serve the session.
    """
    if (old is None or old.tombstone) and (new is None or new.tombstone):
        return True
    if old is None or new is None or old.tombstone or new.tombstone:
        return False
    return old.version == new.version and dict(old.attributes) == dict(new.attributes)
