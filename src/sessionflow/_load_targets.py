"""What a load test drives: a session store on any backend, or the session service over HTTP.

A target is named by a spec string:

- ``memory``: the in-process memory backend;
- ``local-redis`` / ``local-dynamodb``: a Redis server or DynamoDB Local started for the run;
- ``redis://host:port/db``: a Redis server; ``redis-sentinel://host:26379/db#master``: the
  master a Sentinel group names; ``redis-cluster://host:port``: a Redis Cluster;
- ``dynamodb+http://host:port/table``: a DynamoDB endpoint (DynamoDB Local, or a proxy);
- ``http://host:port``: a running session service (``sessionflow serve``);
- ``config:settings.toml``: what a service settings file describes: a store, a member of a
  migrating fleet (its ``migration`` table) or the hybrid tier (its ``session_config``).

Prefix a spec with ``name=`` to label it in the report (``--target old=redis://...``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from sessionflow._async.backends.base import AsyncBackend
from sessionflow._async.store import AsyncSessionStore
from sessionflow._errors import ConfigError, SessionflowError
from sessionflow._ids import storage_key
from sessionflow._migration_config import StoreConfig
from sessionflow._policy import SessionPolicy
from sessionflow._urls import redact

HTTP_CONNECTIONS = 200
HTTP_TIMEOUT = 30.0


class TargetError(SessionflowError):
    """An operation the target refused or failed; `cause` is a short label for the report."""

    def __init__(self, cause: str, message: str = "") -> None:
        super().__init__(message or cause)
        self.cause = cause


class LoadTarget(Protocol):
    """The session operations a load test sends, however the target is reached.

    Reads and writes of a session that is not live return False (or None) rather than
    raising: the test decides whether that was expected.
    """

    async def create(self, attributes: Mapping[str, Any]) -> str: ...
    async def read(self, session_id: str) -> bool: ...
    async def update(self, session_id: str, attributes: Mapping[str, Any]) -> bool: ...
    async def touch(self, session_id: str) -> bool: ...
    async def delete(self, session_id: str) -> bool: ...
    async def regenerate(self, session_id: str) -> str | None: ...
    def consumed_capacity(self) -> dict[str, float] | None: ...
    async def redis_bytes_per_session(self, session_ids: Sequence[str]) -> float | None: ...


class StoreTarget:
    """A `AsyncSessionStore` on a backend, in this process."""

    def __init__(self, backend: AsyncBackend, policy: SessionPolicy | None = None) -> None:
        self.backend = backend
        self.store = AsyncSessionStore(backend, policy=policy)

    async def create(self, attributes: Mapping[str, Any]) -> str:
        """Create a session; return its id."""
        return (await self.store.create(attributes)).id

    async def read(self, session_id: str) -> bool:
        """Validate a session (read it, touching when due)."""
        return await self.store.get(session_id) is not None

    async def update(self, session_id: str, attributes: Mapping[str, Any]) -> bool:
        """Read a session, change attributes, save."""
        session = await self.store.get(session_id, touch=False)
        if session is None:
            return False
        session.update(attributes)
        await self.store.save(session)
        return True

    async def touch(self, session_id: str) -> bool:
        """Read a session and extend its idle expiry."""
        session = await self.store.get(session_id, touch=False)
        if session is None:
            return False
        await self.store.touch(session)
        return True

    async def delete(self, session_id: str) -> bool:
        """Delete (log out) a session."""
        return await self.store.delete(session_id)

    async def regenerate(self, session_id: str) -> str | None:
        """Move a session to a new id (log in); None if it was not live."""
        session = await self.store.get(session_id, touch=False)
        if session is None:
            return None
        return (await self.store.regenerate(session)).id

    def consumed_capacity(self) -> dict[str, float] | None:
        """Return DynamoDB's consumed capacity units by operation, summed over the stores.

        A composite (tier, migration, instrumented wrapper) reports its DynamoDB parts.
        """
        meters = [part.capacity for part in _parts(self.backend) if hasattr(part, "capacity")]
        if not meters:
            return None
        total: dict[str, float] = {}
        for meter in meters:
            for operation, units in meter.units.items():
                total[operation] = total.get(operation, 0.0) + units
        return total

    async def redis_bytes_per_session(self, session_ids: Sequence[str]) -> float | None:
        """Return the mean bytes Redis holds per session of `session_ids` (None: no Redis).

        A tier reports its hot copies; sessions not (or no longer) in Redis are left out.
        """
        keys = [storage_key(session_id) for session_id in session_ids]
        sizes = [
            size
            for part in _parts(self.backend)
            if hasattr(part, "memory_usage")
            for size in await part.memory_usage(keys)
            if size > 0
        ]
        return sum(sizes) / len(sizes) if sizes else None


def _parts(backend: Any) -> list[Any]:  # noqa: ANN401 - any backend, composites included
    """Return the backend and, for a composite, the stores inside it (depth first)."""
    found = [backend]
    for attribute in ("inner", "hot", "cold", "old", "new"):
        part = getattr(backend, attribute, None)
        if part is not None:
            found += _parts(part)
    return found


class HttpTarget:
    """The session service's JSON API, over pooled HTTP/1.1 connections."""

    def __init__(self, client: Any) -> None:  # noqa: ANN401 - httpx.AsyncClient, imported lazily
        self.client = client

    async def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        import httpx  # noqa: PLC0415

        try:
            response = await self.client.post(path, json=body)
        except httpx.TimeoutException as exc:
            raise TargetError("timeout", f"{path}: {exc}") from exc
        except httpx.TransportError as exc:
            raise TargetError("connection", f"{path}: {exc}") from exc
        if response.status_code == 404:  # noqa: PLR2004
            return None
        if response.status_code == 409:  # noqa: PLR2004
            raise TargetError("conflict", response.text[:200])
        if response.status_code >= 400:  # noqa: PLR2004
            raise TargetError(f"http {response.status_code}", response.text[:200])
        result: dict[str, Any] = response.json()
        return result

    async def create(self, attributes: Mapping[str, Any]) -> str:
        """POST /v1/sessions."""
        created = await self._post("/v1/sessions", {"attributes": dict(attributes)})
        if created is None:
            raise TargetError("http 404", "/v1/sessions not found: is this a sessionflow service?")
        return str(created["id"])

    async def read(self, session_id: str) -> bool:
        """POST /v1/sessions/validate."""
        return await self._post("/v1/sessions/validate", {"id": session_id}) is not None

    async def update(self, session_id: str, attributes: Mapping[str, Any]) -> bool:
        """POST /v1/sessions/update."""
        body = {"id": session_id, "set": dict(attributes)}
        return await self._post("/v1/sessions/update", body) is not None

    async def touch(self, session_id: str) -> bool:
        """POST /v1/sessions/touch."""
        return await self._post("/v1/sessions/touch", {"id": session_id}) is not None

    async def delete(self, session_id: str) -> bool:
        """POST /v1/sessions/delete."""
        answer = await self._post("/v1/sessions/delete", {"id": session_id})
        return bool(answer and answer.get("deleted"))

    async def regenerate(self, session_id: str) -> str | None:
        """POST /v1/sessions/regenerate."""
        moved = await self._post("/v1/sessions/regenerate", {"id": session_id})
        return None if moved is None else str(moved["id"])

    def consumed_capacity(self) -> dict[str, float] | None:
        """Return None: the service's stores are behind HTTP (read its /metrics instead)."""
        return None

    async def redis_bytes_per_session(self, session_ids: Sequence[str]) -> float | None:  # noqa: ARG002
        """Return None: the service's stores are behind HTTP."""
        return None


@dataclass(frozen=True)
class TargetSpec:
    """A parsed ``[name=]spec``."""

    name: str
    spec: str

    @classmethod
    def parse(cls, text: str) -> TargetSpec:
        """Split an optional ``name=`` label off a spec, defaulting the name to its kind."""
        name, sep, spec = text.partition("=")
        if not sep or "://" in name or name.startswith("config:"):
            name, spec = "", text
        spec = spec.strip()
        if not spec:
            raise ConfigError(f"an empty target in {text!r}")
        return cls(name.strip() or _kind(spec), spec)


def _kind(spec: str) -> str:
    if spec in ("memory", "local-redis", "local-dynamodb"):
        return spec
    if spec.startswith("config:"):
        return Path(spec.removeprefix("config:")).stem
    try:
        scheme = urlsplit(spec).scheme
    except ValueError as exc:
        raise ConfigError(f"target {redact(spec)!r}: {exc}") from exc
    kinds = {"redis": "redis", "rediss": "redis", "redis-cluster": "redis-cluster",
             "redis-sentinel": "redis", "rediss-sentinel": "redis",
             "dynamodb+http": "dynamodb", "http": "service", "https": "service"}  # fmt: skip
    if scheme not in kinds:
        raise ConfigError(
            f"unknown target {redact(spec)!r}: use memory, local-redis, local-dynamodb, redis://, "
            "redis-sentinel://, redis-cluster://, dynamodb+http://host:port/table, http:// "
            "or config:FILE"
        )
    return kinds[scheme]


async def open_target(
    spec: TargetSpec, stack: AsyncExitStack, *, policy: SessionPolicy | None = None
) -> LoadTarget:
    """Open the target `spec` names; servers and clients close with `stack`."""
    from sessionflow._open_backend import open_backend, open_configured  # noqa: PLC0415

    kind = _kind(spec.spec)
    if kind == "service":
        import httpx  # noqa: PLC0415

        limits = httpx.Limits(
            max_connections=HTTP_CONNECTIONS, max_keepalive_connections=HTTP_CONNECTIONS
        )
        client = await stack.enter_async_context(
            httpx.AsyncClient(base_url=spec.spec, limits=limits, timeout=HTTP_TIMEOUT)
        )
        return HttpTarget(client)
    if spec.spec.startswith("config:"):
        from sessionflow._migration_config import MigrationConfig  # noqa: PLC0415
        from sessionflow._service_config import ServiceConfig  # noqa: PLC0415
        from sessionflow._tier_config import TierConfig  # noqa: PLC0415

        path = Path(spec.spec.removeprefix("config:"))
        config = ServiceConfig.load(path)
        opened = await open_configured(
            config,
            stack,
            migration=MigrationConfig.load_if_present(path),
            tier=TierConfig.load_if_present(path),
        )
        return StoreTarget(opened.backend, policy or config.policy())
    return StoreTarget(await open_backend(_settings(spec.spec, kind, stack), stack), policy)


LOAD_PREFIX = "sf-load"
LOAD_TABLE = "sessionflow-load"


def _settings(spec: str, kind: str, stack: AsyncExitStack) -> StoreConfig:
    """Return the store a spec names (servers it asks for start here, stop with `stack`)."""
    if kind == "memory":
        return StoreConfig("memory")
    if kind == "local-redis":
        from sessionflow.local_servers import RedisServer  # noqa: PLC0415

        spec = stack.enter_context(RedisServer()).url
        kind = "redis"
    if kind == "redis":
        return StoreConfig(
            "redis", redis_url=spec, redis_prefix=LOAD_PREFIX, redis_auto_pipeline=True
        )
    if kind == "redis-cluster":
        url = "redis://" + spec.split("://", 1)[1]
        return StoreConfig(
            "redis-cluster", redis_url=url, redis_prefix=LOAD_PREFIX, redis_auto_pipeline=True
        )
    if kind == "local-dynamodb":
        from sessionflow.local_servers import DUMMY_AWS, DynamoDBLocal  # noqa: PLC0415

        server = stack.enter_context(DynamoDBLocal())
        # DynamoDB Local accepts any credentials; boto3 only needs some to sign with.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", DUMMY_AWS["aws_access_key_id"])
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", DUMMY_AWS["aws_secret_access_key"])
        return StoreConfig(
            "dynamodb", dynamodb_endpoint=server.endpoint_url, dynamodb_table=LOAD_TABLE
        )
    parts = urlsplit(spec)
    table = parts.path.strip("/") or LOAD_TABLE
    return StoreConfig("dynamodb", dynamodb_endpoint=f"http://{parts.netloc}", dynamodb_table=table)
