"""``provider:model`` strings to ``Model`` objects, through one door for built-ins and plugins.

Third parties add a provider with an entry point in the ``aillm_lab.models`` group whose
object is a factory ``(model_name: str, settings: LabSettings) -> Model``; built-ins are
registered through the same ``register`` call, so they have no privileges a plugin lacks.
"""

from __future__ import annotations

import importlib
import re
import socket
import threading
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from aillm_lab.config import MODEL_SPEC
from aillm_lab.errors import ConfigError, ModelNotAvailable, RegistryError
from aillm_lab.llm.base import Model

if TYPE_CHECKING:
    from aillm_lab.config import LabSettings

ENTRY_POINT_GROUP = "aillm_lab.models"
Factory = Callable[[str, "LabSettings"], Model]

# provider -> (module with a `create(name)` factory, the pip extra that brings its deps)
_BUILTINS: dict[str, tuple[str, str | None]] = {
    "scripted": ("aillm_lab.llm.scripted", None),
    "local": ("aillm_lab.llm.local", "local"),
    "openai": ("aillm_lab.llm.openai", "openai"),
    "anthropic": ("aillm_lab.llm.anthropic", "anthropic"),
    "ollama": ("aillm_lab.llm.ollama", "ollama"),
}
# providers planned but not shipped in this build, so users get a useful answer
_EXTRAS_HINT: dict[str, str] = {}


class Registry:
    """Maps provider names to model factories; registering a name twice raises."""

    def __init__(self, *, builtins: bool = True, plugins: bool = True) -> None:
        self._factories: dict[str, Factory] = {}
        self._extras: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._plugins_loaded = not plugins
        if builtins:
            for provider, (module, extra) in _BUILTINS.items():
                self.register(provider, _lazy_factory(provider, module, extra), extra=extra)

    def register(self, provider: str, factory: Factory, *, extra: str | None = None) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_.-]*", provider):
            raise ConfigError(f"provider name {provider!r} must be lowercase letters, digits, "
                              "'_', '-' or '.', starting with a letter", fields=("provider",))
        with self._lock:
            if provider in self._factories:
                raise RegistryError(f"provider {provider!r} is already registered; pick another "
                                    "name or unregister the first one")
            self._factories[provider] = factory
            self._extras[provider] = extra

    def unregister(self, provider: str) -> None:
        with self._lock:
            self._factories.pop(provider, None)
            self._extras.pop(provider, None)

    def providers(self) -> list[str]:
        self._load_plugins()
        return sorted(self._factories)

    def resolve(self, spec: str | Model, settings: LabSettings | None = None) -> Model:
        """Turn ``"provider:model"`` into a ``Model``; a ``Model`` passes through."""
        if isinstance(spec, Model):
            return spec
        if settings is None:
            from aillm_lab.config import LabSettings

            settings = LabSettings.load()
        provider, name = parse_spec(spec)
        self._load_plugins()
        factory = self._factories.get(provider)
        if factory is None:
            raise RegistryError(_unknown_provider(provider, sorted(self._factories)))
        return factory(name, settings)

    def _load_plugins(self) -> None:
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            self.register(ep.name, _entry_point_factory(ep))


def parse_spec(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or not re.match(MODEL_SPEC, spec):
        raise ConfigError(f"model = {spec!r}: expected 'provider:model', for example "
                          "'local:smollm2' or 'scripted:echo'", fields=("model",))
    provider, _, name = spec.partition(":")
    return provider, name


def check_spec(spec: object, what: str = "model", hint: str = "") -> tuple[str, str]:
    """``spec``'s provider and model name once its form and provider are checked, so a typo
    fails where it was typed (``Lab(model=...)``, ``serve --model``/``--models``) rather than
    at the first call. No model is created: nothing is imported, downloaded or asked over
    the network. ``what`` names the argument in the message (``model``, ``--models``);
    ``hint`` ends a message about the form."""
    field = what.lstrip("-")
    known = registry.providers()
    try:
        provider, name = parse_spec(spec)  # type: ignore[arg-type]
    except ConfigError:
        raise ConfigError(f"{what}: {spec!r} is not 'provider:model' (e.g. 'local:smollm2' "
                          f"or 'openai:gpt-4o-mini'); known providers: {', '.join(known)}{hint}.",
                          fields=(field,)) from None
    if provider not in known:
        raise ConfigError(f"{what}: {spec!r} names no known provider ({provider!r}); known: "
                          f"{', '.join(known)}.", fields=(field,))
    return provider, name


def resolve(spec: str | Model, settings: LabSettings | None = None) -> Model:
    """Resolve a model string with the process-wide registry."""
    return registry.resolve(spec, settings)


def default_model(settings: LabSettings) -> tuple[str, str]:
    """The model a bare ``al.chat`` uses, and why: the first of ``AILLM_MODEL``, an OpenAI
    key, an Anthropic key, an Ollama server that answers, then ``local:smollm2``."""
    known = set(registry.providers())
    if settings.model:
        return settings.model, "AILLM_MODEL (or settings.model) names it"
    skipped = []
    candidates = [
        ("openai", "openai:gpt-4o-mini", settings.openai_api_key is not None, "an OpenAI key"),
        ("anthropic", "anthropic:claude-3-5-haiku-latest",
         settings.anthropic_api_key is not None, "an Anthropic key"),
        ("ollama", "ollama:llama3.2", _ollama_answers(settings.ollama_host),
         f"an Ollama server answers at {settings.ollama_host}"),
    ]
    for provider, spec, present, what in candidates:
        if present and provider in known:
            return spec, f"{what} is set" if "key" in what else what
        if present:
            skipped.append(f"{what} was found but the {provider!r} provider is not installed")
    reason = "no AILLM_MODEL, no usable OpenAI/Anthropic key and no Ollama server"
    if skipped:
        reason += " (" + "; ".join(skipped) + ")"
    return "local:smollm2", reason + ", so the embedded local model is used"


def _ollama_answers(host: str, timeout: float = 0.2) -> bool:
    url = urlparse(host if "://" in host else f"http://{host}")
    try:
        with socket.create_connection((url.hostname or "localhost", url.port or 11434), timeout):
            return True
    except OSError:
        return False


def _lazy_factory(provider: str, module: str, extra: str | None) -> Factory:
    def factory(name: str, settings: LabSettings) -> Model:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            hint = f"pip install 'aillm-lab[{extra}]'" if extra else "reinstall aillm-lab"
            raise ModelNotAvailable(f"provider {provider!r} needs packages that are missing "
                                    f"({exc.name}): run {hint}") from exc
        return mod.create(name, settings)
    return factory


def _entry_point_factory(ep: object) -> Factory:
    def factory(name: str, settings: LabSettings) -> Model:
        return ep.load()(name, settings)  # type: ignore[attr-defined]
    return factory


def _unknown_provider(provider: str, known: list[str]) -> str:
    message = f"unknown model provider {provider!r}. Known providers: {', '.join(known)}."
    if provider in _EXTRAS_HINT:
        message += (f" The {provider!r} provider needs `pip install 'aillm-lab[{provider}]'` "
                    "and an aillm-lab release that ships it.")
    else:
        message += (f" Third-party providers register an entry point in the "
                    f"{ENTRY_POINT_GROUP!r} group.")
    return message


registry = Registry()
