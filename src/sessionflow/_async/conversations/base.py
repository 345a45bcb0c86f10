"""The conversation-list contract every backend keeps."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from sessionflow._conversation import DEFAULT_PAGE, Conversation, ConversationPage


@runtime_checkable
class AsyncConversationBackend(Protocol):
    """An owner's conversations: upsert, newest-first pages, get, delete, delete all.

    Every write raises the entry's version; a delete leaves a tombstone that `get` and
    `list` hide (`get(..., include_deleted=True)` shows it, for migrations).
    """

    async def record(
        self, owner: str, opponent: str, metadata: Mapping[str, Any], timestamp: float
    ) -> Conversation:
        """Record a message exchanged between `owner` and `opponent`.

        The entry's metadata becomes `metadata`, its time the later of its time and
        `timestamp`, its version one higher; a deleted entry comes back.
        """
        ...

    async def get(
        self, owner: str, opponent: str, *, include_deleted: bool = False
    ) -> Conversation | None:
        """Return the entry, or None (a tombstone only with `include_deleted`)."""
        ...

    async def list(
        self, owner: str, *, limit: int = DEFAULT_PAGE, cursor: str | None = None
    ) -> ConversationPage:
        """Return up to `limit` live entries newest first, from `cursor` (None: the start)."""
        ...

    async def delete(self, owner: str, opponent: str) -> bool:
        """Delete an entry (a tombstone stays); return False if there was no live entry."""
        ...

    async def delete_all(self, owner: str) -> int:
        """Delete every entry of `owner` in bounded chunks; return how many were live."""
        ...
