"""Mistakes a newcomer makes through the public API: each fails at once with a typed error
that names the field and the fix (never a bare TypeError from deep inside)."""

from __future__ import annotations

import base64
import math

import pytest

import aillm_lab as al
from aillm_lab import cli
from aillm_lab.errors import ConfigError
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"  # not UTF-8, as real image bytes are not


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- 1. a model string is checked where it is given -------------------------------------------
@pytest.mark.parametrize(("model", "said"), [
    ("gpt-4o", "'gpt-4o' is not 'provider:model'"),
    ("nope:x", "'nope:x' names no known provider ('nope')")])
def test_lab_checks_a_model_string_at_construction(lab_home, model, said):
    with pytest.raises(ConfigError, match="model") as info:
        al.Lab(home=lab_home, model=model)
    assert info.value.fields == ("model",) and said in str(info.value)
    assert "scripted" in str(info.value)  # the known providers are listed


def test_lab_refuses_a_model_that_is_neither_a_string_nor_a_model(lab_home):
    with pytest.raises(ConfigError, match="provider:model") as info:
        al.Lab(home=lab_home, model=42)
    assert info.value.fields == ("model",)


def test_the_model_check_creates_no_model(lab_home, monkeypatch):
    from aillm_lab.llm import registry

    monkeypatch.setattr(registry.Registry, "resolve",
                        lambda *a, **k: pytest.fail("a model was created by the check"))
    lab = al.Lab(home=lab_home, model="openai:gpt-4o-mini")  # no key, no network needed
    assert lab.default_model_id == "openai:gpt-4o-mini"


def test_a_model_object_passes_through_unchanged(lab_home):
    model = ScriptedModel(["hi"])
    assert al.Lab(home=lab_home, model=model).given_model is model


@pytest.mark.parametrize(("model", "said"), [
    ("foo", "--model: 'foo' is not 'provider:model'"),
    ("nope:x", "--model: 'nope:x' names no known provider ('nope')")])
def test_serve_with_a_bad_model_exits_2_naming_model_before_serving(capsys, monkeypatch,
                                                                    model, said):
    import panel as pn

    monkeypatch.setattr(pn, "serve", lambda *a, **k: pytest.fail("served despite the error"))
    code, out, err = _run(capsys, "serve", "--model", model)
    assert code == cli.EXIT_CONFIG and said in err and out == ""


# -- 3. a prompt that is not a prompt -------------------------------------------------------
@pytest.mark.parametrize("prompt", [42, None, b"hi", {"role": "user", "content": "hi"}])
def test_chat_with_a_prompt_of_the_wrong_type_names_what_a_prompt_may_be(prompt):
    with pytest.raises(ConfigError, match="prompt") as info:
        al.chat(prompt, model="scripted:echo")
    assert "a str" in str(info.value) and "al.Message" in str(info.value)
    assert info.value.fields == ("prompt",)


def test_a_message_list_with_a_stray_item_names_its_index(make_lab):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError, match=r"prompt\[1\]"):
        lab.chat([al.Message.user("hi"), 42])


def test_the_async_and_streaming_doors_check_the_prompt_too(make_lab):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError, match="prompt"):
        lab.runner.run(lab.achat(42))
    with pytest.raises(ConfigError, match="prompt"):
        list(lab.stream(None))


# -- 4. the notebook widgets ----------------------------------------------------------------
@pytest.mark.parametrize("data", [[1], "sales.csv", {"t": [1, 2]}])
def test_the_chat_widget_checks_its_tables_like_the_data_agent(make_lab, data):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError, match=r"data") as widget:
        al.ui.chat(lab, data=data)
    with pytest.raises(ConfigError) as agent:
        al.DataAnalysisAgent(lab=lab).run("q", data=data)
    assert str(widget.value) == str(agent.value)


def test_the_trace_widget_says_it_takes_an_agent_run():
    with pytest.raises(TypeError, match="AgentRun"):
        al.ui.trace("x")


# -- 5. a typo in a setting ------------------------------------------------------------------
def test_a_misspelt_setting_suggests_the_real_one_and_invents_no_variable(lab_home):
    with pytest.raises(ConfigError) as info:
        al.Lab(home=lab_home, budgt_usd=1)
    text = str(info.value)
    assert "unknown setting 'budgt_usd'; did you mean 'budget_usd'?" in text
    assert "AILLM_BUDGT_USD" not in text and info.value.fields == ("budgt_usd",)


def test_a_misspelt_nested_setting_suggests_from_its_own_table(lab_home):
    with pytest.raises(ConfigError) as info:
        al.LabSettings(home=lab_home, local={"n_thread": 2})
    assert "did you mean 'n_threads'?" in str(info.value)


def test_a_misspelt_setting_in_the_toml_file_names_its_line(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text(f'home = "{tmp_path}"\nbudgt_usd = 1\n')
    with pytest.raises(ConfigError) as info:
        al.LabSettings.load(config_file=path)
    assert "did you mean 'budget_usd'?" in str(info.value)
    assert f"{path} line 2" in str(info.value)


# -- 6. a typo in a generation argument ------------------------------------------------------
@pytest.mark.parametrize(("typo", "meant"), [("modle", "model"), ("sytem", "system"),
                                             ("max_token", "max_tokens")])
def test_a_misspelt_keyword_suggests_the_call_s_own_keywords_too(typo, meant):
    with pytest.raises(ConfigError) as info:
        al.chat("hi", model="scripted:echo", **{typo: "x"})
    assert f"did you mean '{meant}'?" in str(info.value)
    assert info.value.fields == (typo,)


def test_complete_suggests_its_own_keywords(make_lab):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError, match="did you mean 'output'"):
        lab.complete("hi", outptu=dict)


def test_a_bad_parameter_value_still_names_the_range():
    with pytest.raises(ConfigError, match="temperature") as info:
        al.chat("hi", model="scripted:echo", temperature=9)
    assert info.value.fields == ("temperature",)


# -- 7. a scope's budget -----------------------------------------------------------------------
@pytest.mark.parametrize("budget", [-1, "abc", math.nan, math.inf, True])
def test_scope_refuses_a_bad_budget_at_once(make_lab, budget):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError, match="budget_usd") as info:
        lab.scope("neg", budget_usd=budget)  # before the with block is entered
    assert info.value.fields == ("budget_usd",)


def test_scope_still_takes_zero_none_and_a_positive_budget(make_lab):
    lab = make_lab("scripted:echo")
    for budget in (0, None, 0.5):
        with lab.scope("ok", budget_usd=budget) as run:
            assert run.budget.cap_usd == budget


# -- 8. --config names itself ----------------------------------------------------------------
def test_a_missing_config_given_with_the_option_names_the_option(capsys, tmp_path):
    code, _, err = _run(capsys, "--config", str(tmp_path / "missing.toml"), "doctor")
    assert code == cli.EXIT_CONFIG and "--config" in err and "missing.toml" in err
    assert "AILLM_CONFIG" not in err


def test_a_missing_config_named_by_the_environment_names_the_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("AILLM_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"\$AILLM_CONFIG"):
        al.LabSettings.load()


def test_a_missing_config_file_argument_does_not_blame_the_environment(tmp_path):
    with pytest.raises(ConfigError) as info:
        al.LabSettings.load(config_file=tmp_path / "gone.toml")
    assert "AILLM_CONFIG" not in str(info.value) and "gone.toml" in str(info.value)


# -- 9. inline image bytes ---------------------------------------------------------------------
def test_an_image_part_takes_inline_bytes_as_base64():
    part = al.ImagePart(data=PNG)
    assert part.data == base64.b64encode(PNG).decode()
    assert part.data_url.endswith(part.data)
    assert al.ImagePart(data=part.data) == part  # base64 text is kept as it is
