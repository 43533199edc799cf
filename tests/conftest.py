"""Shared test helpers: ``from conftest import ...`` works as pytest puts tests/ on the path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aillm_lab.runtime import LoopRunner
from aillm_lab.tools.policy import CommandPolicy

GIT_WRITES = ["branch", "add", "commit", "tag", "init", "mv", "rm", "restore", "switch",
              "checkout", "reset", "stash", "merge", "cherry-pick", "revert"]


def dev_policy(**overrides: Any) -> CommandPolicy:
    """The default command policy opened up as a developer might: python and git writes.

    The shell tests drive scripts with python and commit with git; the strict default
    refuses both (``test_default_policy_refuses_python_and_git_writes`` checks that).
    """
    base = CommandPolicy()
    fields: dict[str, Any] = {"allow": [*base.allow, "python", "python3"],
                              "git_subcommands": [*base.git_subcommands, *GIT_WRITES]}
    return CommandPolicy(**{**fields, **overrides})


@pytest.fixture
def runner() -> Iterator[LoopRunner]:
    """A fresh loop runner for one test, closed after it, so a broken one cannot leak."""
    runner = LoopRunner(name="aillm-test-runner")
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(scope="module")
def module_runner() -> Iterator[LoopRunner]:
    """One loop runner for a whole test module, for module-scoped resources built on it (a
    loaded model, an ingested index); closed after the module's last test."""
    runner = LoopRunner(name="aillm-test-module-runner")
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """``make_lab(model, **settings)``: a Lab on its own home, closed after the test."""
    import aillm_lab as al

    labs: list[al.Lab] = []

    def make(model: Any = None, **settings: Any) -> al.Lab:
        lab = al.Lab(home=tmp_path / "home", model=model, **settings)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()


@pytest.fixture
def settings_lab(lab_home: Path, runner: LoopRunner) -> Iterator[Callable[..., Any]]:
    """``settings_lab(**settings)``: a Lab on ``lab_home`` built from ``LabSettings`` and run
    on the test's own loop runner, closed after the test."""
    import aillm_lab as al

    labs: list[al.Lab] = []

    def make(**settings: Any) -> al.Lab:
        lab = al.Lab(al.LabSettings(home=lab_home, **settings), runner=runner)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.close()


@pytest.fixture
def python_shell_lab(tmp_path: Path) -> Iterator[Any]:
    """A Lab whose ``run_shell`` may also start ``python3``: the jail tests' attacker runs
    a program that writes whatever it likes into the workspace."""
    import aillm_lab as al

    ws = tmp_path / "ws"
    ws.mkdir()
    allow = [*al.SafetyPolicy().commands.allow, "python3"]
    with al.Lab(home=tmp_path / "home", workspace=ws,
                safety={"commands": {"allow": allow}}) as lab:
        yield lab
