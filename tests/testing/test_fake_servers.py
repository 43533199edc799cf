"""The fake vendor servers, driven by the official SDKs the providers use."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import anthropic
import httpx
import httpx2
import ollama
import openai
import pytest

from aillm_lab.llm.types import Completion, ToolCall, Usage
from aillm_lab.testing.fake_servers import (
    FakeAnthropic,
    FakeOllama,
    FakeOpenAI,
    Fault,
    hashed_embedding,
)

KEY = "sk-test-SECRET-0123456789"
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
USAGE = Usage(input_tokens=120, output_tokens=45, cache_read_tokens=30, cache_write_tokens=20,
              reasoning_tokens=7)
TWO_CALLS = Completion(text="", usage=USAGE, tool_calls=[
    ToolCall(id="call_w", name="get_weather", arguments={"city": "Paris", "unit": "celsius"}),
    ToolCall(id="call_t", name="get_time", arguments={"tz": "Europe/Paris"})])
WORDS = "alpha beta gamma delta epsilon"


@contextmanager
def _openai(server: FakeOpenAI, **options: object) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url, api_key=KEY, max_retries=0, **options) as client:
        yield client


@contextmanager
def _anthropic(server: FakeAnthropic) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0) as client:
        yield client


@contextmanager
def _ollama(server: FakeOllama) -> Iterator[ollama.Client]:
    client = ollama.Client(host=server.url)
    try:
        yield client
    finally:
        client.close()


def _chat(client: openai.OpenAI, **extra: object) -> object:
    return client.chat.completions.create(model="gpt-4o-mini", messages=USER, **extra)


def _message(client: anthropic.Anthropic, **extra: object) -> object:
    return client.messages.create(model="claude-x", max_tokens=64, messages=USER, **extra)


# -- OpenAI ----------------------------------------------------------------------------------
def test_openai_chat_returns_the_scripted_text_and_usage_and_records_a_redacted_request():
    reply = Completion(text="Sunny, 18 °C.", usage=USAGE)
    with FakeOpenAI([reply]) as server, _openai(server) as client:
        response = _chat(client, temperature=0.2)
    assert server.url == f"http://127.0.0.1:{server.port}/v1"
    assert response.choices[0].message.content == "Sunny, 18 °C."
    assert response.choices[0].finish_reason == "stop"
    usage = response.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (120, 45, 165)
    assert usage.prompt_tokens_details.cached_tokens == 30
    assert usage.prompt_tokens_details.cache_write_tokens == 20
    assert usage.completion_tokens_details.reasoning_tokens == 7
    [request] = server.requests
    assert (request.method, request.path, request.fault) == ("POST", "/v1/chat/completions", None)
    assert request.body == {"model": "gpt-4o-mini", "messages": USER, "temperature": 0.2}
    assert request.headers["authorization"] == "Bearer <redacted>"
    assert KEY not in repr(server.requests)


def test_openai_stream_joins_to_the_text_and_ends_with_a_usage_chunk_only_when_asked():
    with FakeOpenAI([Completion(text=WORDS, usage=USAGE), WORDS]) as server, \
            _openai(server) as client:
        chunks = list(_chat(client, stream=True, stream_options={"include_usage": True}))
        plain = list(_chat(client, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == WORDS
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 5
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (120, 45)
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == 30
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.usage is None and c.choices for c in plain)
    assert "".join(c.choices[0].delta.content or "" for c in plain) == WORDS


def test_openai_two_parallel_tool_calls_in_json_and_reassembled_from_stream_deltas():
    with FakeOpenAI([TWO_CALLS, TWO_CALLS]) as server, _openai(server) as client:
        message = _chat(client).choices[0].message
        chunks = list(_chat(client, stream=True))
    assert [(c.id, c.function.name, json.loads(c.function.arguments))
            for c in message.tool_calls] == [
        ("call_w", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("call_t", "get_time", {"tz": "Europe/Paris"})]
    calls: dict[int, dict[str, str]] = {}
    fragments: Counter[int] = Counter()
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            if delta.index not in calls:  # the first delta of a call names it
                assert delta.id and delta.function.name
                calls[delta.index] = {"id": delta.id, "name": delta.function.name, "args": ""}
            calls[delta.index]["args"] += delta.function.arguments or ""
            fragments[delta.index] += bool(delta.function.arguments)
    assert [(c["id"], c["name"], json.loads(c["args"])) for c in calls.values()] == [
        ("call_w", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("call_t", "get_time", {"tz": "Europe/Paris"})]
    assert min(fragments.values()) >= 2
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_embeddings_are_deterministic_and_honour_dimensions():
    with FakeOpenAI(embedding_dim=12) as server, _openai(server) as client:
        first = client.embeddings.create(model="emb", input=["red apple", "blue sky"])
        again = client.embeddings.create(model="emb", input="red apple", encoding_format="float")
        small = client.embeddings.create(model="emb", input="red apple", dimensions=5)
    assert server.requests[0].body["encoding_format"] == "base64"  # the SDK's default
    vectors = [d.embedding for d in first.data]
    assert [len(v) for v in vectors] == [12, 12]
    assert vectors[0] == pytest.approx(again.data[0].embedding, abs=1e-6)
    assert vectors[0] == pytest.approx(hashed_embedding("red apple", 12), abs=1e-6)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-3)
    assert len(small.data[0].embedding) == 5
    assert first.usage.prompt_tokens > 0


@pytest.mark.parametrize(("fault", "error", "code"), [
    (Fault.rate_limit(retry_after=2), openai.RateLimitError, "rate_limit_exceeded"),
    (Fault.server_error(), openai.InternalServerError, "server_error"),
    (Fault.unavailable(), openai.InternalServerError, "service_unavailable"),
    (Fault.overloaded(), openai.InternalServerError, "overloaded"),
    (Fault.bad_request("bad schema"), openai.BadRequestError, "invalid_request"),
    (Fault.unauthorized(), openai.AuthenticationError, "invalid_api_key"),
])
def test_openai_status_faults_raise_the_sdk_error_once(fault, error, code):
    with FakeOpenAI() as server, _openai(server) as client:
        server.inject(fault)
        with pytest.raises(error) as caught:
            _chat(client)
        assert _chat(client).choices[0].message.content == USER[0]["content"]
    assert caught.value.status_code == fault.status
    assert caught.value.code == code and caught.value.body["message"]
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert server.faults_served == {fault.kind: 1}
    assert [r.fault for r in server.requests] == [fault.kind, None]
    if fault.kind == "rate_limit":
        assert caught.value.response.headers["retry-after"] == "2"


def test_openai_rate_limit_can_say_retry_after_in_milliseconds():
    with FakeOpenAI() as server, _openai(server) as client:
        server.inject(Fault.rate_limit(retry_after=None, retry_after_ms=250))
        with pytest.raises(openai.RateLimitError) as caught:
            _chat(client)
    assert caught.value.response.headers["retry-after-ms"] == "250"
    assert "retry-after" not in caught.value.response.headers


def test_openai_reset_and_cut_answers_raise_connection_errors():
    with FakeOpenAI([WORDS] * 3) as server, _openai(server) as client:
        server.inject(Fault.reset(), Fault.cut_stream(after=3), Fault.cut_stream())
        with pytest.raises(openai.APIConnectionError):
            _chat(client)
        received = []
        with pytest.raises(openai.APIConnectionError):
            for chunk in _chat(client, stream=True):
                received.append(chunk.choices[0].delta.content or "")
        with pytest.raises(openai.APIConnectionError):
            _chat(client)  # a JSON answer cut in half
        assert _chat(client).choices[0].message.content == WORDS
    assert "".join(received) == "alpha beta"  # role chunk, then two words, then the cut
    assert server.faults_served == {"reset": 1, "cut_stream": 2}


def test_openai_malformed_tool_call_arguments_are_not_json():
    with FakeOpenAI([TWO_CALLS, "x"]) as server, _openai(server) as client:
        server.inject(Fault.malformed_tool_call(), times=2)
        calls = _chat(client).choices[0].message.tool_calls
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
        args = "".join(d.function.arguments or "" for c in _chat(client, stream=True, tools=tools)
                       for d in c.choices[0].delta.tool_calls or [])
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    for text in [*(c.function.arguments for c in calls), args]:
        with pytest.raises(json.JSONDecodeError):
            json.loads(text)


def test_openai_rejects_tool_messages_that_answer_no_call_like_the_real_api():
    dangling = [*USER, {"role": "tool", "tool_call_id": "call_x", "content": "18C"}]
    unanswered = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_x", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]
    answered = [*unanswered, {"role": "tool", "tool_call_id": "call_x", "content": "18C"}]
    with FakeOpenAI() as server, _openai(server) as client:
        for messages, words in [(dangling, "preceeding"), (unanswered, "call_x")]:
            with pytest.raises(openai.BadRequestError, match=words):
                client.chat.completions.create(model="m", messages=messages)
        ok = client.chat.completions.create(model="m", messages=answered)
    assert ok.choices[0].message.content == USER[0]["content"]


def test_default_replies_echo_the_last_user_text_with_length_based_usage():
    messages = [{"role": "user", "content": "first"}, {"role": "assistant", "content": "hi"},
                {"role": "user", "content": [{"type": "text", "text": "echo me please"}]}]
    with FakeOpenAI() as server, _openai(server) as client:
        answers = [client.chat.completions.create(model="m", messages=messages)
                   for _ in range(2)]
    assert [a.choices[0].message.content for a in answers] == ["echo me please"] * 2
    assert answers[0].usage.completion_tokens == math.ceil(len("echo me please") / 4)
    assert answers[0].usage.prompt_tokens == math.ceil(len(json.dumps(messages)) / 4)
    assert answers[0].usage == answers[1].usage


def test_queued_replies_come_first_then_the_reply_function_sees_the_parsed_body():
    seen: list[dict] = []

    def reply(body: dict) -> str:
        seen.append(body)
        return f"{body['model']} heard {len(body['messages'])} message(s)"

    with FakeOpenAI(["queued"], handler=reply) as server, _openai(server) as client:
        texts = [_chat(client).choices[0].message.content for _ in range(2)]
        server.enqueue("again")
        texts.append(_chat(client).choices[0].message.content)
    assert texts == ["queued", "gpt-4o-mini heard 1 message(s)", "again"]
    assert seen == [{"model": "gpt-4o-mini", "messages": USER}]


def test_a_failing_reply_function_is_a_500_naming_the_error_and_serving_goes_on():
    def reply(body: dict) -> str:
        raise KeyError("no script for this")

    with FakeOpenAI(handler=reply) as server, _openai(server) as client:
        with pytest.raises(openai.InternalServerError, match="no script for this"):
            _chat(client)
        server.enqueue("still here")
        assert _chat(client).choices[0].message.content == "still here"


def test_fault_constructors_reject_nonsense():
    with pytest.raises(ValueError, match="unknown fault kind"):
        Fault.of("meteor")
    with pytest.raises(ValueError, match="5xx"):
        Fault.server_error(404)
    with pytest.raises(ValueError, match="rate must be"):
        FakeOpenAI().fault_rate(1.5)
    assert Fault.of("overloaded").status == 529 and Fault.delay(0.3).wait == 0.3


def test_a_delay_fault_makes_a_short_client_timeout_fire():
    with FakeOpenAI() as server, _openai(server, timeout=0.1) as client:
        server.inject(Fault.delay(0.4), Fault.delay(0.02))
        started = time.perf_counter()
        with pytest.raises(openai.APITimeoutError):
            _chat(client)
        assert time.perf_counter() - started < 0.35
        assert _chat(client).choices[0].message.content == USER[0]["content"]
    assert server.faults_served == {"delay": 2}


# -- Anthropic -------------------------------------------------------------------------------
def test_anthropic_message_carries_two_tool_uses_and_cache_usage_on_the_wire():
    with FakeAnthropic([TWO_CALLS]) as server, _anthropic(server) as client:
        message = _message(client)
    assert server.url == f"http://127.0.0.1:{server.port}"
    assert message.stop_reason == "tool_use"
    assert [(b.type, b.id, b.name, b.input) for b in message.content] == [
        ("tool_use", "call_w", "get_weather", {"city": "Paris", "unit": "celsius"}),
        ("tool_use", "call_t", "get_time", {"tz": "Europe/Paris"})]
    usage = message.usage  # wire input_tokens exclude the cached ones: 120 - 30 - 20
    assert (usage.input_tokens, usage.output_tokens) == (70, 45)
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (30, 20)
    assert usage.output_tokens_details.thinking_tokens == 7
    headers = server.last_request.headers  # this SDK sends a Bearer token, older ones x-api-key
    assert (headers.get("x-api-key") or headers["authorization"]).endswith("<redacted>")
    assert KEY not in repr(server.requests)


def test_anthropic_stream_sends_the_documented_event_sequence():
    reply = Completion(text="alpha beta", usage=USAGE,
                       tool_calls=[ToolCall(id="toolu_1", name="add", arguments={"a": 1})])
    with FakeAnthropic([reply, reply]) as server, _anthropic(server) as client:
        events = list(_message(client, stream=True))
        with client.messages.stream(model="claude-x", max_tokens=64, messages=USER) as stream:
            final = stream.get_final_message()
        raw = b"".join(_raw_stream(server))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 2
    text = "".join(e.delta.text for e in events
                   if e.type == "content_block_delta" and e.delta.type == "text_delta")
    partial = [e.delta.partial_json for e in events
               if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
    assert text == "alpha beta"
    assert len([p for p in partial if p]) >= 2 and json.loads("".join(partial)) == {"a": 1}
    assert events[0].message.usage.cache_read_input_tokens == 30
    assert events[-2].delta.stop_reason == "tool_use" and events[-2].usage.output_tokens == 45
    assert b"event: ping" in raw
    assert server.last_request.headers["x-api-key"] == "<redacted>"
    assert [b.type for b in final.content] == ["text", "tool_use"]
    assert final.content[1].input == {"a": 1} and final.usage.output_tokens == 45


def _raw_stream(server: FakeAnthropic) -> list[bytes]:
    with httpx.Client(headers={"x-api-key": KEY}) as client, client.stream(
            "POST", f"{server.url}/v1/messages", json={
                "model": "m", "max_tokens": 5, "messages": USER, "stream": True}) as response:
        return list(response.iter_bytes())


def test_anthropic_accepts_and_records_tool_results_and_rejects_orphans():
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C sunny"}
    good = [*USER, {"role": "assistant", "content": [use]},
            {"role": "user", "content": [result]}]
    with FakeAnthropic() as server, _anthropic(server) as client:
        answer = client.messages.create(model="m", max_tokens=9, messages=good)
        with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
            client.messages.create(model="m", max_tokens=9,
                                   messages=[*USER, {"role": "user", "content": [result]}])
        with pytest.raises(anthropic.BadRequestError, match="without `tool_result`"):
            client.messages.create(model="m", max_tokens=9, messages=good[:2])
    assert answer.content[0].text == "18C sunny"  # the default echoes the tool result
    assert server.requests[0].body["messages"][2]["content"] == [result]


@pytest.mark.parametrize(("fault", "error", "error_type"), [
    (Fault.rate_limit(retry_after=3), anthropic.RateLimitError, "rate_limit_error"),
    (Fault.server_error(), anthropic.InternalServerError, "api_error"),
    (Fault.unavailable(), anthropic.ServiceUnavailableError, "api_error"),
    (Fault.overloaded(), anthropic.OverloadedError, "overloaded_error"),
    (Fault.bad_request(), anthropic.BadRequestError, "invalid_request_error"),
    (Fault.unauthorized(), anthropic.AuthenticationError, "authentication_error"),
])
def test_anthropic_status_faults_raise_the_sdk_error_with_the_error_body(fault, error,
                                                                         error_type):
    with FakeAnthropic() as server, _anthropic(server) as client:
        server.inject(fault)
        with pytest.raises(error) as caught:
            _message(client)
    assert caught.value.status_code == fault.status
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == error_type
    assert caught.value.response.headers["request-id"].startswith("req_")
    if fault.kind == "rate_limit":
        assert caught.value.response.headers["retry-after"] == "3"


def test_anthropic_reset_cut_stream_and_malformed_tool_input():
    with FakeAnthropic([WORDS, WORDS, WORDS]) as server, _anthropic(server) as client:
        server.inject(Fault.reset(), Fault.cut_stream(after=4), Fault.malformed_tool_call())
        with pytest.raises(anthropic.APIConnectionError):
            _message(client)
        kinds = []
        with pytest.raises(httpx2.RemoteProtocolError):
            for event in _message(client, stream=True):
                kinds.append(event.type)
        broken = _message(client, tools=[{"name": "lookup", "input_schema": {
            "type": "object"}}]).content[1]
    assert kinds == ["message_start", "content_block_start", "content_block_delta"]  # + ping
    assert broken.type == "tool_use" and broken.name == "lookup"
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.input)


# -- Ollama ----------------------------------------------------------------------------------
def test_ollama_chat_streams_ndjson_unless_stream_is_false():
    with FakeOllama([WORDS, WORDS]) as server, httpx.Client() as client:
        streamed = client.post(f"{server.url}/api/chat", json={"model": "m", "messages": USER})
        single = client.post(f"{server.url}/api/chat",
                             json={"model": "m", "messages": USER, "stream": False})
    lines = [json.loads(line) for line in streamed.text.splitlines()]
    assert streamed.headers["content-type"].startswith("application/x-ndjson")
    assert "".join(p["message"]["content"] for p in lines) == WORDS
    assert [p["done"] for p in lines] == [False] * 5 + [True]
    assert lines[-1]["done_reason"] == "stop" and lines[-1]["eval_count"] > 0
    assert single.json()["message"]["content"] == WORDS and single.json()["done"] is True


def test_ollama_sdk_gets_tool_calls_as_objects_without_ids_and_the_scripted_counts():
    with FakeOllama([TWO_CALLS, TWO_CALLS]) as server, _ollama(server) as client:
        single = client.chat(model="llama3.2", messages=USER)
        parts = list(client.chat(model="llama3.2", messages=USER, stream=True))
        wire = _raw_ollama(server)["message"]["tool_calls"][0]
    expected = [("get_weather", {"city": "Paris", "unit": "celsius"}),
                ("get_time", {"tz": "Europe/Paris"})]
    streamed = [c for p in parts for c in p.message.tool_calls or []]
    for calls in (single.message.tool_calls, streamed):
        assert [(c.function.name, dict(c.function.arguments)) for c in calls] == expected
    assert (single.prompt_eval_count, single.eval_count, single.done) == (120, 45, True)
    assert (parts[-1].prompt_eval_count, parts[-1].eval_count) == (120, 45)
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert wire == {"function": {"name": "get_weather",
                                 "arguments": {"city": "Paris", "unit": "celsius"}}}


def _raw_ollama(server: FakeOllama) -> dict:
    server.enqueue(TWO_CALLS)
    with httpx.Client() as client:
        return client.post(f"{server.url}/api/chat", json={
            "model": "m", "messages": USER, "stream": False}).json()


def test_ollama_embed_tags_and_unknown_models():
    with FakeOllama(models=["llama3.2:latest", "nomic-embed-text"], embedding_dim=8) as server, \
            _ollama(server) as client:
        embedded = client.embed(model="nomic-embed-text", input=["red apple", "blue sky"])
        small = client.embed(model="nomic-embed-text", input="red apple", dimensions=3)
        names = [m.model for m in client.list().models]
        assert client.chat(model="llama3.2", messages=USER).message.content  # :latest implied
        with pytest.raises(ollama.ResponseError, match="not found") as caught:
            client.chat(model="mistral", messages=USER)
    assert embedded.embeddings[0] == pytest.approx(hashed_embedding("red apple", 8))
    assert len(embedded.embeddings) == 2 and len(small.embeddings[0]) == 3
    assert names == ["llama3.2:latest", "nomic-embed-text:latest"]
    assert caught.value.status_code == 404


@pytest.mark.parametrize("fault", [Fault.rate_limit(), Fault.server_error(),
                                   Fault.unavailable(), Fault.overloaded(),
                                   Fault.bad_request("bad options"), Fault.unauthorized()],
                         ids=lambda f: f.kind)
def test_ollama_status_faults_raise_response_error_with_the_status(fault):
    with FakeOllama() as server, _ollama(server) as client:
        server.inject(fault)
        with pytest.raises(ollama.ResponseError) as caught:
            client.chat(model="m", messages=USER)
    assert caught.value.status_code == fault.status
    assert caught.value.error and not caught.value.error.startswith("{")  # unwrapped {"error"}


def test_ollama_reset_cut_stream_and_malformed_tool_calls():
    with FakeOllama([WORDS] * 4) as server, _ollama(server) as client:
        server.inject(Fault.reset(), Fault.cut_stream(after=2), Fault.malformed_tool_call(),
                      Fault.malformed_tool_call())
        with pytest.raises(httpx.TransportError):
            client.chat(model="m", messages=USER)
        received = []
        with pytest.raises(httpx.RemoteProtocolError):
            for part in client.chat(model="m", messages=USER, stream=True):
                received.append(part.message.content)
        with pytest.raises(ollama.ResponseError, match="error parsing tool call") as single:
            client.chat(model="m", messages=USER)
        with pytest.raises(ollama.ResponseError, match="error parsing tool call") as streamed:
            list(client.chat(model="m", messages=USER, stream=True))
    assert received == ["alpha", " beta"]
    assert (single.value.status_code, streamed.value.status_code) == (500, -1)


# -- shared behaviour ------------------------------------------------------------------------
def test_fault_rate_with_a_seed_serves_the_same_faults_in_the_same_order():
    def run(seed: int) -> list[str | None]:
        with FakeOpenAI() as server, _openai(server) as client:
            server.fault_rate(0.3, kinds=["rate_limit", "unavailable", "reset", "bad_request"],
                              seed=seed)
            for _ in range(40):
                try:
                    _chat(client)
                except openai.APIError:
                    pass
            return [r.fault for r in server.requests]

    first, again, other = run(7), run(7), run(8)
    assert first == again and first != other
    assert 4 <= sum(f is not None for f in first) <= 20
    assert {f for f in first if f} <= {"rate_limit", "unavailable", "reset", "bad_request"}


def test_reset_forgets_replies_faults_rate_and_records():
    with FakeOpenAI(["queued"]) as server, _openai(server) as client:
        server.inject(Fault.unavailable(), times=3)
        with pytest.raises(openai.InternalServerError):
            _chat(client)
        server.fault_rate(1.0, kinds=["server_error"])
        server.reset()
        assert (server.requests, server.faults_served) == ([], {})
        assert _chat(client).choices[0].message.content == USER[0]["content"]
    assert len(server.requests) == 1


def test_server_answers_while_the_calling_thread_blocks_its_own_event_loop():
    async def blocking_call_inside_a_loop() -> str:
        with FakeOpenAI(["pong"]) as server, _openai(server, timeout=5) as client:
            assert server._thread is not threading.current_thread()
            return _chat(client).choices[0].message.content  # blocks this loop on purpose

    assert asyncio.run(blocking_call_inside_a_loop()) == "pong"


def test_stop_is_idempotent_and_closes_the_port():
    server = FakeOllama()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    port = server.start().port
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_thousand_calls_with_thirty_percent_faults_and_a_hundred_concurrent():
    async def hammer(url: str) -> Counter[str]:
        outcomes: Counter[str] = Counter()
        gate = asyncio.Semaphore(100)
        async with openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0) as client:
            async def one(i: int) -> None:
                async with gate:
                    try:
                        await client.chat.completions.create(
                            model="m", messages=[{"role": "user", "content": f"n{i}"}])
                        outcomes["ok"] += 1
                    except openai.APIError as exc:
                        outcomes[type(exc).__name__] += 1
            await asyncio.gather(*(one(i) for i in range(1000)))
        return outcomes

    with FakeOpenAI() as server:
        server.fault_rate(0.3, seed=0)
        started = time.perf_counter()
        outcomes = asyncio.run(hammer(server.url))
        elapsed = time.perf_counter() - started
    served = server.faults_served
    assert len(server.requests) == 1000 and sum(outcomes.values()) == 1000
    assert outcomes["ok"] == 1000 - sum(served.values())
    assert 240 <= sum(served.values()) <= 360
    assert outcomes["APIConnectionError"] == served["reset"]
    assert outcomes["RateLimitError"] == served["rate_limit"]
    assert elapsed < 20, f"1,000 calls took {elapsed:.1f} s"


def test_importing_the_package_does_not_import_aiohttp_until_a_server_is_asked_for():
    code = ("import sys, aillm_lab, aillm_lab.testing as t; "
            "assert 'aiohttp' not in sys.modules, 'eager'; "
            "assert t.FakeOpenAI.__name__ == 'FakeOpenAI'; "
            "assert 'aiohttp' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
