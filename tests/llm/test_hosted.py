"""HostedModel: a vendor class that supplies only its wire format gets the rest."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from aillm_lab.config import LabSettings
from aillm_lab.errors import ProviderConnectionError, ProviderUnavailable, StreamInterrupted
from aillm_lab.llm._clients import Closer, HttpOptions
from aillm_lab.llm.base import OutputSpec
from aillm_lab.llm.hosted import HostedModel, StreamTally, parse_spec
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    Message,
    StreamEvent,
    ToolSpec,
    Usage,
)
from aillm_lab.runtime import LoopRunner


class VendorDown(Exception):
    """What a vendor SDK raises for a 503."""


class ShoutModel(HostedModel[dict[str, Any]]):
    """A vendor whose "server" shouts the last message back, word by word when streamed."""

    provider = "shout"
    key_hint = "SHOUT_KEY"

    def __init__(self, timeout_s: float = 30.0) -> None:
        super().__init__("loud", base_url="https://user:pw@shout.example/v1",
                         api_key="sk-shout-0123456789", http=HttpOptions(timeout_s=timeout_s))
        self.built = 0

    def _build(self) -> tuple[Any, Closer]:
        self.built += 1

        async def close() -> None:
            return None

        return object(), close

    def _request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None,
                 output: OutputSpec, params: GenerationParams) -> dict[str, Any]:
        return {"text": messages[-1].text}

    async def _send(self, client: Any, request: dict[str, Any]) -> Any:
        if request["text"] == "down":
            raise VendorDown("Service Unavailable")
        if request["text"] == "slow":
            await asyncio.sleep(30)
        return {"reply": request["text"].upper()}

    def _completion(self, response: Any, request: dict[str, Any],
                    latency_s: float) -> Completion:
        return Completion(text=response["reply"], model=self.id, latency_s=latency_s)

    async def _events(self, request: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        tally = StreamTally()
        await self._client()
        for word in request["text"].upper().split():
            yield tally.text_event(word + " ")
            if word == "BREAK":
                raise VendorDown("connection reset mid-stream")
        for event in tally.closing_events(calls_sent=False, usage=Usage(output_tokens=2),
                                          model=self.id):
            yield event

    def _vendor_error(self, exc: BaseException, started: bool) -> Any:
        if isinstance(exc, VendorDown):
            return self._errors.http_error(503, str(exc), started=started)
        return None


def test_complete_and_stream_come_from_the_base_given_only_the_wire_format(
        runner: LoopRunner) -> None:
    model = ShoutModel()
    completion = runner.run(model.complete([Message.user("hello world")]))
    assert completion.text == "HELLO WORLD" and completion.latency_s is not None

    events = runner.run(_collect(model, "hello world"))
    assert [e.type for e in events] == ["text", "text", "usage", "done"]
    final = events[-1].completion
    assert final is not None and final.text == "HELLO WORLD " == "".join(map(str, events))
    assert final.ttft_s is not None and final.usage.output_tokens == 2
    assert model.built == 1  # one client for the loop, shared by both calls
    runner.run(model.aclose())


def test_vendor_errors_are_typed_and_a_broken_stream_is_not_retried(
        runner: LoopRunner) -> None:
    model = ShoutModel()
    with pytest.raises(ProviderUnavailable, match="Service Unavailable"):
        runner.run(model.complete([Message.user("down")]))
    with pytest.raises(StreamInterrupted) as info:
        runner.run(_collect(model, "please break"))
    assert info.value.retryable is False
    runner.run(model.aclose())


def test_the_total_timeout_is_a_typed_connection_error(runner: LoopRunner) -> None:
    model = ShoutModel(timeout_s=0.05)
    with pytest.raises(ProviderConnectionError, match="timed out after 0.05 s"):
        runner.run(model.complete([Message.user("slow")]))
    runner.run(model.aclose())


def test_repr_and_errors_never_show_the_key_or_url_credentials(runner: LoopRunner) -> None:
    model = ShoutModel()
    assert repr(model) == "<ShoutModel shout:loud at https://shout.example/v1>"
    with pytest.raises(ProviderUnavailable) as info:
        runner.run(model.complete([Message.user("down")]))
    assert "sk-shout" not in str(info.value) and "pw@" not in str(info.value)
    runner.run(model.aclose())


def test_parse_spec_splits_a_base_url_and_reads_the_models_own_limits() -> None:
    settings = LabSettings(limits={"shout:loud": {"total_timeout_s": 7, "concurrency": 100}})
    name, url, http = parse_spec("shout", "loud@http://box:8000/v1", settings)
    assert (name, url) == ("loud", "http://box:8000/v1")
    assert http.timeout_s == 7 and http.max_connections == 100
    assert parse_spec("shout", "quiet", settings)[:2] == ("quiet", None)


async def _collect(model: ShoutModel, text: str) -> list[StreamEvent]:
    return [event async for event in model.stream([Message.user(text)])]
