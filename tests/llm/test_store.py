"""ResponseCache (bounded LRU + TTL) and ResponseStore (SQLite record/replay)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from pathlib import Path

import pytest

from aillm_lab.errors import ConfigError, ReplayMiss, RunnerError
from aillm_lab.llm.store import (
    ResponseCache,
    ResponseStore,
    TieredStore,
    describe_request,
    is_cacheable,
)
from aillm_lab.llm.types import Completion, Message, StreamEvent, ToolCall, Usage
from aillm_lab.runtime import LoopRunner


def completion(text: str = "Paris.") -> Completion:
    return Completion(text=text, model="gpt-4o-mini", response_id="resp-1",
                      tool_calls=[ToolCall(id="c1", name="lookup", arguments={"q": "x"})],
                      usage=Usage(input_tokens=12, output_tokens=3, cache_read_tokens=4))


def stream_events() -> list[StreamEvent]:
    final = Completion(text="Hello", model="gpt-4o-mini", finish_reason="tool_calls",
                       tool_calls=[ToolCall(id="c1", name="lookup", arguments={"q": "x"})],
                       usage=Usage(input_tokens=5, output_tokens=2))
    return [StreamEvent(type="text", text="Hel"),
            StreamEvent(type="text", text="lo"),
            StreamEvent(type="tool_call", tool_call=final.tool_calls[0]),
            StreamEvent(type="usage", usage=Usage(input_tokens=5, output_tokens=2)),
            StreamEvent(type="done", completion=final, usage=final.usage)]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- ResponseCache ------------------------------------------------------------------------
def test_cache_evicts_the_least_recently_used_entry_at_max_size() -> None:
    cache = ResponseCache(max_entries=2, ttl_s=60)
    cache.put("a", completion("A"))
    cache.put("b", completion("B"))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", completion("C"))
    assert cache.get("b") is None
    assert str(cache.get("a")) == "A" and str(cache.get("c")) == "C"
    stats = cache.stats()
    assert (stats.size, stats.max_entries, stats.evictions) == (2, 2, 1)


def test_cache_entries_expire_after_the_ttl_on_the_injected_clock() -> None:
    clock = FakeClock()
    cache = ResponseCache(max_entries=10, ttl_s=30, clock=clock)
    cache.put("k", completion())
    clock.now += 29.9
    assert cache.get("k") is not None
    clock.now += 0.2
    assert cache.get("k") is None
    stats = cache.stats()
    assert (stats.size, stats.expirations, stats.hits, stats.misses) == (0, 1, 1, 1)


def test_cache_stats_count_only_live_entries() -> None:
    clock = FakeClock()
    cache = ResponseCache(max_entries=10, ttl_s=5, clock=clock)
    cache.put("old", completion())
    clock.now += 3
    cache.put("new", completion())
    clock.now += 3
    assert cache.stats().size == 1 and len(cache) == 1


def test_cache_reports_hits_misses_and_hit_rate() -> None:
    cache = ResponseCache()
    assert cache.stats().hit_rate == 0.0
    cache.put("k", completion())
    for _ in range(3):
        cache.get("k")
    cache.get("other")
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.hit_rate) == (3, 1, 0.75)


def test_cache_keeps_streams_and_completions_apart_and_hands_out_copies() -> None:
    cache = ResponseCache()
    events = stream_events()
    cache.put("k", completion())
    cache.put("k", events)
    assert cache.get("k", stream=True) == events
    first = cache.get("k")
    assert isinstance(first, Completion)
    first.latency_s = 9.0  # a caller stamping a hit must not change the cached answer
    first.usage.input_tokens = 0
    again = cache.get("k")
    assert isinstance(again, Completion)
    assert again.latency_s is None and again.usage.input_tokens == 12


def test_cache_refuses_errors_cancellations_and_cut_off_streams() -> None:
    cache = ResponseCache()
    assert not cache.put("err", Completion(text="boom", finish_reason="error"))
    assert not cache.put("cancel", Completion(text="par", finish_reason="cancelled"))
    assert not cache.put("cut", stream_events()[:2])
    assert cache.stats().size == 0 and cache.get("err") is None
    assert not is_cacheable([])


@pytest.mark.parametrize(("kwargs", "field"), [({"max_entries": 0}, "max_entries"),
                                               ({"ttl_s": 0}, "ttl_s"),
                                               ({"ttl_s": float("inf")}, "ttl_s")])
def test_cache_rejects_unbounded_settings_by_field(kwargs: dict[str, float],
                                                   field: str) -> None:
    with pytest.raises(ConfigError, match=field) as info:
        ResponseCache(**kwargs)  # type: ignore[arg-type]
    assert info.value.fields == (field,)


# -- ResponseStore ------------------------------------------------------------------------
def test_record_then_replay_returns_the_same_completion(tmp_path: Path,
                                                       runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "record")
    original = completion()
    assert runner.run(store.save("k1", original, provider="openai"))
    assert runner.run(store.lookup("k1", stream=False)) is None  # record always calls
    store.mode = "replay"
    replayed = runner.run(store.lookup("k1", stream=False))
    assert replayed == original
    runner.run(store.aclose())


def test_record_then_replay_a_stream_gives_identical_events_in_order(
        tmp_path: Path, runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "record")
    events = stream_events()
    assert runner.run(store.save("k1", events, provider="openai"))
    store.mode = "replay"
    replayed = runner.run(store.lookup("k1", stream=True))
    assert isinstance(replayed, list)
    assert replayed == events
    assert [e.type for e in replayed] == ["text", "text", "tool_call", "usage", "done"]
    assert "".join(map(str, replayed)) == "Hello"
    done = replayed[-1]
    assert done.completion is not None and done.completion.finish_reason == "tool_calls"
    assert done.usage == Usage(input_tokens=5, output_tokens=2)
    assert store.stats().rows == len(events)  # one row per event
    with pytest.raises(ReplayMiss):  # a stream recording does not answer a completion
        runner.run(store.lookup("k1", stream=False))
    runner.run(store.aclose())


def test_replay_miss_names_provider_model_and_prompt(tmp_path: Path,
                                                    runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "replay")
    prompt = "What is the capital of France? Please answer in one word. " * 3
    describe = describe_request("openai", "gpt-4o-mini",
                                [Message.system("be brief"), Message.user(prompt)])
    with pytest.raises(ReplayMiss) as info:
        runner.run(store.lookup("abcdef0123456789", stream=False, describe=describe))
    message = str(info.value)
    assert "openai:gpt-4o-mini" in message
    assert "What is the capital of France?" in message
    assert prompt not in message  # a preview, not the whole prompt
    assert "abcdef012345" in message and "replay_or_record" in message
    assert isinstance(info.value, LookupError)
    runner.run(store.aclose())


def test_replay_or_record_records_on_a_miss(tmp_path: Path, runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "replay_or_record")
    assert runner.run(store.lookup("k", stream=False)) is None
    assert runner.run(store.save("k", completion(), provider="openai"))
    assert runner.run(store.lookup("k", stream=False)) == completion()
    stats = store.stats()
    assert (stats.recordings, stats.hits, stats.misses, stats.saves) == (1, 1, 1, 1)
    runner.run(store.aclose())


def test_off_mode_neither_reads_nor_writes(tmp_path: Path, runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "off")
    assert runner.run(store.lookup("k", stream=False)) is None
    assert not runner.run(store.save("k", completion()))
    assert not (tmp_path / "cache.db").exists()
    runner.run(store.aclose())


@pytest.mark.parametrize(("mode", "reads", "writes"), [
    ("off", False, False), ("record", False, True), ("replay", True, False),
    ("replay_or_record", True, True)])
def test_stores_say_whether_they_read_or_write_so_the_gateway_can_skip_them(
        tmp_path: Path, mode: str, reads: bool, writes: bool) -> None:
    store = ResponseStore(tmp_path, mode)
    assert (store.reads, store.writes) == (reads, writes)
    assert (TieredStore(store).reads, TieredStore(store).writes) == (reads, writes)
    cached = TieredStore(store, ResponseCache())  # a memory cache answers in every mode
    assert cached.reads and cached.writes
    store.mode = "off"  # the mode can change at any time; the answer follows it
    assert (store.reads, store.writes) == (False, False)


def test_replay_mode_does_not_record(tmp_path: Path, runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "replay")
    assert not runner.run(store.save("k", completion()))
    with pytest.raises(ReplayMiss):
        runner.run(store.lookup("k", stream=False))
    runner.run(store.aclose())


def test_errors_and_cut_off_streams_are_never_recorded(tmp_path: Path,
                                                      runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "replay_or_record")
    assert not runner.run(store.save("e", Completion(text="x", finish_reason="error")))
    assert not runner.run(store.save("s", stream_events()[:3]))
    assert runner.run(store.lookup("e", stream=False)) is None
    assert runner.run(store.lookup("s", stream=True)) is None
    assert store.stats().rows == 0
    runner.run(store.aclose())


def test_recordings_survive_a_new_store_on_the_same_file(tmp_path: Path,
                                                        runner: LoopRunner) -> None:
    first = ResponseStore(tmp_path, "record")
    runner.run(first.save("k", completion(), provider="openai"))
    second = ResponseStore(tmp_path, "replay")  # sees committed rows while first is open
    assert runner.run(second.lookup("k", stream=False)) == completion()
    runner.run(first.aclose())
    runner.run(second.aclose())
    third = ResponseStore(tmp_path, "replay")
    assert runner.run(third.lookup("k", stream=False)) == completion()
    runner.run(third.aclose())


def test_saving_again_replaces_the_recording(tmp_path: Path, runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "record")
    runner.run(store.save("k", stream_events()))
    shorter = [StreamEvent(type="text", text="Hi"),
               StreamEvent(type="done", completion=Completion(text="Hi"))]
    runner.run(store.save("k", shorter))
    store.mode = "replay"
    assert runner.run(store.lookup("k", stream=True)) == shorter
    runner.run(store.aclose())


def test_store_runs_in_wal_mode_and_serialises_concurrent_writes(
        tmp_path: Path, runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "record")

    async def many() -> list[bool]:
        return await asyncio.gather(*(store.save(f"k{i}", stream_events()) for i in range(20)))

    assert all(runner.run(many()))  # overlapping BEGIN IMMEDIATEs would fail here
    with sqlite3.connect(tmp_path / "cache.db") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.stats().recordings == 20
    runner.run(store.aclose())


def test_bad_mode_raises_config_error_naming_field_and_allowed_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        ResponseStore(tmp_path, "replay-only")  # type: ignore[arg-type]
    assert info.value.fields == ("mode",)
    for allowed in ("'off'", "'record'", "'replay'", "'replay_or_record'"):
        assert allowed in str(info.value)
    store = ResponseStore(tmp_path)
    with pytest.raises(ConfigError):
        store.mode = "REPLAY"  # type: ignore[assignment]
    assert store.mode == "off"


def test_no_key_or_request_text_reaches_the_sqlite_file(tmp_path: Path,
                                                       runner: LoopRunner) -> None:
    fake_key = "sk-test-DO-NOT-STORE-7f3a9c2e"
    prompt = "Summarise the quarterly zebra migration report"
    request = {"provider": "openai", "model": "gpt-4o-mini",
               "headers": {"Authorization": f"Bearer {fake_key}"},
               "messages": [{"role": "user", "content": prompt}]}
    key = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
    describe = describe_request("openai", "gpt-4o-mini", [Message.user(prompt)])
    store = ResponseStore(tmp_path, "replay_or_record")
    assert runner.run(store.lookup(key, stream=False, describe=describe)) is None
    runner.run(store.save(key, completion("Zebras went north."), provider="openai"))
    runner.run(store.save(key, stream_events(), provider="openai"))
    store.mode = "replay"
    with pytest.raises(ReplayMiss) as info:
        runner.run(store.lookup("0" * 64, stream=False, describe=describe))
    assert fake_key not in str(info.value)

    def stored_bytes() -> bytes:
        files = [tmp_path / n for n in ("cache.db", "cache.db-wal", "cache.db-shm")]
        return b"".join(p.read_bytes() for p in files if p.exists())

    for when in ("open", "closed"):
        data = stored_bytes()
        assert b"Zebras went north." in data, when  # the grep can see stored text
        assert key.encode() in data, when
        assert fake_key.encode() not in data, when
        assert b"Bearer" not in data and prompt.encode() not in data, when
        runner.run(store.aclose())


def test_store_refuses_a_second_event_loop(tmp_path: Path, runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "replay_or_record")
    runner.run(store.lookup("k", stream=False))
    with pytest.raises(RunnerError, match="runner loop"):
        asyncio.run(store.lookup("k", stream=False))
    runner.run(store.aclose())


def test_aclose_is_idempotent_and_a_later_call_reopens(tmp_path: Path,
                                                      runner: LoopRunner) -> None:
    store = ResponseStore(tmp_path, "replay_or_record")
    runner.run(store.save("k", completion()))
    runner.run(store.aclose())
    runner.run(store.aclose())
    assert runner.run(store.lookup("k", stream=False)) == completion()
    runner.run(store.aclose())


def test_closing_the_runner_closes_the_store_and_its_thread(tmp_path: Path) -> None:
    runner = LoopRunner(name="aillm-test-store-close")
    store = ResponseStore(tmp_path, "replay_or_record", runner=runner)
    runner.run(store.lookup("k", stream=False))
    conn = store._conn
    assert conn is not None
    runner.close()
    assert store._conn is None
    assert not conn._thread.is_alive()
