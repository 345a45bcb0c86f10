"""Django's per-session expiry (`SessionBase.set_expiry`) as a sessionflow session end."""

from __future__ import annotations

import math
from datetime import datetime

from django.utils import timezone

EXPIRY_KEY = "_session_expiry"
"""Where `set_expiry` keeps its value in the session's data (Django's own name)."""


def django_session_end(expiry: object, *, now: float, ceiling: float) -> float:
    """Return when a session whose data holds Django's `expiry` ends, at most `ceiling`.

    A number counts seconds from this save, as Django's database engine does (below 0:
    ended already, `now`); a date (which `set_expiry` stores as ISO text) is that moment.
    None, 0 (the cookie ends with the browser; the server keeps the session for its usual
    life) and values Django does not write leave the session to its policy: `ceiling`,
    its absolute timeout.
    """
    if isinstance(expiry, int | float) and not isinstance(expiry, bool) and expiry != 0:
        if expiry < 0:
            return now
        return ceiling if not expiry < ceiling - now else now + expiry  # NaN: the policy's
    if isinstance(expiry, str):
        try:
            moment = datetime.fromisoformat(expiry)
        except ValueError:
            return ceiling
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        stamp = moment.timestamp()
        return min(stamp, ceiling) if math.isfinite(stamp) else ceiling
    return ceiling
