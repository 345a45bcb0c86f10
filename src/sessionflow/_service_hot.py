"""The service's hot route, answered before FastAPI's per-request machinery.

ADR-0010 puts "validate session" in front of every request a gateway serves, so the cost of
one validate request sets the service's capacity. FastAPI spends several times more CPU on a
validate request (its telemetry check, middleware, dependency solving, the request and
response models) than reading the session costs. A `HotRoute` answers ``POST <path>`` with a
JSON body itself, with the same request model (pydantic, parsed from the bytes), the same
answer and the same error bodies as the FastAPI route; `ServiceApp` hands it such requests
before FastAPI sees them. Every other request, and a request to the path with another
content type, goes to FastAPI, whose route stays the one the OpenAPI document describes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from sessionflow._asgi_send import send_whole
from sessionflow._body_limit import (
    DEFAULT_MAX_BODY_BYTES,
    TOO_LARGE_CODE,
    counted,
    declared_length,
    refuse,
    too_large_detail,
)
from sessionflow._errors import SessionflowError

ErrorBody = tuple[int, dict[str, str]]

MAX_HOT_BODY = 4096
"""Bytes a hot request may carry: many times a request naming one session id."""


def validation_detail(errors: Sequence[Mapping[str, Any]], prefix: tuple[str, ...] = ()) -> str:
    """Say where a request failed validation and why, from pydantic's error list."""
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in (*prefix, *first.get("loc", ())))
    return f"{where}: {first.get('msg', 'invalid')}"


class ServiceApp(FastAPI):
    """A FastAPI app whose `hot_routes` answer their requests before FastAPI's own work.

    Request bodies over `max_body_bytes` are refused with a 413 (see `_body_limit`).
    """

    def __init__(self, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, **settings: Any) -> None:  # noqa: ANN401 - FastAPI's settings
        super().__init__(**settings)
        self.hot_routes: list[HotRoute] = []
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve a hot route's request, or hand the request to FastAPI."""
        if scope["type"] == "http":
            declared = declared_length(scope)
            if declared is not None and declared > self.max_body_bytes:
                await refuse(send, self.max_body_bytes)
                return
            for route in self.hot_routes:
                if route.matches(scope):
                    await route.serve(receive, send)  # it caps its own, smaller bodies
                    return
            receive = counted(receive, self.max_body_bytes)
        await super().__call__(scope, receive, send)


class HotRoute:
    """One JSON POST route served straight from ASGI.

    Args:
        path: the route's path (FastAPI's route for it documents the operation).
        model: the request body's pydantic model.
        answer: returns the response body for a valid request; may raise
            `SessionflowError`.
        error: maps a `SessionflowError` to (status, body), as the app's handler does.
    """

    def __init__(
        self,
        *,
        path: str,
        model: type[BaseModel],
        answer: Callable[[Any], Awaitable[Mapping[str, Any]]],
        error: Callable[[SessionflowError], ErrorBody],
    ) -> None:
        self.path = path
        self.model = model
        self.answer = answer
        self.error = error

    def matches(self, scope: Scope) -> bool:
        """Tell whether `scope` is a POST of a JSON body to the route's path."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return False
        for name, value in scope["headers"]:
            if name == b"content-type":
                media_type: bytes = value.split(b";", 1)[0].strip().lower()
                return media_type == b"application/json"
        return False

    async def serve(self, receive: Receive, send: Send) -> None:
        """Answer one request the route `matches`."""
        body = await _read_body(receive)
        if body is None:  # the client went away
            return
        status, payload = await self._respond(body)
        await send_whole(send, status, payload, content_type=b"application/json")

    async def _respond(self, body: bytes) -> tuple[int, bytes]:
        if len(body) > MAX_HOT_BODY:
            return 413, orjson.dumps(
                {"error": TOO_LARGE_CODE, "detail": too_large_detail(MAX_HOT_BODY)}
            )
        try:
            request = self.model.model_validate_json(body)
        except ValidationError as exc:
            detail = validation_detail(exc.errors(include_url=False), ("body",))
            return 422, orjson.dumps({"error": "invalid_request", "detail": detail})
        try:
            return 200, orjson.dumps(await self.answer(request))
        except SessionflowError as exc:
            status, error = self.error(exc)
            return status, orjson.dumps(error)


async def _read_body(receive: Receive) -> bytes | None:
    """Return the request body; None if the client disconnected.

    Past MAX_HOT_BODY bytes the rest is read but not kept: the caller refuses the request
    on its length, and memory stays bounded whatever the client sends.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        if size <= MAX_HOT_BODY:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
