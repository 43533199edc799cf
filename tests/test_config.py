"""LabSettings: validated at load time, from kwargs, ``AILLM_*`` env or TOML, never leaking keys."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from aillm_lab.config import ConfigFileError, LabSettings, ModelLimits, config_error
from aillm_lab.errors import AillmError, ConfigError

SECRET = "sk-test-DO-NOT-LEAK-1234567890abcdef"
ANTHROPIC_SECRET = "sk-ant-DO-NOT-LEAK-0987654321"


@pytest.fixture(autouse=True)
def _clean_env(clean_env, monkeypatch, tmp_path):
    """No ambient keys or AILLM_* settings (clean_env); HOME is a temporary folder."""
    monkeypatch.delenv("AILLM_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.chdir(tmp_path)


def _error(**values) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        LabSettings(**values)
    return info.value


# -- defaults -------------------------------------------------------------------------------
def test_defaults_load_without_any_configuration(tmp_path):
    s = LabSettings.load()
    assert s.model is None
    assert s.fallbacks == [] and s.limits == {}
    assert s.budget_usd is None and s.run_budget_usd is None
    assert s.dashboard_port == 5006
    assert s.log_level == "WARNING"
    assert s.openai_api_key is None and s.anthropic_api_key is None
    assert s.ollama_host == "http://localhost:11434"


def test_home_defaults_to_the_expanded_user_folder(tmp_path):
    s = LabSettings()
    assert s.home == tmp_path / "userhome" / ".aillm_lab"
    assert s.home.is_absolute() and "~" not in str(s.home)


def test_model_path_defaults_to_home_models_and_follows_models_dir(tmp_path):
    s = LabSettings(home=tmp_path / "ws")
    assert s.model_path == tmp_path / "ws" / "models"
    s = LabSettings(home=tmp_path / "ws", models_dir="~/weights")
    assert s.model_path == tmp_path / "userhome" / "weights"


def test_aillm_home_env_sets_the_workspace_and_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("AILLM_HOME", str(tmp_path / "elsewhere"))
    s = LabSettings.load()
    assert s.home == tmp_path / "elsewhere"
    assert s.model_path == tmp_path / "elsewhere" / "models"
    monkeypatch.setenv("AILLM_HOME", "~/tilde-home")
    assert LabSettings.load().home == tmp_path / "userhome" / "tilde-home"


def test_limits_for_unknown_model_gives_default_limits():
    s = LabSettings(limits={"openai:gpt-4o": {"concurrency": 2, "rpm": 60}})
    assert s.limits_for("openai:gpt-4o") == ModelLimits(concurrency=2, rpm=60)
    assert s.limits_for("openai:other") == ModelLimits()
    assert ModelLimits().concurrency == 4 and ModelLimits().rpm is None


# -- bad values name the field and the range ------------------------------------------------
@pytest.mark.parametrize("port", [70000, 65536])
def test_dashboard_port_above_range_names_the_field_and_the_upper_bound(port):
    err = _error(dashboard_port=port)
    assert "dashboard_port" in err.fields
    assert "dashboard_port" in str(err)
    assert "65535" in str(err)
    assert str(port) in str(err)


def test_dashboard_port_zero_names_the_field_and_the_lower_bound():
    err = _error(dashboard_port=0)
    assert err.fields == ("dashboard_port",)
    assert "dashboard_port" in str(err) and ">= 1" in str(err)


def test_config_error_is_a_value_error_and_an_aillm_error():
    err = _error(dashboard_port=0)
    assert isinstance(err, ValueError) and isinstance(err, AillmError)


@pytest.mark.parametrize("field", ["budget_usd", "run_budget_usd"])
def test_negative_budget_names_the_field_and_says_it_must_be_non_negative(field):
    err = _error(**{field: -1})
    assert err.fields == (field,)
    assert field in str(err)
    assert ">= 0" in str(err)


def test_budget_zero_is_allowed():
    assert LabSettings(budget_usd=0, run_budget_usd=0).budget_usd == 0


def test_limit_concurrency_zero_names_the_nested_field():
    err = _error(limits={"openai:x": {"concurrency": 0}})
    assert err.fields == ("limits.openai:x.concurrency",)
    assert "limits.openai:x.concurrency" in str(err)
    assert ">= 1" in str(err)


def test_limit_negative_rpm_names_the_nested_field():
    err = _error(limits={"openai:x": {"rpm": -5}})
    assert err.fields == ("limits.openai:x.rpm",)
    assert "rpm" in str(err) and "> 0" in str(err)


def test_unknown_limit_key_is_rejected():
    err = _error(limits={"openai:x": {"rmp": 5}})
    assert any(f.startswith("limits.openai:x") for f in err.fields)
    assert "rmp" in str(err)


@pytest.mark.parametrize("model", ["gpt4", "OpenAI:gpt-4o", ":gpt", "openai:"])
def test_model_without_a_provider_prefix_names_the_field_and_the_expected_shape(model):
    err = _error(model=model)
    assert err.fields == ("model",)
    assert "model" in str(err)
    assert "provider:model" in str(err)


def test_a_bad_fallback_names_the_field_and_the_offending_entry():
    err = _error(fallbacks=["openai:gpt-4o-mini", "gpt4"])
    assert err.fields == ("fallbacks",)
    assert "fallbacks" in str(err) and "gpt4" in str(err)
    assert "provider:model" in str(err)


def test_good_fallbacks_are_kept_in_order():
    s = LabSettings(fallbacks=["openai:gpt-4o-mini", "local:smollm2"])
    assert s.fallbacks == ["openai:gpt-4o-mini", "local:smollm2"]


def test_unknown_log_level_names_the_field_and_the_choices():
    err = _error(log_level="LOUD")
    assert err.fields == ("log_level",)
    assert "log_level" in str(err) and "DEBUG" in str(err) and "LOUD" in str(err)


def test_every_bad_field_is_reported_at_once():
    err = _error(dashboard_port=0, budget_usd=-1, log_level="LOUD")
    assert set(err.fields) == {"dashboard_port", "budget_usd", "log_level"}


def test_unknown_setting_is_rejected_by_name():
    err = _error(dashbord_port=5000)
    assert err.fields == ("dashbord_port",)
    assert "dashbord_port" in str(err)


def test_error_message_names_the_environment_variable_that_sets_the_field():
    assert "AILLM_DASHBOARD_PORT" in str(_error(dashboard_port=0))


def test_config_error_turns_a_model_limits_validation_error_into_a_named_message():
    with pytest.raises(ValidationError) as info:
        ModelLimits(concurrency=0)
    err = config_error(info.value, ModelLimits)
    assert isinstance(err, ConfigError)
    assert err.fields == ("concurrency",)
    assert ">= 1" in str(err)


# -- environment variables ------------------------------------------------------------------
def test_env_var_sets_the_dashboard_port(monkeypatch):
    monkeypatch.setenv("AILLM_DASHBOARD_PORT", "7000")
    assert LabSettings().dashboard_port == 7000
    assert LabSettings.load().dashboard_port == 7000


def test_bad_env_var_fails_at_load_with_the_field_name(monkeypatch):
    monkeypatch.setenv("AILLM_DASHBOARD_PORT", "70000")
    with pytest.raises(ConfigError, match="65535") as info:
        LabSettings.load()
    assert "dashboard_port" in info.value.fields


def test_env_var_limits_are_parsed_as_json(monkeypatch):
    monkeypatch.setenv("AILLM_LIMITS", '{"openai:gpt-4o": {"concurrency": 2, "rpm": 60}}')
    s = LabSettings.load()
    assert s.limits_for("openai:gpt-4o") == ModelLimits(concurrency=2, rpm=60)


def test_env_var_sets_the_default_model(monkeypatch):
    monkeypatch.setenv("AILLM_MODEL", "scripted:echo")
    assert LabSettings.load().model == "scripted:echo"


def test_env_var_fallbacks_are_parsed_as_json(monkeypatch):
    monkeypatch.setenv("AILLM_FALLBACKS", '["local:smollm2"]')
    assert LabSettings.load().fallbacks == ["local:smollm2"]


def test_ollama_host_is_read_from_ollama_host(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")
    assert LabSettings.load().ollama_host == "http://127.0.0.1:9"


# -- TOML -----------------------------------------------------------------------------------
TOML = """\
model = "scripted:echo"
dashboard_port = 7001
budget_usd = 2.5

[limits."openai:x"]
rpm = 10
"""


def _toml(tmp_path: Path, text: str = TOML) -> Path:
    path = tmp_path / "aillm.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_file_is_read_via_config_file(tmp_path):
    s = LabSettings.load(config_file=_toml(tmp_path))
    assert s.model == "scripted:echo"
    assert s.dashboard_port == 7001
    assert s.budget_usd == 2.5
    assert s.limits_for("openai:x").rpm == 10


def test_toml_file_is_read_via_aillm_config(monkeypatch, tmp_path):
    monkeypatch.setenv("AILLM_CONFIG", str(_toml(tmp_path)))
    s = LabSettings.load()
    assert s.dashboard_port == 7001 and s.model == "scripted:echo"


def test_toml_is_not_read_by_plain_construction_or_after_load(tmp_path):
    LabSettings.load(config_file=_toml(tmp_path))
    assert LabSettings().dashboard_port == 5006


def test_precedence_is_overrides_then_env_then_toml(monkeypatch, tmp_path):
    path = _toml(tmp_path)
    assert LabSettings.load(config_file=path).dashboard_port == 7001
    monkeypatch.setenv("AILLM_DASHBOARD_PORT", "7002")
    s = LabSettings.load(config_file=path)
    assert s.dashboard_port == 7002
    assert s.model == "scripted:echo"  # still from the TOML file
    s = LabSettings.load(config_file=path, dashboard_port=7003)
    assert s.dashboard_port == 7003
    assert s.budget_usd == 2.5


def test_missing_named_toml_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such TOML file") as info:
        LabSettings.load(config_file=tmp_path / "nope.toml")
    assert info.value.fields == ("config_file",)


def test_missing_toml_file_named_by_aillm_config_raises_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("AILLM_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="AILLM_CONFIG"):
        LabSettings.load()


def test_unknown_key_in_toml_raises_config_error(tmp_path):
    path = _toml(tmp_path, 'dashbord_port = 7001\n')
    with pytest.raises(ConfigError) as info:
        LabSettings.load(config_file=path)
    assert "dashbord_port" in info.value.fields


def test_bad_value_in_toml_raises_config_error_with_the_range(tmp_path):
    path = _toml(tmp_path, 'dashboard_port = 99999\n')
    with pytest.raises(ConfigError, match="65535") as info:
        LabSettings.load(config_file=path)
    assert info.value.fields == ("dashboard_port",)


# -- secrets --------------------------------------------------------------------------------
def test_openai_key_from_env_is_a_secret_str(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    s = LabSettings.load()
    assert isinstance(s.openai_api_key, SecretStr)
    assert s.openai_api_key.get_secret_value() == SECRET


def test_prefixed_and_anthropic_keys_from_env_are_secret_strs(monkeypatch):
    monkeypatch.setenv("AILLM_OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)
    s = LabSettings.load()
    assert s.openai_api_key.get_secret_value() == SECRET
    assert isinstance(s.anthropic_api_key, SecretStr)
    assert s.anthropic_api_key.get_secret_value() == ANTHROPIC_SECRET


def test_keys_never_appear_in_repr_str_or_json(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_SECRET)
    s = LabSettings.load()
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump()),
                 repr(s.openai_api_key)):
        assert SECRET not in text
        assert ANTHROPIC_SECRET not in text


def test_key_never_appears_in_an_error_about_another_field(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with pytest.raises(ConfigError) as info:
        LabSettings.load(dashboard_port=0)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    with pytest.raises(ConfigError) as info:
        LabSettings(openai_api_key=SECRET, anthropic_api_key=ANTHROPIC_SECRET, budget_usd=-1)
    assert SECRET not in str(info.value) and ANTHROPIC_SECRET not in str(info.value)


@pytest.mark.parametrize("name", ["openai_api_key", "anthropic_api_key"])
def test_an_invalid_key_field_is_reported_without_its_value(name):
    err = _error(**{name: [SECRET]})
    assert err.fields == (name,)
    assert name in str(err)
    assert SECRET not in str(err) and SECRET not in repr(err)
    assert "***" in str(err)


@pytest.mark.parametrize("alias", ["OPENAI_API_KEY", "AILLM_OPENAI_API_KEY",
                                   "ANTHROPIC_API_KEY"])
def test_an_invalid_key_given_by_its_env_style_name_is_reported_without_its_value(alias):
    err = _error(**{alias: [SECRET]})
    assert SECRET not in str(err) and SECRET not in repr(err)
    field = "anthropic_api_key" if "ANTHROPIC" in alias else "openai_api_key"
    assert err.fields == (field,)


def test_an_invalid_key_in_toml_is_reported_without_its_value(tmp_path):
    path = _toml(tmp_path, f'OPENAI_API_KEY = ["{SECRET}"]\n')
    with pytest.raises(ConfigError) as info:
        LabSettings.load(config_file=path)
    assert SECRET not in str(info.value)
    assert info.value.fields == ("openai_api_key",)


# -- a TOML file that cannot be read names the file and the line ---------------------------
def _file_error(path: Path) -> ConfigFileError:
    with pytest.raises(ConfigFileError) as info:
        LabSettings.load(config_file=path)
    err = info.value
    assert isinstance(err, ConfigError) and err.fields == ("config_file",)
    assert err.path == path and str(path) in str(err)
    return err


def test_toml_syntax_error_names_the_file_line_and_column(tmp_path):
    err = _file_error(_toml(tmp_path, 'dashboard_port = 7001\nmodel = = "scripted:echo"\n'))
    assert (err.line, err.column) == (2, 9)
    assert "line 2, column 9" in str(err) and "invalid TOML" in str(err)


def test_a_toml_key_given_twice_names_the_line_of_the_second(tmp_path):
    err = _file_error(_toml(tmp_path, "dashboard_port = 7001\ndashboard_port = 7002\n"))
    assert err.line == 2
    assert "defined twice" in str(err)


def test_a_toml_table_given_twice_names_its_line(tmp_path):
    err = _file_error(_toml(tmp_path, "[safety.network]\nmax_redirects = 1\n\n"
                                      "[safety.network]\nmax_bytes = 10\n"))
    assert err.line == 4 and "defined twice" in str(err)


def test_a_binary_config_file_names_the_file_and_the_first_bad_byte(tmp_path):
    path = tmp_path / "aillm.toml"
    path.write_bytes(b"model = 'x'\n\x89PNG\r\n\x1a\n\x00")
    err = _file_error(path)
    assert (err.line, err.column) == (2, 1)
    assert "0x89" in str(err) and "not UTF-8" in str(err)


def test_a_utf16_config_file_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "aillm.toml"
    path.write_text("dashboard_port = 7001\n", encoding="utf-16")
    err = _file_error(path)
    assert "UTF-16" in str(err) and "Save it again as UTF-8" in str(err)


def test_a_utf8_bom_at_the_start_of_the_toml_file_is_accepted(tmp_path):
    path = tmp_path / "aillm.toml"
    path.write_bytes(b"\xef\xbb\xbf" + TOML.encode())
    s = LabSettings.load(config_file=path)
    assert s.model == "scripted:echo" and s.dashboard_port == 7001


def test_a_bad_value_in_toml_names_the_file_and_its_line(tmp_path):
    path = _toml(tmp_path, 'model = "scripted:echo"\n\n[limits."openai:x"]\nrpm = -5\n')
    with pytest.raises(ConfigError) as info:
        LabSettings.load(config_file=path)
    assert info.value.fields == ("limits.openai:x.rpm",)
    assert f"{path} line 4" in str(info.value)


def test_a_value_from_the_environment_is_not_blamed_on_the_toml_file(monkeypatch, tmp_path):
    monkeypatch.setenv("AILLM_DASHBOARD_PORT", "0")
    with pytest.raises(ConfigError) as info:
        LabSettings.load(config_file=_toml(tmp_path))
    assert "line" not in str(info.value) and "$AILLM_DASHBOARD_PORT" in str(info.value)


def test_a_config_file_error_survives_pickling(tmp_path):
    err = _file_error(_toml(tmp_path, "a = \n"))
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.line, copy.column, str(copy)) == (err.path, err.line, err.column,
                                                              str(err))


# -- environment variables holding bad JSON name the variable -------------------------------
@pytest.mark.parametrize(("name", "value", "field"), [
    ("AILLM_SAFETY", "{bad", "safety"),
    ("AILLM_LIMITS", '{"openai:x": ', "limits"),
    ("AILLM_FALLBACKS", "[local:smollm2]", "fallbacks"),
])
def test_bad_json_in_an_env_var_is_a_config_error_naming_the_variable(monkeypatch, name,
                                                                      value, field):
    monkeypatch.setenv(name, value)
    for make in (LabSettings, LabSettings.load):
        with pytest.raises(ConfigError) as info:
            make()
        assert f"${name} is not valid JSON" in str(info.value)
        assert info.value.fields == (field,)


# -- booleans are strict at every depth -----------------------------------------------------
@pytest.mark.parametrize("value", ['"yes"', "1", "0", '"true"', '"on"'])
def test_a_nested_toml_boolean_must_be_true_or_false(tmp_path, value):
    path = _toml(tmp_path, f"[safety.network]\nallow_loopback = {value}\n")
    with pytest.raises(ConfigError) as info:
        LabSettings.load(config_file=path)
    assert info.value.fields == ("safety.network.allow_loopback",)
    assert "true or false" in str(info.value) and f"{path} line 2" in str(info.value)


def test_toml_booleans_true_and_false_are_read(tmp_path):
    path = _toml(tmp_path, "memory_cache = true\n[safety.network]\nallow_loopback = true\n"
                           "[safety.output]\nredact_secrets = false\n")
    s = LabSettings.load(config_file=path)
    assert s.memory_cache is True and s.safety.network.allow_loopback is True
    assert s.safety.output.redact_secrets is False


@pytest.mark.parametrize(("values", "field"), [
    ({"memory_cache": "yes"}, "memory_cache"),
    ({"memory_cache": 1}, "memory_cache"),
    ({"safety": {"network": {"allow_loopback": 1}}}, "safety.network.allow_loopback"),
    ({"safety": {"code": {"network": "true"}}}, "safety.code.network"),
    ({"safety": {"output": {"scan_injection": 0}}}, "safety.output.scan_injection"),
    ({"limits": {"openai:x": {"adaptive": "yes"}}}, "limits.openai:x.adaptive"),
])
def test_a_boolean_setting_given_a_string_or_number_is_refused(values, field):
    err = _error(**values)
    assert err.fields == (field,)
    assert "true or false" in str(err)


def test_a_loose_boolean_is_reported_with_the_other_bad_fields():
    err = _error(memory_cache=1, dashboard_port=0, safety={"network": {"allow_loopback": "y"}})
    assert set(err.fields) == {"memory_cache", "dashboard_port",
                               "safety.network.allow_loopback"}
    assert ">= 1" in str(err)


def test_env_var_booleans_are_true_or_false_in_any_case(monkeypatch):
    monkeypatch.setenv("AILLM_MEMORY_CACHE", "TRUE")
    assert LabSettings.load().memory_cache is True
    monkeypatch.setenv("AILLM_MEMORY_CACHE", "false")
    assert LabSettings.load().memory_cache is False


@pytest.mark.parametrize("value", ["yes", "1", "on"])
def test_env_var_boolean_other_words_are_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("AILLM_MEMORY_CACHE", value)
    with pytest.raises(ConfigError) as info:
        LabSettings.load()
    assert info.value.fields == ("memory_cache",)
    assert "$AILLM_MEMORY_CACHE" in str(info.value)


def test_a_nested_boolean_in_env_json_must_be_a_json_boolean(monkeypatch):
    monkeypatch.setenv("AILLM_SAFETY", '{"network": {"allow_loopback": "yes"}}')
    with pytest.raises(ConfigError) as info:
        LabSettings.load()
    assert info.value.fields == ("safety.network.allow_loopback",)
    monkeypatch.setenv("AILLM_SAFETY", '{"network": {"allow_loopback": true}}')
    assert LabSettings.load().safety.network.allow_loopback is True
