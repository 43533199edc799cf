"""The Lab and the module-level facade: sync and async doors over one runner."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

import aillm_lab as al
from aillm_lab.errors import ConfigError, StructuredOutputError
from aillm_lab.llm.types import ToolCall, ToolSpec
from aillm_lab.testing import ScriptedModel


class Pet(BaseModel):
    name: str
    legs: int


def test_chat_returns_a_completion_whose_str_is_the_reply(lab, scripted_model):
    scripted_model.enqueue("Bonjour")
    reply = lab.chat("Say hello in French")
    assert isinstance(reply, al.Completion)
    assert str(reply) == "Bonjour"
    assert scripted_model.requests[0].messages[-1].text == "Say hello in French"


def test_system_prompt_is_placed_first(lab, scripted_model):
    scripted_model.enqueue("ok")
    lab.chat("hi", system="Be brief")
    roles = [m.role for m in scripted_model.requests[0].messages]
    assert roles == ["system", "user"]


def test_achat_works_from_a_foreign_event_loop(lab, scripted_model):
    scripted_model.enqueue("one", "two")

    async def main() -> list[str]:
        first = await lab.achat("a")
        second = lab.chat("b")  # sync call inside a running loop
        return [first.text, second.text]

    assert asyncio.run(main()) == ["one", "two"]


def test_complete_with_output_returns_a_validated_instance(lab, scripted_model):
    scripted_model.enqueue('{"name": "Rex", "legs": 4}')
    pet = lab.complete("Describe a dog", output=Pet)
    assert pet == Pet(name="Rex", legs=4)


def test_complete_retries_after_an_invalid_reply_and_then_gives_up(lab, scripted_model):
    scripted_model.enqueue('{"name": "Rex"}', '{"name": "Rex", "legs": 4}')
    assert lab.complete("Describe a dog", output=Pet, retries=1).legs == 4
    scripted_model.enqueue("no", "still no")
    with pytest.raises(StructuredOutputError):
        lab.complete("Describe a dog", output=Pet, retries=1)


def test_acomplete_returns_the_instance_too(lab, scripted_model):
    scripted_model.enqueue({"name": "Tom", "legs": 4})
    pet = asyncio.run(lab.acomplete("cat", output=Pet))
    assert pet.name == "Tom"


def test_stream_and_astream_yield_text_then_done(lab, scripted_model):
    scripted_model.enqueue("the quick brown fox", "jumps over")
    events = list(lab.stream("go"))
    assert "".join(map(str, events)) == "the quick brown fox"
    assert events[-1].type == "done"

    async def collect() -> str:
        return "".join([str(e) async for e in lab.astream("go")])

    assert asyncio.run(collect()) == "jumps over"


def test_tool_calls_come_back_on_the_completion(lab, scripted_model):
    calls = [ToolCall(id="1", name="add", arguments={"a": 1, "b": 2}),
             ToolCall(id="2", name="mul", arguments={"a": 3, "b": 4})]
    scripted_model.enqueue(calls)
    reply = lab.chat("compute")
    assert [c.name for c in reply.tool_calls] == ["add", "mul"]
    assert reply.finish_reason == "tool_calls"


def test_unknown_or_bad_parameters_raise_config_error_naming_them(lab):
    with pytest.raises(ConfigError, match="temprature") as info:
        lab.chat("x", temprature=0.2)
    assert "temperature" in str(info.value)  # lists what is allowed
    with pytest.raises(ConfigError, match="max_tokens"):
        lab.chat("x", max_tokens=0)
    with pytest.raises(ConfigError, match="temperature"):
        list(lab.stream("x", temperature=9))


def test_tools_and_output_together_are_refused_before_anything_is_sent(lab, scripted_model):
    tools = [ToolSpec(name="add")]
    with pytest.raises(ConfigError, match="either tools= or output=") as info:
        lab.complete("x", output=Pet, tools=tools)
    assert set(info.value.fields) == {"tools", "output"}
    with pytest.raises(ConfigError, match="not both"):
        asyncio.run(lab.acomplete("x", output=Pet, tools=tools))
    assert scripted_model.requests == []


def test_model_strings_resolve_once_and_are_reused(lab):
    assert lab.model("scripted:echo") is lab.model("scripted:echo")
    assert lab.chat("ping", "scripted:echo").text == "ping"


def test_lab_is_a_sync_and_async_context_manager_that_closes_its_models(lab_home):
    closed: list[str] = []

    class Closing(ScriptedModel):
        async def aclose(self) -> None:
            closed.append(self.name)

    with al.Lab(home=lab_home) as lab:
        lab._models["x:sync"] = Closing(["a"], name="sync")
        assert lab.chat("q", "x:sync").text == "a"
    assert closed == ["sync"]

    async def main() -> None:
        async with al.Lab(home=lab_home) as lab:
            lab._models["x:async"] = Closing(["b"], name="async")
            assert (await lab.achat("q", "x:async")).text == "b"

    asyncio.run(main())
    assert closed == ["sync", "async"]


def test_lab_settings_come_from_overrides(lab_home):
    lab = al.Lab(home=lab_home, model="scripted:echo", dashboard_port=7001)
    assert lab.settings.home == lab_home
    assert lab.settings.dashboard_port == 7001
    assert lab.default_model_id == "scripted:echo"
    assert lab.default_model_reason() == ("scripted:echo", "given to Lab(model=...)")
    from_settings = al.Lab(al.LabSettings.load(home=lab_home, model="scripted:echo"))
    assert from_settings.default_model_reason()[0] == "scripted:echo"
    assert "AILLM_MODEL" in from_settings.default_model_reason()[1]
    with pytest.raises(ConfigError, match="dashboard_port"):
        al.Lab(home=lab_home, dashboard_port=70000)


def test_given_model_is_the_model_object_given_and_none_for_a_name(lab_home):
    from aillm_lab.testing import ScriptedModel

    model = ScriptedModel(["hi"])
    assert al.Lab(home=lab_home, model=model).given_model is model
    assert al.Lab(home=lab_home, model="scripted:echo").given_model is None
    assert al.Lab(home=lab_home).given_model is None


def test_default_model_without_keys_is_the_local_model(lab_home):
    lab = al.Lab(home=lab_home)
    spec, reason = lab.default_model_reason()
    assert spec == "local:smollm2"
    assert "local" in reason


def test_module_level_chat_works_in_scripts_and_inside_asyncio_run():
    assert al.chat("hello", model="scripted:echo").text == "hello"

    async def main() -> tuple[str, str]:
        sync = al.chat("inside", model="scripted:echo").text
        async_ = (await al.achat("awaited", model="scripted:echo")).text
        return sync, async_

    assert asyncio.run(main()) == ("inside", "awaited")
    assert "".join(map(str, al.stream("a b", model="scripted:echo"))) == "a b"
    assert al.complete('{"name": "x", "legs": 2}', model="scripted:echo", output=Pet).legs == 2
