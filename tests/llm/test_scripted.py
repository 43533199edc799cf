"""ScriptedModel: queued or function replies, tool calls, streaming, word-count usage, params."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

import aillm_lab as al
import aillm_lab.testing
from aillm_lab.config import LabSettings
from aillm_lab.errors import AillmError
from aillm_lab.llm import registry as registry_module
from aillm_lab.llm import scripted
from aillm_lab.llm.base import Model
from aillm_lab.llm.scripted import ScriptedModel, ScriptedRequest, ScriptExhausted, create, echo
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    ImagePart,
    Message,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)
from aillm_lab.runtime import LoopRunner, run_sync


class Pet(BaseModel):
    name: str
    legs: int


WEATHER = ToolSpec(name="get_weather", description="Weather for a city",
                   parameters={"type": "object", "properties": {"city": {"type": "string"}}})


pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def settings(tmp_path: Path) -> LabSettings:
    return LabSettings.load(home=tmp_path / "lab_home")


@pytest.fixture
def lab(settings: LabSettings) -> Iterator[al.Lab]:
    runner = LoopRunner(name="aillm-test-scripted")
    with al.Lab(settings, runner=runner) as lab:
        yield lab
    runner.close()


# -- queue of replies -------------------------------------------------------------------------
def test_queued_replies_come_back_in_order(lab):
    model = ScriptedModel(["first", "second"])
    assert lab.chat("a", model=model).text == "first"
    assert lab.chat("b", model=model).text == "second"


def test_enqueue_appends_after_constructor_replies_and_is_chainable(lab):
    model = ScriptedModel(["one"])
    assert model.enqueue("two").enqueue("three") is model
    assert [lab.chat("q", model=model).text for _ in range(3)] == ["one", "two", "three"]


def test_reply_completion_is_a_completion_whose_str_is_the_text(lab):
    model = ScriptedModel(["Bonjour tout le monde"])
    reply = lab.chat("Say hello in French", model=model)
    assert isinstance(reply, Completion)
    assert str(reply) == "Bonjour tout le monde"
    assert reply.model == "scripted:scripted" == model.id
    assert reply.finish_reason == "stop"
    assert reply.tool_calls == []


def test_each_completion_gets_its_own_response_id(lab):
    model = ScriptedModel(["a", "b"])
    first, second = lab.chat("x", model=model), lab.chat("y", model=model)
    assert first.response_id and second.response_id
    assert first.response_id != second.response_id


def test_dict_and_pydantic_replies_are_sent_as_json(lab):
    model = ScriptedModel([{"city": "Paris", "rank": 1}, Pet(name="Rex", legs=4)])
    assert lab.chat("dict", model=model).text == '{"city": "Paris", "rank": 1}'
    assert Pet.model_validate_json(lab.chat("pet", model=model).text) == Pet(name="Rex", legs=4)


def test_full_completion_reply_is_returned_with_the_model_id_filled_in(lab):
    given = Completion(text="as given", usage=Usage(input_tokens=11, output_tokens=22),
                       finish_reason="length")
    named = Completion(text="named", model="other:model")
    model = ScriptedModel([given, named], name="fixed")
    reply = lab.chat("q", model=model)
    assert reply.text == "as given"
    assert reply.usage == Usage(input_tokens=11, output_tokens=22)
    assert reply.finish_reason == "length"
    assert reply.model == "scripted:fixed"
    assert lab.chat("q", model=model).model == "other:model"


def test_an_exception_reply_is_raised_to_the_caller(lab):
    model = ScriptedModel([ValueError("scripted boom"), "recovered"])
    with pytest.raises(ValueError, match="scripted boom"):
        lab.chat("q", model=model)
    assert lab.chat("q", model=model).text == "recovered"


def test_module_level_chat_accepts_a_scripted_model_instance():
    model = ScriptedModel(["from the default lab"])
    reply = al.chat("hello", model=model)
    assert reply.text == "from the default lab"
    assert model.requests[0].messages[-1].text == "hello"


# -- exhaustion -----------------------------------------------------------------------------
def test_running_out_of_replies_raises_script_exhausted_naming_the_fix(lab):
    model = ScriptedModel(["only one"], name="short")
    lab.chat("q", model=model)
    with pytest.raises(ScriptExhausted) as info:
        lab.chat("q again", model=model)
    message = str(info.value)
    assert "scripted:short" in message
    assert "after 1 calls" in message
    assert ".enqueue(" in message
    assert isinstance(info.value, AillmError)
    assert isinstance(info.value, LookupError)


def test_an_empty_model_raises_on_first_call_and_works_once_refilled(lab):
    model = ScriptedModel()
    with pytest.raises(ScriptExhausted, match="after 0 calls"):
        lab.chat("q", model=model)
    model.enqueue("now it answers")
    assert lab.chat("q", model=model).text == "now it answers"


def test_streaming_an_exhausted_model_raises_script_exhausted(lab):
    model = ScriptedModel()
    with pytest.raises(ScriptExhausted):
        list(lab.stream("q", model=model))


# -- a function as the script -----------------------------------------------------------------
def test_function_script_receives_messages_and_the_request(lab):
    seen: list[tuple[list[Message], ScriptedRequest]] = []

    def script(messages: list[Message], request: ScriptedRequest) -> str:
        seen.append((messages, request))
        return f"{len(messages)} messages, last: {messages[-1].text}"

    model = ScriptedModel(script)
    reply = lab.chat("ping", model=model, system="Be terse", temperature=0.5)
    assert reply.text == "2 messages, last: ping"
    messages, request = seen[0]
    assert [m.role for m in messages] == ["system", "user"]
    assert request is model.requests[0]
    assert request.params.temperature == 0.5


def test_function_script_is_called_every_time_and_never_runs_out(lab):
    calls = []

    def script(messages: list[Message], request: ScriptedRequest) -> str:
        calls.append(messages[-1].text)
        return f"reply {len(calls)}"

    model = ScriptedModel(script)
    texts = [lab.chat(f"q{i}", model=model).text for i in range(4)]
    assert texts == ["reply 1", "reply 2", "reply 3", "reply 4"]
    assert calls == ["q0", "q1", "q2", "q3"]


def test_async_function_script_is_awaited(lab):
    async def script(messages: list[Message], request: ScriptedRequest) -> str:
        await asyncio.sleep(0)
        return messages[-1].text.upper()

    assert lab.chat("quiet please", model=ScriptedModel(script)).text == "QUIET PLEASE"


def test_function_script_can_reply_with_a_tool_call_when_tools_are_offered(lab):
    def script(messages: list[Message], request: ScriptedRequest) -> ToolCall | str:
        if request.tools and messages[-1].role == "user":
            return ToolCall(id="c1", name=request.tools[0].name, arguments={"city": "Oslo"})
        return "no tools"

    model = ScriptedModel(script)
    reply = lab.chat("Weather in Oslo?", model=model, tools=[WEATHER])
    assert reply.tool_calls == [ToolCall(id="c1", name="get_weather",
                                         arguments={"city": "Oslo"})]
    assert lab.chat("Weather in Oslo?", model=model).text == "no tools"


# -- tool calls -----------------------------------------------------------------------------
def test_one_tool_call_reply_has_no_text_and_finish_reason_tool_calls(lab):
    call = ToolCall(id="call-1", name="get_weather", arguments={"city": "Paris"})
    reply = lab.chat("Weather?", model=ScriptedModel([call]), tools=[WEATHER])
    assert reply.tool_calls == [call]
    assert reply.text == ""
    assert reply.finish_reason == "tool_calls"
    assert reply.usage.output_tokens == 0


def test_a_list_of_tool_calls_is_emitted_in_order(lab):
    calls = [ToolCall(id="a", name="get_weather", arguments={"city": "Rome"}),
             ToolCall(id="b", name="get_weather", arguments={"city": "Milan"})]
    reply = lab.chat("Both cities", model=ScriptedModel([calls]), tools=[WEATHER])
    assert [c.id for c in reply.tool_calls] == ["a", "b"]
    assert reply.to_message().tool_calls == calls


def test_tool_call_round_trip_sees_the_tool_result(lab):
    call = ToolCall(id="call-9", name="get_weather", arguments={"city": "Lima"})
    model = ScriptedModel([call, "It is sunny in Lima"])
    first = lab.chat("Weather in Lima?", model=model, tools=[WEATHER])
    history = [Message.user("Weather in Lima?"), first.to_message(),
               Message.tool({"sky": "sunny"}, call_id="call-9", name="get_weather")]
    second = lab.chat(history, model=model, tools=[WEATHER])
    assert second.text == "It is sunny in Lima"
    sent = model.requests[1].messages
    assert [m.role for m in sent] == ["user", "assistant", "tool"]
    assert sent[1].tool_calls == [call]
    assert sent[2].tool_call_id == "call-9"
    assert sent[2].text == '{"sky": "sunny"}'


# -- recording requests -----------------------------------------------------------------------
def test_requests_record_messages_tools_and_params(lab):
    model = ScriptedModel(["a", "b"])
    lab.chat("first", model=model, tools=[WEATHER], max_tokens=50, stop=["END"], seed=3)
    lab.chat("second", model=model)
    assert len(model.requests) == 2
    first, second = model.requests
    assert isinstance(first, ScriptedRequest)
    assert [m.text for m in first.messages] == ["first"]
    assert first.tools == [WEATHER]
    assert first.output is None
    assert (first.params.max_tokens, first.params.stop, first.params.seed) == (50, ["END"], 3)
    assert second.tools == []
    assert second.params == GenerationParams()


def test_the_failed_call_is_recorded_too(lab):
    model = ScriptedModel()
    with pytest.raises(ScriptExhausted):
        lab.chat("nobody answers", model=model)
    assert [r.messages[-1].text for r in model.requests] == ["nobody answers"]


def test_images_reach_the_model_and_are_recorded(lab):
    image = ImagePart(url="https://example.org/cat.png")
    model = ScriptedModel(["a cat"])
    assert model.supports_images
    lab.chat([Message.user("What is this?", image)], model=model)
    sent = model.requests[0].messages[0]
    assert sent.images == [image]
    assert sent.text == "What is this?"


# -- usage ------------------------------------------------------------------------------------
def test_usage_counts_whitespace_words_of_all_messages_and_the_reply(lab):
    model = ScriptedModel(["one two three four"])
    reply = lab.chat("how many words  are\nhere", model=model, system="be brief")
    assert reply.usage.input_tokens == len("how many words are here".split()) + 2
    assert reply.usage.output_tokens == 4
    assert reply.usage.total_tokens == reply.usage.input_tokens + 4


def test_usage_of_a_dict_reply_counts_the_json_words(lab):
    reply = lab.chat("x", model=ScriptedModel([{"a": 1, "b": 2}]))
    assert reply.usage.output_tokens == len(reply.text.split())
    assert reply.usage.output_tokens > 1


# -- stop and max_tokens ----------------------------------------------------------------------
def test_stop_sequence_cuts_the_reply_before_it(lab):
    model = ScriptedModel(["alpha beta. gamma delta"])
    reply = lab.chat("q", model=model, stop=".")
    assert reply.text == "alpha beta"
    assert reply.finish_reason == "stop"
    assert reply.usage.output_tokens == 2


def test_the_earliest_of_several_stop_sequences_wins(lab):
    model = ScriptedModel(["one two three four five"])
    reply = lab.chat("q", model=model, stop=["four", "two"])
    assert reply.text == "one "


def test_a_stop_sequence_not_in_the_reply_changes_nothing(lab):
    reply = lab.chat("q", model=ScriptedModel(["nothing to cut"]), stop=["###"])
    assert reply.text == "nothing to cut"


def test_max_tokens_truncates_to_that_many_words_with_finish_reason_length(lab):
    model = ScriptedModel(["one two three four five six"])
    reply = lab.chat("q", model=model, max_tokens=3)
    assert reply.text == "one two three"
    assert reply.finish_reason == "length"
    assert reply.usage.output_tokens == 3


def test_a_reply_exactly_max_tokens_long_is_not_marked_as_cut(lab):
    reply = lab.chat("q", model=ScriptedModel(["one two three"]), max_tokens=3)
    assert reply.text == "one two three"
    assert reply.finish_reason == "stop"


def test_stop_applies_before_max_tokens(lab):
    model = ScriptedModel(["a b c | d e f g h"])
    reply = lab.chat("q", model=model, stop="|", max_tokens=5)
    assert reply.text == "a b c "
    assert reply.finish_reason == "stop"


# -- streaming --------------------------------------------------------------------------------
def test_stream_yields_several_text_events_that_join_to_the_reply(lab):
    text = "The quick  brown fox\njumps."
    events = list(lab.stream("story", model=ScriptedModel([text])))
    assert all(isinstance(e, StreamEvent) for e in events)
    texts = [e for e in events if e.type == "text"]
    assert len(texts) == len(text.split())
    assert "".join(map(str, events)) == text
    assert [e.type for e in events[-2:]] == ["usage", "done"]
    done = events[-1].completion
    assert done is not None and done.text == text
    assert events[-2].usage == done.usage
    assert done.usage.output_tokens == 5


def test_stream_emits_tool_call_events_before_usage_and_done(lab):
    calls = [ToolCall(id="a", name="get_weather", arguments={"city": "Bern"}),
             ToolCall(id="b", name="get_weather", arguments={"city": "Basel"})]
    events = list(lab.stream("q", model=ScriptedModel([calls]), tools=[WEATHER]))
    assert [e.type for e in events] == ["tool_call", "tool_call", "usage", "done"]
    assert [e.tool_call for e in events[:2]] == calls
    assert events[-1].completion.finish_reason == "tool_calls"


def test_stream_honours_max_tokens(lab):
    events = list(lab.stream("q", model=ScriptedModel(["a b c d e"]), max_tokens=2))
    assert "".join(map(str, events)) == "a b"
    assert events[-1].completion.finish_reason == "length"


def test_stream_delay_spaces_out_the_chunks():
    delay = 0.02
    model = ScriptedModel(["one two three four"], delay=delay)

    async def main() -> list[float]:
        stamps = []
        async for event in model.stream([Message.user("go")]):
            if event.type == "text":
                stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(main())
    assert len(stamps) == 4
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= delay * 0.9


def test_complete_with_delay_takes_at_least_that_long():
    model = ScriptedModel(["slow"], delay=0.05)
    start = time.monotonic()
    assert run_sync(model.complete([Message.user("q")])).text == "slow"
    assert time.monotonic() - start >= 0.045


# -- async door -------------------------------------------------------------------------------
def test_run_sync_drives_complete_and_stream_directly():
    model = ScriptedModel(["direct reply", "streamed reply here"])
    reply = run_sync(model.complete([Message.user("hi")]))
    assert reply.text == "direct reply"

    async def collect() -> list[StreamEvent]:
        return [e async for e in model.stream([Message.user("hi")])]

    events = run_sync(collect())
    assert "".join(map(str, events)) == "streamed reply here"
    assert sum(e.type == "text" for e in events) == 3


def test_lab_achat_and_astream_inside_asyncio_run(lab):
    model = ScriptedModel(["async one", "async two words"])

    async def main() -> tuple[str, str]:
        first = await lab.achat("a", model=model)
        chunks = [str(e) async for e in lab.astream("b", model=model)]
        return first.text, "".join(chunks)

    assert asyncio.run(main()) == ("async one", "async two words")
    assert [r.messages[-1].text for r in model.requests] == ["a", "b"]


def test_complete_without_params_uses_defaults():
    model = ScriptedModel(["x"])
    run_sync(model.complete([Message.user("q")]))
    assert model.requests[0].params == GenerationParams()


# -- echo, create and the registry ------------------------------------------------------------
def test_echo_replies_with_the_last_user_message():
    messages = [Message.system("sys"), Message.user("first"), Message.assistant("mid"),
                Message.user("last one"), Message.assistant("trailing")]
    assert echo(messages, ScriptedRequest(messages)) == "last one"
    assert echo([Message.system("only system")], ScriptedRequest([])) == ""


def test_create_echo_builds_an_echo_model_and_other_names_start_empty():
    model = create("echo")
    assert isinstance(model, ScriptedModel)
    assert model.id == "scripted:echo"
    assert run_sync(model.complete([Message.user("say this back")])).text == "say this back"
    empty = create("anything")
    assert empty.id == "scripted:anything"
    with pytest.raises(ScriptExhausted):
        run_sync(empty.complete([Message.user("q")]))


def test_registry_resolves_scripted_echo(settings):
    model = registry_module.resolve("scripted:echo", settings)
    assert isinstance(model, ScriptedModel)
    assert isinstance(model, Model)
    assert model.id == "scripted:echo"
    assert run_sync(model.complete([Message.user("round trip")])).text == "round trip"


def test_registry_resolve_without_settings_reads_the_environment():
    model = registry_module.resolve("scripted:echo")
    assert model.id == "scripted:echo"


def test_echo_spec_string_works_through_lab_and_module_level_chat(lab):
    assert lab.chat("hello lab", model="scripted:echo").text == "hello lab"
    assert lab.model("scripted:echo") is lab.model("scripted:echo")
    assert al.chat("hello module", model="scripted:echo").text == "hello module"
    events = list(lab.stream("stream me back", model="scripted:echo"))
    assert "".join(map(str, events)) == "stream me back"


def test_echo_still_honours_max_tokens(lab):
    reply = lab.chat("one two three four", model="scripted:echo", max_tokens=2)
    assert reply.text == "one two"
    assert reply.finish_reason == "length"


# -- public surface ---------------------------------------------------------------------------
def test_testing_module_exports_the_scripted_tools():
    assert aillm_lab.testing.ScriptedModel is ScriptedModel
    assert aillm_lab.testing.ScriptedRequest is ScriptedRequest
    assert aillm_lab.testing.ScriptExhausted is ScriptExhausted
    assert aillm_lab.testing.echo is scripted.echo
    assert {"ScriptedModel", "ScriptedRequest", "ScriptExhausted", "echo"} <= set(
        aillm_lab.testing.__all__)


def test_scripted_model_is_a_model_with_the_scripted_provider():
    model = ScriptedModel(name="demo")
    assert model.provider == "scripted"
    assert model.id == "scripted:demo"
    assert repr(model) == "<ScriptedModel scripted:demo>"
    assert model.delay == 0.0
    assert model.requests == []


@pytest.mark.parametrize("reply", ["hello there", {"answer": 42}])
def test_a_single_reply_is_one_reply_not_an_iterable_of_characters_or_keys(reply):
    model = ScriptedModel(reply)
    with al.Lab(model=model) as lab:
        text = lab.chat("hi").text
        with pytest.raises(AillmError):
            lab.chat("again")
    assert text == (reply if isinstance(reply, str) else json.dumps(reply))
