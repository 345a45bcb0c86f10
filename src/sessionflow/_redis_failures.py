"""What a failed redis-py call becomes in sessionflow: a `BackendError` with the reason.

redis-py raises `RedisError` for what it knows about. Its asyncio connections can also let
a bare `AttributeError` or `TypeError` through when a connection is closed under a
command: a Cluster's topology refresh disconnecting a connection while it connects (seen
while slots move), or a write on a connection the peer reset (redis-py issue 4287). Those
are connection failures too, with the command not sent; left as they are, they would skip
every handler that expects a store error (a 503, a repair-queue entry, the last stage kept)
and surface as a crash.
"""

from __future__ import annotations

from types import TracebackType

from redis.exceptions import RedisError

from sessionflow._errors import BackendError, SessionflowError


def leaked_by_redis_py(exc: BaseException | None) -> bool:
    """Tell whether `exc` is a connection failure redis-py let through untranslated.

    An `AttributeError` or `TypeError` raised inside redis-py, or inside an asyncio
    transport that redis-py called: never one from sessionflow's own code.
    """
    if not isinstance(exc, (AttributeError, TypeError)):
        return False
    modules = []
    frame = exc.__traceback__
    while frame is not None:
        modules.append(str(frame.tb_frame.f_globals.get("__name__", "")))
        frame = frame.tb_next
    return (
        bool(modules)
        and modules[-1].startswith(("redis.", "asyncio."))
        and any(module.startswith("redis.") for module in modules)
    )


def failure_reason(exc: BaseException) -> str:
    """Say what went wrong, for a `BackendError`'s message."""
    if isinstance(exc, RedisError):
        return str(exc)
    return f"the connection failed under the command ({type(exc).__name__}: {exc})"


class redis_failures:  # noqa: N801 - used like a function: `with redis_failures("..."):`
    """Raise `BackendError(f"{what}: {reason}")` for a redis-py failure inside the block.

    A class rather than a generator-based context manager: it sits on hot paths. A
    subclass may say otherwise what a failure becomes (`translated`).
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(exc, RedisError) or leaked_by_redis_py(exc):
            assert exc is not None  # noqa: S101 - for the type checker
            raise self.translated(exc) from exc

    def translated(self, exc: BaseException) -> SessionflowError:
        """Return what the redis-py failure `exc` becomes."""
        return BackendError(f"{self.what}: {failure_reason(exc)}")
