"""One typed source of truth for Lamina's settings.

Precedence, highest first: command-line flags (passed as keyword arguments), ``LAMINA_*``
environment variables (nested with ``__``, e.g. ``LAMINA_SERVER__PORT``), the workspace's
``lamina.yaml``, then the defaults below. Invalid values fail at load time with one line that
names the setting, where the bad value came from and what is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from lamina.core.errors import ConfigError

YAML_NAME = "lamina.yaml"
ENV_PREFIX = "LAMINA_"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["human", "json"]


class ServerSettings(BaseModel):
    """Where ``lamina serve`` listens and the key that administers it."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    grpc_port: int | None = Field(None, ge=1, le=65535)  # the gRPC generation service (off unless set)
    admin_key: SecretStr | None = None
    max_body_bytes: int = Field(1_000_000, ge=1024)  # larger requests get 413 before being read
    request_timeout_s: float = Field(120.0, gt=0)  # a generation running longer is cancelled (504)
    max_batch: int = Field(32, ge=1)  # sequences decoded together per model
    max_waiting: int = Field(256, ge=1)  # queued requests per model; beyond it 429 + Retry-After
    # seconds a request may wait for a place in the batch before it gets 429 + Retry-After: under
    # overload, load is shed instead of queued, and admitted requests start fast
    max_queue_wait: float = Field(0.5, gt=0)
    public_docs: bool = False  # serve /docs and /openapi.json without a key
    console_session_hours: float = Field(12.0, gt=0, le=24 * 30)  # a console sign-in lasts this long
    audit_text: bool = False  # store request and response text in the audit log
    # None: chosen for this machine by lamina.core.machine (half the cores; compile where AVX2 or better)
    threads: int | None = Field(None, ge=1)  # torch threads for inference
    compile: bool | None = None  # torch.compile the lone-stream step and batched attention (seconds at load)
    engine_process: bool = True  # run each text model's engine in its own process (no shared GIL)
    tool_http_allow: list[str] = Field(default_factory=list)  # hosts the http_get tool may reach
    # A/B tests: a share of a model's requests served by another version (lamina.serving.experiments)
    experiments: list[dict[str, Any]] = Field(default_factory=list)

    def require_secure_bind(self) -> None:
        """Refuse to expose the server beyond this machine without an admin key."""
        if self.host not in LOCAL_HOSTS and self.admin_key is None:
            raise ConfigError(
                f"refusing to bind to {self.host}:{self.port} without an admin key",
                hint="set LAMINA_SERVER__ADMIN_KEY, or bind to 127.0.0.1",
            )


# The YAML file lives inside the workspace, so its content is only known at load time. pydantic-
# settings builds sources in a classmethod, so the parsed file reaches it through this variable.
class SecuritySettings(BaseModel):
    """Encryption of stored text and how long it is kept."""

    model_config = ConfigDict(extra="forbid")
    # Fernet keys (``lamina audit new-key``); the first encrypts, every one decrypts, so a new key
    # goes first and ``lamina audit rotate`` re-encrypts stored rows under it.
    encryption_keys: list[SecretStr] = Field(default_factory=list)
    audit_retention_days: float | None = Field(None, gt=0)  # rows older are purged (lamina audit purge)
    redact_audit_pii: bool = True  # stored request/response text has PII redacted first
    redact_log_pii: bool = True  # the server's log lines have PII redacted


class MonitoringSettings(BaseModel):
    """What the monitoring layer watches for (``lamina.monitoring``)."""

    model_config = ConfigDict(extra="forbid")
    # answers whose mean token probability is below this enter the review queue (off when unset;
    # a model's usual level is in `lamina monitor report`)
    review_below_confidence: float | None = Field(None, gt=0, lt=1)
    # alert rules on the KPIs (lamina.monitoring.alerts; evaluated by `lamina monitor check`)
    alerts: list[dict[str, Any]] = Field(default_factory=list)
    # the closed loop's background rounds, one entry per model, with their triggers
    # (lamina.monitoring.worker; run by `lamina loop worker`)
    loop: list[dict[str, Any]] = Field(default_factory=list)


class EnergySettings(BaseModel):
    """How energy is estimated where no RAPL counter is readable (``lamina.core.energy``)."""

    model_config = ConfigDict(extra="forbid")
    watts_per_core: float = Field(10.0, gt=0)  # a busy core's share of package power
    grid_g_per_kwh: float = Field(475.0, ge=0)  # grams of CO2 per kWh of the grid (IEA world average)
    rapl: bool = True  # read the CPU's RAPL counter when it is readable


_yaml_data: ContextVar[dict[str, Any] | None] = ContextVar("lamina_yaml_data", default=None)


class Settings(BaseSettings):
    """Resolved settings of one workspace. Build it with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    workspace: Path = Field(description="The workspace folder (holds lamina.yaml).")
    catalog_url: str | None = Field(
        None, description="SQLAlchemy URL of the catalog. Default: sqlite:///<workspace>/lamina.db"
    )
    artifact_url: str | None = Field(
        None, description="fsspec URL of the artifact store. Default: <workspace>/artifacts"
    )
    artifact_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for the artifact store, e.g. {endpoint_url: ...} for S3.",
    )
    vector_url: str | None = Field(
        None,
        description="PostgreSQL URL (with pgvector) for new RAG collections. Default: LanceDB in "
        "<workspace>/vectors",
    )
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI. Default: sqlite:///<workspace>/mlflow.db"
    )
    log_level: LogLevel = "WARNING"
    log_format: LogFormat = "human"
    server: ServerSettings = Field(default_factory=ServerSettings)
    # Recipes by dataset name. Core keeps them as plain mappings; lamina.data validates each one
    # (core must not import the layers above it).
    datasets: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Training recipes by model name (validated by lamina.training).
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # The guardrails policy (validated, and its rails built, by lamina.guardrails at server start).
    rails: dict[str, Any] = Field(default_factory=dict)
    security: SecuritySettings = Field(default_factory=lambda: SecuritySettings())
    monitoring: MonitoringSettings = Field(default_factory=lambda: MonitoringSettings())
    energy: EnergySettings = Field(default_factory=lambda: EnergySettings())

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = InitSettingsSource(settings_cls, init_kwargs=_yaml_data.get() or {})
        return (init_settings, env_settings, yaml_source)

    # -- derived values -------------------------------------------------------------------------

    @property
    def resolved_catalog_url(self) -> str:
        if self.catalog_url is None:
            return f"sqlite:///{self.workspace / 'lamina.db'}"
        return _resolve_sqlite_relative(self.catalog_url, self.workspace)

    @property
    def resolved_artifact_url(self) -> str:
        url = self.artifact_url or "artifacts"
        if "://" in url:
            return url
        path = Path(url).expanduser()
        return str(path if path.is_absolute() else self.workspace / path)

    @property
    def uses_default_catalog(self) -> bool:
        return self.catalog_url is None

    def redacted(self) -> dict[str, Any]:
        """Settings as plain data with secrets and passwords hidden (for display and logs)."""
        data = self.model_dump(mode="json")
        data["catalog_url"] = redact_url(self.resolved_catalog_url)
        data["artifact_url"] = self.resolved_artifact_url
        data["artifact_options"] = {
            k: ("**********" if _looks_secret(k) else v) for k, v in self.artifact_options.items()
        }
        return data


def validation_summary(exc: ValidationError, prefix: str = "") -> str:
    """A pydantic ValidationError as one line: ``prefix.field: message; …`` (for ConfigError messages)."""
    return "; ".join(f"{prefix}{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())


def _looks_secret(key: str) -> bool:
    return any(word in key.lower() for word in ("secret", "password", "token", "key"))


def _resolve_sqlite_relative(url: str, workspace: Path) -> str:
    """``sqlite:///name.db`` in lamina.yaml means a file inside the workspace, not the CWD."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(workspace / url[len(prefix) :])
    return url


def redact_url(url: str) -> str:
    """Hide the password in a database URL."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse lamina.yaml, turning syntax errors into one line with the position."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{path}: invalid YAML{where}: {problem}",
            hint="fix the syntax (see the comments in a fresh 'lamina init' file)",
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}",
            hint="write 'key: value' lines, e.g. 'log_level: INFO'",
        )
    return data


def load_settings(workspace: Path, flags: Mapping[str, Any] | None = None) -> Settings:
    """Resolve the settings of ``workspace`` (flags > LAMINA_* env > lamina.yaml > defaults)."""
    workspace = Path(workspace).expanduser().resolve()
    yaml_path = workspace / YAML_NAME
    file_data = read_yaml(yaml_path) if yaml_path.is_file() else {}
    if "workspace" in file_data:
        raise ConfigError(
            f"{yaml_path}: 'workspace' cannot be set inside the workspace's own lamina.yaml",
            hint="remove the key; use --workspace or LAMINA_HOME to choose a workspace",
        )
    flag_data = {k: v for k, v in (flags or {}).items() if v is not None}
    token = _yaml_data.set(file_data)
    try:
        return Settings(workspace=workspace, **flag_data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, flag_data, file_data, yaml_path)) from None
    finally:
        _yaml_data.reset(token)


def _describe(
    exc: ValidationError, flags: Mapping[str, Any], file_data: Mapping[str, Any], yaml_path: Path
) -> str:
    """One line per problem: the setting, where its value came from, and what is allowed."""
    lines = []
    for err in exc.errors():
        loc = [str(part) for part in err["loc"]]
        dotted = ".".join(loc)
        env_name = ENV_PREFIX + "__".join(loc).upper()
        if _lookup(flags, loc) is not _MISSING:
            origin = f"flag --{loc[-1].replace('_', '-')}"
        elif any(k.upper() == env_name for k in os.environ):
            origin = f"environment variable {env_name}"
        elif _lookup(file_data, loc) is not _MISSING:
            origin = f"{yaml_path}"
        else:
            origin = "settings"
        if err["type"] == "extra_forbidden":
            allowed = ", ".join(_allowed_keys(loc[:-1]))
            lines.append(f"unknown setting '{dotted}' in {origin} (allowed: {allowed})")
            continue
        value = err.get("input")
        shown = "**********" if _looks_secret(dotted) else repr(value)
        lines.append(f"invalid setting '{dotted}' = {shown} from {origin}: {err['msg']}")
    return "; ".join(lines)


_MISSING = object()


def _lookup(data: Mapping[str, Any], loc: list[str]) -> Any:
    cur: Any = data
    for part in loc:
        if not isinstance(cur, Mapping) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _allowed_keys(parent: list[str]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in parent:
        annotation = model.model_fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return [name for name in model.model_fields if name != "workspace"]
