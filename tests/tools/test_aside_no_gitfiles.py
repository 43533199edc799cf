"""What the post-call sweep takes out of the workspace can never be a repository (red-team A1).

The attack: ``run_python`` builds a git directory with a planted ``core.fsmonitor`` in its
own sandbox folder; ``write_file`` plus ``run_shell sort -o .git p.txt`` leave a ``.git``
gitfile pointing there. The sweep used to move that file, intact, to
``/tmp/aillm-removed-*/.git`` and name the path in its note: the user's ``git status``
there ran the planted command on the host. Now only plain regular files under deny-listed
names are moved aside; git's files, folders and links are deleted.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def lab(python_shell_lab: Any) -> Any:
    return python_shell_lab


def _planted_gitdir(lab: Any, mark: Path) -> str:
    """A git directory in the Python sandbox whose config runs ``touch mark``."""
    code = ("import os\nos.makedirs('g/objects', exist_ok=True)\n"
            "os.makedirs('g/refs/heads', exist_ok=True)\n"
            "open('g/HEAD', 'w').write('ref: refs/heads/main\\n')\n"
            "open('g/config', 'w').write('[core]\\n\\trepositoryformatversion = 0\\n'\n"
            f"    '\\tbare = false\\n\\tfsmonitor = \"touch {mark}; false\"\\n')\n"
            "print('GITDIR=' + os.path.abspath('g'))\n")
    out = str(lab.tools.invoke("run_python", {"code": code}).content)
    found = re.search(r"GITDIR=(\S+)", out)
    assert found is not None, out
    return found.group(1)


def _git_status(folder: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(folder), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CEILING_DIRECTORIES": str(folder.parent)}
    return subprocess.run(["git", "status"], cwd=folder, env=env, capture_output=True,
                          text=True)


def _aside_folders(out: str) -> list[Path]:
    return [Path(p) for p in re.findall(r"\(moved to (\S+)\)", out)]


def test_a_planted_gitfile_is_deleted_not_moved_aside(lab: Any, tmp_path: Path) -> None:
    mark = tmp_path / "MARK"
    gitdir = _planted_gitdir(lab, mark)
    assert lab.tools.invoke("write_file", {"path": "p.txt",
                                           "content": f"gitdir: {gitdir}\n"}).ok
    out = str(lab.tools.invoke("run_shell", {"command": "sort -o .git p.txt"}).content)
    ws = lab.tools.workspace.root
    assert not os.path.lexists(ws / ".git"), out
    assert "removed .git (deleted)" in out, out
    assert "moved to" not in out, out
    for folder in Path(os.path.realpath("/tmp")).glob("aillm-removed-*"):
        if (folder / ".git").exists():  # no aside folder of this call holds it
            assert gitdir not in (folder / ".git").read_text(errors="replace")
    assert not mark.exists()


def test_only_plain_secret_files_are_moved_aside(lab: Any, tmp_path: Path) -> None:
    """A deny-listed regular file is kept aside (the user's save is not lost); a file that
    reads as a gitfile, a deny-listed folder, a hard link and git markers are deleted, and
    git finds no repository in the aside folder."""
    mark = tmp_path / "MARK"
    gitdir = _planted_gitdir(lab, mark)
    ws = lab.tools.workspace.root
    (ws / "shared.txt").write_text("the user's\n")
    script = ("import os\n"
              "open('saved.pem', 'w').write('a key the user saved\\n')\n"
              f"open('link.pem', 'w').write('gitdir: {gitdir}\\n')\n"
              "os.makedirs('.ssh/sub')\n"
              f"open('.ssh/sub/.git', 'w').write('gitdir: {gitdir}\\n')\n"
              "open('.ssh/id', 'w').write('x\\n')\n"
              "os.link('shared.txt', 'hard.key')\n"
              "os.makedirs('sub/.GIT')\n"
              f"open('sub/.GIT/config', 'w').write('[core]\\n\\tfsmonitor = touch {mark}\\n')\n"
              "os.makedirs('bare/objects')\nos.makedirs('bare/refs')\n"
              "open('bare/HEAD', 'w').write('ref: refs/heads/main\\n')\n"
              f"open('bare/config', 'w').write('[core]\\n\\tfsmonitor = touch {mark}\\n')\n")
    assert lab.tools.invoke("write_file", {"path": "mk.py", "content": script}).ok
    out = str(lab.tools.invoke("run_shell", {"command": "python3 mk.py"}).content)
    for gone in ("saved.pem", "link.pem", ".ssh", "hard.key", "sub/.GIT", "bare/HEAD",
                 "bare/config"):
        assert not os.path.lexists(ws / gone), (gone, out)
    assert (ws / "shared.txt").read_text() == "the user's\n"
    moved = _aside_folders(out)
    assert [p.name for p in moved] == ["saved.pem"], out
    assert moved[0].read_text() == "a key the user saved\n"
    for removed in ("link.pem", ".ssh", "hard.key", "sub/.GIT", "bare/HEAD", "bare/config"):
        assert f"removed {removed} (deleted)" in out, (removed, out)
    aside = moved[0].parent
    assert sorted(p.name for p in aside.iterdir()) == ["saved.pem"]
    assert _git_status(aside).returncode != 0
    assert not mark.exists()
