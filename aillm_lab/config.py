"""``LabSettings``: every knob in one validated place, from kwargs, ``AILLM_*`` env or TOML.

A bad value fails here, at load time, with the field, the value, the allowed range and the
variable that sets it, instead of deep inside a run. Every failure is a ``ConfigError``
(worded by ``aillm_lab.config_errors``): a TOML file that cannot be read or parsed names the
file, line and column; an ``AILLM_*`` variable holding bad JSON names the variable.

Booleans are strict at every depth (``safety.network.allow_loopback`` included): only
``true``/``false`` count, since pydantic would read ``"yes"`` or ``1`` as True and silently
open a policy. An environment variable, being text, may say ``true`` or ``false`` in any
case.
"""

from __future__ import annotations

import contextvars
import os
import re
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_core import InitErrorDetails, PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from aillm_lab.config_errors import ConfigFileError as ConfigFileError  # re-exported
from aillm_lab.config_errors import (
    TomlFile,
    config_error,
    field_name_of,
    is_bool,
    read_toml,
)
from aillm_lab.errors import ConfigError
from aillm_lab.tools.policy import SafetyPolicy

MODEL_SPEC = r"^[a-z][a-z0-9_.-]*:.+$"
_BOOL_WORDS = {"true": True, "false": False}

# The TOML file ``LabSettings.load`` is reading: its source and its error lines use it.
_toml_file: contextvars.ContextVar[TomlFile | None] = contextvars.ContextVar("toml",
                                                                              default=None)


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


class LocalModelSettings(BaseModel):
    """How ``local:`` models run: which engine, and how many CPU threads llama.cpp uses."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "llama.cpp", "transformers"] = Field(
        default="auto", description="'auto' is llama.cpp when llama-cpp-python imports, else "
        "transformers; a Hugging Face folder always runs on transformers")
    n_threads: int | None = Field(
        default=None, ge=1, le=1024, description="llama.cpp threads; None is half the cores "
        "this process may use, 1 to 4 (more spin against each other on a busy machine)")


class MonitoringThresholds(BaseModel):
    """When the MonitoringAgent raises an alert; ``None`` turns a rule off.

    Rates over the window need ``min_calls`` calls first, so one failure in two calls is
    not an "error burst". Sizes are MB (10**6 bytes).
    """

    model_config = ConfigDict(extra="forbid")

    window_s: float = Field(default=300.0, gt=0, le=604_800,
                            description="the period each check looks back over")
    min_calls: int = Field(default=5, ge=1, le=1_000_000,
                           description="calls in the window before rate rules apply")
    max_error_rate: float | None = Field(default=0.2, ge=0, le=1,
                                         description="failed model calls / calls")
    max_p95_latency_s: float | None = Field(default=30.0, gt=0, le=86_400,
                                            description="p95 latency of answered calls")
    max_usd_per_hour: float | None = Field(default=None, ge=0, le=1_000_000,
                                           description="cost burn rate over the window")
    min_budget_hours_left: float | None = Field(
        default=1.0, ge=0, le=8760, description="at the window's burn rate, hours until "
        "budget_usd is spent (only with a budget)")
    max_budget_used: float | None = Field(default=0.8, ge=0, le=1,
                                          description="share of budget_usd spent")
    min_cache_hit_rate: float | None = Field(default=None, ge=0, le=1,
                                             description="cache and replay hits / calls")
    max_tool_failure_rate: float | None = Field(
        default=0.5, ge=0, le=1, description="refused, denied or failed tool calls / calls")
    max_rss_mb: float | None = Field(default=8192.0, gt=0, le=10_000_000)
    max_open_connections: int | None = Field(default=256, ge=1, le=1_000_000)
    max_cache_mb: float | None = Field(default=2048.0, gt=0, le=10_000_000,
                                       description="cache.db on disk")
    max_lab_db_mb: float | None = Field(default=8192.0, gt=0, le=10_000_000,
                                        description="lab.db (memory, documents, audit)")


class LabSettings(BaseSettings):
    """Workspace, default model, limits, budgets, logging and dashboard settings."""

    model_config = SettingsConfigDict(env_prefix="AILLM_", extra="forbid",
                                      populate_by_name=True, validate_default=True)

    home: Path = Field(default=Path("~/.aillm_lab"), description="workspace folder")
    models_dir: Path | None = Field(default=None, description="defaults to <home>/models")
    model: str | None = Field(default=None, pattern=MODEL_SPEC,
                              description="default model, e.g. 'local:smollm2'")
    fallbacks: list[str] = Field(default_factory=list)
    embedding_model: str | None = Field(
        default=None, pattern=MODEL_SPEC, description="the model lab.ingest and lab.search "
        "embed with, e.g. 'openai:text-embedding-3-small' (through the gateway); None is the "
        "local all-MiniLM-L6-v2 (offline, free)")
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
    monitoring: MonitoringThresholds = Field(
        default_factory=MonitoringThresholds,
        description="the MonitoringAgent's alert rules (al.MonitoringAgent)")
    local: LocalModelSettings = Field(
        default_factory=LocalModelSettings,
        description="the embedded local: model's engine and threads")
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
    openapi_auth: dict[str, SecretStr] = Field(
        default_factory=dict, description="secrets for al.openapi_tools by name (or by the "
        "API's host): sent as the document's security scheme says (bearer, API key header "
        "or query), never logged")
    ollama_host: str = Field(
        default="http://localhost:11434",
        validation_alias=AliasChoices("ollama_host", "AILLM_OLLAMA_HOST", "OLLAMA_HOST"))

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise config_error(exc, type(self), _toml_file.get()) from None
        except SettingsError as exc:  # a source failed; ours put a ConfigError inside
            if isinstance(exc.__cause__, ConfigError):
                raise exc.__cause__ from None
            raise ConfigError(f"{exc}. Check the AILLM_* environment variables.") from exc

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> LabSettings:
        """Settings from ``overrides`` > ``AILLM_*`` env > TOML file > defaults.

        The TOML file is ``config_file``, else ``$AILLM_CONFIG``; a missing named file is an
        error rather than silently ignored.
        """
        path = config_file or os.environ.get("AILLM_CONFIG")
        if path is not None and not Path(path).expanduser().is_file():
            if config_file:
                raise ConfigError(f"config_file = {str(path)!r}: no such TOML file. Create "
                                  "it or give the path of one that exists.",
                                  fields=("config_file",))
            raise ConfigError(f"$AILLM_CONFIG = {str(path)!r}: no such TOML file. Create it "
                              "or unset AILLM_CONFIG.", fields=("config_file",))
        token = _toml_file.set(read_toml(Path(path).expanduser()) if path else None)
        try:
            return cls(**overrides)
        finally:
            _toml_file.reset(token)

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = StrictEnvSource(settings_cls)
        toml = _toml_file.get()
        if toml is None:
            return init_settings, env
        return init_settings, env, InitSettingsSource(settings_cls, toml.data)

    @model_validator(mode="wrap")
    @classmethod
    def _strict_booleans(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """Refuse ``"yes"``/``1`` for any boolean, however deep, beside pydantic's own errors.

        Done here rather than in ``SafetyPolicy``'s fields so every nested model that
        settings hold (policies included) gets the same rule from one place.
        """
        loose = list(_loose_booleans(cls, data, ()))
        if not loose:
            return handler(data)
        errors: list[InitErrorDetails] = [
            {"type": PydanticCustomError(
                "bool_strict", "Input should be true or false, not {kind}",
                {"kind": _kind(value)}), "loc": loc, "input": value}
            for loc, value in loose]
        seen = {tuple(loc) for loc, _ in loose}  # a StrictBool field reports it too
        try:
            handler(data)
        except ValidationError as exc:
            errors += [{"type": PydanticCustomError(e["type"], e["msg"]), "loc": e["loc"],
                        "input": e["input"]} for e in exc.errors(include_url=False)
                       if tuple(e["loc"]) not in seen]
        raise ValidationError.from_exception_data(cls.__name__, errors)

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


class StrictEnvSource(EnvSettingsSource):
    """``AILLM_*`` variables: bad JSON is a ``ConfigError`` naming the variable, and a
    boolean must read ``true`` or ``false`` (any case); other words are left for the strict
    boolean check to refuse."""

    def prepare_field_value(self, field_name: str, field: FieldInfo, value: Any,
                            value_is_complex: bool) -> Any:
        if isinstance(value, str) and is_bool(field.annotation):
            return _BOOL_WORDS.get(value.strip().lower(), value)
        try:
            return super().prepare_field_value(field_name, field, value, value_is_complex)
        except ValueError as exc:
            name = f"{self.settings_cls.model_config.get('env_prefix', '')}{field_name}".upper()
            shape = "a JSON array" if get_origin(field.annotation) is list else "a JSON object"
            raise ConfigError(f"${name} is not valid JSON ({exc}). Set it to {shape} (for "
                              "nested settings), or unset it to use the default or the TOML "
                              "file.", fields=(field_name,)) from exc


SECRET_ENV_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


def environ_without_secrets(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment less every variable named like a secret (``*KEY*``, ``*TOKEN*``,
    ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``): what a helper program the library starts
    for itself (pip for ``models pull``, git for an experiment's manifest) inherits. Why not
    the whole environment: an API key must never reach a child process; why not an empty
    one: pip needs its index, proxy and certificate settings."""
    env = os.environ if environ is None else environ
    return {name: value for name, value in env.items() if not SECRET_ENV_NAME.search(name)}


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, int | float) else f"a {type(value).__name__}"


def _loose_booleans(model: type[BaseModel], data: Any,
                    loc: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every (location, value) in ``data`` where a boolean field got something else."""
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        field = model.model_fields.get(field_name_of(model, str(key)))
        if field is not None:
            yield from _loose_in(field.annotation, value, (*loc, key))


def _loose_in(annotation: Any, value: Any,
              loc: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if is_bool(annotation):
        if not isinstance(value, bool) and value is not None:
            yield loc, value
        return
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield from _loose_booleans(annotation, value, loc)
    elif origin is dict and len(args) == 2 and isinstance(value, Mapping):
        for key, item in value.items():
            yield from _loose_in(args[1], item, (*loc, key))
    elif origin is list and args and isinstance(value, list):
        for index, item in enumerate(value):
            yield from _loose_in(args[0], item, (*loc, index))
    elif origin in (Union, types.UnionType):  # e.g. SomeModel | None
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _loose_booleans(arg, value, loc)

