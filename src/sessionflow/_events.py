"""Session lifecycle events: what a store did to which session, for audit logs and alerts.

An event names a session by its handle (the SHA-256 of its id that storage sees, the value
`list_user` reports and `revoke` takes), never by its id: an event, or a log line made from
it, cannot be used to take over the session.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TextIO

from sessionflow._errors import ConfigError

AUDIT_LOGGER = "sessionflow.audit"
"""The logger `SessionEventLog` writes to by default."""


class SessionEventKind(StrEnum):
    """What happened to a session."""

    CREATED = "created"
    """`create` stored a new session."""
    REGENERATED = "regenerated"
    """`regenerate` moved a session to a new id (`previous_handle` is the old one)."""
    DELETED = "deleted"
    """Its holder ended it: `delete` (logout), or a save after `expire_at` had passed."""
    REVOKED = "revoked"
    """`revoke_user` or `revoke` ended it from elsewhere ("log out everywhere", an admin)."""
    EVICTED = "evicted"
    """A newer login pushed it out of the user's `max_sessions_per_user`."""


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """One change a store made to one session.

    Emitted after the change is in storage, once per change, by the store that made it.
    Sessions that simply run out (idle or absolute timeout) expire in storage and emit
    nothing.

    Attributes:
        kind: what happened.
        handle: the session's handle (never its id).
        user_id: the session's user, if it has one.
        at: when (epoch seconds, from the store's clock).
        previous_handle: for `REGENERATED`, the handle the session moved from.
    """

    kind: SessionEventKind
    handle: str
    user_id: str | None
    at: float
    previous_handle: str | None = None


SessionEventListener = Callable[[SessionEvent], object]
"""Called with each event, on the request's path: keep it quick (hand I/O to a queue)."""


class SessionEventLog:
    """A listener that writes each event as one line to a logger (an audit trail).

    Lines look like ``regenerated handle=9f2c… user=ada previous=41d0…``, at INFO on the
    ``sessionflow.audit`` logger unless another is given; configure its handlers as any
    other logger's. Handles are written in full so a line can be matched with `list_user`
    and passed to `revoke`.
    """

    def __init__(
        self, logger: logging.Logger | None = None, level: int | str = logging.INFO
    ) -> None:
        self.logger = logger or logging.getLogger(AUDIT_LOGGER)
        self.level = _level_number(level)

    def __call__(self, event: SessionEvent) -> None:
        """Write `event` as one line."""
        if not self.logger.isEnabledFor(self.level):
            return
        parts = [event.kind.value, f"handle={event.handle}"]
        if event.user_id is not None:
            parts.append(f"user={event.user_id!r}")
        if event.previous_handle is not None:
            parts.append(f"previous={event.previous_handle}")
        self.logger.log(self.level, " ".join(parts))


def print_audit_log(stream: TextIO | None = None) -> None:
    """Send the ``sessionflow.audit`` logger's lines to `stream` (stderr), timestamped.

    What `sessionflow serve` does with ``audit_log = true``. Does nothing if the logger
    already has a handler (the application configured logging itself).
    """
    audit = logging.getLogger(AUDIT_LOGGER)
    if audit.handlers:
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    audit.addHandler(handler)
    audit.setLevel(logging.INFO)
    audit.propagate = False


def _level_number(level: int | str) -> int:
    """Return a logging level given as a number or a name ("INFO")."""
    if isinstance(level, bool) or not isinstance(level, int | str):
        raise ConfigError(f"a logging level is a number or a name like 'INFO', not {level!r}")
    if isinstance(level, str):
        named = logging.getLevelNamesMapping().get(level.upper())
        if named is None:
            raise ConfigError(f"unknown logging level {level!r}")
        return named
    return level


def check_listener(listener: object) -> None:
    """Refuse an `on_event` that cannot be called.

    Found at construction, not at the first event, where its failure would only be logged.
    """
    if listener is not None and not callable(listener):
        raise ConfigError(
            f"on_event must be a callable taking a SessionEvent, not {type(listener).__name__}"
        )
