"""An agent's numeric arguments are checked when it is made: a wrong type, a bool, NaN or a
value out of range is a ``ConfigError`` naming the argument, its value and what is allowed."""

from __future__ import annotations

import inspect
import math

import pytest
from pydantic import BaseModel

import aillm_lab as al
from aillm_lab.errors import ConfigError

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


@pytest.mark.parametrize(("name", "value", "allowed"), [
    ("max_steps", "ten", "a whole number, 1 or more"),
    ("max_steps", True, "a whole number, 1 or more"),
    ("max_steps", 2.5, "a whole number, 1 or more"),
    ("max_steps", 0, "a whole number, 1 or more"),
    ("max_seconds", "60", "a number above 0, or None"),
    ("max_seconds", 0, "a number above 0, or None"),
    ("max_seconds", math.nan, "a number above 0, or None"),
    ("max_seconds", False, "a number above 0, or None"),
    ("max_cost_usd", "abc", "a number of USD, 0 or more, or None"),
    ("max_cost_usd", -0.01, "a number of USD, 0 or more, or None"),
    ("max_cost_usd", math.inf, "a number of USD, 0 or more, or None"),
    ("max_cost_usd", True, "a number of USD, 0 or more, or None"),
    ("max_repairs", "3", "a whole number, 0 or more"),
    ("max_repairs", -1, "a whole number, 0 or more"),
    ("max_repairs", True, "a whole number, 0 or more"),
    ("progress", "yes", "True, False, or the seconds"),
    ("progress", -1, "True, False, or the seconds"),
    ("progress", math.nan, "True, False, or the seconds"),
])
def test_a_bad_numeric_argument_names_itself_its_value_and_the_range(make_lab, name, value,
                                                                      allowed):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError) as info:
        al.ReActAgent(tools=[], lab=lab, **{name: value})
    text = str(info.value)
    assert info.value.fields == (name,)
    assert text.startswith(f"{name}={value!r}: ") and allowed in text


@pytest.mark.parametrize("agent", ["ReActAgent", "CodeWriterAgent", "ResearchAgent",
                                   "DataAnalysisAgent"])
def test_every_agent_checks_them_through_the_shared_constructor(make_lab, agent):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError, match="max_steps='ten'"):
        getattr(al, agent)(lab=lab, max_steps="ten")


SHARED = ["tools", "model", "lab", "max_steps", "max_cost_usd", "max_seconds", "output",
          "memory"]
AGENTS = ["ReActAgent", "CodeWriterAgent", "ResearchAgent", "DataAnalysisAgent"]


@pytest.mark.parametrize("agent", AGENTS)
def test_every_agent_takes_the_shared_arguments_in_the_same_order_and_keeps_them(
        make_lab, agent):
    cls = getattr(al, agent)
    assert list(inspect.signature(cls.__init__).parameters)[1:len(SHARED) + 1] == SHARED
    lab = make_lab("scripted:echo")
    made = cls(lab=lab, model="scripted:other", max_steps=3, max_cost_usd=0.5, max_seconds=9,
               memory=None)
    assert made.lab is lab and made.model == "scripted:other" and made.memory is None
    assert (made.max_steps, made.max_cost_usd, made.max_seconds) == (3, 0.5, 9)


@pytest.mark.parametrize("agent", AGENTS[1:])
def test_an_agent_with_its_own_result_type_refuses_output(make_lab, agent):
    class Other(BaseModel):
        a: int = 0

    with pytest.raises(ConfigError, match="output"):
        getattr(al, agent)(lab=make_lab("scripted:echo"), output=Other)


def test_good_values_are_kept_as_given(make_lab):
    lab = make_lab("scripted:echo")
    agent = al.ReActAgent(tools=[], lab=lab, max_steps=3, max_seconds=1.5, max_cost_usd=0,
                          max_repairs=0, progress=0.5)
    assert (agent.max_steps, agent.max_seconds, agent.max_cost_usd, agent.max_repairs,
            agent.progress_after_s) == (3, 1.5, 0, 0, 0.5)
    loose = al.ReActAgent(tools=[], lab=lab, max_seconds=None, max_cost_usd=None, progress=False)
    assert loose.max_seconds is None and loose.max_cost_usd is None
    assert loose.progress_after_s is None


def test_a_misspelt_generation_parameter_in_params_suggests_the_real_one(make_lab):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError, match="did you mean 'temperature'"):
        al.ReActAgent(tools=[], lab=lab, params={"temprature": 0.5})



@pytest.mark.parametrize(("model", "said"), [
    ("gpt-4o", "is not 'provider:model'"), ("opneai:gpt-4o", "names no known provider")])
def test_a_model_string_is_checked_when_the_agent_is_made(make_lab, model, said):
    lab = make_lab("scripted:echo")
    with pytest.raises(ConfigError, match=said) as info:
        al.ReActAgent(tools=[], lab=lab, model=model)
    assert info.value.fields == ("model",)
    assert al.ReActAgent(tools=[], lab=lab, model="openai:gpt-4o").model == "openai:gpt-4o"
