"""The file tools never plant a folder that git takes for a repository.

Finding F9 of the jail red-team run: four ``write_file`` calls (``docs/HEAD``, ``docs/config``
with ``core.fsmonitor``, ``docs/objects/...``, ``docs/refs/...``) made ``docs`` a bare
repository; the developer's own ``git status`` in ``docs`` later ran the planted fsmonitor.
Whatever the order of the writes, the one that would complete the layout is refused with
``path.git_internal``, so ``docs`` never becomes a git directory. Ordinary files that happen
to be called ``HEAD``, ``config``, ``objects/...`` or ``refs/...`` are still written.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import aillm_lab as al

FSMONITOR = "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n" \
            "\tfsmonitor = \"touch {marker}; false\"\n"
LAYOUT = ["HEAD", "config", "objects/info/keep", "refs/heads/keep"]


class World:
    def __init__(self, lab: al.Lab, ws: Path, marker: Path) -> None:
        self.lab, self.ws, self.marker = lab, ws, marker

    def write(self, path: str, content: str = "", tool: str = "write_file") -> al.ToolResult:
        return self.lab.tools.invoke(tool, {"path": path, "content": content})

    def plant(self, folder: str, order: tuple[str, ...]) -> list[al.ToolResult]:
        contents = {"HEAD": "ref: refs/heads/main\n",
                    "config": FSMONITOR.format(marker=self.marker)}
        prefix = f"{folder}/" if folder != "." else ""
        return [self.write(prefix + name, contents.get(name, "")) for name in order]

    def is_git_dir(self, folder: str) -> bool:
        """What a developer's git would make of the folder (bare repositories allowed)."""
        probe = subprocess.run(["git", "-c", "safe.bareRepository=all", "rev-parse",
                                "--git-dir"], cwd=self.ws / folder, capture_output=True,
                               text=True, env={"PATH": "/usr/bin:/bin", "HOME": str(self.ws),
                                               "GIT_CONFIG_NOSYSTEM": "1",
                                               "GIT_CEILING_DIRECTORIES": str(self.ws.parent)})
        return probe.returncode == 0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    ws = tmp_path / "ws"
    ws.mkdir()
    with al.Lab(home=tmp_path / "home", workspace=ws) as lab:
        yield World(lab, ws, tmp_path / "FSMONITOR_RAN")


def test_the_red_team_sequence_is_refused_and_the_developers_git_runs_nothing(
        world: World) -> None:
    results = world.plant("docs", tuple(LAYOUT))
    refused = [r for r in results if not r.ok]
    assert refused and all(r.rule == "path.git_internal" for r in refused), results
    assert "'docs'" in refused[0].content and "git directory" in refused[0].content
    assert not world.is_git_dir("docs")
    subprocess.run(["git", "-c", "safe.bareRepository=all", "status"], cwd=world.ws / "docs",
                   capture_output=True, env={"PATH": "/usr/bin:/bin", "HOME": str(world.ws),
                                             "GIT_CEILING_DIRECTORIES": str(world.ws.parent)})
    assert not world.marker.exists()


@pytest.mark.parametrize("order", list(itertools.permutations(LAYOUT)),
                         ids=lambda o: ",".join(p.split("/")[0] for p in o))
def test_every_order_of_the_writes_is_stopped_before_the_layout_is_complete(
        world: World, order: tuple[str, ...]) -> None:
    results = world.plant("a/b", order)
    assert any(r.rule == "path.git_internal" for r in results), results
    assert not world.is_git_dir("a/b")


def test_the_workspace_root_cannot_be_made_a_bare_repository(world: World) -> None:
    world.plant(".", tuple(LAYOUT))
    assert not world.is_git_dir(".")


def test_append_file_and_a_commondir_layout_are_refused_too(world: World) -> None:
    assert world.write("w/objects/x").ok and world.write("w/refs/x").ok
    head = world.lab.tools.invoke("append_file", {"path": "w/HEAD", "content": "ref: x\n"})
    assert not head.ok and head.rule == "path.git_internal"
    assert world.write("v/commondir", "../.git\n").ok
    assert world.write("v/HEAD", "ref: x\n").rule == "path.git_internal"


def test_files_named_like_git_internals_are_still_written(world: World) -> None:
    for path in ("notes/HEAD", "notes/config", "notes/objects/a.o", "src/refs/list.txt",
                 "build/objects/x.o", "build/config", "HEAD", "refs/readme.md"):
        assert world.write(path, "data\n").ok, path
    assert (world.ws / "notes" / "HEAD").read_text() == "data\n"


def test_a_linked_objects_folder_counts_as_git_would_count_it(world: World) -> None:
    (world.ws / "store").mkdir()
    (world.ws / "d").mkdir()
    (world.ws / "d" / "objects").symlink_to(world.ws / "store")
    assert world.write("d/refs/heads/x").ok
    assert world.write("d/HEAD", "ref: refs/heads/x\n").rule == "path.git_internal"
    assert not world.is_git_dir("d")
