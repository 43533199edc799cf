"""``anthropic:`` models: conversion, errors, and what only Anthropic does against a fake
server.

What every provider does is tested once per vendor in ``test_provider_contract.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import anthropic
import httpx2
import pytest
from pydantic import BaseModel

from aillm_lab.config import LabSettings
from aillm_lab.errors import (
    AuthenticationError,
    BadRequest,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
    UnsupportedInput,
)
from aillm_lab.llm import anthropic as provider
from aillm_lab.llm.registry import Registry
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    ImagePart,
    Message,
    ToolCall,
    ToolSpec,
)

KEY = "sk-ant-test-SECRET-0123456789"
URL = "https://api.anthropic.com/v1/messages"


class City(BaseModel):
    name: str
    population: int = 0


def _status_error(cls: type, status: int, body: object, headers: dict | None = None):
    response = httpx2.Response(status, headers=headers or {},
                               request=httpx2.Request("POST", URL))
    return cls(f"Error code: {status}", response=response, body=body)


def _model(**kwargs) -> provider.AnthropicModel:
    return provider.AnthropicModel("claude-haiku", api_key=KEY, **kwargs)


# -- conversion ------------------------------------------------------------------------------
def test_system_goes_to_the_system_param_and_tool_results_to_one_user_turn():
    calls = [ToolCall(id="tu_1", name="add", arguments={"a": 1}),
             ToolCall(id="tu_2", name="mul", arguments={"b": 2})]
    system, messages = provider.to_anthropic_messages([
        Message.system("be brief"), Message.system("be kind"), Message.user("compute"),
        Message.assistant("working", calls), Message.tool("1", "tu_1"), Message.tool("2", "tu_2"),
        Message.user("and now?")])
    assert system == "be brief\n\nbe kind"
    assert messages == [
        {"role": "user", "content": "compute"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "working"},
            {"type": "tool_use", "id": "tu_1", "name": "add", "input": {"a": 1}},
            {"type": "tool_use", "id": "tu_2", "name": "mul", "input": {"b": 2}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "tu_1", "content": "1"},
            {"type": "tool_result", "tool_use_id": "tu_2", "content": "2"},
            {"type": "text", "text": "and now?"}]},
    ]


def test_images_become_base64_or_url_image_blocks():
    _, messages = provider.to_anthropic_messages([Message.user(
        "look", ImagePart(data="aGk=", media_type="image/png"),
        ImagePart(url="https://example.org/cat.jpg"))])
    assert messages[0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "aGk="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.org/cat.jpg"}}]


def test_a_tool_message_without_a_call_id_is_rejected():
    with pytest.raises(UnsupportedInput, match="tool_call_id"):
        provider.to_anthropic_messages([Message(role="tool", content="x")])


def test_structured_output_is_a_forced_tool_with_the_schema_as_input():
    request, wrapped = _model()._request([Message.user("a city")], None, City,
                                         GenerationParams(stop=["\n\n"]))
    assert wrapped is False
    assert request["tool_choice"] == {"type": "tool", "name": "structured_output"}
    [tool] = request["tools"]
    assert tool["name"] == "structured_output"
    assert tool["input_schema"]["properties"]["name"] == {"title": "Name", "type": "string"}
    assert request["stop_sequences"] == ["\n\n"] and request["max_tokens"] == 256
    assert "temperature" not in request and "system" not in request


def test_a_non_object_output_schema_is_wrapped_and_unwrapped():
    request, wrapped = _model()._request([Message.user("numbers")], None,
                                         {"type": "array", "items": {"type": "integer"}},
                                         GenerationParams())
    assert wrapped is True
    assert request["tools"][0]["input_schema"]["required"] == ["value"]
    response = SimpleNamespace(
        id="msg_1", stop_reason="tool_use", usage=SimpleNamespace(input_tokens=3, output_tokens=4),
        content=[SimpleNamespace(type="tool_use", id="tu", name="structured_output",
                                 input={"value": [1, 2]})])
    completion = provider._completion(response, "anthropic:m", True, 0.1)
    assert completion.text == "[1, 2]" and completion.tool_calls == []
    assert completion.finish_reason == "stop"


@pytest.mark.parametrize("choice,expected", [
    ("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"}),
    ("add", {"type": "tool", "name": "add"})])
def test_tool_choice_maps_to_anthropic_shapes(choice, expected):
    tool = ToolSpec(name="add")
    request, _ = _model()._request([Message.user("x")], [tool], None,
                                   GenerationParams(tool_choice=choice))
    assert request["tool_choice"] == expected
    assert request["tools"] == [{"name": "add", "description": "",
                                 "input_schema": tool.parameters}]


def test_usage_counts_cached_prompt_tokens_as_input():
    raw = provider._usage_fields(SimpleNamespace(
        input_tokens=10, output_tokens=20, cache_read_input_tokens=100,
        cache_creation_input_tokens=5,
        output_tokens_details=SimpleNamespace(thinking_tokens=8)))
    usage = provider._usage(raw)
    assert (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens,
            usage.cache_write_tokens, usage.reasoning_tokens) == (115, 20, 100, 5, 8)


# -- errors ----------------------------------------------------------------------------------
def _body(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


@pytest.mark.parametrize("status,kind", [
    (400, BadRequest), (401, AuthenticationError), (403, AuthenticationError),
    (404, BadRequest), (429, RateLimited), (500, ProviderUnavailable),
    (529, ProviderUnavailable)])
def test_status_errors_map_to_typed_provider_errors(status, kind):
    err = _model()._translate(_status_error(anthropic.APIStatusError, status,
                                            _body("some_error", "vendor text")), False)
    assert type(err) is kind and err.status == status
    assert err.vendor_message == "vendor text" and err.provider == "anthropic"


def test_an_error_event_in_a_stream_maps_by_its_type():
    before = _model()._translate(_status_error(
        anthropic.APIStatusError, 200, _body("overloaded_error", "Overloaded")), False)
    assert isinstance(before, ProviderUnavailable) and before.status == 529
    after = _model()._translate(_status_error(
        anthropic.APIStatusError, 200, _body("overloaded_error", "Overloaded")), True)
    assert isinstance(after, StreamInterrupted) and not after.retryable


def test_rate_limit_reads_retry_after_and_keys_stay_secret():
    err = _model()._translate(_status_error(anthropic.RateLimitError, 429,
                                            _body("rate_limit_error", f"slow {KEY}"),
                                            {"retry-after": "3"}), False)
    assert isinstance(err, RateLimited) and err.retry_after_s == 3.0
    assert KEY not in str(err) and KEY not in err.vendor_message
    assert KEY not in repr(_model())


def test_registry_resolves_anthropic_with_the_settings_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    model = Registry(plugins=False).resolve("anthropic:claude-haiku",
                                            LabSettings(anthropic_api_key=KEY))
    assert isinstance(model, provider.AnthropicModel)
    assert model.base_url == "https://api.anthropic.com"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9999/")
    assert provider.create("claude", LabSettings()).base_url == "http://127.0.0.1:9999"


def test_embeddings_are_unsupported(runner):
    with pytest.raises(UnsupportedInput, match="no embeddings"):
        runner.run(_model().embed(["x"]))


def test_the_sdk_client_has_no_retries_and_an_explicit_pool(runner):
    model = _model(http=provider.HttpOptions(timeout_s=30, connect_timeout_s=4,
                                             max_connections=9, max_keepalive_connections=2))

    async def inspect():
        client = await model._clients.get()
        transport = client._client._transport
        return (client.max_retries, type(transport).__name__, transport.limits.max_connections,
                client.timeout.connect, client.timeout.read)

    assert runner.run(inspect()) == (0, "AiohttpTransport", 9, 4, 30)
    runner.run(model.aclose())


# -- against the fake Anthropic server ---------------------------------------------------------
try:
    from aillm_lab.testing.fake_servers import FakeAnthropic
except ImportError:  # the fake servers need aiohttp
    FakeAnthropic = None

needs_fake = pytest.mark.skipif(FakeAnthropic is None, reason="fake servers need aiohttp")
WEATHER = ToolSpec(name="get_weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = ToolSpec(name="get_time", parameters={
    "type": "object", "properties": {"tz": {"type": "string"}}})


@pytest.fixture
def served(runner):
    """A fake Anthropic server and an ``anthropic:`` model pointed at it."""
    with FakeAnthropic() as server:
        model = provider.AnthropicModel("claude-haiku-4-5", api_key=KEY, base_url=server.url)
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
def test_tool_results_go_back_as_tool_result_blocks(served, runner):
    server, model = served
    server.enqueue("Sunny in Oslo, 14:00.")
    calls = [ToolCall(id="toolu_2", name="get_weather", arguments={"city": "Oslo"}),
             ToolCall(id="toolu_3", name="get_time", arguments={"tz": "Europe/Oslo"})]
    messages = [Message.user("weather and time?"), Message.assistant("", calls),
                Message.tool("sunny", "toolu_2"), Message.tool("14:00", "toolu_3")]
    completion = runner.run(model.complete(messages, tools=[WEATHER, TIME]))
    assert completion.text == "Sunny in Oslo, 14:00."
    assert server.last_request.body["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "sunny"},
        {"type": "tool_result", "tool_use_id": "toolu_3", "content": "14:00"}]}


@needs_fake
@pytest.mark.parametrize("streamed", [False, True])
def test_structured_output_forces_the_output_tool_and_returns_its_json(served, runner,
                                                                      streamed):
    server, model = served
    server.enqueue(Completion(tool_calls=[ToolCall(
        id="", name="structured_output", arguments={"name": "Rome", "population": 2800000})]))
    messages = [Message.user("the capital of Italy")]
    if streamed:
        events, error = runner.run(_collect(model.stream(messages, output=City)))
        assert error is None
        assert not [e for e in events if e.type == "tool_call"]
        text = events[-1].completion.text
        assert "".join(map(str, events)) == text
    else:
        text = runner.run(model.complete(messages, output=City)).text
    assert City.model_validate_json(text) == City(name="Rome", population=2800000)
    sent = server.last_request.body
    assert sent["tool_choice"] == {"type": "tool", "name": "structured_output"}
    assert sent["tools"][0]["input_schema"] == City.model_json_schema()


@needs_fake
def test_an_image_part_is_sent_as_a_base64_image_block(served, runner):
    server, model = served
    server.enqueue("a cat")
    image = ImagePart(data="iVBORw0KGgo=", media_type="image/png")
    runner.run(model.complete([Message.user("what is this?", image)]))
    assert server.last_request.body["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}}]
