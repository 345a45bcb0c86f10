"""The service's cap on request bodies: refused with a 413 before they are buffered.

FastAPI reads a whole body into memory before validating it, so without a cap one request
can make the service hold hundreds of megabytes. A body whose ``Content-Length`` is over
the cap is refused before a byte of it is read; a body without one (chunked) is counted
as it arrives and refused when it crosses the cap. Either way the connection is closed
after the answer, so the rest of the body is not read either.
"""

from __future__ import annotations

import orjson
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message, Receive, Scope, Send

from sessionflow._asgi_send import send_whole

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
TOO_LARGE_CODE = "content_too_large"  # RFC 9110's name for 413
_CLOSE = {"connection": "close"}


class BodyTooLarge(StarletteHTTPException):
    """A request body crossed the service's cap while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, too_large_detail(limit), headers=_CLOSE)


def too_large_detail(limit: int) -> str:
    """Return the 413's message: what the cap is."""
    return f"the request body is over the {limit}-byte limit"


def declared_length(scope: Scope) -> int | None:
    """Return the request's ``Content-Length``, or None if it has none (or a malformed one)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


async def refuse(send: Send, limit: int) -> None:
    """Answer 413 with the service's error body, and close the connection after it."""
    body = orjson.dumps({"error": TOO_LARGE_CODE, "detail": too_large_detail(limit)})
    await send_whole(
        send, 413, body, content_type=b"application/json", headers=[(b"connection", b"close")]
    )


def counted(receive: Receive, limit: int) -> Receive:
    """Wrap `receive` so that a body growing past `limit` bytes raises `BodyTooLarge`."""
    received = 0

    async def receive_within_limit() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return receive_within_limit
