"""PythonSandbox's API: the tool, the doors (sync, async, other loops), lifecycle, errors."""

from __future__ import annotations

import asyncio
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

import aillm_lab.tools.python as sandbox_module
from aillm_lab.errors import SafetyViolation, ToolError
from aillm_lab.runtime import LoopRunner, get_runner
from aillm_lab.tools.base import RiskLevel
from aillm_lab.tools.policy import CodePolicy
from aillm_lab.tools.python import PythonSandbox, SandboxResult, SandboxUnavailable

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX sandbox")


@pytest.fixture(scope="module")
def sb() -> Iterator[PythonSandbox]:
    box = PythonSandbox(CodePolicy(memory_mb=512, wall_s=20))
    yield box
    box.close()


def test_tools_gives_run_python_with_execute_risk(sb: PythonSandbox) -> None:
    (tool,) = sb.tools()
    assert tool.name == "run_python" and tool.risk is RiskLevel.EXECUTE
    params = tool.spec.parameters
    assert params["required"] == ["code"]
    assert set(params["properties"]) == {"code", "timeout_s"}


def test_run_python_returns_readable_text(sb: PythonSandbox) -> None:
    (tool,) = sb.tools()
    text = get_runner().run(tool.acall({"code": "print('hi')\n20 + 22"}))
    assert text == "[stdout]\nhi\n[value]\n42"


def test_run_python_turns_a_sandbox_refusal_into_a_violation_with_the_output(
        sb: PythonSandbox) -> None:
    """So the guard audits the call as refused, with the rule, not as allowed."""
    (tool,) = sb.tools()
    with pytest.raises(SafetyViolation) as info:
        get_runner().run(tool.acall({"code": "print('before')\nimport socket\n"
                                                 "socket.socket()"}))
    assert info.value.rule == "code.network"
    assert "[stdout]\nbefore" in info.value.detail and "[error]" in info.value.detail
    assert get_runner().run(tool.acall({"code": "1 + 1"})) == "[value]\n2"  # still answers


def test_run_python_caps_the_timeout_at_the_policy(tmp_path: Path) -> None:
    with PythonSandbox(CodePolicy(wall_s=0.5, memory_mb=256)) as box:
        (tool,) = box.tools()
        text = get_runner().run(tool.acall({"code": "import time\ntime.sleep(10)",
                                            "timeout_s": 100}))
        assert "timed out after 0.5 s" in text


def test_run_python_rejects_a_non_positive_or_endless_timeout(sb: PythonSandbox) -> None:
    (tool,) = sb.tools()
    assert tool.spec.parameters["properties"]["timeout_s"]["anyOf"][0]["exclusiveMinimum"] == 0
    for bad in (0, -1, "soon"):
        with pytest.raises(ValidationError, match="timeout_s"):
            tool.validate({"code": "1", "timeout_s": bad})
    text = get_runner().run(tool.acall({"code": "1", "timeout_s": float("inf")}))
    assert text.startswith("[error] timeout_s must be a positive number")


def test_arun_works_from_another_event_loop(sb: PythonSandbox) -> None:
    async def main() -> SandboxResult:
        return await sb.arun("3 * 3")

    assert asyncio.run(main()).value == "9"


def test_concurrent_calls_run_one_at_a_time(sb: PythonSandbox) -> None:
    async def main() -> list[SandboxResult]:
        await sb.arun("order = []")
        return await asyncio.gather(*(sb.arun(f"order.append({i})\nlen(order)")
                                      for i in range(4)))

    results = asyncio.run(main())
    assert sorted(r.value for r in results) == ["1", "2", "3", "4"]


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "5"])
def test_a_bad_timeout_raises_a_tool_error_naming_it(sb: PythonSandbox, bad: object) -> None:
    with pytest.raises(ToolError, match="timeout_s"):
        sb.run("1", timeout_s=bad)  # type: ignore[arg-type]


def test_code_that_is_not_a_string_raises_a_tool_error(sb: PythonSandbox) -> None:
    with pytest.raises(ToolError, match="code must be a str"):
        sb.run(b"1")  # type: ignore[arg-type]


def test_protections_report_the_limits_that_were_set(sb: PythonSandbox) -> None:
    sb.run("1")
    assert sb.protections is not None
    assert sb.protections["audit_hook"] is True
    assert sb.protections["rlimits"]["RLIMIT_AS"] == 512 * 1024 * 1024
    assert sb.protections["rlimits"]["RLIMIT_CORE"] == 0


def test_the_worker_runs_in_its_own_session(sb: PythonSandbox) -> None:
    sb.run("1")
    assert sb.pid is not None
    assert os.getsid(sb.pid) == sb.pid != os.getsid(0)


def test_the_worker_sees_its_limits(sb: PythonSandbox) -> None:
    result = sb.run("import resource\nresource.getrlimit(resource.RLIMIT_NOFILE)")
    assert result.value == "(256, 256)"


def test_each_call_gets_its_own_cpu_budget() -> None:
    """RLIMIT_CPU counts a process's whole life; the worker re-arms it before each call."""
    with PythonSandbox(CodePolicy(cpu_s=1, memory_mb=256, wall_s=30)) as box:
        spin = "import time\nend = time.process_time() + 0.7\nwhile time.process_time() < end:\n" \
               "    pass"
        box.run("1")
        pid = box.pid
        for _ in range(3):  # 2.1 s of CPU in all, more than cpu_s
            result = box.run(spin)
            assert result.ok, result.error
        assert box.pid == pid


def test_reset_starts_a_new_worker_process(sb: PythonSandbox) -> None:
    sb.run("1")
    before = sb.pid
    sb.reset()
    assert sb.pid is None
    sb.run("1")
    assert sb.pid not in (None, before)


def test_an_empty_run_reads_as_no_output(sb: PythonSandbox) -> None:
    assert sb.run("pass").to_text() == "(no output)"


def test_to_text_lists_files_and_figures() -> None:
    result = SandboxResult(files=[{"name": "a.csv", "size": 3}], figures=["aGk="])
    assert result.to_text() == ("[files] a.csv (3 bytes)\n"
                                "[figures] 1 figure(s) returned as PNG")


def test_close_removes_the_temporary_folder_and_is_idempotent() -> None:
    box = PythonSandbox(CodePolicy(memory_mb=256))
    box.run("open('f.txt', 'w').write('x')")
    pid, root = box.pid, box.workdir.parent
    assert root.exists()
    box.close()
    box.close()
    assert not root.exists()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_running_after_close_raises_a_tool_error() -> None:
    box = PythonSandbox(CodePolicy(memory_mb=256))
    box.close()
    with pytest.raises(ToolError, match="closed"):
        box.run("1")


def test_a_given_workdir_is_the_cwd_and_survives_close(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("given")
    with PythonSandbox(CodePolicy(memory_mb=256), workdir=tmp_path) as box:
        result = box.run("import os\nos.getcwd(), open('data.txt').read()")
        assert result.value == repr((str(tmp_path.resolve()), "given"))
    assert (tmp_path / "data.txt").exists()


@pytest.mark.parametrize("where", ["/", "~", sys.prefix, "package"])
def test_a_workdir_holding_code_we_run_is_refused(where: str) -> None:
    path = Path(sandbox_module.__file__).parents[2] if where == "package" else Path(where)
    with pytest.raises(ToolError, match="workdir=.*dedicated folder"):
        PythonSandbox(workdir=path)


def test_async_context_manager_closes_the_worker() -> None:
    async def main() -> tuple[str | None, int | None]:
        async with PythonSandbox(CodePolicy(memory_mb=256)) as box:
            value = (await box.arun("'async'")).value
            pid = box.pid
        return value, pid

    value, pid = asyncio.run(main())
    assert value == "'async'" and pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_windows_gets_a_readable_unavailable_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    with pytest.raises(SandboxUnavailable, match="WSL"):
        PythonSandbox()


def test_a_worker_that_cannot_start_raises_unavailable(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    broken = tmp_path / "worker.py"
    broken.write_text("raise SystemExit('no sandbox today')")
    monkeypatch.setattr(sandbox_module, "_WORKER", broken)
    with PythonSandbox(CodePolicy(memory_mb=256)) as box, \
            pytest.raises(SandboxUnavailable, match="no sandbox today"):
        box.run("1")


def test_garbage_on_the_protocol_pipe_restarts_the_worker(sb: PythonSandbox) -> None:
    code = ("import os, time\nfor fd in range(3, 16):\n    try:\n"
            "        os.write(fd, b'\\xff\\xff\\xff\\xffjunk')\n    except OSError:\n"
            "        pass\ntime.sleep(5)")
    result = sb.run(code, timeout_s=10)
    assert not result.ok and "protocol" in (result.error or "")
    after = sb.run("'fine'")
    assert after.value == "'fine'" and after.restarted


def test_network_policy_true_allows_sockets() -> None:
    with PythonSandbox(CodePolicy(memory_mb=256, network=True)) as box:
        result = box.run("import socket\ns = socket.socket()\ns.close()\n'made'")
        assert result.value == "'made'", result.error
        assert box.protections is not None and "netns" not in box.protections


# -- threads and disk between calls -------------------------------------------------------------
def test_a_thread_that_ends_soon_after_the_code_keeps_the_worker_and_its_output(
        sb: PythonSandbox) -> None:
    sb.run("kept = 'yes'")
    result = sb.run("import threading, time\n"
                    "threading.Thread(target=lambda: (time.sleep(0.2), print('late'))).start()")
    assert result.ok and result.threads_left == 0 and result.stdout == "late\n"
    assert not result.notes
    assert sb.run("kept").value == "'yes'"


def test_native_thread_pools_do_not_stop_the_worker() -> None:
    """DuckDB keeps idle native threads; they run no code of the model's, so state stays."""
    with PythonSandbox(CodePolicy(memory_mb=1024, wall_s=30)) as box:
        first = box.run("import duckdb\ncon = duckdb.connect()\ncon.sql('select 41').fetchall()")
        assert first.ok and first.threads_left == 0, first.to_text()
        assert box.run("con.sql('select 42').fetchall()[0][0]").value == "42"


def test_the_file_size_limit_never_exceeds_the_disk_quota() -> None:
    with PythonSandbox(CodePolicy(memory_mb=256, max_file_mb=100, max_disk_mb=5)) as box:
        box.run("1")
        assert box.protections is not None
        assert box.protections["rlimits"]["RLIMIT_FSIZE"] == 5 * 1024 * 1024


def test_a_folder_already_over_the_quota_may_shrink_but_not_grow(tmp_path: Path) -> None:
    (tmp_path / "big.bin").write_bytes(b"0" * 3 * 1024 * 1024)
    with PythonSandbox(CodePolicy(memory_mb=256, max_disk_mb=2), workdir=tmp_path) as box:
        grown = box.run("open('more.txt', 'w').write('x' * 1000)")
        assert not grown.ok and grown.refused == ["code.disk_quota (write)"]
        assert "more.txt" in (grown.error or "") and not (tmp_path / "more.txt").exists()
        assert (tmp_path / "big.bin").exists()  # not this call's: kept
        shrunk = box.run("import os\nos.remove('big.bin')\nopen('small.txt', 'w').write('x')")
        assert shrunk.ok, shrunk.to_text()
        assert [f.name for f in (tmp_path).iterdir()] == ["small.txt"]


def test_a_closed_sandbox_is_no_longer_kept_by_the_runner(runner: LoopRunner) -> None:
    import gc
    import weakref

    box = PythonSandbox(runner=runner)
    box.close()
    ref = weakref.ref(box)
    del box
    gc.collect()
    assert ref() is None  # the runner's close hook no longer holds it
