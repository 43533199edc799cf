"""Shared test helpers: ``from conftest import ...`` works as pytest puts tests/ on the path."""

from __future__ import annotations

from typing import Any

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
