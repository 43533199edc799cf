"""Fake OpenAI, Anthropic and Ollama HTTP servers for tests that drive the real SDKs.

    from aillm_lab.testing.fake_servers import FakeOpenAI, Fault

    with FakeOpenAI(["hello"]) as server:
        client = openai.OpenAI(base_url=server.url, api_key="test", max_retries=0)
        server.inject(Fault.rate_limit(retry_after=1))   # the next request gets a 429
        server.fault_rate(0.3, seed=0)                    # then 30% of them fail at random
        ...
        server.requests[-1].body                          # what the SDK sent

Each server runs on 127.0.0.1 on a free port, on its own event loop in a daemon thread.
Needs aiohttp: ``pip install 'aillm-lab[testing]'``.
"""

from ._base import (
    KINDS,
    RETRYABLE,
    FakeServer,
    Fault,
    RecordedRequest,
    Reply,
    ReplyFunction,
    hashed_embedding,
)
from .anthropic import FakeAnthropic
from .ollama import FakeOllama
from .openai import FakeOpenAI

__all__ = ["KINDS", "RETRYABLE", "FakeAnthropic", "FakeOllama", "FakeOpenAI", "FakeServer",
           "Fault", "RecordedRequest", "Reply", "ReplyFunction", "hashed_embedding"]
