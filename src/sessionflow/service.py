"""The session service: an HTTP API over an `AsyncSessionStore` (FastAPI).

Session ids travel in request bodies, never in URLs, so access logs and proxies never see
them. Errors are JSON ``{"error": code, "detail": reason}`` with a 4xx status for bad input
and 503 when the store is unreachable.
"""

from __future__ import annotations

import gc
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from http import HTTPStatus
from typing import Annotated, Any, cast

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from sessionflow import __version__
from sessionflow._async.backends.base import AsyncBackend
from sessionflow._async.backends.instrumented import AsyncInstrumentedBackend
from sessionflow._async.migration import AsyncMigration
from sessionflow._async.store import AsyncSessionStore
from sessionflow._body_limit import DEFAULT_MAX_BODY_BYTES, TOO_LARGE_CODE
from sessionflow._errors import (
    BackendError,
    ConfigError,
    InvalidAttribute,
    InvalidSessionId,
    MigrationRefused,
    SessionflowError,
    SessionNotFound,
    SessionTooLarge,
    StageChanged,
    VersionConflict,
)
from sessionflow._events import SessionEventKind, SessionEventLog
from sessionflow._ids import new_session_id
from sessionflow._metrics import (
    BackendMetrics,
    MigrationCollector,
    StoreStatsCollector,
    TierCollector,
)
from sessionflow._migration_config import MigrationConfig
from sessionflow._migration_stats import MigrationStats
from sessionflow._open_backend import ClientTimeouts, open_configured
from sessionflow._policy import LONGEST_SECONDS
from sessionflow._service_config import ServiceConfig, check_admin_token
from sessionflow._service_hot import ErrorBody, HotRoute, ServiceApp, validation_detail
from sessionflow._service_tier import TierHandle, tier_routes
from sessionflow._session import Session
from sessionflow._tier import TierStats
from sessionflow._tier_config import TierConfig

_STATUS_OF_ERROR: tuple[tuple[type[SessionflowError], int, str], ...] = (
    (InvalidSessionId, 400, "invalid_session_id"),
    (InvalidAttribute, 422, "invalid_attribute"),
    (SessionTooLarge, 413, "session_too_large"),
    (SessionNotFound, 404, "session_not_found"),
    (VersionConflict, 409, "version_conflict"),
    (MigrationRefused, 409, "migration_refused"),
    (StageChanged, 409, "stage_changed"),
    (BackendError, 503, "store_unavailable"),
    (ConfigError, 500, "misconfigured"),
)
VALIDATE_PATH = "/v1/sessions/validate"
MAX_ID_FIELD = 128  # longer than any id: longer input is refused before it is even checked
NO_STORE = "no-store"
"""Cache-Control of answers no cache may keep: a user's session handles, admin state."""


class StageChangeRequest(BaseModel):
    """Move the fleet one stage (admin)."""

    force: bool = False
    note: str = Field(default="", max_length=200)


class MigrationHandle:
    """The running migration of a service that serves through a migrating backend.

    Set once the app's lifespan has opened the stores.
    """

    def __init__(self) -> None:
        self.migration: AsyncMigration | None = None

    def get(self) -> AsyncMigration:
        """Return the migration; `BackendError` (503) while the service is starting."""
        if self.migration is None:
            raise BackendError("the service is starting: its stores are not open yet")
        return self.migration


ExpiresIn = Annotated[
    float | None,
    Field(
        default=None,
        gt=0,
        le=LONGEST_SECONDS,
        allow_inf_nan=False,
        strict=True,  # a number: not true, not "60"
        description=(
            "End the session this many seconds from now, sooner than the policy's absolute"
            " timeout (a longer time leaves it at the policy's; the idle timeout still"
            " applies)."
        ),
    ),
]


class CreateRequest(BaseModel):
    """Create a session."""

    user_id: str | None = Field(default=None, min_length=1, max_length=1024)
    attributes: dict[str, Any] = Field(default_factory=dict)
    expires_in: ExpiresIn = None


class IdRequest(BaseModel):
    """Name a session by its id."""

    id: str = Field(max_length=MAX_ID_FIELD)


class UpdateRequest(IdRequest):
    """Change attributes: `set` writes values, `unset` removes names."""

    set: dict[str, Any] = Field(default_factory=dict)
    unset: list[str] = Field(default_factory=list)
    expires_in: ExpiresIn = None


class RegenerateRequest(IdRequest):
    """Move a session to a new id, optionally binding a user (login)."""

    user_id: str | None = Field(default=None, min_length=1, max_length=1024)


class RevokeRequest(BaseModel):
    """Revoke a user's sessions, optionally keeping one."""

    keep_id: str | None = Field(default=None, max_length=MAX_ID_FIELD)


class SessionView(BaseModel):
    """A session as the API returns it."""

    user_id: str | None
    version: int
    created_at: float
    last_access: float
    expires_at: float
    absolute_expires_at: float
    attributes: dict[str, Any] | None = None


class CreatedView(SessionView):
    """A created or regenerated session, with its new id."""

    id: str


class SummaryView(BaseModel):
    """One of a user's sessions: a revocable handle, never the id."""

    handle: str
    created_at: float
    last_access: float
    expires_at: float


def _view(session: Session, *, with_attributes: bool) -> dict[str, Any]:
    return {
        "user_id": session.user_id,
        "version": session.version,
        "created_at": session.created_at,
        "last_access": session.last_access,
        "expires_at": session.expires_at,
        "absolute_expires_at": session.absolute_expires_at,
        "attributes": session.to_dict() if with_attributes else None,
    }


def _error(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def error_body(exc: SessionflowError) -> ErrorBody:
    """Return the status and JSON body that answer `exc`."""
    for kind, status, code in _STATUS_OF_ERROR:
        if isinstance(exc, kind):
            return status, {"error": code, "detail": str(exc)}
    return 500, {"error": "internal", "detail": type(exc).__name__}  # pragma: no cover


def create_app(
    store: AsyncSessionStore,
    *,
    admin_token: str | None = None,
    registry: CollectorRegistry | None = None,
    lifespan: Callable[[FastAPI], Any] | None = None,
    migration: MigrationHandle | None = None,
    tier: TierHandle | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """Build the service on `store`.

    Args:
        store: the async store (wrap its backend in `AsyncInstrumentedBackend` on
            `registry` for per-operation metrics; `build_app` does).
        admin_token: enables ``/admin/*`` behind ``Authorization: Bearer <token>``.
        registry: what ``/metrics`` exposes; the store's counters are added to it.
        lifespan: an ASGI lifespan context for the app (starting and closing clients).
        migration: the migration the store's backend takes part in; adds the admin routes
            ``/admin/migration`` (status), ``/admin/migration/advance`` and ``/rollback``.
        tier: the hybrid tier the store's backend is; adds ``/admin/tier`` (statistics),
            ``/admin/tier/sweep`` and ``/admin/tier/flush``.
        max_body_bytes: larger request bodies are refused with a 413 before they are read.

    Raises:
        ConfigError: an `admin_token` shorter than 16 characters or with characters other
            than visible ASCII (an empty token would admit ``Authorization: Bearer``).
    """
    check_admin_token(admin_token)
    registry = registry or CollectorRegistry()
    registry.register(StoreStatsCollector(store.stats, "service"))
    app = ServiceApp(
        title="sessionflow session service",
        version=__version__,
        lifespan=lifespan,
        description="Create, validate, read, update and revoke server-side sessions.",
        max_body_bytes=max_body_bytes,
    )

    @app.exception_handler(SessionflowError)
    async def sessionflow_error(_: Request, exc: SessionflowError) -> JSONResponse:
        status, body = error_body(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:  # noqa: PLR2004 - Python 3.11 still says "Request Entity"
            code = TOO_LARGE_CODE
        else:
            code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_")
        return _error(exc.status_code, code, str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_request", validation_detail(exc.errors()))

    _session_routes(app, store)
    _operations_routes(app, store, registry)
    if admin_token is not None:
        require_admin = _admin_guard(app, admin_token)
        _admin_routes(app, store, require_admin)
        if migration is not None:
            _migration_routes(app, migration, require_admin)
        if tier is not None:
            tier_routes(app, tier, require_admin)
    return app


def _session_routes(app: ServiceApp, store: AsyncSessionStore) -> None:  # noqa: C901 - one route each
    async def live(session_id: str, *, touch: bool = True) -> Session:
        session = await store.get(session_id, touch=touch)
        if session is None:
            raise SessionNotFound("no live session with this id")
        return session

    @app.post("/v1/sessions", status_code=201, response_model=CreatedView)
    async def create(body: CreateRequest) -> dict[str, Any]:
        """Create a session; the response carries its id (the only time it is returned)."""
        ends = None if body.expires_in is None else store.clock.now() + body.expires_in
        session = await store.create(body.attributes, user_id=body.user_id, expires_at=ends)
        return {**_view(session, with_attributes=True), "id": session.id}

    async def validated(body: IdRequest) -> dict[str, Any]:
        return _view(await live(body.id), with_attributes=False)

    @app.post(VALIDATE_PATH, response_model=SessionView)
    async def validate(body: IdRequest) -> dict[str, Any]:
        """Check a session is live and extend its idle expiry; no attributes returned."""
        return await validated(body)

    # the route every gateway request goes through skips FastAPI's per-request work
    app.hot_routes.append(
        HotRoute(path=VALIDATE_PATH, model=IdRequest, answer=validated, error=error_body)
    )

    @app.post("/v1/sessions/read", response_model=SessionView)
    async def read(body: IdRequest) -> dict[str, Any]:
        """Return a live session with its attributes."""
        return _view(await live(body.id), with_attributes=True)

    @app.post("/v1/sessions/update", response_model=SessionView)
    async def update(body: UpdateRequest) -> dict[str, Any]:
        """Set and unset attributes (merged with concurrent updates of other attributes).

        With `expires_in`, the session also ends that many seconds from now (sooner than
        its policy; never later).
        """
        session = await live(body.id, touch=False)
        for name in body.unset:
            session.pop(name, None)
        session.update(body.set)
        if body.expires_in is not None:
            session.expire_at(store.clock.now() + body.expires_in)
        await store.save(session)
        return _view(session, with_attributes=True)

    @app.post("/v1/sessions/touch", response_model=SessionView)
    async def touch(body: IdRequest) -> dict[str, Any]:
        """Extend the idle expiry (at most once per touch interval)."""
        session = await live(body.id, touch=False)
        await store.touch(session)
        return _view(session, with_attributes=False)

    @app.post("/v1/sessions/delete")
    async def delete(body: IdRequest) -> dict[str, bool]:
        """Delete a session (it stays deleted); `deleted` is False if it was not live."""
        return {"deleted": await store.delete(body.id)}

    @app.post("/v1/sessions/regenerate", status_code=201, response_model=CreatedView)
    async def regenerate(body: RegenerateRequest) -> dict[str, Any]:
        """Move a session to a new id (login); the old id is dead afterwards."""
        moved = await store.regenerate(await live(body.id, touch=False), user_id=body.user_id)
        return {**_view(moved, with_attributes=True), "id": moved.id}

    @app.get("/v1/users/{user_id:path}/sessions", response_model=list[SummaryView])
    async def list_user(user_id: str, response: Response) -> list[dict[str, Any]]:
        """List a user's live sessions, oldest first, by handle."""
        response.headers["Cache-Control"] = NO_STORE  # a handle revokes its session
        return [
            {
                "handle": s.handle,
                "created_at": s.created_at,
                "last_access": s.last_access,
                "expires_at": min(s.idle_expires_at, s.absolute_expires_at),
            }
            for s in await store.list_user(user_id)
        ]

    @app.post("/v1/users/{user_id:path}/revoke")
    async def revoke_user(user_id: str, body: RevokeRequest) -> dict[str, int]:
        """Log a user out everywhere, optionally keeping one session."""
        return {"revoked": await store.revoke_user(user_id, keep=body.keep_id)}

    @app.post("/v1/handles/{handle}/revoke")
    async def revoke_handle(handle: str) -> dict[str, bool]:
        """Revoke one session by the handle a listing returned."""
        return {"revoked": await store.revoke(handle)}


def _operations_routes(app: FastAPI, store: AsyncSessionStore, registry: CollectorRegistry) -> None:
    @app.get("/healthz", response_class=PlainTextResponse)
    async def healthz() -> str:
        """Answer 200 while the process is up."""
        return "ok\n"

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Answer 200 when the store answers a read (of an id that does not exist)."""
        try:
            await store.get(new_session_id(), touch=False)
        except BackendError as exc:
            return _error(503, "store_unavailable", str(exc))
        return JSONResponse({"ready": True})

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Expose the Prometheus metrics."""
        return PlainTextResponse(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _admin_guard(app: FastAPI, admin_token: str) -> Callable[..., Awaitable[None]]:
    """Return the dependency that admits a request with the bearer token (constant time).

    The scheme's name is case-insensitive (RFC 9110: ``bearer`` is ``Bearer``); the token
    is compared byte for byte.
    """
    expected = admin_token.encode()

    async def require_admin(
        response: Response, authorization: Annotated[str | None, Header()] = None
    ) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        # compared even when the scheme is wrong, so the time says nothing about the token
        token_matches = hmac.compare_digest(given.encode(), expected)
        if scheme.lower() != "bearer" or not token_matches:
            raise _AdminRefused
        response.headers["Cache-Control"] = NO_STORE  # no cache keeps an admin answer

    @app.exception_handler(_AdminRefused)
    async def admin_refused(_: Request, __: _AdminRefused) -> JSONResponse:
        return _error(401, "unauthorized", "admin routes need Authorization: Bearer <token>")

    return require_admin


def _admin_routes(
    app: FastAPI, store: AsyncSessionStore, require_admin: Callable[..., Awaitable[None]]
) -> None:
    @app.get("/admin/stats", dependencies=[Depends(require_admin)])
    async def admin_stats() -> dict[str, Any]:
        """Return the store counters and policy (admin only)."""
        policy = store.policy
        return {
            "unreadable_records": store.stats.unreadable_records,
            "merged_conflicts": store.stats.merged_conflicts,
            "raised_conflicts": store.stats.raised_conflicts,
            "session_events": {kind.value: store.stats.events[kind] for kind in SessionEventKind},
            "event_listener_failures": store.stats.listener_failures,
            "idle_timeout": policy.idle_timeout,
            "absolute_timeout": policy.absolute_timeout,
        }


def _migration_routes(
    app: FastAPI, handle: MigrationHandle, require_admin: Callable[..., Awaitable[None]]
) -> None:
    admin = [Depends(require_admin)]

    @app.get("/admin/migration", dependencies=admin)
    async def migration_status() -> dict[str, Any]:
        """Return the stage, live processes, backfill, repair queue and last verification."""
        return (await handle.get().status()).to_dict()

    @app.post("/admin/migration/advance", dependencies=admin)
    async def migration_advance(body: StageChangeRequest) -> dict[str, Any]:
        """Move the fleet one stage forward; 409 with the reason when that is unsafe."""
        record = await handle.get().advance(force=body.force, note=body.note)
        return {"stage": str(record.stage), "revision": record.revision}

    @app.post("/admin/migration/rollback", dependencies=admin)
    async def migration_rollback(body: StageChangeRequest) -> dict[str, Any]:
        """Move the fleet one stage back, then validate it (create/read/update/delete)."""
        migration = handle.get()
        record = await migration.rollback(force=body.force, note=body.note)
        steps = await migration.validate()
        return {
            "stage": str(record.stage),
            "revision": record.revision,
            "validation": [{"step": s.name, "ok": s.ok, "detail": s.detail} for s in steps],
            "validated": all(s.ok for s in steps),
        }


class _AdminRefused(Exception):  # noqa: N818 - internal signal, never escapes the app
    """A request to an admin route without the right token."""


def build_app(
    config: ServiceConfig,
    migration: MigrationConfig | None = None,
    *,
    tier: TierConfig | None = None,
    region: str | None = None,
) -> FastAPI:
    """Build the service from settings; clients (and a local Redis) live as long as the app.

    With `migration`, the service is one process of a migrating fleet: it serves through
    an `AsyncMigratingBackend` over the two stores the migration names (following the
    fleet's stage), exports the migration's metrics and, with an admin token, its routes.
    With `tier`, it serves through the hybrid tier of `region` (the first configured region
    if None), exports the tier's metrics and, with an admin token, its routes.
    """
    if migration is not None and tier is not None:
        raise ConfigError("a service serves through a migration or a tier, not both")
    registry = CollectorRegistry()
    metrics = BackendMetrics(registry)
    # The real backend opens in the lifespan, inside the server's event loop.
    store = AsyncSessionStore(
        cast("AsyncBackend", _PendingBackend()),
        policy=config.policy(),
        on_event=SessionEventLog() if config.audit_log else None,
    )
    handle = MigrationHandle() if migration is not None else None
    stats = MigrationStats()
    if migration is not None:
        registry.register(MigrationCollector(stats))
    tier_handle = TierHandle(tier.region_name(region)) if tier is not None else None
    tier_stats = TierStats()
    if tier is not None:
        registry.register(TierCollector(tier_stats))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            opened = await open_configured(
                config,
                stack,
                migration=migration,
                tier=tier,
                region=None if tier_handle is None else tier_handle.region,
                migration_stats=stats,
                tier_stats=tier_stats,
                timeouts=ClientTimeouts.for_requests(config.store_timeout),
            )
            if tier_handle is not None:
                tier_handle.backend = opened.tiered
            if handle is not None:
                handle.migration = opened.migration
            backend, name = opened.backend, opened.name
            store.backend = AsyncInstrumentedBackend(backend, name=name, metrics=metrics)
            yield

    return create_app(
        store,
        admin_token=config.admin_token,
        registry=registry,
        lifespan=lifespan,
        migration=handle,
        tier=tier_handle,
        max_body_bytes=config.max_body_bytes,
    )


SERVICE_GC_THRESHOLD = 50_000
"""Net allocations of container objects between two collections of the youngest generation."""


def run_service(
    app: Any,  # noqa: ANN401 - any ASGI app (the service, or a benchmark's baseline)
    *,
    host: str,
    port: int,
    log_level: str = "info",
    access_log: bool = True,
    gc_threshold: int = SERVICE_GC_THRESHOLD,
) -> None:
    """Serve `app` on uvicorn until interrupted (with httptools' parser when installed).

    The objects alive at start-up (imported modules, the app) are frozen out of the garbage
    collector's sight first, and the youngest generation is collected after
    `gc_threshold` net allocations instead of CPython's 700. A request frees
    nearly everything it allocates by reference counting; at the default threshold,
    collections under load mostly found requests still in flight and promoted them, until
    a full collection (5-35 ms, every few seconds in the service benchmark) stalled every
    request. With the higher threshold the benchmark's service collected once in 30 s.
    """
    if gc_threshold < 1:
        raise ConfigError("gc_threshold must be at least 1 (0 would turn collection off)")
    import uvicorn  # noqa: PLC0415 - the 'server' extra

    gc.collect()
    gc.freeze()
    gc.set_threshold(gc_threshold, *gc.get_threshold()[1:])
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)


class _PendingBackend:
    """Stands in until the app's lifespan opened the real backend."""

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def refuse(*_: Any, **__: Any) -> Any:  # noqa: ANN401
            raise BackendError("the service is starting: its store is not open yet")

        return refuse
