"""The service on the hybrid tier: Redis hot, DynamoDB Local cold, the tier's admin routes."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from sessionflow import ConfigError
from sessionflow._migration_config import MigrationConfig
from sessionflow._service_config import ServiceConfig
from sessionflow._tier_config import TierConfig
from sessionflow.service import build_app
from tests.conftest import Servers, tier_settings

TOKEN = "a-long-admin-token-for-tests"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def settings_file(tmp_path: Path, servers: Servers, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local")
    path = tmp_path / "service.yaml"
    path.write_text(
        yaml.safe_dump(tier_settings(servers, durability="write-back", admin_token=TOKEN))
    )
    return path


async def test_the_service_serves_through_the_tier_and_reports_it(settings_file: Path) -> None:
    tier = TierConfig.load_if_present(settings_file)
    assert tier is not None
    app = build_app(ServiceConfig.load(settings_file, environ={}), tier=tier)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as client,
    ):
        assert (await client.get("/admin/tier")).status_code == 401
        created = await client.post("/v1/sessions", json={"attributes": {"cart": ["a"]}})
        assert created.status_code == 201
        read = await client.post("/v1/sessions/read", json={"id": created.json()["id"]})
        assert read.json()["attributes"] == {"cart": ["a"]}

        status = (await client.get("/admin/tier", headers=ADMIN)).json()
        assert (status["region"], status["durability"]) == ("eu-west-1", "write-back")
        assert (status["hot_sessions"], status["dirty_sessions"]) == (1, 1)
        assert status["counters"]["hot_hits"] >= 1
        assert status["hot_tier_down"] is False

        flushed = await client.post("/admin/tier/flush", headers=ADMIN, json={})
        assert flushed.json()["flushed"] == 1
        swept = await client.post("/admin/tier/sweep", headers=ADMIN, json={"batch_size": 10})
        assert swept.json()["demoted"] == 0  # just used: not idle
        counted = await client.get("/admin/tier?lifecycle=true", headers=ADMIN)
        assert counted.json()["lifecycle"]["hot"] == 1  # read, not touched yet

        bad = await client.post("/admin/tier/sweep", headers=ADMIN, json={"batch_size": 0})
        assert bad.status_code == 422
        assert "batch_size" in bad.json()["detail"]
        metrics = (await client.get("/metrics")).text
        assert "sessionflow_tier_flushed_total 1.0" in metrics
        assert (await client.get("/readyz")).status_code == 200


def test_the_tier_settings_are_found_beside_the_service_settings(
    settings_file: Path, tmp_path: Path
) -> None:
    assert ServiceConfig.load(settings_file, environ={}).backend == "memory"
    tier = TierConfig.load_if_present(settings_file)
    assert tier is not None
    assert tier.region_name() == "eu-west-1"
    with pytest.raises(ConfigError, match="no region 'us-east-1'"):
        build_app(ServiceConfig.load(settings_file, environ={}), tier=tier, region="us-east-1")
    plain = tmp_path / "plain.toml"
    plain.write_text('backend = "memory"\n')
    assert TierConfig.load_if_present(plain) is None
    assert TierConfig.load_if_present(None) is None
    both = MigrationConfig.from_mapping(
        {"old": {"backend": "memory"}, "new": {"backend": "redis"}}, source="test"
    )
    with pytest.raises(ConfigError, match="not both"):
        build_app(ServiceConfig.load(settings_file, environ={}), both, tier=tier)
