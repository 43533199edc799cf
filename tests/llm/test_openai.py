"""``openai:`` models: conversion, errors, shared clients, and what only OpenAI does against a
fake server.

What every provider does is tested once per vendor in ``test_provider_contract.py``.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from types import SimpleNamespace

import httpx2
import openai
import pytest
from pydantic import BaseModel, SecretStr

from aillm_lab.config import LabSettings
from aillm_lab.errors import (
    AuthenticationError,
    BadRequest,
    ProviderConnectionError,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
)
from aillm_lab.llm import openai as provider
from aillm_lab.llm._clients import (
    ClientSlot,
    HttpOptions,
    parse_arguments,
    parse_retry_after,
    sdk_http_client,
    split_base_url,
    stable_call_id,
)
from aillm_lab.llm.registry import Registry
from aillm_lab.llm.types import (
    GenerationParams,
    ImagePart,
    Message,
    ToolCall,
    ToolSpec,
)
from aillm_lab.runtime import LoopRunner

KEY = "sk-test-SECRET-0123456789abcdef"
URL = "https://api.openai.com/v1/chat/completions"


class City(BaseModel):
    name: str
    population: int = 0


def _status_error(cls: type, status: int, body: object, headers: dict | None = None):
    response = httpx2.Response(status, headers=headers or {},
                               request=httpx2.Request("POST", URL))
    return cls(f"Error code: {status}", response=response, body=body)


# -- conversion ------------------------------------------------------------------------------
def test_messages_map_tool_calls_tool_results_and_images_to_chat_completions():
    image = ImagePart(data="aGVsbG8=", media_type="image/jpeg")
    call = ToolCall(id="call_1", name="add", arguments={"a": 1, "b": 2})
    messages = [Message.system("be brief"), Message.user("what is in", image),
                Message.assistant("", [call]), Message.tool({"sum": 3}, "call_1", "add")]
    assert provider.to_openai_messages(messages) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [
            {"type": "text", "text": "what is in"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,aGVsbG8="}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"sum": 3}'},
    ]


def test_request_uses_max_completion_tokens_on_openai_and_max_tokens_elsewhere():
    params = GenerationParams(max_tokens=50, stop=["END"], seed=7, temperature=0.3)
    official = provider.OpenAIModel("gpt-4o-mini", api_key=KEY)._request(
        [Message.user("hi")], None, None, params)
    assert official["max_completion_tokens"] == 50 and "max_tokens" not in official
    assert official["stop"] == ["END"] and official["seed"] == 7
    assert official["temperature"] == 0.3 and "top_p" not in official
    local = provider.OpenAIModel("qwen", base_url="http://127.0.0.1:8000/v1")._request(
        [Message.user("hi")], None, None, params)
    assert local["max_tokens"] == 50 and "max_completion_tokens" not in local


def test_reasoning_models_get_no_temperature():
    request = provider.OpenAIModel("o3-mini", api_key=KEY)._request(
        [Message.user("hi")], None, None, GenerationParams(top_p=0.5))
    assert "temperature" not in request and "top_p" not in request


def test_tools_and_a_named_tool_choice_map_to_functions():
    tool = ToolSpec(name="add", description="add two numbers",
                    parameters={"type": "object", "properties": {"a": {"type": "number"}}})
    request = provider.OpenAIModel("gpt-4o", api_key=KEY)._request(
        [Message.user("hi")], [tool], None, GenerationParams(tool_choice="add"))
    assert request["tools"] == [{"type": "function", "function": {
        "name": "add", "description": "add two numbers", "parameters": tool.parameters}}]
    assert request["tool_choice"] == {"type": "function", "function": {"name": "add"}}


def test_response_format_is_strict_only_for_schemas_that_meet_strict_rules():
    loose = provider.response_format(City)
    assert loose["type"] == "json_schema"
    assert loose["json_schema"]["name"] == "City"
    assert loose["json_schema"]["schema"]["properties"]["name"] == {"title": "Name",
                                                                    "type": "string"}
    assert loose["json_schema"]["strict"] is False
    strict = provider.response_format({"title": "a point!", "type": "object",
                                       "properties": {"x": {"type": "number"}},
                                       "required": ["x"], "additionalProperties": False})
    assert strict["json_schema"]["strict"] is True
    assert strict["json_schema"]["name"] == "a_point_"


def test_streamed_tool_call_deltas_are_assembled_by_index():
    def delta(index, id=None, name=None, arguments=None):
        return SimpleNamespace(index=index, id=id,
                               function=SimpleNamespace(name=name, arguments=arguments))

    calls: dict[int, dict[str, str]] = {}
    for part in [delta(0, "call_a", "get_weather", ""), delta(1, "call_b", "get_time", '{"tz"'),
                 delta(0, arguments='{"city": '), delta(1, arguments=': "UTC"}'),
                 delta(0, arguments='"Paris"}')]:
        provider._add_tool_delta(calls, part)
    assembled = [provider._tool_call(i, calls[i]) for i in sorted(calls)]
    assert assembled == [ToolCall(id="call_a", name="get_weather", arguments={"city": "Paris"}),
                         ToolCall(id="call_b", name="get_time", arguments={"tz": "UTC"})]


def test_usage_reads_cached_and_reasoning_tokens():
    usage = SimpleNamespace(prompt_tokens=100, completion_tokens=40,
                            prompt_tokens_details=SimpleNamespace(cached_tokens=64),
                            completion_tokens_details=SimpleNamespace(reasoning_tokens=12))
    got = provider._usage(usage)
    assert (got.input_tokens, got.output_tokens, got.cache_read_tokens, got.reasoning_tokens,
            got.cache_write_tokens) == (100, 40, 64, 12, 0)


def test_tool_arguments_are_repaired_or_kept_raw():
    assert parse_arguments('{"a": 1,}') == {"a": 1}
    assert parse_arguments("") == {}
    assert parse_arguments("[1, 2]") == {"_raw": "[1, 2]"}
    assert stable_call_id(0, "f", {"a": 1}) == stable_call_id(0, "f", {"a": 1})
    assert stable_call_id(0, "f", {"a": 1}) != stable_call_id(1, "f", {"a": 1})


# -- errors ----------------------------------------------------------------------------------
def _translate(exc: BaseException, started: bool = False):
    return provider.OpenAIModel("gpt-4o", api_key=KEY)._translate(exc, started)


@pytest.mark.parametrize("status,kind", [
    (400, BadRequest), (404, BadRequest), (422, BadRequest), (401, AuthenticationError),
    (403, AuthenticationError), (408, ProviderUnavailable), (409, ProviderUnavailable),
    (500, ProviderUnavailable), (503, ProviderUnavailable), (529, ProviderUnavailable),
    (429, RateLimited)])
def test_status_errors_map_to_typed_provider_errors(status, kind):
    err = _translate(_status_error(openai.APIStatusError, status,
                                   {"message": "vendor says no", "type": "x"}))
    assert type(err) is kind
    assert err.status == status and err.provider == "openai" and err.model == "openai:gpt-4o"
    assert err.vendor_message == "vendor says no" and "vendor says no" in str(err)
    assert err.retryable is (kind in (RateLimited, ProviderUnavailable))


@pytest.mark.parametrize("headers,expected", [
    ({"retry-after-ms": "1500"}, 1.5), ({"Retry-After": "7"}, 7.0),
    ({"retry-after-ms": "250", "retry-after": "9"}, 0.25), ({}, None),
    ({"retry-after": "soon"}, None)])
def test_rate_limits_parse_retry_after(headers, expected):
    err = _translate(_status_error(openai.RateLimitError, 429, {"message": "slow down"},
                                   headers))
    assert isinstance(err, RateLimited) and err.retry_after_s == expected


def test_retry_after_may_be_an_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"Retry-After": when}) <= 30
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert parse_retry_after({"Retry-After": past}) == 0.0


def test_errors_after_the_first_event_become_stream_interrupted():
    err = _translate(_status_error(openai.APIStatusError, 503, {"message": "gone"}), True)
    assert isinstance(err, StreamInterrupted) and err.retryable is False
    cut = _translate(httpx2.RemoteProtocolError("peer closed connection"), True)
    assert isinstance(cut, StreamInterrupted) and "peer closed" in str(cut)


def test_connection_errors_and_timeouts_are_retryable_connection_errors():
    request = httpx2.Request("POST", URL)
    err = _translate(openai.APIConnectionError(request=request))
    assert isinstance(err, ProviderConnectionError) and err.retryable
    timeout = _translate(openai.APITimeoutError(request=request))
    assert isinstance(timeout, ProviderConnectionError) and "timed out" in str(timeout)


def test_keys_never_appear_in_reprs_or_error_messages():
    model = provider.OpenAIModel("gpt-4o", api_key=KEY)
    assert KEY not in repr(model) and KEY not in repr(vars(model))
    body = {"message": f"Incorrect API key provided: {KEY}. Bearer {KEY}"}
    err = _translate(_status_error(openai.AuthenticationError, 401, body))
    assert isinstance(err, AuthenticationError)
    assert KEY not in str(err) and KEY not in err.vendor_message
    assert "OPENAI_API_KEY" in str(err)
    other = _translate(_status_error(openai.AuthenticationError, 401,
                                     {"message": "bad key sk-proj-abcdefghijkl"}))
    assert "abcdefghijkl" not in str(other)


# -- construction and clients ----------------------------------------------------------------
def test_registry_resolves_openai_with_settings_key_and_a_base_url_in_the_spec(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings = LabSettings(openai_api_key=KEY)
    model = Registry(plugins=False).resolve("openai:gpt-4o-mini", settings)
    assert isinstance(model, provider.OpenAIModel)
    assert model.base_url == "https://api.openai.com/v1" and model.id == "openai:gpt-4o-mini"
    local = Registry(plugins=False).resolve("openai:Qwen/Qwen2.5@http://box:8000/v1/",
                                            settings)
    assert local.name == "Qwen/Qwen2.5" and local.base_url == "http://box:8000/v1"
    assert split_base_url("llama3@home") == ("llama3@home", None)


def test_openai_base_url_env_points_the_model_at_a_compatible_server(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1234/v1")
    model = provider.create("local-model", LabSettings())
    assert model.base_url == "http://127.0.0.1:1234/v1"
    assert "user:pw" not in repr(provider.OpenAIModel("m", base_url="http://user:pw@h:1/v1"))


def test_timeouts_and_pool_size_come_from_settings():
    settings = LabSettings(request_timeout_s=42,
                           limits={"openai:big": {"concurrency": 200}})
    assert HttpOptions.from_settings(settings, "openai:small").timeout_s == 42
    big = HttpOptions.from_settings(settings, "openai:big", connect_timeout_s=3)
    assert big.max_connections == 200 and big.max_keepalive_connections == 200
    assert big.connect_timeout_s == 3


def test_the_sdk_client_has_no_retries_and_an_explicit_pool(runner):
    http = HttpOptions(timeout_s=20, connect_timeout_s=2, max_connections=7,
                       max_keepalive_connections=3)
    model = provider.OpenAIModel("gpt-4o", api_key=KEY, http=http)

    async def inspect():
        client = await model._clients.get()
        transport = client._client._transport
        return (client.max_retries, type(transport).__name__, transport.limits.max_connections,
                client.timeout.connect, client.timeout.read, client.api_key == KEY)

    assert runner.run(inspect()) == (0, "AiohttpTransport", 7, 2, 20, True)
    runner.run(model.aclose())


def test_without_aiohttp_the_sdk_client_falls_back_to_httpx2_with_the_same_limits():
    class NoAiohttp:  # what the SDKs put in DefaultAioHttpClient's place without aiohttp
        def __init__(self, **_kwargs):
            raise RuntimeError("To use the aiohttp client you must install the aiohttp extra")

    http = HttpOptions(timeout_s=5, connect_timeout_s=1, max_connections=4,
                       max_keepalive_connections=2)
    for sdk in (SimpleNamespace(DefaultAioHttpClient=NoAiohttp), SimpleNamespace()):
        client = sdk_http_client(sdk, http)
        pool = client._transport._pool
        assert type(client) is httpx2.AsyncClient
        assert (pool._max_connections, pool._max_keepalive_connections) == (4, 2)
        assert (client.timeout.connect, client.timeout.read) == (1, 5)


def test_the_pool_limit_caps_connections_in_flight(runner):
    """Eight calls at once through a pool of two: the server never holds more than two."""
    http = HttpOptions(timeout_s=20, max_connections=2, max_keepalive_connections=2)
    with FakeOpenAI() as server:
        server.fault_rate(1.0, kinds=[Fault.delay(0.2)])
        model = provider.OpenAIModel("gpt-4o-mini", api_key=KEY, base_url=server.url, http=http)

        async def eight():
            return await asyncio.gather(*(model.complete([Message.user(f"q{i}")])
                                          for i in range(8)))

        started = time.monotonic()
        answers = runner.run(eight())
        took = time.monotonic() - started
        runner.run(model.aclose())
    assert [a.text for a in answers] == [f"q{i}" for i in range(8)]
    arrivals = sorted(r.received_at for r in server.requests)
    # two at a time, 0.2 s each: four waves, and no third request inside any wave
    assert took >= 0.75
    assert all(b - a >= 0.15 for a, b in zip(arrivals[::2], arrivals[2::2], strict=False))


def test_clients_are_per_loop_shared_by_key_and_closed_by_their_last_user():
    built, closed = [], []

    def build():
        client = object()
        built.append(client)

        async def close():
            closed.append(client)

        return client, close

    a = ClientSlot("p", "http://u", SecretStr("k1"), build)
    b = ClientSlot("p", "http://u", SecretStr("k1"), build)
    other_key = ClientSlot("p", "http://u", SecretStr("k2"), build)
    first, second = LoopRunner(name="aillm-test-1"), LoopRunner(name="aillm-test-2")
    try:
        c1 = first.run(a.get())
        assert first.run(a.get()) is c1 and first.run(b.get()) is c1
        assert first.run(other_key.get()) is not c1
        c2 = second.run(a.get())
        assert c2 is not c1
        first.run(a.aclose())
        assert c1 not in closed  # b still uses it
        first.run(b.aclose())
        assert c1 in closed
        deadline = time.monotonic() + 2
        while c2 not in closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c2 in closed  # closed on its own loop
        first.run(other_key.aclose())
        first.close()
        third = LoopRunner(name="aillm-test-3")
        try:  # a closed loop's client is never reused
            assert third.run(a.get()) not in (c1, c2)
            third.run(a.aclose())
        finally:
            third.close()
    finally:
        first.close()
        second.close()


# -- against the fake OpenAI server ------------------------------------------------------------
try:
    from aillm_lab.testing.fake_servers import FakeOpenAI, Fault
except ImportError:  # the fake servers need aiohttp
    FakeOpenAI = None

needs_fake = pytest.mark.skipif(FakeOpenAI is None, reason="fake servers need aiohttp")


@pytest.fixture
def served(runner):
    """A fake OpenAI server and an ``openai:`` model pointed at it."""
    with FakeOpenAI() as server:
        model = provider.OpenAIModel("gpt-4o-mini", api_key=KEY, base_url=server.url)
        yield server, model
        runner.run(model.aclose())


WEATHER = ToolSpec(name="get_weather", description="weather in a city", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


@needs_fake
def test_tool_results_are_sent_back_as_tool_messages(served, runner):
    server, model = served
    server.enqueue("It is sunny in Oslo.")
    call = ToolCall(id="call_a", name="get_weather", arguments={"city": "Oslo"})
    messages = [Message.user("weather?"), Message.assistant("", [call]),
                Message.tool({"sky": "sunny"}, "call_a", "get_weather")]
    assert runner.run(model.complete(messages, tools=[WEATHER])).text == "It is sunny in Oslo."
    assert server.last_request.body["messages"][1:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"sky": "sunny"}'}]


@needs_fake
def test_an_image_part_is_sent_as_an_image_url_content_part(served, runner):
    server, model = served
    server.enqueue("a red square")
    image = ImagePart(data="iVBORw0KGgo=", media_type="image/png")
    runner.run(model.complete([Message.user("what is this?", image)]))
    assert server.last_request.body["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
