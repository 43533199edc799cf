"""Issue 3's fault acceptance, end to end: Lab → gateway → official SDK → real fake server."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

import aillm_lab as al
from aillm_lab.errors import AuthenticationError, BadRequest
from aillm_lab.testing import FakeAnthropic, FakeOllama, FakeOpenAI, Fault

SERVERS = {"openai": (FakeOpenAI, "gpt-4o-mini"),
           "anthropic": (FakeAnthropic, "claude-3-5-haiku-latest"),
           "ollama": (FakeOllama, "llama3.2")}
MAX_ATTEMPTS = 12  # 0.3**12 ≈ 5e-7 per call: a fixed seed cannot make this flaky
FAST = {"max_attempts": MAX_ATTEMPTS, "backoff_base_s": 0.001, "backoff_cap_s": 0.005,
        "retry_after_cap_s": 0.005, "concurrency": 32}


@pytest.mark.parametrize(("provider", "calls"), [("openai", 1000), ("anthropic", 200),
                                                  ("ollama", 200)])
def test_calls_under_30_percent_mixed_retryable_faults_all_succeed_within_max_attempts(
        provider, calls, lab_home, runner):
    server_cls, name = SERVERS[provider]
    with server_cls() as server:
        server.fault_rate(0.3, seed=7)  # 429 with Retry-After, 500, 503 and connection resets
        spec = f"{provider}:{name}@{server.url}"
        with al.Lab(home=lab_home, limits={spec.split("@")[0]: FAST}, runner=runner) as lab:

            async def main() -> list[str]:
                replies = await asyncio.gather(
                    *(lab.achat(f"call {i}", model=spec, max_tokens=16) for i in range(calls)))
                return [r.text for r in replies]

            texts = lab.runner.run(main(), timeout=240)
            frame = lab.calls()
        served = dict(server.faults_served)
        received = len(server.requests)
    assert texts == [f"call {i}" for i in range(calls)]  # every call answered, in its order
    assert len(frame) == calls and set(frame["status"]) == {"ok"}
    assert frame["attempts"].max() <= MAX_ATTEMPTS
    assert frame["attempts"].sum() == received  # each attempt reached the server once
    assert sum(served.values()) == received - calls >= 0.2 * received  # faults were served
    assert set(served) == {"rate_limit", "server_error", "unavailable", "reset"}


@pytest.mark.parametrize("provider", list(SERVERS))
@pytest.mark.parametrize(("fault", "error"), [
    (Fault.bad_request("messages: field required (vendor text)"), BadRequest),
    (Fault.unauthorized("Incorrect API key provided (vendor text)."), AuthenticationError)])
def test_400_and_401_surface_at_once_as_typed_errors_with_the_vendors_message(
        provider, fault, error, lab_home, runner):
    server_cls, name = SERVERS[provider]
    with server_cls(["never sent"]) as server:
        server.inject(fault)
        spec = f"{provider}:{name}@{server.url}"
        with al.Lab(home=lab_home, limits={spec.split("@")[0]: FAST}, runner=runner) as lab:
            with pytest.raises(error) as caught:
                lab.chat("hello", model=spec)
            row = lab.calls().iloc[-1]
        assert len(server.requests) == 1  # not retried
    assert "vendor text" in caught.value.vendor_message and "vendor text" in str(caught.value)
    assert (row["attempts"], row["status"], row["error_type"]) == (1, "error", error.__name__)


@pytest.mark.parametrize("provider", list(SERVERS))
def test_a_429_with_retry_after_1_delays_the_retry_by_at_least_one_second(provider, lab_home,
                                                                          runner):
    server_cls, name = SERVERS[provider]
    with server_cls(["after the wait"]) as server:
        server.inject(Fault.rate_limit(retry_after=1))
        spec = f"{provider}:{name}@{server.url}"
        limits = {"max_attempts": 3, "backoff_base_s": 0.001, "backoff_cap_s": 0.01}
        with al.Lab(home=lab_home, limits={spec.split("@")[0]: limits}, runner=runner) as lab:
            assert lab.chat("hello", model=spec).text == "after the wait"
        first, second = server.requests
    assert (first.fault, second.fault) == ("rate_limit", None)
    waited = second.received_at - first.received_at
    assert 1.0 <= waited < 3.0, waited  # Retry-After honoured, not the 1 ms backoff


def test_retry_after_is_capped_by_the_limits_so_a_hostile_server_cannot_stall_us(
        lab_home, runner):
    with FakeOpenAI(["soon"]) as server:
        server.inject(Fault.rate_limit(retry_after=3600))
        spec = f"openai:gpt-4o-mini@{server.url}"
        limits = {"retry_after_cap_s": 0.05, "backoff_base_s": 0.001}
        with al.Lab(home=lab_home, limits={"openai:gpt-4o-mini": limits}, runner=runner) as lab:
            assert lab.chat("x", model=spec).text == "soon"
        first, second = server.requests
    assert second.received_at - first.received_at < 1.0
    assert Counter(r.fault for r in server.requests) == {"rate_limit": 1, None: 1}
