"""A Lab sends every call through its gateway: call log, budgets, fallbacks, record/replay."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.errors import BudgetExceeded, ProviderUnavailable, ReplayMiss
from aillm_lab.llm.gateway import GatewayModel
from aillm_lab.testing import FakeOpenAI, Fault, ScriptedModel

KEY = "sk-test-NEVER-STORE-0123456789abcdef"


def test_every_model_a_lab_hands_out_goes_through_its_gateway(settings_lab):
    lab = settings_lab()
    mine = ScriptedModel(["hi"])
    assert isinstance(lab.model("scripted:echo"), GatewayModel)
    assert isinstance(lab.model(mine), GatewayModel)
    assert lab.model("scripted:echo") is lab.model("scripted:echo")
    assert lab.chat("x", model=mine).text == "hi" and len(mine.requests) == 1


def test_each_call_writes_one_call_log_row_queryable_as_a_frame_and_with_sql(settings_lab):
    lab = settings_lab()
    lab.chat("one two three", model="scripted:echo")
    list(lab.stream("four five", model="scripted:echo"))
    frame = lab.calls()
    assert list(frame["model"]) == ["scripted:echo", "scripted:echo"]
    assert list(frame["stream"]) == [False, True]
    assert list(frame["status"]) == ["ok", "ok"] and list(frame["cost_usd"]) == [0.0, 0.0]
    assert list(frame["output_tokens"]) == [3, 2]
    counts = lab.calls("select model, count(*) as n from calls group by model")
    assert counts.to_dict("records") == [{"model": "scripted:echo", "n": 2}]


def test_the_call_log_survives_a_process_that_never_closes_its_lab(lab_home):
    script = textwrap.dedent("""
        import aillm_lab as al
        for i in range(3):
            al.chat(f"call {i}", model="scripted:echo")
    """)
    env = {**os.environ, "AILLM_HOME": str(lab_home)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    with al.Lab(home=lab_home) as lab:
        assert len(lab.calls()) == 3


def test_fallbacks_from_settings_answer_when_the_primary_keeps_failing(settings_lab):
    def broken(messages, request):
        raise ProviderUnavailable("down", status=503)

    lab = settings_lab(fallbacks=["scripted:echo"],
                   limits={"scripted:broken": {"max_attempts": 2, "backoff_base_s": 0.001}})
    reply = lab.chat("still here", model=ScriptedModel(broken, name="broken"))
    assert reply.text == "still here"
    row = lab.calls().iloc[-1]
    assert row["requested_model"] == "scripted:broken" and row["model"] == "scripted:echo"
    assert row["attempts"] == 3


def test_a_hosted_model_without_a_key_falls_back_but_a_rejected_key_does_not(settings_lab,
                                                                             monkeypatch):
    for name in ("OPENAI_API_KEY", "AILLM_OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    lab = settings_lab(fallbacks=["scripted:echo"])
    reply = lab.chat("answered locally", model="openai:gpt-4o-mini")
    assert reply.text == "answered locally"
    row = lab.calls().iloc[-1]
    assert row["requested_model"] == "openai:gpt-4o-mini" and row["model"] == "scripted:echo"
    # without a fallback the missing key is still an AuthenticationError naming the fix
    bare = settings_lab()
    with pytest.raises(al.AuthenticationError, match="OPENAI_API_KEY") as info:
        bare.chat("hi", model="openai:gpt-4o-mini")
    assert isinstance(info.value, al.MissingKey | al.ModelNotAvailable)
    # a key the server rejects (401) is raised, never hidden behind the fallback
    with FakeOpenAI() as server:
        server.inject(Fault.unauthorized())
        with pytest.raises(al.AuthenticationError) as rejected:
            lab.chat("hi", model=f"openai:gpt-4o-mini@{server.url}")
        assert not isinstance(rejected.value, al.ModelNotAvailable)


def test_a_budget_refuses_calls_before_anything_is_sent(settings_lab):
    with FakeOpenAI() as server:
        lab = settings_lab(budget_usd=0.0001)
        model = f"openai:gpt-4o-mini@{server.url}"
        with pytest.raises(BudgetExceeded):
            for _ in range(50):
                lab.chat("hello " * 50, model=model, max_tokens=200)
        sent = len(server.requests)
        with pytest.raises(BudgetExceeded):
            lab.chat("hello", model=model, max_tokens=200)
        assert len(server.requests) == sent
    frame = lab.calls()
    assert frame["cost_usd"].dropna().sum() <= 0.0001


def test_record_then_replay_without_the_server_gives_identical_outputs(lab_home, runner,
                                                                        monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    prompts = ["What is 2+2?", "Name a colour."]
    with FakeOpenAI(["Four.", "Blue."]) as server:
        model = f"openai:gpt-4o-mini@{server.url}"
        with al.Lab(home=lab_home, cache_mode="record", runner=runner) as lab:
            recorded = [lab.chat(p, model=model).text for p in prompts]
            streamed = [str(e) for e in lab.stream("Stream me", model=model)]
        auth = {k.lower(): v for k, v in server.requests[0].headers.items()}.get("authorization")
    assert auth == "Bearer <redacted>"  # the key was sent, and the fake server hid it
    with al.Lab(home=lab_home, cache_mode="replay", runner=runner) as lab:
        assert [lab.chat(p, model=model).text for p in prompts] == recorded
        assert [str(e) for e in lab.stream("Stream me", model=model)] == streamed
        with pytest.raises(ReplayMiss, match="What is 3"):
            lab.chat("What is 3+3?", model=model)
        frame = lab.calls()
    assert frame["replay_hit"].tolist() == [False] * 3 + [True] * 3 + [False]
    assert frame["error_type"].tolist()[-1] == "ReplayMiss"
    for path in [*lab_home.rglob("cache.db*"), *lab_home.rglob("*.parquet")]:
        assert KEY.encode() not in path.read_bytes(), path


def test_a_fault_is_retried_by_the_gateway_and_counted(settings_lab):
    with FakeOpenAI(["ok"]) as server:
        server.inject(Fault.rate_limit(retry_after=0.01))
        lab = settings_lab(limits={"openai:gpt-4o-mini": {"backoff_base_s": 0.001}})
        assert lab.chat("x", model=f"openai:gpt-4o-mini@{server.url}").text == "ok"
        assert len(server.requests) == 2
    assert lab.calls().iloc[-1]["attempts"] == 2


def test_runs_tag_calls_and_cap_their_spend(settings_lab):
    lab = settings_lab()
    with lab.scope("exp-1"):
        lab.chat("tagged", model="scripted:echo")
    lab.chat("untagged", model="scripted:echo")
    runs = lab.calls()["run_id"].tolist()
    assert runs[0] == "exp-1" and runs[1] != "exp-1"


def test_bad_cache_settings_are_config_errors_naming_the_field(lab_home):
    with pytest.raises(al.ConfigError) as info:
        al.Lab(home=lab_home, cache_mode="replya")
    assert info.value.fields == ("cache_mode",)
    with pytest.raises(al.ConfigError) as info:
        al.Lab(home=lab_home, prices={"openai:x": {"input": -1, "output": 1}})
    assert "prices.openai:x.input" in str(info.value)


def test_a_user_price_makes_an_unknown_model_billable(settings_lab):
    with FakeOpenAI(["fine"]) as server:
        lab = settings_lab(prices={"openai:my-tune": {"input": 1.0, "output": 2.0}})
        lab.chat("x", model=f"openai:my-tune@{server.url}")
    cost = lab.calls().iloc[-1]["cost_usd"]
    assert cost is not None and cost > 0


def test_an_unknown_price_is_recorded_as_unknown_not_zero(settings_lab):
    with FakeOpenAI(["fine"]) as server:
        lab = settings_lab()
        lab.chat("x", model=f"openai:no-such-model-priced@{server.url}")
    assert lab.calls().iloc[-1][["cost_usd"]].isna().all()


def test_home_holds_the_store_and_the_call_log(settings_lab, lab_home):
    lab = settings_lab(cache_mode="record")
    lab.chat("x", model="scripted:echo")
    lab.close()
    assert (lab_home / "cache.db").is_file()
    assert list(Path(lab_home, "calls").glob("calls-*.parquet"))
