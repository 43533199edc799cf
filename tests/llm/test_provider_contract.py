"""The provider contract: what every hosted model does against its vendor's fake server.

Each test runs once per vendor (``openai``, ``anthropic``, ``ollama``), or once per vendor
that has the feature. Where the wire formats differ, the test asks the vendor's ``Vendor``
entry below; wire details that only one vendor has are tested in ``test_openai.py``,
``test_anthropic.py`` and ``test_ollama.py``.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

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
)
from aillm_lab.llm._clients import HttpOptions
from aillm_lab.llm.anthropic import AnthropicModel
from aillm_lab.llm.base import Model
from aillm_lab.llm.ollama import OllamaModel
from aillm_lab.llm.openai import OpenAIModel
from aillm_lab.llm.registry import Registry
from aillm_lab.llm.types import Completion, Message, ToolCall, ToolSpec, Usage
from aillm_lab.runtime import LoopRunner

fake = pytest.importorskip("aillm_lab.testing.fake_servers",
                           reason="the fake servers need aiohttp")
Fault = fake.Fault

OPENAI_KEY = "sk-test-SECRET-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-test-SECRET-0123456789"


class City(BaseModel):
    name: str
    population: int = 0


@dataclass(frozen=True)
class Vendor:
    """One vendor as the contract sees it: its fake server, a model pointed at that server,
    and where its wire format puts each thing."""

    name: str
    server: type
    connect: Callable[..., Model]  # (url, http=None) -> a model pointed at the server
    key: str | None  # the key the model holds; None: the vendor needs none
    key_setting: str  # what an authentication error tells the user to check
    chat_path: str
    response_id: str | None  # how a response id starts; None: the vendor sends none
    chat_view: Callable[[dict], tuple[list[dict], int]]  # body -> (system + turns, max tokens)
    stream_flags: dict[str, Any]  # what a streamed request carries
    tool_names: Callable[[dict], list[str]]
    auto_tool_choice: Any  # what tool_choice="auto" is sent as; None: not sent
    server_call_ids: bool  # tool-call ids come from the server; else they are synthesised
    structured_reply: Callable[[dict], Any]  # what the server answers for a structured object
    output_schema: Callable[[dict], dict]  # where the request carries the output schema
    usage: Usage  # the fullest usage the vendor reports
    lead_frames: int  # stream frames sent before the first text delta
    unreachable_says: str  # the hint a connection error gives
    embed_path: str | None = None  # None: the vendor has no embeddings
    embed_flags: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        return self.name


def _functions(body: dict) -> list[str]:
    return [t["function"]["name"] for t in body["tools"]]


VENDORS = {v.name: v for v in [
    Vendor(
        name="openai", server=fake.FakeOpenAI,
        connect=lambda url, http=None: OpenAIModel("gpt-4o-mini", api_key=OPENAI_KEY,
                                                   base_url=url, http=http),
        key=OPENAI_KEY, key_setting="OPENAI_API_KEY", chat_path="/v1/chat/completions",
        response_id="chatcmpl-", chat_view=lambda b: (b["messages"], b["max_tokens"]),
        stream_flags={"stream": True, "stream_options": {"include_usage": True}},
        tool_names=_functions, auto_tool_choice="auto", server_call_ids=True,
        structured_reply=json.dumps,
        output_schema=lambda b: b["response_format"]["json_schema"]["schema"],
        usage=Usage(input_tokens=120, output_tokens=30, cache_read_tokens=100,
                    reasoning_tokens=7),
        lead_frames=1, unreachable_says="the server is running",
        embed_path="/v1/embeddings", embed_flags=(("encoding_format", "float"),)),
    Vendor(
        name="anthropic", server=fake.FakeAnthropic,
        connect=lambda url, http=None: AnthropicModel("claude-haiku-4-5", api_key=ANTHROPIC_KEY,
                                                      base_url=url, http=http),
        key=ANTHROPIC_KEY, key_setting="ANTHROPIC_API_KEY", chat_path="/v1/messages",
        response_id="msg_",
        chat_view=lambda b: ([{"role": "system", "content": b["system"]}, *b["messages"]],
                             b["max_tokens"]),
        stream_flags={"stream": True}, tool_names=lambda b: [t["name"] for t in b["tools"]],
        auto_tool_choice={"type": "auto"}, server_call_ids=True,
        structured_reply=lambda obj: Completion(tool_calls=[ToolCall(
            id="", name="structured_output", arguments=obj)]),
        output_schema=lambda b: b["tools"][0]["input_schema"],
        usage=Usage(input_tokens=500, output_tokens=40, cache_read_tokens=300,
                    cache_write_tokens=100, reasoning_tokens=9),
        lead_frames=3, unreachable_says="the server is running"),
    Vendor(
        name="ollama", server=fake.FakeOllama,
        connect=lambda url, http=None: OllamaModel("llama3.2", host=url, http=http),
        key=None, key_setting="OLLAMA_API_KEY", chat_path="/api/chat", response_id=None,
        chat_view=lambda b: (b["messages"], b["options"]["num_predict"]),
        stream_flags={"stream": True}, tool_names=_functions, auto_tool_choice=None,
        server_call_ids=False, structured_reply=json.dumps,
        output_schema=lambda b: b["format"], usage=Usage(input_tokens=33, output_tokens=11),
        lead_frames=0, unreachable_says="ollama serve", embed_path="/api/embed"),
]}
WITH_KEYS = ["openai", "anthropic"]
WITH_EMBEDDINGS = ["openai", "ollama"]

WEATHER = ToolSpec(name="get_weather", description="weather in a city", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
TIME = ToolSpec(name="get_time", parameters={
    "type": "object", "properties": {"tz": {"type": "string"}}})


@pytest.fixture(params=list(VENDORS))
def vendor(request: pytest.FixtureRequest) -> Vendor:
    """Each vendor in turn; narrow it with ``parametrize("vendor", [...], indirect=True)``."""
    return VENDORS[request.param]


@pytest.fixture
def served(vendor: Vendor, runner: LoopRunner) -> Iterator[tuple[Model, Any]]:
    """The vendor's fake server and a model pointed at it, as ``(model, server)``."""
    with vendor.server() as server:
        model = vendor.connect(server.url)
        yield model, server
        runner.run(model.aclose())


async def _collect(events) -> tuple[list, BaseException | None]:
    got = []
    try:
        async for event in events:
            got.append(event)
    except Exception as exc:
        return got, exc
    return got, None


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- answers -----------------------------------------------------------------------------------
def test_chat_through_a_lab_returns_the_servers_text(vendor, served, runner):
    from aillm_lab.core.lab import Lab

    model, server = served
    server.enqueue("Hello from the fake.")
    with Lab(LabSettings(), model=model, runner=runner) as lab:
        completion = lab.chat("hi there", system="be brief", max_tokens=20)
    assert completion.text == "Hello from the fake." and completion.finish_reason == "stop"
    if vendor.response_id is not None:
        assert completion.response_id.startswith(vendor.response_id)
    request = server.last_request
    assert request.path == vendor.chat_path
    if vendor.key is not None:  # the SDKs send the key as a bearer token; the fake hides it
        assert request.headers["authorization"] == "Bearer <redacted>"
    assert request.body["model"] == model.name and request.body.get("stream", False) is False
    assert vendor.chat_view(request.body) == ([{"role": "system", "content": "be brief"},
                                               {"role": "user", "content": "hi there"}], 20)


def test_stream_yields_text_deltas_that_join_to_the_reply_then_usage_and_done(served, vendor,
                                                                              runner):
    model, server = served
    reply = "The quick brown fox jumps over the lazy dog."
    server.enqueue(reply)
    events, error = runner.run(_collect(model.stream([Message.user("go")])))
    assert error is None
    assert len([e for e in events if e.type == "text"]) > 3
    assert "".join(map(str, events)) == reply
    assert [e.type for e in events[-2:]] == ["usage", "done"]
    assert events[-1].completion.text == reply and events[-1].completion.ttft_s is not None
    body = server.last_request.body
    assert {k: body.get(k) for k in vendor.stream_flags} == vendor.stream_flags


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_one_and_two_tool_calls_come_back_in_order_with_names_arguments_and_stable_ids(
        vendor, served, runner, streamed):
    model, server = served
    one = [ToolCall(id="call_w1", name="get_weather", arguments={"city": "Paris"})]
    two = [ToolCall(id="call_a", name="get_weather", arguments={"city": "Oslo"}),
           ToolCall(id="call_b", name="get_time", arguments={"tz": "Europe/Oslo"})]
    seen = []
    for calls in (one, two, two):
        server.enqueue(Completion(text="Let me check.", tool_calls=calls))
        messages = [Message.user("weather and time?")]
        if streamed:
            events, error = runner.run(_collect(model.stream(messages, tools=[WEATHER, TIME])))
            assert error is None
            completion = events[-1].completion
            assert [e.tool_call for e in events if e.type == "tool_call"] == completion.tool_calls
        else:
            completion = runner.run(model.complete(messages, tools=[WEATHER, TIME]))
        got = completion.tool_calls
        assert [(c.name, c.arguments) for c in got] == [(c.name, c.arguments) for c in calls]
        if vendor.server_call_ids:
            assert got == calls
        else:
            assert [c.id[:7] for c in got] == [f"call_{i}_" for i in range(len(calls))]
        assert completion.text == "Let me check." and completion.finish_reason == "tool_calls"
        seen.append(got)
    assert seen[1] == seen[2]  # the same calls get the same ids
    body = server.last_request.body
    assert vendor.tool_names(body) == ["get_weather", "get_time"]
    assert body.get("tool_choice") == vendor.auto_tool_choice


def test_structured_output_through_a_lab_sends_the_schema_and_is_validated(vendor, served,
                                                                           runner):
    from aillm_lab.core.lab import Lab

    model, server = served
    server.enqueue(vendor.structured_reply({"name": "Paris", "population": 2100000}))
    with Lab(LabSettings(), model=model, runner=runner) as lab:
        city = lab.complete("the capital of France", output=City)
    assert city == City(name="Paris", population=2100000)
    assert vendor.output_schema(server.last_request.body) == City.model_json_schema()


@pytest.mark.parametrize("streamed", [False, True], ids=["complete", "stream"])
def test_usage_equals_what_the_server_sent(vendor, served, runner, streamed):
    model, server = served
    server.enqueue(Completion(text="counted", usage=vendor.usage))
    if streamed:
        events, error = runner.run(_collect(model.stream([Message.user("count")])))
        assert error is None
        assert [e.usage for e in events if e.type == "usage"] == [vendor.usage]
        assert events[-1].completion.usage == vendor.usage
    else:
        assert runner.run(model.complete([Message.user("count")])).usage == vendor.usage


@pytest.mark.parametrize("vendor", WITH_EMBEDDINGS, indirect=True)
def test_embeddings_return_one_vector_per_text_in_order(vendor, served, runner):
    model, server = served
    vectors = runner.run(model.embed(["red apples", "green pears"]))
    assert vectors == [pytest.approx(fake.hashed_embedding("red apples", 64)),
                       pytest.approx(fake.hashed_embedding("green pears", 64))]
    sent = server.last_request
    assert sent.path == vendor.embed_path
    assert sent.body["input"] == ["red apples", "green pears"]
    assert {k: sent.body.get(k) for k, _ in vendor.embed_flags} == dict(vendor.embed_flags)
    assert runner.run(model.embed([])) == []


# -- errors ------------------------------------------------------------------------------------
def test_a_400_is_bad_request_with_the_vendors_message(vendor, served, runner):
    model, server = served
    server.inject(Fault.bad_request("Unknown parameter: 'frobnicate'."))
    with pytest.raises(BadRequest) as info:
        runner.run(model.complete([Message.user("hi")]))
    assert info.value.status == 400 and not info.value.retryable
    assert info.value.vendor_message == "Unknown parameter: 'frobnicate'."
    assert "Unknown parameter: 'frobnicate'." in str(info.value)
    assert info.value.provider == vendor.name and info.value.model == model.id


def test_a_401_is_authentication_error_that_names_the_key_setting_not_the_key(vendor, served,
                                                                            runner):
    model, server = served
    key = vendor.key or "sk-proj-abcdefghijkl0123"  # a keyless vendor still hides key shapes
    server.inject(Fault.unauthorized(f"Incorrect API key provided: {key}."))
    with pytest.raises(AuthenticationError) as info:
        runner.run(model.complete([Message.user("hi")]))
    assert info.value.status == 401 and not info.value.retryable
    assert "Incorrect API key provided" in info.value.vendor_message
    assert key not in str(info.value) and key not in info.value.vendor_message
    assert vendor.key_setting in str(info.value)


@pytest.mark.parametrize("fault,expected", [
    (lambda: Fault.rate_limit(retry_after=2), 2.0),
    (lambda: Fault.rate_limit(retry_after=None, retry_after_ms=1500), 1.5)],
    ids=["retry-after", "retry-after-ms"])
def test_a_429_is_rate_limited_with_retry_after_and_is_sent_once(vendor, served, runner, fault,
                                                                 expected):
    model, server = served
    server.inject(fault())
    with pytest.raises(RateLimited) as info:
        runner.run(model.complete([Message.user("hi")]))
    assert info.value.retry_after_s == expected and info.value.retryable
    assert len(server.requests) == 1  # the SDK does not retry: the gateway alone does


@pytest.mark.parametrize("fault,status", [
    (lambda: Fault.unavailable("server busy"), 503),
    (lambda: Fault.overloaded("Overloaded"), 529)], ids=["503", "529"])
def test_server_errors_are_retryable_provider_unavailable_and_sent_once(served, runner, fault,
                                                                        status):
    model, server = served
    server.inject(fault())
    with pytest.raises(ProviderUnavailable) as info:
        runner.run(model.complete([Message.user("hi")]))
    assert info.value.status == status and info.value.retryable
    assert info.value.vendor_message == fault().message
    assert len(server.requests) == 1


def test_a_reset_connection_is_a_retryable_connection_error(served, runner):
    model, server = served
    server.inject(Fault.reset())
    with pytest.raises(ProviderConnectionError) as info:
        runner.run(model.complete([Message.user("hi")]))
    assert info.value.retryable


def test_a_stream_cut_after_its_first_events_raises_stream_interrupted(vendor, served, runner):
    model, server = served
    server.enqueue("one two three four five six seven eight nine ten")
    server.inject(Fault.cut_stream(after=vendor.lead_frames + 3))
    events, error = runner.run(_collect(model.stream([Message.user("count")])))
    assert isinstance(error, StreamInterrupted) and error.retryable is False
    assert events and all(e.type == "text" for e in events)
    assert "".join(map(str, events)) == "one two three"


def test_a_slow_server_times_out_as_a_connection_error(vendor, runner):
    with vendor.server() as server:
        model = vendor.connect(server.url, HttpOptions(timeout_s=0.3, connect_timeout_s=0.3))
        server.inject(Fault.delay(1))
        try:
            with pytest.raises(ProviderConnectionError, match="timed out") as info:
                runner.run(model.complete([Message.user("hi")]))
            assert info.value.retryable
        finally:
            runner.run(model.aclose())


def test_an_unreachable_server_raises_provider_connection_error(vendor, runner):
    url = f"http://127.0.0.1:{_closed_port()}{vendor.server.url_path}"
    model = vendor.connect(url)
    try:
        with pytest.raises(ProviderConnectionError, match="127.0.0.1") as info:
            runner.run(model.complete([Message.user("hi")]))
        assert vendor.unreachable_says in str(info.value)
        # refused, not slow: an SDK that reports the refusal as a timeout is not believed
        assert "could not be reached" in str(info.value) and "timed out" not in str(info.value)
        with pytest.raises(ProviderConnectionError, match="could not be reached"):
            runner.run(_drain(model.stream([Message.user("hi")])))
        if vendor.embed_path is not None:
            with pytest.raises(ProviderConnectionError):
                runner.run(model.embed(["hi"]))
    finally:
        runner.run(model.aclose())


async def _drain(events) -> list:
    return [e async for e in events]


# -- keys --------------------------------------------------------------------------------------
def _without_vendor_env(monkeypatch: pytest.MonkeyPatch, vendor: Vendor) -> None:
    for suffix in ("API_KEY", "AUTH_TOKEN", "BASE_URL", "HOST"):
        monkeypatch.delenv(f"{vendor.name.upper()}_{suffix}", raising=False)


@pytest.mark.parametrize("vendor", WITH_KEYS, indirect=True)
def test_a_missing_key_for_the_official_api_raises_authentication_error_with_the_fix(
        vendor, runner, monkeypatch):
    _without_vendor_env(monkeypatch, vendor)
    model = Registry(plugins=False).resolve(f"{vendor.name}:some-model", LabSettings())
    try:
        with pytest.raises(AuthenticationError, match=vendor.key_setting):
            runner.run(model.complete([Message.user("hi")]))
    finally:
        runner.run(model.aclose())


def test_a_compatible_server_needs_no_key(vendor, runner, monkeypatch):
    _without_vendor_env(monkeypatch, vendor)
    with vendor.server(["no key needed"]) as server:
        model = Registry(plugins=False).resolve(f"{vendor.name}:some-model@{server.url}",
                                                LabSettings())
        try:
            assert runner.run(model.complete([Message.user("hi")])).text == "no key needed"
        finally:
            runner.run(model.aclose())
