"""``LabSettings``: every knob in one validated place, from kwargs, ``AILLM_*`` env or TOML.

A bad value fails here, at load time, with the field, the value, the allowed range and the
variable that sets it, instead of deep inside a run.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any, Literal

import annotated_types as at
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from aillm_lab.errors import ConfigError
from aillm_lab.tools.policy import SafetyPolicy

MODEL_SPEC = r"^[a-z][a-z0-9_.-]*:.+$"
_SECRET_FIELDS = {"openai_api_key", "anthropic_api_key"}
_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("toml", default=None)


class ModelPrice(BaseModel):
    """A user's price for one model, USD per million tokens; cache prices default to input."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, le=100_000)
    output: float = Field(ge=0, le=100_000)
    cache_read: float | None = Field(default=None, ge=0, le=100_000)
    cache_write: float | None = Field(default=None, ge=0, le=100_000)


class ModelLimits(BaseModel):
    """Per (provider, model) limits, retries and timeouts; the gateway applies them.

    ``None`` timeouts mean "no gateway timeout" (``total_timeout_s`` then falls back to
    ``LabSettings.request_timeout_s``); ``connect_timeout_s`` is passed on to providers.
    """

    model_config = ConfigDict(extra="forbid")

    concurrency: int = Field(default=4, ge=1, le=10_000)
    rpm: float | None = Field(default=None, gt=0, le=1_000_000)
    tpm: float | None = Field(default=None, gt=0, le=1_000_000_000)
    max_attempts: int = Field(default=4, ge=1, le=20, description="attempts per model")
    backoff_base_s: float = Field(default=0.5, ge=0, le=60)
    backoff_cap_s: float = Field(default=30.0, ge=0, le=600)
    retry_after_cap_s: float = Field(default=60.0, ge=0, le=3600,
                                     description="longest Retry-After the gateway waits")
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    total_timeout_s: float | None = Field(default=None, gt=0, le=86_400,
                                          description="one attempt, end to end")
    ttft_timeout_s: float | None = Field(default=None, gt=0, le=3600,
                                         description="stream: wait for the first event")
    adaptive: bool = Field(default=False, description="cut concurrency on 429 bursts")
    adaptive_grow_after: int = Field(default=20, ge=1, le=100_000,
                                     description="successes per +1 concurrency when adaptive")


class LabSettings(BaseSettings):
    """Workspace, default model, limits, budgets, logging and dashboard settings."""

    model_config = SettingsConfigDict(env_prefix="AILLM_", extra="forbid",
                                      populate_by_name=True, validate_default=True)

    home: Path = Field(default=Path("~/.aillm_lab"), description="workspace folder")
    models_dir: Path | None = Field(default=None, description="defaults to <home>/models")
    model: str | None = Field(default=None, pattern=MODEL_SPEC,
                              description="default model, e.g. 'local:smollm2'")
    fallbacks: list[str] = Field(default_factory=list)
    limits: dict[str, ModelLimits] = Field(default_factory=dict)
    budget_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    run_budget_usd: float | None = Field(default=None, ge=0, le=1_000_000)
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="USD per million tokens for 'provider:model', "
        "overriding the genai-prices table (fine-tunes, self-hosted endpoints)")
    cache_mode: Literal["off", "record", "replay", "replay_or_record"] = Field(
        default="off", description="the record/replay store in <home>/cache.db")
    memory_cache: bool = Field(default=False, description="answer identical requests from "
                               "an in-memory LRU (off by default: sampling should vary)")
    cache_max_entries: int = Field(default=1024, ge=1, le=10_000_000)
    cache_ttl_s: float = Field(default=3600.0, gt=0, le=31_536_000)
    request_timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    workspace: Path | None = Field(default=None, description="the folder tools may touch; "
                                   "defaults to <home>/workspace")
    safety: SafetyPolicy = Field(default_factory=SafetyPolicy,
                                 description="the Safety Guard's rules for every tool call")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "WARNING"
    dashboard_host: str = Field(default="localhost", min_length=1)
    dashboard_port: int = Field(default=5006, ge=1, le=65535)
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("openai_api_key", "AILLM_OPENAI_API_KEY",
                                                    "OPENAI_API_KEY"))
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("anthropic_api_key",
                                                    "AILLM_ANTHROPIC_API_KEY",
                                                    "ANTHROPIC_API_KEY"))
    ollama_host: str = Field(
        default="http://localhost:11434",
        validation_alias=AliasChoices("ollama_host", "AILLM_OLLAMA_HOST", "OLLAMA_HOST"))

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise config_error(exc, type(self)) from None

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> LabSettings:
        """Settings from ``overrides`` > ``AILLM_*`` env > TOML file > defaults.

        The TOML file is ``config_file``, else ``$AILLM_CONFIG``; a missing named file is an
        error rather than silently ignored.
        """
        path = config_file or os.environ.get("AILLM_CONFIG")
        if path is not None and not Path(path).expanduser().is_file():
            raise ConfigError(f"config_file = {str(path)!r}: no such TOML file. Create it or "
                              "unset AILLM_CONFIG.", fields=("config_file",))
        token = _toml_path.set(Path(path).expanduser() if path else None)
        try:
            return cls(**overrides)
        finally:
            _toml_path.reset(token)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = _toml_path.get()
        if path is None:
            return init_settings, env_settings
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, path)

    @field_validator("home", "models_dir", "workspace")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser()

    @field_validator("fallbacks")
    @classmethod
    def _specs(cls, value: list[str]) -> list[str]:
        import re

        bad = [v for v in value if not re.match(MODEL_SPEC, v)]
        if bad:
            raise ValueError(f"each fallback must look like 'provider:model', got {bad}")
        return value

    @property
    def model_path(self) -> Path:
        """Where local model files live."""
        return self.models_dir or self.home / "models"

    @property
    def workspace_path(self) -> Path:
        return self.workspace or self.home / "workspace"

    @property
    def db_path(self) -> Path:
        """``lab.db``: memory, documents, chunks, vectors and the audit log."""
        return self.home / "lab.db"

    def limits_for(self, spec: str) -> ModelLimits:
        return self.limits.get(spec) or ModelLimits()


def config_error(exc: ValidationError, model: type[BaseModel] = LabSettings) -> ConfigError:
    """Turn pydantic's error list into one readable message that never echoes a secret."""
    lines, fields = [], []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if loc:
            loc[0] = _field_name(model, loc[0])
        field = ".".join(loc) or "settings"
        fields.append(field)
        secret = bool(loc) and loc[0] in _SECRET_FIELDS
        value = "'***'" if secret else repr(err.get("input"))
        env = f"AILLM_{loc[0].upper()}" if loc else "AILLM_*"
        lines.append(f"{field} = {value}: {err['msg']}. Allowed: {_allowed(model, loc, err)}. "
                     f"Fix it in the call, in ${env}, or in the TOML file.")
    return ConfigError("Invalid settings:\n  " + "\n  ".join(lines), fields=tuple(fields))


def _field_name(model: type[BaseModel], name: str) -> str:
    """Map an alias (``OPENAI_API_KEY``) back to its field, so masking and hints apply."""
    for field_name, info in model.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        if name == field_name or name in choices:
            return field_name
    return name


def _allowed(model: type[BaseModel], loc: list[str], err: Any) -> str:
    field = model.model_fields.get(loc[0]) if loc else None
    if field is not None and loc[0] in ("limits", "prices") and len(loc) >= 3:
        inner = ModelLimits if loc[0] == "limits" else ModelPrice
        field = inner.model_fields.get(loc[2])
    elif field is not None and len(loc) >= 2:  # nested models such as safety.commands.x
        for part in loc[1:]:
            sub = field.annotation if isinstance(field.annotation, type) else None
            if sub is None or not issubclass(sub, BaseModel) or part not in sub.model_fields:
                break
            field = sub.model_fields[part]
    if field is None:
        return str(err.get("ctx") or "see the LabSettings docs")
    bounds = {type(m).__name__: m for m in field.metadata}
    low = bounds.get("Ge") or bounds.get("Gt")
    high = bounds.get("Le") or bounds.get("Lt")
    parts = []
    if low is not None:
        parts.append(f"{'>=' if isinstance(low, at.Ge) else '>'} {_bound(low)}")
    if high is not None:
        parts.append(f"{'<=' if isinstance(high, at.Le) else '<'} {_bound(high)}")
    if parts:
        return " and ".join(parts)
    if loc and loc[0] in ("model", "fallbacks"):
        return "'provider:model', e.g. 'local:smollm2' or 'openai:gpt-4o-mini'"
    return str(field.annotation).replace("typing.", "")


def _bound(constraint: Any) -> Any:
    for name in ("ge", "gt", "le", "lt"):
        if hasattr(constraint, name):
            return getattr(constraint, name)
    return constraint
