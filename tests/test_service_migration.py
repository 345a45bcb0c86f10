"""The service as one process of a migrating fleet: Redis to DynamoDB Local, admin routes."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from sessionflow._migration_config import MigrationConfig
from sessionflow._service_config import ServiceConfig
from sessionflow.service import build_app
from tests.conftest import Servers, redis_to_dynamodb_settings

TOKEN = "a-long-admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings_file(tmp_path: Path, servers: Servers) -> Path:
    name = uuid.uuid4().hex[:10]
    path = tmp_path / "service.toml"
    path.write_text(
        f'[sessionflow]\nbackend = "memory"\nadmin_token = "{TOKEN}"\n'
        + redis_to_dynamodb_settings(servers, name, stage_ttl=0, compare_sample=1.0)
    )
    return path


async def test_the_service_serves_through_the_migration_and_changes_its_stage(
    settings_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    migration = MigrationConfig.load_if_present(settings_file)
    assert migration is not None
    app = build_app(ServiceConfig.load(settings_file, environ={}), migration)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        assert (await client.get("/admin/migration")).status_code == 401
        status = (await client.get("/admin/migration", headers=ADMIN)).json()
        assert (status["stage"], status["revision"]) == ("off", 0)

        created = await client.post("/v1/sessions", json={"attributes": {"cart": ["a"]}})
        assert created.status_code == 201
        moved = await client.post("/admin/migration/advance", headers=ADMIN, json={})
        assert moved.json() == {"stage": "dualwrite", "revision": 1}
        # A request makes the process read the stage again and report it (heartbeat).
        session_id = created.json()["id"]
        read = await client.post("/v1/sessions/read", json={"id": session_id})
        assert read.json()["attributes"] == {"cart": ["a"]}
        status = (await client.get("/admin/migration", headers=ADMIN)).json()
        assert [p["stage"] for p in status["processes"]] == ["dualwrite"]

        moved = await client.post("/admin/migration/advance", headers=ADMIN, json={"note": "t"})
        assert moved.json()["stage"] == "shadow"
        await client.get("/readyz")
        refused = await client.post("/admin/migration/advance", headers=ADMIN, json={})
        assert refused.status_code == 409
        assert refused.json()["error"] == "migration_refused"
        assert "backfill" in refused.json()["detail"]

        back = await client.post("/admin/migration/rollback", headers=ADMIN, json={})
        assert back.status_code == 200
        body = back.json()
        assert (body["stage"], body["validated"]) == ("dualwrite", True)
        assert [step["step"] for step in body["validation"]][:2] == ["create", "read"]

        metrics = (await client.get("/metrics")).text
        assert 'sessionflow_migration_stage{stage="dualwrite"} 1.0' in metrics
        bad = await client.post("/admin/migration/advance", headers=ADMIN, json={"force": "x"})
        assert bad.status_code == 422


def test_a_settings_file_without_a_migration_table_serves_one_store(tmp_path: Path) -> None:
    plain = tmp_path / "service.toml"
    plain.write_text('backend = "memory"\n')
    assert MigrationConfig.load_if_present(plain) is None
    assert MigrationConfig.load_if_present(None) is None
    top_level = tmp_path / "both.yaml"
    top_level.write_text(
        "backend: memory\nmigration:\n  old: {backend: memory}\n  new: {backend: redis}\n"
        "  control_url: redis://127.0.0.1:1/0\n"
    )
    assert ServiceConfig.load(top_level, environ={}).backend == "memory"
    loaded = MigrationConfig.load_if_present(top_level)
    assert loaded is not None
    assert loaded.old.backend == "memory"
