"""The session service's settings: from a TOML or YAML file, overridden by environment."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from sessionflow._body_limit import DEFAULT_MAX_BODY_BYTES
from sessionflow._dynamodb_layout import check_region, check_table_name
from sessionflow._errors import ConfigError, one_line
from sessionflow._policy import SessionPolicy, check_seconds, whole_number
from sessionflow._redis_layout import check_prefix
from sessionflow._urls import check_store_urls, redact

BackendKind = Literal["local", "memory", "redis", "redis-cluster", "dynamodb"]
ENV_PREFIX = "SESSIONFLOW_"
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class ServiceConfig:
    """Settings of `sessionflow serve`.

    ``backend = "local"`` (the default) starts a Redis server on loopback for the service's
    lifetime: no set-up at all. Admin routes exist only when `admin_token` is set.
    """

    backend: BackendKind = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "sf"
    redis_auto_pipeline: bool = True
    dynamodb_endpoint: str | None = None
    dynamodb_table: str = "sessions"
    dynamodb_region: str = "us-east-1"
    idle_timeout: float = 30 * 60
    absolute_timeout: float = 12 * 60 * 60
    touch_interval: float = 60
    max_sessions_per_user: int | None = None
    admin_token: str | None = None
    store_timeout: float = 5.0
    """Seconds a request waits on a store that stopped answering before it gets a 503."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """Request bodies over this many bytes get a 413 before they are read."""
    audit_log: bool = False
    """Log every session created, regenerated, deleted, revoked or evicted (by handle,
    never id) to the ``sessionflow.audit`` logger; `sessionflow serve` prints it."""

    def __post_init__(self) -> None:
        if self.backend not in get_args(BackendKind):
            raise ConfigError(
                f"backend must be one of {', '.join(get_args(BackendKind))}, not {self.backend!r}"
            )
        check_seconds("store_timeout", self.store_timeout)
        if self.max_body_bytes < 1:
            raise ConfigError("max_body_bytes must be at least 1")
        check_admin_token(self.admin_token)
        check_store_urls(self.backend, self.redis_url, self.dynamodb_endpoint)
        check_prefix(self.redis_prefix)
        check_table_name(self.dynamodb_table)
        check_region("dynamodb_region", self.dynamodb_region)
        self.policy()  # validates the timeouts

    def policy(self) -> SessionPolicy:
        """Return the store policy these settings describe."""
        return SessionPolicy(
            idle_timeout=self.idle_timeout,
            absolute_timeout=self.absolute_timeout,
            touch_interval=self.touch_interval,
            max_sessions_per_user=self.max_sessions_per_user,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "settings") -> ServiceConfig:
        """Build settings from a mapping; unknown keys and wrong types are `ConfigError`."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(f"{source}: unknown setting(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, raw in data.items():
            values[name] = coerce_setting(name, known[name].type, raw, source)
        return cls(**values)

    @classmethod
    def load(
        cls, path: Path | None = None, environ: Mapping[str, str] | None = None
    ) -> ServiceConfig:
        """Read `path` (TOML or YAML) if given, then the ``SESSIONFLOW_*`` variables."""
        data: dict[str, Any] = {}
        if path is not None:
            data.update(read_settings_file(path))
            data.pop("migration", None)  # a [migration] table beside the settings: see serve
            data.pop("session_config", None)  # the hybrid tier's settings: see serve
        environ = os.environ if environ is None else environ
        names = {f.name for f in fields(cls)}
        for key, value in environ.items():
            if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in names:
                data[key[len(ENV_PREFIX) :].lower()] = value
        return cls.from_mapping(data, source=str(path) if path else "environment")

    def redacted(self) -> dict[str, Any]:
        """Return the settings with the admin token and URL passwords hidden, for logs."""
        shown = dataclasses.asdict(self)
        shown["redis_url"] = redact(self.redis_url)
        if shown["admin_token"]:
            shown["admin_token"] = "***"  # noqa: S105 - a mask, not a password
        return shown


def read_settings_file(path: Path, section: str = "sessionflow") -> dict[str, Any]:
    """Return the `section` table of a TOML or YAML file (the whole file for the service).

    The service reads ``[sessionflow]`` or the top level; other tools name their table;
    ``section=""`` returns the whole file.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    loaded = _parse_settings(path, text)
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a table of settings at the top level")
    if not section:
        return loaded
    table = loaded.get(section, loaded if section == "sessionflow" else None)
    if table is None:
        raise ConfigError(f"{path}: no [{section}] table")
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [{section}] must be a table")
    return table


def check_admin_token(token: str | None) -> None:
    """Refuse an admin token a client could not send whole, or guess.

    A bearer token travels in one header: leading and trailing spaces are stripped on the
    way and control characters are refused, so a token with them could never match.
    """
    if token is None:
        return
    if len(token) < 16:  # noqa: PLR2004
        raise ConfigError("admin_token must be at least 16 characters")
    if not all(33 <= ord(c) <= 126 for c in token):  # noqa: PLR2004 - visible ASCII
        raise ConfigError("admin_token must be visible ASCII characters, without spaces")


def coerce_setting(name: str, annotation: Any, raw: Any, source: str) -> Any:  # noqa: ANN401
    """Return `raw` as the type `annotation` names; `ConfigError` naming `source` if it is not."""
    text = str(annotation)
    if raw is None or (isinstance(raw, str) and raw == "" and "None" in text):
        if "None" in text:
            return None
        raise ConfigError(f"{source}: {name} must not be empty")
    if text.startswith("bool"):
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _BOOLEANS:
            return _BOOLEANS[raw.lower()]
        raise ConfigError(f"{source}: {name} must be true or false, not {raw!r}")
    if text.startswith(("int", "float")):
        return _coerce_number(f"{source}: {name}", raw, whole=text.startswith("int"))
    if not isinstance(raw, str):
        raise ConfigError(f"{source}: {name} must be a string, not {raw!r}")
    return raw


def _coerce_number(where: str, raw: Any, *, whole: bool) -> float | int:  # noqa: ANN401
    if whole:
        number = whole_number(raw)
        if number is None:
            raise ConfigError(f"{where} must be a whole number, not {raw!r}")
        return number
    if isinstance(raw, bool):
        raise ConfigError(f"{where} must be a number, not {raw!r}")
    try:
        return float(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where} must be a number, not {raw!r}") from exc


def _parse_settings(path: Path, text: str) -> Any:  # noqa: ANN401 - whatever the file holds
    """Parse `text` as the TOML or YAML its file name says."""
    if path.suffix == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if path.suffix in (".yaml", ".yml"):
        import yaml  # noqa: PLC0415 - only YAML files need it

        try:
            return yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from exc
    raise ConfigError(f"{path}: use a .toml, .yaml or .yml file")


def _yaml_problem(error: Exception) -> str:
    """PyYAML's error in one line: what is wrong and where (its own text spans lines)."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem is None:
        return one_line(str(error))
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"
