"""Finding out where a repository keeps its git data never reads or prints a file outside.

Finding F8 of the jail red-team run: ``check_repo`` runs on the host, before the jail. It
followed a planted ``r/.git/commondir`` symlink to a file outside the workspace and put the
file's content into its refusal (``... keeps its git data at /ws/r/.git/<the secret>``).
Here the ``.git`` file, ``gitdir:`` line and ``commondir`` are planted the ways a cloned
archive or jailed code could plant them; every git tool and ``run_shell git`` refuses them
with ``git.outside_workspace``, names only the workspace entry, never blocks on a FIFO, and
never shows the outside file. Real repositories, nested ones and linked worktrees still work.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import aillm_lab as al

SECRET = "OUTSIDE_SECRET_MARKER_line1\nOUTSIDE_line2_zz\n"


def _git(repo: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout


class World:
    def __init__(self, lab: al.Lab, ws: Path, outside: Path) -> None:
        self.lab, self.ws, self.outside = lab, ws, outside
        self.secret = outside / "secret.txt"

    def invoke(self, tool: str, args: dict[str, object]) -> al.ToolResult:
        return self.lab.tools.invoke(tool, args)

    def refused(self, tool: str, args: dict[str, object]) -> al.ToolResult:
        result = self.invoke(tool, args)
        assert not result.ok and result.rule == "git.outside_workspace", result
        assert "OUTSIDE" not in result.content and str(self.outside) not in result.content
        return result


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "r").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    (ws / "README.md").write_text("hello\n")
    _git(ws, "init", "-q", "-b", "main")
    _git(ws, "add", "README.md")
    _git(ws, "commit", "-qm", "init")
    with al.Lab(home=tmp_path / "home", workspace=ws) as lab:
        yield World(lab, ws, outside)


def test_a_commondir_link_to_an_outside_file_is_refused_without_its_content(
        world: World) -> None:
    (world.ws / "r" / ".git").mkdir()
    os.symlink(world.secret, world.ws / "r" / ".git" / "commondir")
    result = world.refused("git_status", {"repo": "r"})
    assert "r/.git/commondir" in result.content and "symbolic link" in result.content


def test_a_commondir_whose_content_names_an_outside_folder_is_refused(world: World) -> None:
    (world.ws / "r" / ".git").mkdir()
    (world.ws / "r" / ".git" / "commondir").write_text(f"{world.outside}\n")
    world.refused("git_log", {"repo": "r"})
    (world.ws / "r" / ".git" / "commondir").write_text("../../../outside\x01OUTSIDE\n")
    world.refused("git_log", {"repo": "r"})


def test_a_commondir_fifo_is_refused_without_blocking(world: World) -> None:
    (world.ws / "r" / ".git").mkdir()
    os.mkfifo(world.ws / "r" / ".git" / "commondir")
    result = world.refused("git_diff", {"repo": "r"})
    assert "not a regular file" in result.content


def test_a_gitfile_pointing_outside_is_refused_without_its_content(world: World) -> None:
    (world.ws / "r" / ".git").write_text(f"gitdir: {world.outside}/OUTSIDE_repo\n")
    result = world.refused("git_show", {"repo": "r"})
    assert "'r/.git'" in result.content
    (world.ws / "r" / ".git").write_text("gitdir: ../../outside\n")
    world.refused("git_show", {"repo": "r"})


def test_a_gitfile_that_is_a_link_to_an_outside_file_is_refused(world: World) -> None:
    os.symlink(world.secret, world.ws / "r" / ".git")
    world.refused("git_status", {"repo": "r"})
    os.unlink(world.ws / "r" / ".git")
    os.symlink(world.outside, world.ws / "r" / ".git")
    world.refused("git_status", {"repo": "r"})


def test_a_gitdir_reached_through_a_link_is_refused(world: World) -> None:
    os.symlink(world.outside, world.ws / "out")
    (world.ws / "r" / ".git").write_text("gitdir: ../out\n")
    world.refused("git_status", {"repo": "r"})


def test_the_workspace_repository_is_checked_for_run_shell_git_too(world: World) -> None:
    os.symlink(world.secret, world.ws / ".git" / "commondir")
    for command in ("git status", "git log", "git show HEAD"):
        world.refused("run_shell", {"command": command})


def test_a_huge_gitfile_is_refused_unread(world: World) -> None:
    (world.ws / "r" / ".git").write_text("gitdir: " + "x" * 10_000)
    result = world.refused("git_status", {"repo": "r"})
    assert "xxxx" not in result.content


# -- real repositories keep working ------------------------------------------------------------
def test_nested_repositories_and_linked_worktrees_inside_the_workspace_work(
        world: World) -> None:
    _git(world.ws / "r", "init", "-q", "-b", "trunk")
    assert "No commits yet on trunk" in world.invoke("git_status", {"repo": "r"}).content
    _git(world.ws, "worktree", "add", "-q", "wt")
    status = world.invoke("git_status", {"repo": "wt"})
    assert status.ok and "##" in status.content, status
    assert "hello" in world.invoke("git_show", {"rev": "HEAD:README.md", "repo": "wt"}).content
    assert world.invoke("run_shell", {"command": "git log --oneline"}).content.count("init")
