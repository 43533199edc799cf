"""``provider:model`` strings, the plugin entry point group and the default-model choice."""

from __future__ import annotations

import socket
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from aillm_lab.config import LabSettings
from aillm_lab.errors import ConfigError, ModelNotAvailable, RegistryError
from aillm_lab.llm import registry as registry_module
from aillm_lab.llm.base import Model
from aillm_lab.llm.registry import (
    ENTRY_POINT_GROUP,
    Registry,
    default_model,
    parse_spec,
    registry,
    resolve,
)
from aillm_lab.llm.scripted import ScriptedModel
from aillm_lab.llm.types import Completion

pytestmark = pytest.mark.usefixtures("clean_env")


class FakeModel(Model):
    provider = "fake"

    def __init__(self, name: str, settings: LabSettings | None = None) -> None:
        super().__init__(name)
        self.settings = settings

    async def complete(self, messages, *, tools=None, output=None, params=None) -> Completion:
        return Completion(text="fake", model=self.id)


def _closed_port() -> int:
    """A localhost port that nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _listening() -> Iterator[str]:
    """A real TCP server socket on 127.0.0.1, standing in for an Ollama server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()


@contextmanager
def _provider(name: str, fake: bool = True) -> Iterator[None]:
    """Put a fake provider (or, with ``fake=False``, none) under ``name`` in the process-wide
    registry for the duration of a test, restoring a built-in of that name afterwards."""
    saved = registry._factories.get(name), registry._extras.get(name)
    registry.unregister(name)
    if fake:
        registry.register(name, lambda model, settings: FakeModel(model, settings))
    try:
        yield
    finally:
        registry.unregister(name)
        if saved[0] is not None:
            registry.register(name, saved[0], extra=saved[1])


def _settings(**values) -> LabSettings:
    values.setdefault("ollama_host", f"http://127.0.0.1:{_closed_port()}")
    return LabSettings(**values)


# -- register -------------------------------------------------------------------------------
def test_builtins_are_registered():
    r = Registry(plugins=False)
    assert {"local", "scripted", "openai", "anthropic", "ollama"} <= set(r.providers())


def test_registering_a_provider_twice_raises_registry_error():
    r = Registry(plugins=False)
    r.register("mine", FakeModel)
    with pytest.raises(RegistryError, match="'mine' is already registered"):
        r.register("mine", FakeModel)
    with pytest.raises(RegistryError, match="already registered"):
        r.register("scripted", FakeModel)


def test_registry_error_message_is_not_quoted_like_a_key_error():
    err = RegistryError("provider 'x' is unknown")
    assert isinstance(err, KeyError)
    assert str(err) == "provider 'x' is unknown"


def test_unregister_frees_the_name_for_a_new_registration():
    r = Registry(plugins=False)
    r.register("mine", FakeModel)
    r.unregister("mine")
    assert "mine" not in r.providers()
    r.register("mine", FakeModel)
    assert "mine" in r.providers()
    r.unregister("never-registered")  # no error


@pytest.mark.parametrize("name", ["Bad", "has space", "1st", "", "a:b"])
def test_invalid_provider_names_are_rejected(name):
    with pytest.raises(ConfigError):
        Registry(plugins=False).register(name, FakeModel)


def test_an_empty_registry_has_no_builtins():
    assert Registry(builtins=False, plugins=False).providers() == []


# -- parse and resolve ----------------------------------------------------------------------
@pytest.mark.parametrize("spec,expected", [
    ("openai:gpt-4o-mini", ("openai", "gpt-4o-mini")),
    ("scripted:echo", ("scripted", "echo")),
    ("ollama:llama3.2:1b", ("ollama", "llama3.2:1b")),
    ("my.plugin-x:some/model", ("my.plugin-x", "some/model")),
])
def test_parse_spec_splits_provider_and_model_at_the_first_colon(spec, expected):
    assert parse_spec(spec) == expected


@pytest.mark.parametrize("spec", ["gpt4", "openai:", ":gpt", "OpenAI:gpt", "", None, 42])
def test_a_bad_spec_raises_config_error_naming_the_model_field(spec):
    with pytest.raises(ConfigError, match="provider:model") as info:
        parse_spec(spec)
    assert info.value.fields == ("model",)


def test_resolve_rejects_a_bad_spec_with_config_error():
    with pytest.raises(ConfigError):
        Registry(plugins=False).resolve("gpt4", _settings())


def test_resolve_passes_model_instances_through():
    model = ScriptedModel(["hi"])
    assert Registry(plugins=False).resolve(model) is model
    assert resolve(model) is model


def test_resolve_builds_a_scripted_model_from_its_spec():
    model = Registry(plugins=False).resolve("scripted:echo", _settings())
    assert isinstance(model, ScriptedModel)
    assert model.id == "scripted:echo"


def test_resolve_without_settings_loads_them_and_passes_them_to_the_factory(monkeypatch):
    seen = []
    r = Registry(builtins=False, plugins=False)
    r.register("fake", lambda name, settings: seen.append(settings) or FakeModel(name))
    monkeypatch.setenv("AILLM_DASHBOARD_PORT", "7011")
    model = r.resolve("fake:thing")
    assert model.id == "fake:thing"
    assert isinstance(seen[0], LabSettings) and seen[0].dashboard_port == 7011


def test_module_level_resolve_uses_the_process_wide_registry():
    with _provider("fakeglobal"):
        model = resolve("fakeglobal:m1", _settings())
    assert isinstance(model, FakeModel) and model.name == "m1"


def test_unknown_provider_error_lists_the_known_providers():
    with pytest.raises(RegistryError) as info:
        Registry(plugins=False).resolve("nosuch:model", _settings())
    message = str(info.value)
    assert "'nosuch'" in message
    assert "local" in message and "scripted" in message
    assert ENTRY_POINT_GROUP in message


def test_unknown_planned_provider_error_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(registry_module._EXTRAS_HINT, "mistral", "mistral")
    with pytest.raises(RegistryError) as info:
        Registry(plugins=False).resolve("mistral:some-model", _settings())
    message = str(info.value)
    assert "aillm-lab[mistral]" in message
    assert "local" in message and "scripted" in message


@pytest.mark.parametrize("provider", ["openai", "anthropic", "ollama"])
def test_a_hosted_provider_whose_sdk_is_missing_names_the_pip_extra(monkeypatch, provider):
    monkeypatch.setitem(sys.modules, provider, None)  # `import openai` now fails
    monkeypatch.delitem(sys.modules, f"aillm_lab.llm.{provider}", raising=False)
    with pytest.raises(ModelNotAvailable, match=rf"aillm-lab\[{provider}\]"):
        Registry(plugins=False).resolve(f"{provider}:some-model", _settings())


def test_a_builtin_whose_packages_are_missing_raises_model_not_available_with_the_fix():
    r = Registry(builtins=False, plugins=False)
    r.register("ghost", registry_module._lazy_factory(
        "ghost", "aillm_lab_no_such_module_xyz", "ghost"), extra="ghost")
    with pytest.raises(ModelNotAvailable, match=r"aillm-lab\[ghost\]"):
        r.resolve("ghost:m", _settings())


# -- entry point plugins ---------------------------------------------------------------------
def _install_plugin(monkeypatch, tmp_path: Path, provider: str) -> str:
    """A dist-info folder on sys.path whose entry point names a factory in tmp_path."""
    site = tmp_path / "site"
    site.mkdir()
    module = f"aillm_fake_plugin_{uuid.uuid4().hex[:8]}"
    (site / f"{module}.py").write_text(textwrap.dedent(f"""
        from aillm_lab.llm.base import Model
        from aillm_lab.llm.types import Completion


        class PluginModel(Model):
            provider = {provider!r}

            async def complete(self, messages, *, tools=None, output=None, params=None):
                return Completion(text="from plugin", model=self.id)


        def create(name, settings):
            model = PluginModel(name)
            model.settings = settings
            return model
    """), encoding="utf-8")
    dist = site / f"{module}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n{provider} = {module}:create\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    return module


def test_an_entry_point_plugin_is_listed_and_resolved_by_a_fresh_registry(monkeypatch,
                                                                         tmp_path):
    _install_plugin(monkeypatch, tmp_path, "acme")
    r = Registry()
    assert "acme" in r.providers()
    settings = _settings(dashboard_port=7012)
    model = r.resolve("acme:rocket-1", settings)
    assert type(model).__name__ == "PluginModel"
    assert model.id == "acme:rocket-1"
    assert model.settings is settings


def test_an_entry_point_plugin_is_resolved_without_listing_providers_first(monkeypatch,
                                                                         tmp_path):
    _install_plugin(monkeypatch, tmp_path, "acme2")
    assert Registry().resolve("acme2:m", _settings()).id == "acme2:m"


def test_a_registry_with_plugins_disabled_ignores_entry_points(monkeypatch, tmp_path):
    _install_plugin(monkeypatch, tmp_path, "acme3")
    r = Registry(plugins=False)
    assert "acme3" not in r.providers()
    with pytest.raises(RegistryError):
        r.resolve("acme3:m", _settings())


def test_a_plugin_clashing_with_a_builtin_name_raises_registry_error(monkeypatch, tmp_path):
    _install_plugin(monkeypatch, tmp_path, "scripted")
    with pytest.raises(RegistryError, match="'scripted' is already registered"):
        Registry().providers()


# -- default model ---------------------------------------------------------------------------
def test_default_model_uses_the_configured_model_first():
    with _listening() as host:
        spec, reason = default_model(_settings(model="scripted:echo", openai_api_key="sk-x",
                                               ollama_host=host))
    assert spec == "scripted:echo"
    assert "AILLM_MODEL" in reason


def test_default_model_with_nothing_available_is_the_local_model():
    spec, reason = default_model(_settings())
    assert spec == "local:smollm2"
    assert "local" in reason
    assert "not installed" not in reason


def test_default_model_skips_an_openai_key_when_the_provider_is_not_installed():
    with _provider("openai", fake=False):
        spec, reason = default_model(_settings(openai_api_key="sk-test-key"))
    assert spec == "local:smollm2"
    assert "OpenAI key" in reason
    assert "'openai' provider is not installed" in reason
    assert "sk-test-key" not in reason


def test_default_model_skips_an_anthropic_key_when_the_provider_is_not_installed():
    with _provider("anthropic", fake=False):
        spec, reason = default_model(_settings(anthropic_api_key="sk-ant"))
    assert spec == "local:smollm2"
    assert "'anthropic' provider is not installed" in reason


def test_default_model_reports_an_ollama_server_when_the_provider_is_not_installed():
    with _provider("ollama", fake=False), _listening() as host:
        spec, reason = default_model(_settings(ollama_host=host))
    assert spec == "local:smollm2"
    assert "Ollama server" in reason and host in reason
    assert "'ollama' provider is not installed" in reason


def test_default_model_picks_ollama_when_a_server_answers_and_the_provider_exists():
    with _provider("ollama"), _listening() as host:
        spec, reason = default_model(_settings(ollama_host=host))
    assert spec == "ollama:llama3.2"
    assert "Ollama" in reason and host in reason


def test_default_model_accepts_an_ollama_host_without_a_scheme():
    with _provider("ollama"), _listening() as host:
        bare = host.removeprefix("http://")
        spec, _ = default_model(_settings(ollama_host=bare))
    assert spec == "ollama:llama3.2"


def test_default_model_ignores_ollama_when_nothing_listens():
    with _provider("ollama"):
        spec, _ = default_model(_settings())
    assert spec == "local:smollm2"


def test_default_model_picks_openai_when_a_key_and_the_provider_exist():
    with _provider("openai"):
        spec, reason = default_model(_settings(openai_api_key="sk-test-key"))
    assert spec == "openai:gpt-4o-mini"
    assert "OpenAI key" in reason
    assert "sk-test-key" not in reason


def test_default_model_without_a_key_does_not_pick_an_installed_openai_provider():
    with _provider("openai"):
        spec, _ = default_model(_settings())
    assert spec == "local:smollm2"


def test_default_model_picks_anthropic_when_a_key_and_the_provider_exist():
    with _provider("anthropic"):
        spec, reason = default_model(_settings(anthropic_api_key="sk-ant"))
    assert spec == "anthropic:claude-3-5-haiku-latest"
    assert "Anthropic key" in reason


def test_default_model_order_is_openai_then_anthropic_then_ollama():
    with _provider("openai"), _provider("anthropic"), _provider("ollama"), \
            _listening() as host:
        both = _settings(openai_api_key="k1", anthropic_api_key="k2", ollama_host=host)
        assert default_model(both)[0] == "openai:gpt-4o-mini"
        anthropic_and_ollama = _settings(anthropic_api_key="k2", ollama_host=host)
        assert default_model(anthropic_and_ollama)[0] == "anthropic:claude-3-5-haiku-latest"
        assert default_model(_settings(ollama_host=host))[0] == "ollama:llama3.2"


def test_default_model_falls_through_an_uninstalled_provider_to_the_next_one():
    with _provider("openai", fake=False), _provider("anthropic"):
        spec, _ = default_model(_settings(openai_api_key="k1", anthropic_api_key="k2"))
    assert spec == "anthropic:claude-3-5-haiku-latest"
