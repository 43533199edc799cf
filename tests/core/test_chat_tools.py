"""``lab.chat(tools=...)`` takes a ``Tool`` from ``@al.tool``, its ``ToolSpec`` or a plain
typed function, and the model is shown the same ``ToolSpec`` for each."""

from __future__ import annotations

import asyncio

import pytest

import aillm_lab as al
from aillm_lab.errors import ConfigError
from aillm_lab.llm.request_key import request_hash
from aillm_lab.llm.types import Message, ToolCall, ToolSpec


def lookup(_class: str, model_config: int = 1) -> str:
    """Find the rows of a class.

    Args:
        _class: the class to look for
        model_config: which configuration to read
    """
    return f"{_class}/{model_config}"


lookup_tool = al.tool(lookup)
FORMS = {"tool": lookup_tool, "spec": lookup_tool.spec, "function": lookup}


@pytest.mark.parametrize("form", list(FORMS))
def test_each_form_reaches_the_model_as_the_tools_spec(lab, scripted_model, form):
    scripted_model.enqueue(ToolCall(id="1", name="lookup",
                                    arguments={"_class": "Bird", "model_config": "2"}))
    reply = lab.chat("find birds", tools=[FORMS[form]])
    [sent] = scripted_model.requests[0].tools
    assert isinstance(sent, ToolSpec) and sent == lookup_tool.spec
    assert set(sent.parameters["properties"]) == {"_class", "model_config"}
    assert sent.parameters["required"] == ["_class"]
    [call] = reply.tool_calls
    assert asyncio.run(lookup_tool.acall(call.arguments)) == "Bird/2"


@pytest.mark.parametrize("form", list(FORMS))
def test_each_form_works_through_the_async_and_streaming_doors(lab, scripted_model, form):
    scripted_model.enqueue("one", "two")
    assert asyncio.run(lab.achat("x", tools=[FORMS[form]])).text == "one"
    assert "".join(str(e) for e in lab.stream("x", tools=[FORMS[form]])) == "two"
    assert [r.tools for r in scripted_model.requests] == [[lookup_tool.spec]] * 2


@pytest.mark.parametrize("bad", [[42], [lookup_tool, "lookup"]])
def test_a_bad_item_is_a_config_error_saying_what_is_accepted(lab, scripted_model, bad):
    with pytest.raises(ConfigError, match="ToolSpec") as info:
        lab.chat("x", tools=bad)
    assert info.value.fields == ("tools",)
    assert scripted_model.requests == []  # refused before anything was sent


def test_the_model_layer_names_the_fix_for_a_tool_it_is_handed():
    with pytest.raises(ConfigError, match=r"pass lookup\.spec") as info:
        request_hash("scripted", "m", [Message.user("x")], tools=[lookup_tool])  # type: ignore[list-item]
    assert info.value.fields == ("tools",)
    with pytest.raises(ConfigError, match="describe it with @al.tool first"):
        request_hash("scripted", "m", [Message.user("x")], tools=[lookup])  # type: ignore[list-item]
