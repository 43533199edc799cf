"""No tool can leave behind a folder the user's own git would take for a repository.

The attack (red-team F2): through the file tools and one ``run_shell uniq``, an agent lays
out ``trapdir/HEAD`` + ``trapdir/commondir`` -> ``common/`` holding ``objects/``, ``refs/``
and a ``config`` naming ``core.pager``/``core.fsmonitor``; the user's ``git`` run in trapdir
later obeys that config. The check here is git's own: after the tools ran, the host's git,
run where the user would run it, finds no repository there.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from aillm_lab.errors import SafetyViolation

CONFIG = ("[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n"
          "\tpager = echo PWNED; cat\n")


@pytest.fixture
def lab(python_shell_lab: Any) -> Any:
    return python_shell_lab


def users_git_finds_a_repo(folder: Path, ceiling: Path) -> bool:
    """What the user's git sees in ``folder`` (discovery stops above the test's folder)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ceiling), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CEILING_DIRECTORIES": str(ceiling)}
    found = subprocess.run(["git", "rev-parse", "--absolute-git-dir"], cwd=folder, env=env,
                           capture_output=True, text=True)
    return found.returncode == 0


def write(lab: Any, path: str, content: str) -> Any:
    return lab.tools.invoke("write_file", {"path": path, "content": content})


def shell(lab: Any, command: str) -> str:
    result = lab.tools.invoke("run_shell", {"command": command})
    assert result.ok, result.content
    return str(result.content)


def common_dir(lab: Any, prefix: str = "") -> None:
    for path in ("objects/keep", "refs/keep"):
        assert write(lab, f"{prefix}{path}", "x\n").ok
    assert write(lab, f"{prefix}config", CONFIG).ok


def test_head_and_commondir_made_by_the_shell_are_undone(lab: Any, tmp_path: Path) -> None:
    ws = lab.tools.workspace.root
    common_dir(lab, "common/")
    assert write(lab, "trapdir/HEAD", "ref: refs/heads/main\n").ok
    assert write(lab, "ptr.txt", "../common\n").ok
    out = shell(lab, "uniq ptr.txt trapdir/commondir")
    assert "git directory" in out, out
    assert not users_git_finds_a_repo(ws / "trapdir", tmp_path)
    assert not users_git_finds_a_repo(ws / "common", tmp_path)


def test_the_workspace_root_cannot_become_a_bare_repository(lab: Any, tmp_path: Path) -> None:
    ws = lab.tools.workspace.root
    common_dir(lab)  # objects/, refs/ and config right in the root
    assert write(lab, "head.txt", "ref: refs/heads/main\n").ok
    out = shell(lab, "uniq head.txt HEAD")
    assert "git directory" in out, out
    assert not users_git_finds_a_repo(ws, tmp_path)
    with pytest.raises(SafetyViolation) as caught:  # the file tools refuse it outright
        lab.tools.workspace.write_atomic("HEAD", "ref: refs/heads/main\n")
    assert caught.value.rule == "path.git_internal"


def test_a_program_that_plants_a_git_directory_is_undone_whatever_its_arguments(
        lab: Any, tmp_path: Path) -> None:
    """The sweep looks at what is on disk after the call, not at the command line."""
    ws = lab.tools.workspace.root
    script = ("import os\n"
              "for d in ('c/objects', 'c/refs', 't', 'u/objects', 'u/refs'):\n"
              "    os.makedirs(d, exist_ok=True)\n"
              f"open('c/config', 'w').write({CONFIG!r})\n"
              "open('t/HEAD', 'w').write('ref: refs/heads/main\\n')\n"
              "open('t/commondir', 'w').write('../c\\n')\n"
              "open('u/HEAD', 'w').write('ref: refs/heads/main\\n')\n"
              f"open('u/config', 'w').write({CONFIG!r})\n"
              "open('g.git', 'w').write('x')\n"
              "os.makedirs('w', exist_ok=True)\n"
              "open('w/.git', 'w').write('gitdir: ../u\\n')\n")
    assert write(lab, "plant.py", script).ok
    out = shell(lab, "python3 plant.py")
    for folder in ("t", "u", "w", "c"):
        assert not users_git_finds_a_repo(ws / folder, tmp_path), (folder, out)
    assert (ws / "g.git").exists()  # ordinary files are left alone


def test_the_file_tools_refuse_the_last_piece_of_a_git_directory(lab: Any) -> None:
    assert write(lab, "t/HEAD", "ref: refs/heads/main\n").ok
    refused = write(lab, "t/commondir", "../c\n")
    assert not refused.ok and "path.git_internal" in refused.content
    assert write(lab, "s/objects/keep", "x").ok
    assert write(lab, "s/refs/keep", "x").ok
    refused = write(lab, "s/HEAD", "ref: refs/heads/main\n")
    assert not refused.ok and "path.git_internal" in refused.content


def test_ordinary_folders_named_like_git_parts_are_left_alone(lab: Any) -> None:
    ws = lab.tools.workspace.root
    assert write(lab, "docs/HEAD", "a heading\n").ok
    assert write(lab, "src/refs/a.txt", "x").ok
    assert write(lab, "src/objects.txt", "x").ok
    out = shell(lab, "uniq docs/HEAD docs/HEAD.copy")
    assert "removed" not in out
    assert (ws / "docs" / "HEAD").read_text() == "a heading\n"
    assert (ws / "docs" / "HEAD.copy").exists()
