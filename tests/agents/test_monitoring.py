"""The MonitoringAgent: error bursts, latency and cost spikes made by real calls through the
gateway raise the alerts they should (stored in lab.db); a healthy period raises none; the
periodic task ends with stop() and with the Lab; bad thresholds are refused by name."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest

import aillm_lab as al
from aillm_lab.errors import BadRequest, ConfigError
from aillm_lab.llm.calllog import CallRecord
from aillm_lab.testing import ScriptedModel


def _call(lab: al.Lab, model: ScriptedModel, times: int, **params) -> None:
    for _ in range(times):
        try:
            lab.chat("status?", model=model, **params)
        except BadRequest:
            pass


def _healthy(lab: al.Lab, times: int = 10) -> None:
    _call(lab, ScriptedModel(["fine"] * times, name="steady"), times)


def _monitor_tasks(runner) -> list[str]:
    async def names() -> list[str]:
        return [t.get_name() for t in asyncio.all_tasks()
                if t.get_name().startswith("aillm-monitor")]
    return runner.run(names())


def test_an_error_burst_raises_an_error_rate_alert_naming_value_threshold_and_window(settings_lab):
    lab = settings_lab()
    _healthy(lab, 4)
    _call(lab, ScriptedModel([BadRequest("bad", provider="scripted")] * 6, name="flaky"), 6)
    monitor = al.MonitoringAgent(lab=lab)
    alerts = monitor.check()
    assert [a.metric for a in alerts] == ["error_rate"]
    alert = alerts[0]
    assert (alert.value, alert.threshold, alert.op, alert.window_s) == (0.6, 0.2, ">", 300.0)
    assert alert.message == ("error_rate = 0.6 > 0.2 over the last 300 s (6 of 10 model calls "
                             "failed)")
    stored = monitor.alerts()
    assert stored[["id", "metric", "value", "threshold", "window_s"]].to_dict("records") == [
        {"id": alert.id, "metric": "error_rate", "value": 0.6, "threshold": 0.2,
         "window_s": 300.0}]
    assert stored["monitor"].tolist() == [monitor.id]


def test_a_latency_spike_raises_a_p95_latency_alert(settings_lab):
    lab = settings_lab(monitoring={"max_p95_latency_s": 0.1})
    _healthy(lab, 5)
    monitor = al.MonitoringAgent(lab=lab)
    assert monitor.check() == []
    _call(lab, ScriptedModel(["slow"] * 5, name="slow", delay=0.3), 5)
    alerts = monitor.check()
    assert [a.metric for a in alerts] == ["p95_latency_s"]
    assert alerts[0].value >= 0.25 and alerts[0].threshold == 0.1
    assert "over 10 answered, uncached calls" in alerts[0].message


def test_a_cost_spike_raises_burn_rate_and_budget_alerts(settings_lab):
    lab = settings_lab(prices={"scripted:pricey": {"input": 2000, "output": 2000}},
                   budget_usd=0.32, monitoring={"max_usd_per_hour": 0.5})
    _healthy(lab, 5)
    monitor = al.MonitoringAgent(lab=lab)
    assert monitor.check() == []  # free calls burn nothing
    pricey = ScriptedModel(["a costly answer of several words"] * 20, name="pricey")
    _call(lab, pricey, 20, max_tokens=8)  # a worst case that fits the budget
    spent = float(lab.calls()["cost_usd"].sum())
    assert spent == pytest.approx(0.28)  # $0.014 a call
    alerts = {a.metric: a for a in monitor.check()}
    assert set(alerts) == {"usd_per_hour", "budget_hours_left", "budget_used"}
    assert alerts["usd_per_hour"].value == pytest.approx(spent * 12)  # per 300 s window
    assert alerts["budget_used"].value == pytest.approx(spent / 0.32)
    assert alerts["budget_used"].window_s is None and "now" in alerts["budget_used"].message
    assert alerts["budget_hours_left"].op == "<"


def test_a_healthy_period_raises_no_alert_though_an_old_burst_is_in_the_log(settings_lab):
    lab = settings_lab()
    an_hour_ago = datetime.now(UTC) - timedelta(hours=1)
    for i in range(20):  # errors and slow answers, written through the call log's own door
        failed = {"status": "error", "error_type": "BadRequest"} if i % 2 else {}
        lab.calllog.append(CallRecord(run_id="old", time=an_hour_ago, provider="scripted",
                                      model="scripted:flaky", requested_model="scripted:flaky",
                                      request_hash=f"h{i}", latency_s=90.0, **failed))
    _healthy(lab, 10)
    assert al.MonitoringAgent(lab=lab).check() == []
    wider = al.MonitoringAgent(lab=lab, thresholds={"window_s": 7200})
    assert {a.metric for a in wider.check()} == {"error_rate", "p95_latency_s"}


def test_refused_tool_calls_raise_a_tool_failure_alert(settings_lab):
    lab = settings_lab()
    for _ in range(5):
        with pytest.raises(al.SafetyViolation):
            lab.tools.call("read_file", path="/etc/passwd")
    lab.tools.call("list_dir", path=".")
    alerts = al.MonitoringAgent(lab=lab).check()
    assert [(a.metric, a.value) for a in alerts] == [("tool_failure_rate", 5 / 6)]
    assert "5 of 6 tool calls refused, denied or failed" in alerts[0].message


def test_open_connections_and_rss_are_read_from_this_process(settings_lab):
    lab = settings_lab()
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        monitor = al.MonitoringAgent(lab=lab, thresholds={"max_open_connections": 2,
                                                          "max_rss_mb": 1})
        metrics = monitor.metrics()
        assert metrics["open_connections"] >= 3 and metrics["rss_mb"] > 1
        assert {a.metric for a in monitor.check()} == {"rss_mb", "open_connections"}
    finally:
        for s in (peer, client, server):
            s.close()


def test_an_alert_that_stays_over_is_stored_once_and_again_when_it_returns(settings_lab):
    lab = settings_lab()
    now = [datetime.now(UTC) + timedelta(seconds=1)]
    monitor = al.MonitoringAgent(lab=lab, clock=lambda: now[0])
    flaky = ScriptedModel([BadRequest("bad", provider="scripted")] * 10, name="flaky")
    _call(lab, flaky, 5)
    first = monitor.check()
    again = monitor.check()
    assert [a.metric for a in again] == ["error_rate"] and again[0].id == first[0].id
    assert len(monitor.alerts()) == 1
    now[0] += timedelta(seconds=600)  # the burst leaves the window: the rule clears
    assert monitor.check() == []
    _call(lab, flaky, 5)  # (these calls are stamped now, so move the clock back to see them)
    now[0] = datetime.now(UTC) + timedelta(seconds=1)
    assert [a.metric for a in monitor.check()] == ["error_rate"]
    assert len(monitor.alerts()) == 2


def test_start_checks_periodically_and_stop_leaves_no_task_behind(settings_lab, runner):
    lab = settings_lab()
    _call(lab, ScriptedModel([BadRequest("bad", provider="scripted")] * 5, name="flaky"), 5)
    monitor = al.MonitoringAgent(lab=lab)
    monitor.start(every_s=0.05)
    deadline = time.monotonic() + 10
    while monitor.last_metrics is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert monitor.running and _monitor_tasks(runner) == [f"aillm-monitor:{monitor.id}"]
    assert monitor.alerts()["metric"].tolist() == ["error_rate"]
    monitor.start(every_s=0.05)  # a restart replaces the task, never adds one
    assert len(_monitor_tasks(runner)) == 1
    monitor.stop()
    assert not monitor.running and _monitor_tasks(runner) == []
    monitor.stop()  # idempotent


def test_closing_the_lab_stops_its_started_monitor(settings_lab, runner):
    lab = settings_lab()
    monitor = al.MonitoringAgent(lab=lab)
    monitor.start(every_s=0.05)
    assert _monitor_tasks(runner) == [f"aillm-monitor:{monitor.id}"]
    lab.close()
    assert not monitor.running and _monitor_tasks(runner) == []


def test_a_failing_check_is_kept_and_the_periodic_task_goes_on(settings_lab, runner, monkeypatch):
    lab = settings_lab()
    monitor = al.MonitoringAgent(lab=lab)
    calls = []

    async def broken(sql=None):
        calls.append(sql)
        raise ValueError("the call log is away")

    monkeypatch.setattr(lab, "acalls", broken)
    monitor.start(every_s=0.02)
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(calls) >= 3 and isinstance(monitor.last_error, ValueError)
    assert monitor.running
    monitor.stop()


def test_the_summary_comes_from_the_model_through_the_gateway_and_is_not_counted(settings_lab):
    lab = settings_lab()
    writer = ScriptedModel(["Errors rose from none to most calls."], name="writer")
    monitor = al.MonitoringAgent(lab=lab, summarize=True, model=writer)
    _call(lab, ScriptedModel([BadRequest("bad", provider="scripted")] * 5, name="flaky"), 5)
    alerts = monitor.check()
    assert alerts[0].summary == "Errors rose from none to most calls."
    assert "error_rate = 1 > 0.2" in writer.requests[0].messages[-1].text
    assert monitor.alerts()["summary"].tolist() == ["Errors rose from none to most calls."]
    log = lab.calls()
    assert log[log["run_id"] == monitor.id]["model"].tolist() == ["scripted:writer"]
    assert monitor.metrics()["calls"] == 5  # the summary's own call is left out


def test_a_failed_summary_still_stores_the_alert(settings_lab):
    lab = settings_lab()
    broken = ScriptedModel([BadRequest("no", provider="scripted")], name="broken")
    monitor = al.MonitoringAgent(lab=lab, summarize=True, model=broken)
    _call(lab, ScriptedModel([BadRequest("bad", provider="scripted")] * 5, name="flaky"), 5)
    alerts = monitor.check()
    assert [(a.metric, a.summary) for a in alerts] == [("error_rate", None)]
    assert monitor.alerts()["metric"].tolist() == ["error_rate"]


def test_bad_thresholds_are_rejected_naming_the_field(settings_lab, lab_home):
    with pytest.raises(ConfigError) as bad:
        al.LabSettings(home=lab_home, monitoring={"max_error_rate": 1.5, "window_s": 0})
    assert set(bad.value.fields) == {"monitoring.max_error_rate", "monitoring.window_s"}
    assert "<= 1" in str(bad.value)
    lab = settings_lab()
    with pytest.raises(ConfigError) as bad:
        al.MonitoringAgent(lab=lab, thresholds={"max_p95_latency_s": -1, "typo": 3})
    assert set(bad.value.fields) == {"monitoring.max_p95_latency_s", "monitoring.typo"}
    with pytest.raises(ConfigError) as bad:
        al.MonitoringAgent(lab=lab).start(every_s=0)
    assert bad.value.fields == ("every_s",)
    with pytest.raises(ConfigError) as bad:
        al.MonitoringAgent(lab=lab).alerts(limit=-1)
    assert bad.value.fields == ("limit",)


def test_a_rule_set_to_none_is_off_and_rates_wait_for_min_calls(settings_lab):
    lab = settings_lab()
    _call(lab, ScriptedModel([BadRequest("bad", provider="scripted")] * 4, name="flaky"), 4)
    assert al.MonitoringAgent(lab=lab).check() == []  # 4 calls < min_calls = 5
    assert al.MonitoringAgent(lab=lab, thresholds={"min_calls": 4}).check()[0].metric == \
        "error_rate"
    assert al.MonitoringAgent(lab=lab, thresholds={"min_calls": 4,
                                                   "max_error_rate": None}).check() == []


def test_acheck_works_from_another_event_loop(settings_lab):
    lab = settings_lab()
    _call(lab, ScriptedModel([BadRequest("bad", provider="scripted")] * 5, name="flaky"), 5)
    monitor = al.MonitoringAgent(lab=lab)

    async def main() -> list[al.Alert]:
        return await monitor.acheck()

    assert [a.metric for a in asyncio.run(main())] == ["error_rate"]


def test_close_with_takes_only_closable_things_once(settings_lab, runner):
    lab = settings_lab()
    with pytest.raises(TypeError, match="has no aclose"):
        lab.close_with(object())
    monitor = al.MonitoringAgent(lab=lab)
    assert lab.close_with(monitor) is monitor and lab.close_with(monitor) is monitor
    monitor.start(every_s=0.05)  # registers itself again: still one entry, closed once
    lab.close()
    assert not monitor.running and _monitor_tasks(runner) == []
