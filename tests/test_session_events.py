"""Session lifecycle events: the audit line, a failing listener, metrics and the service.

Which events each store operation emits is part of the contract suite (every backend,
sync and async); these tests cover what is built on them.
"""

from __future__ import annotations

import io
import logging
import re

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from sessionflow import (
    AsyncMemoryBackend,
    AsyncSessionStore,
    ConfigError,
    ManualClock,
    MemoryBackend,
    SessionEvent,
    SessionEventKind,
    SessionEventLog,
    SessionStore,
    StoreStatsCollector,
)
from sessionflow._events import AUDIT_LOGGER, print_audit_log
from sessionflow._service_config import ServiceConfig
from sessionflow.local_servers import free_port
from sessionflow.service import create_app
from tests.clients import running_service

HANDLE = "ab" * 32
OTHER = "cd" * 32


def test_the_audit_line_names_the_handle_user_and_previous_handle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = SessionEventLog()
    with caplog.at_level(logging.INFO, logger=AUDIT_LOGGER):
        log(SessionEvent(SessionEventKind.REGENERATED, HANDLE, "ada", 1.0, OTHER))
        log(SessionEvent(SessionEventKind.CREATED, OTHER, None, 2.0))
        log(SessionEvent(SessionEventKind.REVOKED, HANDLE, "tenant 7\nforged line", 3.0))
    assert [(r.name, r.levelno) for r in caplog.records] == [(AUDIT_LOGGER, logging.INFO)] * 3
    assert caplog.messages == [
        f"regenerated handle={HANDLE} user='ada' previous={OTHER}",
        f"created handle={OTHER}",
        # A user id is quoted: one that holds a line break cannot forge a second line.
        f"revoked handle={HANDLE} user='tenant 7\\nforged line'",
    ]


def test_the_audit_log_writes_nothing_when_its_level_is_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=AUDIT_LOGGER):
        SessionEventLog()(SessionEvent(SessionEventKind.CREATED, HANDLE, None, 1.0))
    assert caplog.records == []


def test_a_failing_listener_leaves_the_change_in_place_and_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(event: SessionEvent) -> None:
        raise RuntimeError(f"audit sink down ({event.kind})")

    store = SessionStore(MemoryBackend(), on_event=broken)
    with caplog.at_level(logging.ERROR, logger="sessionflow"):
        session = store.create({"a": 1}, user_id="ada")
        assert store.get(session.id) is not None
        assert store.delete(session)
    assert store.get(session.id) is None
    assert store.stats.listener_failures == 2
    assert store.stats.events == {SessionEventKind.CREATED: 1, SessionEventKind.DELETED: 1}
    assert "the session event listener failed on a created event" in caplog.messages
    assert session.id not in caplog.text


async def test_events_are_counted_in_the_store_metrics() -> None:
    clock = ManualClock()
    store = AsyncSessionStore(AsyncMemoryBackend(clock=clock), clock=clock)
    registry = CollectorRegistry()
    registry.register(StoreStatsCollector(store.stats, "web"))
    session = await store.create(user_id="ada")
    await store.regenerate(session)
    await store.revoke_user("ada")
    exported = generate_latest(registry).decode()
    for kind, count in [("created", 1), ("regenerated", 1), ("revoked", 1), ("deleted", 0)]:
        line = f'sessionflow_store_session_events_total{{event="{kind}",store="web"}} {count}.0'
        assert line in exported
    assert 'sessionflow_store_event_listener_failures_total{store="web"} 0.0' in exported


def test_print_audit_log_keeps_a_handler_the_application_set() -> None:
    audit = logging.getLogger(AUDIT_LOGGER)
    saved = (audit.handlers[:], audit.level, audit.propagate)
    try:
        audit.handlers.clear()
        mine = logging.StreamHandler(io.StringIO())
        audit.addHandler(mine)
        print_audit_log(io.StringIO())
        assert audit.handlers == [mine]
        audit.handlers.clear()
        printed = io.StringIO()
        print_audit_log(printed)
        SessionEventLog()(SessionEvent(SessionEventKind.EVICTED, HANDLE, "ada", 1.0))
        assert printed.getvalue().endswith(
            f"sessionflow.audit evicted handle={HANDLE} user='ada'\n"
        )
    finally:
        audit.handlers[:], audit.level, audit.propagate = saved


async def test_the_admin_stats_count_events() -> None:
    token = "a-long-admin-token-for-tests"
    app = create_app(AsyncSessionStore(AsyncMemoryBackend()), admin_token=token)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as api:
        session_id = (await api.post("/v1/sessions", json={})).json()["id"]
        await api.post("/v1/sessions/delete", json={"id": session_id})
        stats = await api.get("/admin/stats", headers={"Authorization": f"Bearer {token}"})
    assert stats.json()["session_events"] == {
        "created": 1,
        "regenerated": 0,
        "deleted": 1,
        "revoked": 0,
        "evicted": 0,
    }
    assert stats.json()["event_listener_failures"] == 0


def test_audit_log_is_a_service_setting() -> None:
    assert not ServiceConfig().audit_log
    on = ServiceConfig.load(None, environ={"SESSIONFLOW_AUDIT_LOG": "true"})
    assert on.audit_log


def test_the_service_with_audit_log_prints_each_change_by_handle_never_id() -> None:
    port = free_port()
    printed: list[str] = []
    with running_service(port, output=printed, SESSIONFLOW_AUDIT_LOG="true") as url:
        created = httpx.post(f"{url}/v1/sessions", json={"user_id": "ada"}, timeout=10)
        first = created.json()["id"]
        moved = httpx.post(f"{url}/v1/sessions/regenerate", json={"id": first}, timeout=10)
        second = moved.json()["id"]
        httpx.post(f"{url}/v1/sessions/delete", json={"id": second}, timeout=10)
    (output,) = printed
    lines = re.findall(r"sessionflow\.audit (\w+) handle=([0-9a-f]{64}) user='ada'", output)
    assert [kind for kind, _ in lines] == ["created", "regenerated", "deleted"]
    assert lines[1][1] == lines[2][1] != lines[0][1]
    assert f"previous={lines[0][1]}" in output
    assert first not in output
    assert second not in output


@pytest.mark.parametrize("listener", ["audit", 42, [print]])
def test_a_listener_that_cannot_be_called_is_refused_at_once(listener: object) -> None:
    with pytest.raises(ConfigError, match="on_event must be a callable"):
        SessionStore(MemoryBackend(), on_event=listener)  # type: ignore[arg-type]


def test_the_audit_level_can_be_named() -> None:
    assert SessionEventLog(level="warning").level == logging.WARNING
    for bad in ("LOUD", True, 2.5):
        with pytest.raises(ConfigError, match="level"):
            SessionEventLog(level=bad)  # type: ignore[arg-type]
