"""run_shell and run_command: parsing, the allowlist, the process sandbox and its limits."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import CommandPolicy
from aillm_lab.tools.shell import (
    SAFE_PATH,
    CommandError,
    CommandResult,
    check_command,
    parse_command,
    resolve_program,
    run_command,
    shell_tools,
)
from conftest import dev_policy

SPAWN_CHILD = """\
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open("child.pid", "w").write(str(child.pid))
time.sleep(60)
"""
PRINTENV = "import json, os\nprint(json.dumps(dict(os.environ)))\n"
FLOOD = "import sys\nwhile True:\n    sys.stdout.write('y' * 4096)\n"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "spawn.py").write_text(SPAWN_CHILD)
    (root / "printenv.py").write_text(PRINTENV)
    (root / "flood.py").write_text(FLOOD)
    (root / "notes.txt").write_text("b\na\n")
    return Workspace(root)


def run_shell(ws: Workspace, command: str | list[str], policy: CommandPolicy | None = None,
              **args: object) -> str:
    tool = shell_tools(ws, policy or dev_policy())[0]
    return asyncio.run(tool.acall({"command": command, **args}))


def run(ws: Workspace, argv: list[str], policy: CommandPolicy | None = None,
        **kw: object) -> CommandResult:
    return asyncio.run(run_command(argv, cwd=ws.root, policy=policy or dev_policy(),
                                   env={"HOME": str(ws.root)}, **kw))  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _wait_dead(pid: int, within_s: float = 5.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_shell_tools_returns_one_execute_risk_tool_named_run_shell(ws: Workspace) -> None:
    tools = shell_tools(ws, dev_policy())
    assert [t.name for t in tools] == ["run_shell"]
    assert isinstance(tools[0], Tool) and tools[0].risk is RiskLevel.EXECUTE
    props = tools[0].spec.parameters["properties"]
    assert set(props) == {"command", "timeout_s"}
    assert "python" in tools[0].spec.description  # the model sees what it may run


def test_string_command_is_split_like_posix_shlex() -> None:
    assert parse_command("grep -n 'a b' \"c d\" e\\ f") == ["grep", "-n", "a b", "c d", "e f"]


def test_list_command_is_taken_as_argv() -> None:
    assert parse_command(["echo", "a b", "*"]) == ["echo", "a b", "*"]


@pytest.mark.parametrize("command", ["", "   ", []])
def test_empty_command_is_a_command_error(command: str | list[str]) -> None:
    with pytest.raises(CommandError, match="empty"):
        parse_command(command)


def test_unclosed_quote_is_a_command_error_that_names_quotes() -> None:
    with pytest.raises(CommandError, match="quotes"):
        parse_command("echo 'oops")


def test_single_quoted_metacharacters_are_allowed_in_the_string_form() -> None:
    assert parse_command("echo 'a;b|c>d $(e) `f` $G'") == ["echo", "a;b|c>d $(e) `f` $G"]


def test_shell_syntax_error_says_what_to_send_instead() -> None:
    with pytest.raises(SafetyViolation) as caught:
        parse_command("ls | wc -l")
    assert caught.value.rule == "command.shell_syntax"
    assert "single program and its arguments" in caught.value.detail


def test_python_resolves_to_the_labs_interpreter() -> None:
    assert resolve_program("python", dev_policy()) == sys.executable
    assert resolve_program("python3", dev_policy()) == sys.executable


def test_programs_are_found_on_the_fixed_path_not_the_callers(
        ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trap = tmp_path / "trap"
    trap.mkdir()
    fake = trap / "ls"
    fake.write_text("#!/bin/sh\necho trapped\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{trap}:{os.environ['PATH']}")
    assert str(Path(resolve_program("ls", dev_policy())).parent) in SAFE_PATH.split(":")
    assert "trapped" not in run_shell(ws, "ls")


def test_program_outside_the_allowlist_is_refused_with_the_allowlist() -> None:
    with pytest.raises(SafetyViolation) as caught:
        resolve_program("curl", dev_policy(allow=["ls", "cat"]))
    assert caught.value.rule == "command.not_allowed"
    assert "ls, cat" in caught.value.detail


def test_allowlist_is_read_from_the_policy(ws: Workspace) -> None:
    with pytest.raises(SafetyViolation):
        run_shell(ws, "ls", dev_policy(allow=["cat"]))
    assert "notes.txt" in run_shell(ws, "ls", dev_policy(allow=["ls"]))


def test_allowed_program_that_is_not_installed_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="not installed"):
        resolve_program("no-such-program-x", dev_policy(allow=["no-such-program-x"]))


def test_denied_argument_is_refused_exactly_by_prefix_and_combined(ws: Workspace) -> None:
    policy = dev_policy(allow=["grep"], deny_args={"grep": ["-f", "--file"]})
    for argv in (["grep", "-f", "x"], ["grep", "--file=x", "a"], ["grep", "-if", "x"],
                 ["grep", "-fx"], ["grep", "--fil=x", "a"]):
        with pytest.raises(SafetyViolation) as caught:
            check_command(argv, ws, policy)
        assert caught.value.rule == "command.denied_argument", argv
    assert check_command(["grep", "-i", "--fixed-strings", "a"], ws, policy)[0][0] == "grep"


def test_path_arguments_inside_the_workspace_pass(ws: Workspace) -> None:
    argv, env = check_command("cat notes.txt ./notes.txt", ws, dev_policy())
    assert argv == ["cat", "notes.txt", "./notes.txt"] and env["HOME"] == str(ws.root)


def test_option_values_that_leave_the_workspace_are_refused(ws: Workspace) -> None:
    for command in ("sort --output=/tmp/x notes.txt", "sort -o/tmp/x notes.txt",
                    "grep -r a ../"):
        with pytest.raises(SafetyViolation) as caught:
            check_command(command, ws, dev_policy())
        assert caught.value.rule == "path.outside", command


def test_result_text_starts_with_the_exit_code(ws: Workspace) -> None:
    assert run_shell(ws, "false").startswith("exit code 1")
    out = run_shell(ws, "cat notes.txt")
    assert out.startswith("exit code 0") and "--- stdout ---\nb\na" in out


def test_stderr_is_reported_separately(ws: Workspace) -> None:
    result = run(ws, ["ls", "missing-file"])
    assert result.exit_code != 0 and not result.ok
    assert "missing-file" in result.stderr and result.stdout == ""
    assert "--- stderr ---" in result.render()


def test_cwd_is_the_workspace_root(ws: Workspace) -> None:
    assert run(ws, ["pwd"]).stdout.strip() == str(ws.root)


def test_environment_is_scrubbed(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AILLM_TEST_SECRET", "hunter2")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-secret")
    out = run_shell(ws, "python printenv.py")
    env = json.loads(out.split("--- stdout ---\n", 1)[1])
    assert "hunter2" not in out and "sk-test-secret" not in out
    assert env["PATH"] == SAFE_PATH and env["HOME"] == str(ws.root)
    assert env["LC_ALL"] == "C.UTF-8" and env["TERM"] == "dumb"
    assert set(env) - {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "LC_CTYPE"} == set()


def test_stdin_is_empty(ws: Workspace) -> None:
    result = run(ws, ["cat"], timeout_s=10)
    assert result.exit_code == 0 and result.stdout == "" and not result.timed_out


def test_timeout_kills_the_whole_process_group(ws: Workspace) -> None:
    result = run(ws, ["python", "spawn.py"], timeout_s=1.5)
    assert result.timed_out and result.exit_code < 0
    assert "[timed out" in result.render()
    child = int((ws.root / "child.pid").read_text())
    assert _wait_dead(child), "the program's child survived the timeout"


def test_background_children_die_when_the_program_exits(ws: Workspace) -> None:
    (ws.root / "daemon.py").write_text(
        "import subprocess, sys\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(c.pid)\n")
    result = run(ws, ["python", "daemon.py"], timeout_s=20)
    assert result.exit_code == 0 and not result.timed_out
    assert _wait_dead(int(result.stdout)), "a background child outlived the call"


def test_cancelling_the_call_kills_the_process_group(ws: Workspace) -> None:
    async def cancel_soon() -> None:
        task = asyncio.create_task(run_command(["python", "spawn.py"], cwd=ws.root,
                                               policy=dev_policy(), timeout_s=30))
        for _ in range(200):
            await asyncio.sleep(0.05)
            if (ws.root / "child.pid").exists():
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_soon())
    assert _wait_dead(int((ws.root / "child.pid").read_text()))


def test_timeout_is_clamped_to_the_policy(ws: Workspace) -> None:
    policy = dev_policy(timeout_s=0.5)
    (ws.root / "sleep.py").write_text("import time\ntime.sleep(30)\n")
    result = run(ws, ["python", "sleep.py"], policy, timeout_s=1000)
    assert result.timed_out and result.duration_s < 20


@pytest.mark.parametrize("timeout_s", [0, -1])
def test_nonpositive_timeout_is_rejected(ws: Workspace, timeout_s: float) -> None:
    from pydantic import ValidationError

    with pytest.raises((ValidationError, CommandError), match="timeout_s"):
        run_shell(ws, "ls", timeout_s=timeout_s)


def test_output_is_capped_and_truncation_is_stated(ws: Workspace) -> None:
    (ws.root / "spam.py").write_text("print('x' * 50_000)\n")
    result = run(ws, ["python", "spam.py"], dev_policy(max_output_bytes=1000))
    assert result.truncated and len(result.stdout) == 1000 and result.exit_code == 0
    assert "[output truncated" in result.render()


def test_cap_is_shared_by_stdout_and_stderr(ws: Workspace) -> None:
    (ws.root / "both.py").write_text(
        "import sys\nsys.stdout.write('o' * 800)\nsys.stdout.flush()\n"
        "sys.stderr.write('e' * 800)\n")
    result = run(ws, ["python", "both.py"], dev_policy(max_output_bytes=1000))
    assert len(result.stdout) + len(result.stderr) == 1000 and result.truncated


def test_endless_output_is_stopped_by_the_cap_not_the_timeout(ws: Workspace) -> None:
    result = run(ws, ["python", "flood.py"], dev_policy(max_output_bytes=10_000),
                 timeout_s=60)
    assert result.truncated and not result.timed_out and result.exit_code < 0
    assert len(result.stdout) == 10_000


def test_output_under_the_cap_is_not_truncated(ws: Workspace) -> None:
    result = run(ws, ["echo", "héllo"], dev_policy(max_output_bytes=1000))
    assert result.stdout == "héllo\n" and not result.truncated


def test_run_command_refuses_a_program_outside_the_allowlist(ws: Workspace) -> None:
    with pytest.raises(SafetyViolation):
        run(ws, ["/bin/sh", "-c", "true"])


def test_path_refusal_explains_how_to_pass_a_pattern(ws: Workspace) -> None:
    with pytest.raises(SafetyViolation) as caught:
        check_command("grep -rn /api/v1 .", ws, dev_policy())
    assert caught.value.rule == "path.outside"
    assert "pattern rather than a path" in caught.value.detail
    assert check_command("grep -rn api/v1 .", ws, dev_policy())[0][2] == "api/v1"


def test_program_that_cannot_start_is_a_command_error(ws: Workspace, tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="could not start"):
        asyncio.run(run_command(["ls"], cwd=tmp_path / "gone", policy=dev_policy()))


def test_a_process_that_leaves_the_session_cannot_hang_the_call(ws: Workspace) -> None:
    (ws.root / "escape.py").write_text(
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    open('escaped.pid', 'w').write(str(os.getpid()))\n"
        "    time.sleep(60)\n"
        "    sys.exit()\n"
        "print('parent done', flush=True)\n")
    try:
        result = run(ws, ["python", "escape.py"], timeout_s=0.5)
        assert result.exit_code == 0 and "parent done" in result.stdout
        assert result.duration_s < 30  # bounded by the timeout plus the reap grace
    finally:
        pid_file = ws.root / "escaped.pid"
        for _ in range(100):
            if pid_file.exists() and pid_file.read_text():
                os.kill(int(pid_file.read_text()), 9)
                break
            time.sleep(0.05)


@pytest.mark.parametrize(("command", "rule"), [
    ("python printenv.py", "command.not_allowed"),
    ("python3 -V", "command.not_allowed"),
    ("git commit -m x", "command.git_subcommand"),
    ("git add notes.txt", "command.git_subcommand"),
    ("git checkout -b x", "command.git_subcommand"),
])
def test_default_policy_refuses_python_and_git_writes(ws: Workspace, command: str,
                                                      rule: str) -> None:
    """python would run code outside the sandbox; git writes would skip their approval."""
    with pytest.raises(SafetyViolation) as info:
        check_command(command, ws, CommandPolicy())
    assert info.value.rule == rule
