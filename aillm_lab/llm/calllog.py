"""The call log: one row per model call, appended to Parquet under ``<home>/calls/``."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field


class CallRecord(BaseModel):
    """What the gateway writes after every model call, cache and replay hits included.

    ``cost_usd`` is ``None`` when the model's price is unknown, never a made-up 0.
    """

    run_id: str
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    provider: str
    model: str
    requested_model: str = Field(description="the model asked for, before any fallback")
    request_hash: str
    cache_hit: bool = False
    replay_hit: bool = False
    stream: bool = False
    attempts: int = 1
    latency_s: float | None = None
    ttft_s: float | None = None
    status: str = Field("ok", description="'ok' or 'error'")
    error_type: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
