"""Checks of the names and user ids callers hand the session store, the same on every backend."""

from __future__ import annotations

import math

from sessionflow._errors import InvalidAttribute

MAX_NAME_LENGTH = 1024
MAX_USER_ID_BYTES = 1024
"""In UTF-8. DynamoDB's user index takes keys of up to 2048 bytes; one limit on every
backend means a session one store takes, every other takes too."""


def check_attribute_name(name: object) -> None:
    """Raise `InvalidAttribute` unless `name` is a non-empty string every store can encode."""
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LENGTH:
        raise InvalidAttribute(
            f"attribute names must be non-empty strings of at most {MAX_NAME_LENGTH} "
            f"characters, got {type(name).__name__}"
        )
    if utf8_size(name) is None:
        raise InvalidAttribute(
            f"attribute name {_shown(name)} is not valid Unicode (a lone surrogate)"
        )


def check_user_id(user_id: object) -> None:
    """Raise `InvalidAttribute` unless `user_id` is None or a string every store can index."""
    if user_id is None:
        return
    if not isinstance(user_id, str) or not user_id:
        raise InvalidAttribute(f"user_id must be a non-empty string, got {type(user_id).__name__}")
    size = utf8_size(user_id)
    if size is None:
        raise InvalidAttribute(f"user_id {_shown(user_id)} is not valid Unicode (a lone surrogate)")
    if size > MAX_USER_ID_BYTES:
        raise InvalidAttribute(
            f"user_id is {size} bytes in UTF-8, over the limit of {MAX_USER_ID_BYTES}"
        )


def check_deadline(when: object) -> float:
    """Return `when` as a float; `InvalidAttribute` unless it is a finite epoch time."""
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise InvalidAttribute(
            f"a session's end is a number of epoch seconds, got {type(when).__name__}"
        )
    try:
        value = float(when)
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise InvalidAttribute(f"a session's end must be a finite time, got {when}")
    return value


def utf8_size(text: str) -> int | None:
    """Return the length of `text` in UTF-8; None if it has no UTF-8 form (lone surrogates)."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return None


def _shown(text: str) -> str:
    """Return `text` escaped and cut short, for an error message."""
    shown = ascii(text)
    return shown if len(shown) <= 40 else shown[:37] + "..."  # noqa: PLR2004
