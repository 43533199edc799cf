"""``ollama:`` models: conversion, errors, and calls against a fake server."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import ollama
import pytest
from pydantic import BaseModel

from aillm_lab.config import LabSettings
from aillm_lab.errors import (
    AuthenticationError,
    BadRequest,
    ProviderConnectionError,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
    UnsupportedInput,
)
from aillm_lab.llm import ollama as provider
from aillm_lab.llm._clients import HttpOptions
from aillm_lab.llm.registry import Registry
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    ImagePart,
    Message,
    ToolCall,
    ToolSpec,
    Usage,
)
from aillm_lab.runtime import LoopRunner


class City(BaseModel):
    name: str


@pytest.fixture
def runner() -> Iterator[LoopRunner]:
    r = LoopRunner(name="aillm-test-ollama")
    yield r
    r.close()


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- conversion ------------------------------------------------------------------------------
def test_messages_map_images_tool_calls_and_tool_names():
    call = ToolCall(id="call_0_x", name="add", arguments={"a": 1})
    messages = provider.to_ollama_messages([
        Message.system("be brief"), Message.user("see", ImagePart(data="aGk=")),
        Message.assistant("", [call]), Message.tool("1", "call_0_x")])
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "see", "images": [b"hi"]},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "add", "arguments": {"a": 1}}}]},
        {"role": "tool", "content": "1", "tool_name": "add"},
    ]


def test_a_data_url_image_is_accepted_and_a_web_url_is_rejected():
    [message] = provider.to_ollama_messages([Message.user(
        "x", ImagePart(url="data:image/png;base64,aGk="))])
    assert message["images"] == [b"hi"]
    with pytest.raises(UnsupportedInput, match="inline images"):
        provider.to_ollama_messages([Message.user("x", ImagePart(url="https://e.org/a.png"))])


def test_request_carries_options_format_and_tools():
    model = provider.OllamaModel("llama3.2", host="127.0.0.1:9")
    params = GenerationParams(max_tokens=10, stop=["x"], seed=3)
    request = model._request([Message.user("hi")], None, City, params)
    assert request["options"] == {"num_predict": 10, "temperature": 0.0, "top_p": 1.0,
                                  "stop": ["x"], "seed": 3}
    assert request["format"] == City.model_json_schema()
    tools = [ToolSpec(name="a"), ToolSpec(name="b")]
    assert [t["function"]["name"] for t in model._request(
        [Message.user("hi")], tools, None, GenerationParams())["tools"]] == ["a", "b"]
    assert [t["function"]["name"] for t in model._request(
        [Message.user("hi")], tools, None, GenerationParams(tool_choice="b"))["tools"]] == ["b"]
    assert "tools" not in model._request([Message.user("hi")], tools, None,
                                         GenerationParams(tool_choice="none"))


def test_tool_calls_get_stable_synthesised_ids():
    raw = [SimpleNamespace(function=SimpleNamespace(name="add", arguments={"a": 1})),
           SimpleNamespace(function=SimpleNamespace(name="add", arguments={"a": 2}))]
    first, again = provider._tool_calls(raw), provider._tool_calls(raw)
    assert first == again
    assert [c.arguments for c in first] == [{"a": 1}, {"a": 2}]
    assert first[0].id != first[1].id and first[0].id.startswith("call_0_")


@pytest.mark.parametrize("host,expected", [
    ("127.0.0.1:9", "http://127.0.0.1:9"), ("localhost", "http://localhost:11434"),
    (":5000", "http://127.0.0.1:5000"), ("http://box:11434/", "http://box:11434"),
    ("https://ollama.example.org", "https://ollama.example.org")])
def test_ollama_host_forms_are_normalised(host, expected):
    assert provider.normalise_host(host) == expected


def test_registry_uses_ollama_host_from_settings_and_the_spec():
    settings = LabSettings(ollama_host="http://10.0.0.5:11434")
    model = Registry(plugins=False).resolve("ollama:llama3.2:1b", settings)
    assert isinstance(model, provider.OllamaModel)
    assert model.name == "llama3.2:1b" and model.base_url == "http://10.0.0.5:11434"
    other = provider.create("qwen3@http://gpu:11434", settings)
    assert other.name == "qwen3" and other.base_url == "http://gpu:11434"


# -- errors ----------------------------------------------------------------------------------
def test_response_errors_map_to_typed_errors_with_a_pull_hint():
    model = provider.OllamaModel("llama3.2", host="127.0.0.1:9")
    missing = model._translate(ollama.ResponseError('{"error": "model \\"llama3.2\\" not '
                                                    'found, try pulling it first"}', 404), False)
    assert isinstance(missing, BadRequest) and "ollama pull llama3.2" in str(missing)
    assert missing.vendor_message.startswith('model "llama3.2" not found')
    busy = model._translate(ollama.ResponseError("server busy", 503), False)
    assert isinstance(busy, ProviderUnavailable)
    limited = model._translate(ollama.ResponseError("too many", 429), False)
    assert isinstance(limited, RateLimited)
    cut = model._translate(ollama.ResponseError("runner crashed"), True)
    assert isinstance(cut, StreamInterrupted) and not cut.retryable
    timeout = model._translate(httpx.ReadTimeout("slow"), False)
    assert isinstance(timeout, ProviderConnectionError) and "timed out" in str(timeout)


def test_an_unreachable_ollama_raises_provider_connection_error(runner):
    model = provider.OllamaModel("llama3.2", host=f"127.0.0.1:{_closed_port()}")
    try:
        with pytest.raises(ProviderConnectionError, match="ollama serve"):
            runner.run(model.complete([Message.user("hi")]))
        with pytest.raises(ProviderConnectionError):
            runner.run(model.embed(["hi"]))
    finally:
        runner.run(model.aclose())


def test_the_sdk_client_has_an_explicit_pool(runner):
    model = provider.OllamaModel("m", host="127.0.0.1:9",
                                 http=HttpOptions(max_connections=5,
                                                  max_keepalive_connections=1))

    async def inspect():
        client = await model._clients.get()
        pool = client._client._transport._pool
        return pool._max_connections, pool._max_keepalive_connections

    assert runner.run(inspect()) == (5, 1)
    runner.run(model.aclose())


# -- against the fake Ollama server ------------------------------------------------------------
try:
    from aillm_lab.testing.fake_servers import FakeOllama, Fault, hashed_embedding
except ImportError:  # the fake servers need aiohttp
    FakeOllama = None

needs_fake = pytest.mark.skipif(FakeOllama is None, reason="fake servers need aiohttp")
WEATHER = ToolSpec(name="get_weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = ToolSpec(name="get_time", parameters={
    "type": "object", "properties": {"tz": {"type": "string"}}})


@pytest.fixture
def served(runner):
    """A fake Ollama server and an ``ollama:`` model pointed at it through settings."""
    with FakeOllama() as server:
        model = provider.create("llama3.2", LabSettings(ollama_host=server.url))
        yield server, model
        runner.run(model.aclose())


async def _collect(events) -> tuple[list, BaseException | None]:
    got = []
    try:
        async for event in events:
            got.append(event)
    except Exception as exc:
        return got, exc
    return got, None


@needs_fake
def test_chat_returns_the_servers_text_through_a_lab(served, runner):
    from aillm_lab.core.lab import Lab

    server, model = served
    server.enqueue("Hello from llama.")
    with Lab(LabSettings(), model=model, runner=runner) as lab:
        completion = lab.chat("hi", system="be brief", max_tokens=12)
    assert completion.text == "Hello from llama." and completion.finish_reason == "stop"
    sent = server.last_request.body
    assert sent["stream"] is False and sent["model"] == "llama3.2"
    assert sent["options"]["num_predict"] == 12
    assert sent["messages"] == [{"role": "system", "content": "be brief"},
                                {"role": "user", "content": "hi"}]


@needs_fake
def test_stream_yields_text_deltas_that_join_to_the_reply(served, runner):
    server, model = served
    server.enqueue("Llamas stream text line by line.")
    events, error = runner.run(_collect(model.stream([Message.user("go")])))
    assert error is None
    assert len([e for e in events if e.type == "text"]) > 3
    assert "".join(map(str, events)) == "Llamas stream text line by line."
    assert [e.type for e in events[-2:]] == ["usage", "done"]
    assert server.last_request.body["stream"] is True


@needs_fake
@pytest.mark.parametrize("streamed", [False, True])
def test_one_and_two_tool_calls_get_names_arguments_and_stable_ids(served, runner, streamed):
    server, model = served
    one = [ToolCall(id="", name="get_weather", arguments={"city": "Lima"})]
    two = [ToolCall(id="", name="get_weather", arguments={"city": "Oslo"}),
           ToolCall(id="", name="get_time", arguments={"tz": "Europe/Oslo"})]
    seen = []
    for calls in (one, two, two):
        server.enqueue(Completion(tool_calls=calls))
        messages = [Message.user("weather?")]
        if streamed:
            events, error = runner.run(_collect(model.stream(messages, tools=[WEATHER, TIME])))
            assert error is None
            got = [e.tool_call for e in events if e.type == "tool_call"]
            assert events[-1].completion.tool_calls == got
        else:
            got = runner.run(model.complete(messages, tools=[WEATHER, TIME])).tool_calls
        assert [(c.name, c.arguments) for c in got] == [(c.name, c.arguments) for c in calls]
        assert [c.id[:7] for c in got] == [f"call_{i}_" for i in range(len(calls))]
        seen.append(got)
    assert seen[1] == seen[2]  # the same calls get the same ids
    assert [t["function"]["name"] for t in server.last_request.body["tools"]] == [
        "get_weather", "get_time"]


@needs_fake
def test_tool_results_go_back_as_tool_messages_with_the_tool_name(served, runner):
    server, model = served
    server.enqueue("It is sunny.")
    call = ToolCall(id="call_0_abc", name="get_weather", arguments={"city": "Lima"})
    messages = [Message.user("weather?"), Message.assistant("", [call]),
                Message.tool("sunny", "call_0_abc")]
    assert runner.run(model.complete(messages, tools=[WEATHER])).text == "It is sunny."
    assert server.last_request.body["messages"][1:] == [
        {"role": "assistant", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Lima"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"}]


@needs_fake
def test_structured_output_sends_the_schema_as_format(served, runner):
    from aillm_lab.core.lab import Lab

    server, model = served
    server.enqueue('{"name": "Lima"}')
    with Lab(LabSettings(), model=model, runner=runner) as lab:
        assert lab.complete("capital of Peru", output=City) == City(name="Lima")
    assert server.last_request.body["format"] == City.model_json_schema()


@needs_fake
def test_an_image_part_is_sent_in_the_images_list(served, runner):
    server, model = served
    server.enqueue("a square")
    runner.run(model.complete([Message.user("what?", ImagePart(data="iVBORw0KGgo="))]))
    assert server.last_request.body["messages"][0]["images"] == ["iVBORw0KGgo="]


@needs_fake
@pytest.mark.parametrize("streamed", [False, True])
def test_usage_equals_the_servers_counts(served, runner, streamed):
    server, model = served
    usage = Usage(input_tokens=33, output_tokens=11)
    server.enqueue(Completion(text="counted", usage=usage))
    if streamed:
        events, _ = runner.run(_collect(model.stream([Message.user("x")])))
        assert [e.usage for e in events if e.type == "usage"] == [usage]
    else:
        assert runner.run(model.complete([Message.user("x")])).usage == usage


@needs_fake
def test_http_errors_are_typed_with_the_vendors_message(served, runner):
    server, model = served
    server.inject(Fault.bad_request("invalid options"), Fault.unauthorized(),
                  Fault.rate_limit(retry_after=3), Fault.unavailable())
    with pytest.raises(BadRequest) as bad:
        runner.run(model.complete([Message.user("hi")]))
    assert bad.value.status == 400 and bad.value.vendor_message == "invalid options"
    with pytest.raises(AuthenticationError):
        runner.run(model.complete([Message.user("hi")]))
    with pytest.raises(RateLimited) as limited:
        runner.run(model.complete([Message.user("hi")]))
    assert limited.value.retry_after_s == 3.0
    with pytest.raises(ProviderUnavailable) as busy:
        runner.run(model.complete([Message.user("hi")]))
    assert "server busy" in busy.value.vendor_message
    assert len(server.requests) == 4


@needs_fake
def test_an_unpulled_model_is_bad_request_with_the_pull_command(runner):
    with FakeOllama(models=["llama3.2"]) as server:
        model = provider.OllamaModel("qwen3:4b", host=server.url)
        try:
            with pytest.raises(BadRequest, match="ollama pull qwen3:4b"):
                runner.run(model.complete([Message.user("hi")]))
        finally:
            runner.run(model.aclose())


@needs_fake
def test_a_stream_cut_or_failed_after_its_first_events_raises_stream_interrupted(served,
                                                                                runner):
    server, model = served
    server.enqueue("one two three four five six seven eight")
    server.inject(Fault.cut_stream(after=3))
    events, error = runner.run(_collect(model.stream([Message.user("count")])))
    assert isinstance(error, StreamInterrupted) and not error.retryable
    assert "".join(map(str, events)) == "one two three"
    server.enqueue("partial answer")
    server.inject(Fault.malformed_tool_call())
    events, error = runner.run(_collect(model.stream([Message.user("x")], tools=[WEATHER])))
    assert isinstance(error, StreamInterrupted)
    assert "error parsing tool call" in error.vendor_message


@needs_fake
def test_embeddings_return_one_vector_per_text(served, runner):
    server, model = served
    vectors = runner.run(model.embed(["red apples", "green pears"]))
    assert vectors == [pytest.approx(hashed_embedding("red apples", 64)),
                       pytest.approx(hashed_embedding("green pears", 64))]
    assert server.last_request.path == "/api/embed"
    assert server.last_request.body["input"] == ["red apples", "green pears"]
