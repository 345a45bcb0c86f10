"""The post-change validation's probes: one throwaway item written through the stage.

After a rollback (and on demand) `AsyncMigration.validate` creates, reads, updates and
deletes one item through a migrating backend and checks both stores after each step, as
the playbook's validation script does by hand. A probe does those four steps for one data
type: a session, or a conversation entry.
"""

from __future__ import annotations

from typing import Protocol

from sessionflow._async.backends.migrating import AsyncMigratingBackend
from sessionflow._async.conversations.migrating import (
    AsyncMigratingConversations,
    validation_pair,
)
from sessionflow._async.conversations.records import AsyncConversationRecords
from sessionflow._async.store import AsyncSessionStore
from sessionflow._clock import Clock
from sessionflow._conversation_records import entry_key
from sessionflow._policy import SessionPolicy
from sessionflow._session import Session


class AsyncValidationProbe(Protocol):
    """Create, read, update and delete one throwaway item through the current stage."""

    async def create(self) -> str:
        """Create the item (version 1); return its key in the stores."""
        ...

    async def read(self) -> bool:
        """Read the item back; True if it holds what was created."""
        ...

    async def update(self) -> None:
        """Change the item (version 2)."""
        ...

    async def delete(self) -> None:
        """Delete the item."""
        ...


class AsyncSessionProbe:
    """The validation's steps on a session, through a session store."""

    def __init__(self, backend: AsyncMigratingBackend, clock: Clock) -> None:
        self._store = AsyncSessionStore(backend, policy=SessionPolicy(), clock=clock)
        self._session: Session | None = None

    def _created(self) -> Session:
        if self._session is None:
            raise RuntimeError("create the probe's session first")
        return self._session

    async def create(self) -> str:
        """See `AsyncValidationProbe.create`."""
        self._session = await self._store.create({"validation": "created"})
        return self._session.key

    async def read(self) -> bool:
        """See `AsyncValidationProbe.read`."""
        read = await self._store.get(self._created().id, touch=False)
        if read is None or read["validation"] != "created":
            return False
        self._session = read
        return True

    async def update(self) -> None:
        """See `AsyncValidationProbe.update`."""
        session = self._created()
        session["validation"] = "updated"
        await self._store.save(session)

    async def delete(self) -> None:
        """See `AsyncValidationProbe.delete`."""
        await self._store.delete(self._created().id)


class AsyncConversationProbe:
    """The validation's steps on a conversation entry of a throwaway owner."""

    def __init__(self, conversations: AsyncMigratingConversations) -> None:
        self._conversations = conversations
        self._owner, self._opponent = validation_pair()

    async def create(self) -> str:
        """See `AsyncValidationProbe.create`."""
        await self._conversations.record(self._owner, self._opponent, {"validation": 1}, 1.0)
        return entry_key(self._owner, self._opponent)

    async def read(self) -> bool:
        """See `AsyncValidationProbe.read`."""
        entry = await self._conversations.get(self._owner, self._opponent)
        return entry is not None and entry.metadata == {"validation": 1}

    async def update(self) -> None:
        """See `AsyncValidationProbe.update`."""
        await self._conversations.record(self._owner, self._opponent, {"validation": 2}, 2.0)

    async def delete(self) -> None:
        """See `AsyncValidationProbe.delete`."""
        await self._conversations.delete(self._owner, self._opponent)


def probe_for(backend: AsyncMigratingBackend, clock: Clock) -> AsyncValidationProbe:
    """Return the probe that writes through `backend` for the data type it moves."""
    if isinstance(backend.old, AsyncConversationRecords):
        return AsyncConversationProbe(AsyncMigratingConversations.over(backend))
    return AsyncSessionProbe(backend, clock)
