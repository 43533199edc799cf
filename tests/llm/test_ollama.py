"""``ollama:`` models: conversion, errors, and what only Ollama does against a fake server.

What every provider does is tested once per vendor in ``test_provider_contract.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import ollama
import pytest
from pydantic import BaseModel

from aillm_lab.config import LabSettings
from aillm_lab.errors import (
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
    GenerationParams,
    ImagePart,
    Message,
    ToolCall,
    ToolSpec,
)


class City(BaseModel):
    name: str


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
    from aillm_lab.testing.fake_servers import FakeOllama, Fault
except ImportError:  # the fake servers need aiohttp
    FakeOllama = None

needs_fake = pytest.mark.skipif(FakeOllama is None, reason="fake servers need aiohttp")
WEATHER = ToolSpec(name="get_weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


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
def test_an_image_part_is_sent_in_the_images_list(served, runner):
    server, model = served
    server.enqueue("a square")
    runner.run(model.complete([Message.user("what?", ImagePart(data="iVBORw0KGgo="))]))
    assert server.last_request.body["messages"][0]["images"] == ["iVBORw0KGgo="]


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
def test_a_tool_call_ollama_cannot_parse_mid_stream_raises_stream_interrupted(served, runner):
    server, model = served
    server.enqueue("partial answer")
    server.inject(Fault.malformed_tool_call())
    events, error = runner.run(_collect(model.stream([Message.user("x")], tools=[WEATHER])))
    assert isinstance(error, StreamInterrupted)
    assert "error parsing tool call" in error.vendor_message
