"""Settings of the hybrid tier in ADR-0010's YAML shape (``session_config``), validated.

session_config:
  hot_storage:
    ttl: 7200                   # seconds a session may stay hot without use (>= threshold)
    promotion_threshold: 1800   # demote after this long without use
    regions: [us-east-1, eu-west-1]
    redis_urls: {us-east-1: "redis://...", eu-west-1: "redis://..."}
    redis_prefix: sf
  cold_storage:
    ttl: 2592000                # 30 days
    compliance_retention: 7776000
    dynamodb_table: sessions
    dynamodb_endpoint: null     # AWS; or a DynamoDB Local URL
    dynamodb_region: us-east-1
  sync:
    batch_size: 100
    sync_interval: 300
    cross_region_delay: 30
    durability: write-back      # or write-through
    active_window: 300
    background_promotions: false  # true: answer cold reads before promoting them
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionflow._dynamodb_layout import check_region, check_table_name
from sessionflow._errors import ConfigError
from sessionflow._policy import check_seconds, whole_number
from sessionflow._redis_layout import check_prefix
from sessionflow._scan import MAX_PAGE
from sessionflow._service_config import read_settings_file
from sessionflow._tier import Durability, parse_durability
from sessionflow._urls import check_endpoint_url, check_redis_url

_SECTIONS = {
    "hot_storage": {"ttl", "promotion_threshold", "regions", "redis_urls", "redis_prefix"},
    "cold_storage": {
        "ttl",
        "compliance_retention",
        "analytics_retention",
        "dynamodb_table",
        "dynamodb_endpoint",
        "dynamodb_region",
    },
    "sync": {
        "batch_size",
        "sync_interval",
        "cross_region_delay",
        "durability",
        "active_window",
        "background_promotions",
    },
}


@dataclass(frozen=True)
class TierConfig:
    """The hybrid tier's settings (see the module docstring for the file shape)."""

    hot_ttl: float = 7200.0
    promotion_threshold: float = 1800.0
    regions: tuple[str, ...] = ("local",)
    redis_urls: dict[str, str] = field(
        default_factory=lambda: {"local": "redis://127.0.0.1:6379/0"}
    )
    redis_prefix: str = "sf"
    cold_ttl: float = 30 * 86400.0
    compliance_retention: float = 90 * 86400.0
    analytics_retention: float = 365 * 86400.0
    dynamodb_table: str = "sessions"
    dynamodb_endpoint: str | None = None
    dynamodb_region: str = "us-east-1"
    batch_size: int = 100
    sync_interval: float = 300.0
    cross_region_delay: float = 30.0
    durability: Durability = Durability.WRITE_BACK
    active_window: float = 300.0
    background_promotions: bool = False

    def __post_init__(self) -> None:
        check_prefix(self.redis_prefix)
        check_table_name(self.dynamodb_table)
        check_region("cold_storage.dynamodb_region", self.dynamodb_region)
        for name in (
            "hot_ttl",
            "promotion_threshold",
            "cold_ttl",
            "sync_interval",
            "active_window",
        ):
            check_seconds(_PATHS[name], getattr(self, name))
        for name in ("compliance_retention", "analytics_retention", "cross_region_delay"):
            check_seconds(_PATHS.get(name, name), getattr(self, name), zero_ok=True)
        if not 1 <= self.batch_size <= MAX_PAGE:
            raise ConfigError(
                f"sync.batch_size must be from 1 to {MAX_PAGE:,}, not {self.batch_size:,}"
            )
        if self.hot_ttl < self.promotion_threshold:
            raise ConfigError(
                "hot_storage.ttl must be at least hot_storage.promotion_threshold "
                "(a session must be able to stay hot until it is demoted)"
            )
        if self.cold_ttl < self.hot_ttl:
            raise ConfigError("cold_storage.ttl must be at least hot_storage.ttl")
        if self.compliance_retention < self.cold_ttl:
            raise ConfigError("cold_storage.compliance_retention must be at least cold_storage.ttl")
        if not self.regions or len(set(self.regions)) != len(self.regions):
            raise ConfigError("hot_storage.regions must list at least one region, each once")
        missing = [region for region in self.regions if region not in self.redis_urls]
        if missing:
            raise ConfigError(
                f"hot_storage.redis_urls has no URL for region(s) {', '.join(missing)}"
            )
        unknown = sorted(set(self.redis_urls) - set(self.regions))
        if unknown:
            raise ConfigError(
                f"hot_storage.redis_urls names unknown region(s) {', '.join(unknown)}"
            )
        self._check_urls()

    def _check_urls(self) -> None:
        for region, url in self.redis_urls.items():
            check_redis_url(f"hot_storage.redis_urls.{region}", url)
        if self.dynamodb_endpoint is not None:
            check_endpoint_url("cold_storage.dynamodb_endpoint", self.dynamodb_endpoint)

    def region_name(self, region: str | None = None) -> str:
        """Return `region` if configured (the first region if None); `ConfigError` if not."""
        chosen = region or self.regions[0]
        if chosen not in self.redis_urls:
            raise ConfigError(f"no region {chosen!r}; the regions are {', '.join(self.regions)}")
        return chosen

    def redis_url(self, region: str | None = None) -> str:
        """Return the hot Redis of `region` (the first region if None)."""
        return self.redis_urls[self.region_name(region)]

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "settings") -> TierConfig:  # noqa: ANN401
        """Build from a ``session_config`` mapping; unknown keys and wrong types are refused."""
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: session_config must be a table")
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for section, keys in _SECTIONS.items():
            table = data.get(section, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{source}: session_config.{section} must be a table")
            extra = sorted(set(table) - keys)
            if extra:
                raise ConfigError(
                    f"{source}: unknown setting(s) in session_config.{section}: {', '.join(extra)}"
                )
            for key, raw in table.items():
                name = _NAMES.get((section, str(key)), str(key))
                values[name] = _coerce(name, raw, source)
        return cls(**values)

    @classmethod
    def load_if_present(cls, path: Path | None) -> TierConfig | None:
        """Read the ``session_config`` table if the file has one (the service's file may)."""
        if path is None or "session_config" not in read_settings_file(path, section=""):
            return None
        return cls.load(path)

    @classmethod
    def load(cls, path: Path) -> TierConfig:
        """Read the ``session_config`` table of a YAML or TOML file."""
        return cls.from_mapping(
            read_settings_file(path, section="session_config"), source=str(path)
        )


_NAMES: dict[tuple[str, str], str] = {
    ("hot_storage", "ttl"): "hot_ttl",
    ("cold_storage", "ttl"): "cold_ttl",
}
_PATHS = {
    _NAMES.get((section, key), key): f"{section}.{key}"
    for section, keys in _SECTIONS.items()
    for key in keys
}


def _coerce(name: str, raw: Any, source: str) -> Any:  # noqa: ANN401
    where = f"{source}: {_PATHS.get(name, name)}"
    if name == "durability":
        return parse_durability(str(raw))
    if name == "background_promotions":
        if not isinstance(raw, bool):
            raise ConfigError(f"{where} must be true or false, not {raw!r}")
        return raw
    if name == "regions":
        if not isinstance(raw, list) or not all(isinstance(r, str) and r for r in raw):
            raise ConfigError(f"{where} must be a list of region names")
        return tuple(raw)
    if name == "redis_urls":
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise ConfigError(f"{where} must map region names to Redis URLs")
        return dict(raw)
    if name in ("redis_prefix", "dynamodb_table", "dynamodb_region", "dynamodb_endpoint"):
        return _text(name, raw, where)
    return _number(name, raw, where)


def _text(name: str, raw: Any, where: str) -> str | None:  # noqa: ANN401
    if raw is None and name == "dynamodb_endpoint":
        return None
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{where} must be a non-empty string")
    return raw


def _number(name: str, raw: Any, where: str) -> float | int:  # noqa: ANN401
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{where} must be a number, not {raw!r}")
    if name == "batch_size":
        whole = whole_number(raw)
        if whole is None:
            raise ConfigError(f"{where} must be a whole number, not {raw!r}")
        return whole
    return float(raw)
