"""Legitimate shell and git calls: the guards must let them through, and they must be right."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aillm_lab.tools.git import git_tools
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import CommandPolicy
from aillm_lab.tools.shell import shell_tools
from conftest import dev_policy

NOTES = "cherry\napple\nbanana\napple\n"


class Lab:
    def __init__(self, root: Path, policy: CommandPolicy | None = None) -> None:
        self.root = root
        ws, policy = Workspace(root), policy or dev_policy()
        self.tools = {t.name: t for t in shell_tools(ws, policy) + git_tools(ws, policy)}

    def call(self, tool: str, /, **args: Any) -> str:
        return asyncio.run(self.tools[tool].acall(args))

    def sh(self, command: str | list[str], **args: Any) -> str:
        return self.call("run_shell", command=command, **args)

    def stdout(self, command: str | list[str]) -> str:
        out = self.sh(command)
        assert out.startswith("exit code 0"), out
        return out.split("--- stdout ---\n", 1)[1].split("\n--- stderr ---", 1)[0] + "\n"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    """A read-only workspace shared by the tests that do not change it."""
    root = tmp_path_factory.mktemp("benign") / "ws"
    (root / "src").mkdir(parents=True)
    (root / "notes.txt").write_text(NOTES)
    (root / "data.csv").write_text("name,qty\nfig,3\nkiwi,5\n")
    (root / "src" / "app.py").write_text("def main():\n    return 'hi'\n")
    (root / "src" / "util.py").write_text("X = 1\n")
    (root / "a.txt").write_text("same\nold\n")
    (root / "b.txt").write_text("same\nnew\n")
    (root / "args.py").write_text("import sys\nprint('|'.join(sys.argv[1:]))\n")
    (root / "read.py").write_text("print(open('notes.txt').read().count('apple'))\n")
    (root / "sleep.py").write_text("import time\nprint('started', flush=True)\n"
                                   "time.sleep(30)\n")
    (root / "spam.py").write_text("print('z' * 100_000)\n")
    return Lab(root)


def test_ls_lists_the_workspace(lab: Lab) -> None:
    assert {"notes.txt", "data.csv", "src"} <= set(lab.stdout("ls").split())


def test_ls_long_format_of_a_subfolder(lab: Lab) -> None:
    out = lab.stdout("ls -la src")
    assert "app.py" in out and "util.py" in out


def test_cat_prints_a_file(lab: Lab) -> None:
    assert lab.stdout("cat notes.txt") == NOTES


def test_head_and_tail(lab: Lab) -> None:
    assert lab.stdout("head -n 2 notes.txt") == "cherry\napple\n"
    assert lab.stdout("tail -n 1 notes.txt") == "apple\n"


def test_wc_counts_lines(lab: Lab) -> None:
    assert lab.stdout("wc -l notes.txt").split() == ["4", "notes.txt"]


def test_grep_with_line_numbers(lab: Lab) -> None:
    assert lab.stdout("grep -n banana notes.txt") == "3:banana\n"


def test_recursive_grep_with_a_quoted_pattern(lab: Lab) -> None:
    assert lab.stdout("grep -rn 'def main' src") == "src/app.py:1:def main():\n"


def test_sort_and_uniq(lab: Lab) -> None:
    assert lab.stdout("sort notes.txt") == "apple\napple\nbanana\ncherry\n"
    assert lab.stdout("sort -r notes.txt").splitlines()[0] == "cherry"
    assert lab.stdout(["uniq", "-c", "notes.txt"]).split()[:2] == ["1", "cherry"]


def test_cut_a_csv_column(lab: Lab) -> None:
    assert lab.stdout("cut -d , -f 1 data.csv") == "name\nfig\nkiwi\n"


def test_echo_with_quotes(lab: Lab) -> None:
    assert lab.stdout("echo \"hello world\" 'it''s' a\\ b") == "hello world its a b\n"


def test_echo_unicode(lab: Lab) -> None:
    assert lab.stdout(["echo", "héllo — 世界 🙂"]) == "héllo — 世界 🙂\n"


def test_quoted_shell_characters_are_ordinary_text(lab: Lab) -> None:
    assert lab.stdout("echo 'a|b' \"c;d\" 'x > y'") == "a|b c;d x > y\n"


def test_python_script_inside_the_workspace_gets_its_arguments(lab: Lab) -> None:
    assert lab.stdout("python args.py one 'two words' --flag=3") == "one|two words|--flag=3\n"


def test_python3_script_reads_a_workspace_file(lab: Lab) -> None:
    assert lab.stdout("python3 read.py") == "2\n"


def test_find_by_quoted_name_pattern(lab: Lab) -> None:
    found = sorted(lab.stdout("find src -name '*.py'").split())
    assert found == ["src/app.py", "src/util.py"]


def test_find_type_and_negation(lab: Lab) -> None:
    assert lab.stdout(["find", ".", "-maxdepth", "1", "-type", "d", "!", "-name", "."]) == \
        "./src\n"


def test_diff_reports_differences_with_exit_code_one(lab: Lab) -> None:
    out = lab.sh("diff a.txt b.txt")
    assert out.startswith("exit code 1") and "< old" in out and "> new" in out


def test_pwd_is_the_workspace(lab: Lab) -> None:
    assert lab.stdout("pwd").strip() == str(lab.root)


def test_date_runs(lab: Lab) -> None:
    assert int(lab.stdout("date -u +%Y")) in {datetime.now(UTC).year, datetime.now(UTC).year - 1}


def test_true_and_false_exit_codes(lab: Lab) -> None:
    assert lab.sh("true").startswith("exit code 0")
    assert lab.sh("false").startswith("exit code 1")


def test_list_form_command(lab: Lab) -> None:
    assert lab.stdout(["grep", "-c", "apple", "notes.txt"]) == "2\n"


def test_long_running_script_is_killed_and_reported(lab: Lab) -> None:
    out = lab.sh("python sleep.py", timeout_s=1)
    assert "started" in out and "[timed out after" in out and "exit code -9" in out


def test_large_output_is_capped_and_says_so(lab: Lab) -> None:
    capped = Lab(lab.root, dev_policy(max_output_bytes=5_000))
    out = capped.sh("python spam.py")
    assert out.startswith("exit code 0") and "[output truncated" in out
    assert out.count("z") == 5_000


# -- git --------------------------------------------------------------------------------------
def _git(repo: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "Tess",
           "GIT_AUTHOR_EMAIL": "t@x.org", "GIT_COMMITTER_NAME": "Tess",
           "GIT_COMMITTER_EMAIL": "t@x.org"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, text=True,
                          capture_output=True).stdout


@pytest.fixture
def repo_lab(tmp_path: Path) -> Lab:
    """A workspace with a repository in ``proj`` holding two commits."""
    root = tmp_path / "ws"
    repo = root / "proj"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    (repo / "readme.md").write_text("# Proj\n")
    _git(repo, "add", "readme.md")
    _git(repo, "commit", "-q", "-m", "initial")
    (repo / "app.py").write_text("print(1)\n")
    _git(repo, "add", "app.py")
    _git(repo, "commit", "-q", "-m", "add app")
    return Lab(root)


def test_git_status_shows_branch_and_changes(repo_lab: Lab) -> None:
    (repo_lab.root / "proj" / "app.py").write_text("print(2)\n")
    (repo_lab.root / "proj" / "new.txt").write_text("n\n")
    out = repo_lab.call("git_status", repo="proj")
    assert "## main" in out and " M app.py" in out and "?? new.txt" in out


def test_git_diff_shows_unstaged_changes(repo_lab: Lab) -> None:
    (repo_lab.root / "proj" / "app.py").write_text("print(2)\n")
    out = repo_lab.call("git_diff", repo="proj")
    assert "-print(1)" in out and "+print(2)" in out


def test_git_diff_of_one_path_and_of_the_index(repo_lab: Lab) -> None:
    proj = repo_lab.root / "proj"
    (proj / "app.py").write_text("print(2)\n")
    (proj / "readme.md").write_text("# Proj 2\n")
    only = repo_lab.call("git_diff", path="proj/readme.md", repo="proj")
    assert "+# Proj 2" in only and "app.py" not in only
    repo_lab.call("git_add", paths=["proj/app.py"], repo="proj")
    staged = repo_lab.call("git_diff", staged=True, repo="proj")
    assert "+print(2)" in staged and "readme" not in staged


def test_git_log_lists_commits_newest_first(repo_lab: Lab) -> None:
    lines = repo_lab.call("git_log", repo="proj").split("--- stdout ---\n")[1].splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["add app", "initial"]
    assert "Tess" in lines[0]
    assert len(repo_lab.call("git_log", max_count=1, repo="proj").splitlines()) == 3


def test_git_show_a_commit_and_a_file_at_a_revision(repo_lab: Lab) -> None:
    out = repo_lab.call("git_show", repo="proj")
    assert "add app" in out and "+print(1)" in out and "app.py | 1 +" in out
    assert "# Proj" in repo_lab.call("git_show", rev="HEAD~1:readme.md", repo="proj")


def test_git_branch_creates_and_lists(repo_lab: Lab) -> None:
    created = repo_lab.call("git_create_branch", name="feature/x", repo="proj")
    assert created.startswith("exit code 0")
    listing = repo_lab.call("git_branch", repo="proj")
    assert "feature/x" in listing and "* main" in listing


def test_git_add_and_commit(repo_lab: Lab) -> None:
    proj = repo_lab.root / "proj"
    (proj / "lib.py").write_text("Y = 2\n")
    assert repo_lab.call("git_add", paths=["proj/lib.py"], repo="proj").startswith("exit code 0")
    out = repo_lab.call("git_commit", message="add lib\n\nWith details.", repo="proj")
    assert out.startswith("exit code 0") and "add lib" in out
    assert _git(proj, "log", "-1", "--format=%B").strip() == "add lib\n\nWith details."
    assert _git(proj, "status", "--porcelain") == ""


def test_git_commit_with_nothing_staged_reports_it(repo_lab: Lab) -> None:
    out = repo_lab.call("git_commit", message="nothing", repo="proj")
    assert out.startswith("exit code 1") and "nothing to commit" in out


def test_git_through_run_shell_in_a_workspace_repository(tmp_path: Path) -> None:
    lab = Lab(tmp_path)
    (tmp_path / "f.txt").write_text("f\n")
    assert lab.sh("git init -q -b main").startswith("exit code 0")
    assert lab.sh("git add f.txt").startswith("exit code 0")
    assert lab.sh(["git", "commit", "-q", "-m", "via shell"]).startswith("exit code 0")
    assert lab.stdout("git log --format=%s") == "via shell\n"
    assert "f.txt" in lab.stdout("git ls-files")
