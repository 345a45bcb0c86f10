"""Settings of ``sessionflow migrate`` and ``drill``: the two stores and the control plane.

A TOML or YAML file with a ``[migration]`` table and ``[migration.old]`` /
``[migration.new]`` tables naming each store the way the service's settings do::

    [migration]
    name = "sessions"
    control_url = "redis://10.0.0.5:6379/0"   # default: the Redis among the two stores

    [migration.old]
    backend = "redis"
    redis_url = "redis://10.0.0.5:6379/0"

    [migration.new]
    backend = "dynamodb"
    dynamodb_table = "sessions"

``data = "conversations"`` moves conversation lists (docs/conversations.md) instead of
sessions, with the same stores' settings and every ``migrate`` command.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from sessionflow._dynamodb_layout import check_region, check_table_name
from sessionflow._errors import ConfigError
from sessionflow._policy import check_fraction, check_seconds
from sessionflow._redis_layout import check_prefix
from sessionflow._service_config import coerce_setting, read_settings_file
from sessionflow._urls import check_redis_url, check_store_urls

StoreKind = Literal["redis", "redis-cluster", "dynamodb", "memory"]
DataKind = Literal["sessions", "conversations"]


@dataclass(frozen=True)
class StoreConfig:
    """One of the two stores of a migration."""

    backend: StoreKind
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "sf"
    redis_auto_pipeline: bool = False
    dynamodb_endpoint: str | None = None
    dynamodb_table: str = "sessions"
    dynamodb_region: str = "us-east-1"

    def __post_init__(self) -> None:
        if self.backend not in get_args(StoreKind):
            raise ConfigError(
                f"backend must be one of {', '.join(get_args(StoreKind))}, not {self.backend!r}"
            )
        check_store_urls(self.backend, self.redis_url, self.dynamodb_endpoint)
        check_prefix(self.redis_prefix)
        check_table_name(self.dynamodb_table)
        check_region("dynamodb_region", self.dynamodb_region)

    def describe(self) -> str:
        """Name the store without credentials (for status output)."""
        if self.backend == "dynamodb":
            where = self.dynamodb_endpoint or f"AWS {self.dynamodb_region}"
            return f"dynamodb table {self.dynamodb_table} at {where}"
        if self.backend == "memory":
            return "memory"
        host = self.redis_url.rsplit("@", 1)[-1]
        return f"{self.backend} {host} prefix {self.redis_prefix}"


@dataclass(frozen=True)
class MigrationConfig:
    """The stores, the control plane and the knobs of one migration."""

    old: StoreConfig
    new: StoreConfig
    name: str = "sessions"
    data: DataKind = "sessions"
    """What the stores hold: sessions, or conversation lists."""
    control_url: str | None = None
    stage_ttl: float = 5.0
    compare_sample: float = 0.01
    heartbeat_max_age: float = 15.0
    verify_threshold: float = 0.0001

    def __post_init__(self) -> None:
        if self.data not in get_args(DataKind):
            raise ConfigError(
                f"migration.data must be one of {', '.join(get_args(DataKind))}, not {self.data!r}"
            )
        if self.control_url:
            check_redis_url("migration.control_url", self.control_url)
        if self.old == self.new:
            raise ConfigError("migration.old and migration.new name the same store")
        if self.control_redis_url() is None:
            raise ConfigError(
                "migration.control_url is needed: neither store is a Redis to keep "
                "the control record in"
            )
        check_fraction("migration.compare_sample", self.compare_sample)
        check_fraction("migration.verify_threshold", self.verify_threshold)
        check_seconds("migration.stage_ttl", self.stage_ttl, zero_ok=True)
        check_seconds("migration.heartbeat_max_age", self.heartbeat_max_age)
        if self.heartbeat_max_age <= self.stage_ttl:
            raise ConfigError("migration.heartbeat_max_age must exceed stage_ttl (>= 0)")

    def control_redis_url(self) -> str | None:
        """Return the URL of the Redis holding the control record (`control_url` or a store)."""
        if self.control_url:
            return self.control_url
        for store in (self.old, self.new):
            if store.backend == "redis":
                return store.redis_url
        return None

    @classmethod
    def from_mapping(cls, data: dict[str, Any], *, source: str = "settings") -> MigrationConfig:
        """Build from the ``migration`` table; unknown keys and wrong types are `ConfigError`."""
        values: dict[str, Any] = {}
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown migration setting(s) {', '.join(unknown)}")
        for side in ("old", "new"):
            table = data.get(side)
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: [migration.{side}] is missing")
            values[side] = _store(table, f"{source} [migration.{side}]")
        for name, raw in data.items():
            if name not in ("old", "new"):
                values[name] = coerce_setting(name, known[name].type, raw, source)
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> MigrationConfig:
        """Read the ``[migration]`` table of a TOML or YAML file."""
        data = read_settings_file(path, section="migration")
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def load_if_present(cls, path: Path | None) -> MigrationConfig | None:
        """Read the ``[migration]`` table if the file has one (the service's file may)."""
        if path is None or "migration" not in read_settings_file(path, section=""):
            return None
        return cls.load(path)


def _store(table: dict[str, Any], source: str) -> StoreConfig:
    known = {f.name: f for f in fields(StoreConfig)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
    if "backend" not in table:
        raise ConfigError(f"{source}: backend is required")
    values = {
        name: coerce_setting(name, known[name].type, raw, source) for name, raw in table.items()
    }
    return StoreConfig(**values)
