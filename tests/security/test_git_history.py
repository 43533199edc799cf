"""Deny-listed files that were committed never come back out of git's object database.

Finding F5 of the jail red-team run: the jail hides ``cfg/.env`` in the working tree, but git
reads blobs from ``.git/objects``. ``git_show HEAD:cfg/.env`` printed the committed secret,
``git_diff`` printed all of it as deleted lines (the jail shows the file empty), and
``run_shell git grep/show/log -p/cat-file`` did the same. Every attack below goes through
``lab.tools.invoke`` with the default policy; each one is either refused with a typed rule
or answers without the secret. Ordinary git use of the other files keeps working.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import aillm_lab as al

SECRETS = ("tracked_dotenv_MARKER_31337", "PEM_MARKER_abcdef", "KEY_MARKER_777",
           "OLD_KEY_MARKER_4242")


def _git(repo: Path, *args: str) -> str:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


class Repo:
    """A workspace repository with a committed ``.env``, ``.pem`` and ``.key``."""

    def __init__(self, lab: al.Lab, ws: Path) -> None:
        self.lab, self.ws = lab, ws
        self.env_blob = _git(ws, "rev-parse", "HEAD:cfg/.env")
        self.pem_blob = _git(ws, "rev-parse", "HEAD:server.pem")
        self.readme_blob = _git(ws, "rev-parse", "HEAD:README.md")
        self.commit = _git(ws, "rev-parse", "HEAD")

    def invoke(self, tool: str, args: dict[str, object]) -> al.ToolResult:
        return self.lab.tools.invoke(tool, args)

    def shell(self, *command: str) -> al.ToolResult:
        return self.invoke("run_shell", {"command": list(command)})


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Repo]:
    tmp = tmp_path_factory.mktemp("history")
    ws = tmp / "ws"
    (ws / "cfg").mkdir(parents=True)
    (ws / "keys").mkdir()
    (ws / "vault").mkdir()
    (ws / "README.md").write_text("hello\n")
    (ws / "cfg" / "app.toml").write_text("debug = false\n")
    (ws / "cfg" / ".env").write_text(f"API_TOKEN={SECRETS[0]}\n")
    (ws / "server.pem").write_text(f"{SECRETS[1]}\n")
    (ws / "keys" / "deploy.key").write_text(f"{SECRETS[2]}\n")
    (ws / "vault" / "old.key").write_text(f"{SECRETS[3]}\n")  # deleted later: history only
    _git(ws, "init", "-q", "-b", "main")
    _git(ws, "add", "README.md", "cfg/app.toml")
    _git(ws, "add", "-f", "cfg/.env", "server.pem", "keys/deploy.key", "vault/old.key")
    _git(ws, "commit", "-qm", "init")
    (ws / "README.md").write_text("hello\nworld\n")
    _git(ws, "rm", "-q", "vault/old.key")
    _git(ws, "commit", "-qam", "second line")
    (ws / "cfg" / ".env").write_text("API_TOKEN=rotated_value_not_committed\n")
    (ws / "README.md").write_text("hello\nworld\nagain\n")
    with al.Lab(home=tmp / "home", workspace=ws) as lab:
        yield Repo(lab, ws)


def _assert_no_secret(result: al.ToolResult) -> None:
    text = f"{result.content}\n{result.error or ''}"
    for secret in SECRETS:
        assert secret not in text, text


# -- the git tools ----------------------------------------------------------------------------
def test_git_show_of_a_committed_env_file_is_refused_by_rule(repo: Repo) -> None:
    for rev in ("HEAD:cfg/.env", "HEAD~1:server.pem", "main:keys/deploy.key",
                "HEAD:./cfg/.env", "HEAD:cfg//.env", "HEAD:cfg/../cfg/.env", "HEAD:CFG/.ENV"):
        result = repo.invoke("git_show", {"rev": rev})
        assert not result.ok and result.rule == "git.denied_path", (rev, result)
        assert "deny" in result.content.lower()
        _assert_no_secret(result)


def test_git_show_of_a_blob_by_its_id_is_refused(repo: Repo) -> None:
    for rev in (repo.env_blob, repo.env_blob[:10], repo.pem_blob + "^{blob}",
                repo.env_blob + "^{}"):
        result = repo.invoke("git_show", {"rev": rev})
        assert not result.ok and result.rule == "git.blob_by_id", (rev, result)
        assert "REV:path" in result.content or "COMMIT:path" in result.content
        _assert_no_secret(result)


def test_git_diff_leaves_out_the_hidden_env_file(repo: Repo) -> None:
    for args in ({}, {"staged": True}, {"path": "cfg"}, {"path": "."}):
        result = repo.invoke("git_diff", args)
        assert result.ok, result
        _assert_no_secret(result)
        assert ".env" not in result.content
    assert "+again" in repo.invoke("git_diff", {}).content


def test_git_show_of_a_commit_leaves_out_the_deny_listed_files(repo: Repo) -> None:
    result = repo.invoke("git_show", {"rev": "HEAD~1"})
    assert result.ok and "README.md" in result.content and "+hello" in result.content
    _assert_no_secret(result)
    assert "server.pem" not in result.content and "deploy.key" not in result.content


# -- run_shell git ----------------------------------------------------------------------------
LEAKING_COMMANDS: list[tuple[str, ...]] = [
    ("git", "grep", "MARKER", "HEAD"), ("git", "grep", "-e", "MARKER", "HEAD", "--", "."),
    ("git", "grep", "MARKER", "HEAD~1:cfg"), ("git", "grep", "MARKER", "--cached"),
    ("git", "show", "HEAD~1"), ("git", "show", "--stat", "--patch", "HEAD~1", "--", "cfg"),
    ("git", "log", "-p"), ("git", "log", "-p", "--all", "--", "."),
    ("git", "log", "--patch", "--format=%s", "README.md"), ("git", "diff"),
    ("git", "diff", "HEAD~1"), ("git", "diff", "--cached", "HEAD~1"),
    ("git", "diff", "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "HEAD"),
    ("git", "diff", "--stat", "HEAD~1", "--", "cfg/"), ("git", "shortlog", "-s", "HEAD"),
    ("git", "ls-files"), ("git", "status", "--short"),
    ("git", "log", "-G", "tracked_dotenv", "--format=%h"),
]


@pytest.mark.parametrize("command", LEAKING_COMMANDS, ids=lambda c: " ".join(c[1:]))
def test_read_commands_never_print_committed_secrets(repo: Repo, command: tuple[str, ...]
                                                     ) -> None:
    result = repo.shell(*command)
    _assert_no_secret(result)
    if result.ok:
        assert "deploy.key" not in result.content and "server.pem" not in result.content


def test_pickaxe_cannot_test_guesses_against_a_secret(repo: Repo) -> None:
    hit = repo.shell("git", "log", "-S", "tracked_dotenv", "--format=%s")
    assert hit.ok and "init" not in hit.content.split("--- stdout ---")[-1]


REFUSED: list[tuple[tuple[str, ...], str]] = [
    (("git", "show", "HEAD:cfg/.env"), "git.denied_path"),
    (("git", "show", "HEAD~1:server.pem"), "git.denied_path"),
    (("git", "cat-file", "-p", "HEAD:cfg/.env"), "git.denied_path"),
    (("git", "cat-file", "blob", "HEAD:keys/deploy.key"), "git.denied_path"),
    (("git", "diff", "HEAD:cfg/.env", "HEAD:README.md"), "git.denied_path"),
    (("git", "grep", "MARKER", "HEAD:cfg/.env"), "git.denied_path"),
    (("git", "show", ":cfg/.env"), "git.denied_path"),
    (("git", "show", ":0:server.pem"), "git.denied_path"),
    (("git", "show", "HEAD..HEAD:cfg/.env"), "git.denied_path"),
    (("git", "log", "-L1,1:cfg/.env"), "path.denied"),  # the shell sees the short-flag tail
    (("git", "log", "-L", "1,1:server.pem", "--format=%s"), "git.denied_path"),
    (("git", "blame", "HEAD", "--", "cfg/.env"), "path.denied"),  # in the tree: the shell
    (("git", "blame", "HEAD~1", "--", "vault/old.key"), "git.denied_path"),  # history only
    (("git", "blame", "HEAD~1", "vault/old.key"), "git.denied_path"),
    (("git", "show", "HEAD~1:vault/old.key"), "git.denied_path"),
    (("git", "log", "-p", "--full-diff", "--", "README.md"), "git.denied_path"),
    (("git", "log", "-p", "--follow", "README.md"), "git.denied_path"),
    (("git", "cat-file", "--batch", "--batch-all-objects"), "git.blob_by_id"),
    (("git", "cat-file", "--batch-all-objects", "--batch=%(objectname)"), "git.blob_by_id"),
    (("git", "cat-file", "--batch-comm"), "git.blob_by_id"),  # git takes abbreviations here
    (("git", "diff", "--submodule=diff", "HEAD~1"), "git.denied_path"),
    (("git", "show", "--all"), "git.blob_by_id"),
    (("git", "--literal-pathspecs", "log", "-p"), "command.denied_argument"),
]


@pytest.mark.parametrize(("command", "rule"), REFUSED, ids=lambda c: " ".join(c[1:])
                         if isinstance(c, tuple) else c)
def test_paths_into_deny_listed_files_are_refused_by_rule(repo: Repo, command: tuple[str, ...],
                                                          rule: str) -> None:
    result = repo.shell(*command)
    assert not result.ok and result.rule == rule, result
    _assert_no_secret(result)


def test_blobs_addressed_by_id_are_refused(repo: Repo) -> None:
    blob, pem = repo.env_blob, repo.pem_blob
    for command in (("git", "cat-file", "-p", blob), ("git", "cat-file", "blob", blob[:12]),
                    ("git", "show", blob), ("git", "show", f"{pem}^{{blob}}"),
                    ("git", "diff", blob, pem), ("git", "grep", "MARKER", blob),
                    ("git", "show", "--end-of-options", f"{blob}^{{}}"),
                    ("git", "cat-file", "--filters", "--path=README.md", blob)):
        result = repo.shell(*command)
        assert not result.ok and result.rule == "git.blob_by_id", (command, result)
        assert "COMMIT:path" in result.content
        _assert_no_secret(result)


def test_object_metadata_by_id_is_still_allowed(repo: Repo) -> None:
    assert repo.shell("git", "cat-file", "-t", repo.env_blob).content.endswith("blob")
    assert repo.shell("git", "rev-parse", "HEAD").ok


# -- ordinary use keeps working ---------------------------------------------------------------
def test_ordinary_git_reads_still_work(repo: Repo) -> None:
    assert "hello" in repo.invoke("git_show", {"rev": "HEAD:README.md"}).content
    assert "debug = false" in repo.invoke("git_show", {"rev": "HEAD~1:cfg/app.toml"}).content
    show = repo.invoke("git_show", {"rev": "HEAD"}).content
    assert "+world" in show and "second line" in show
    log = repo.invoke("git_log", {}).content
    assert "second line" in log and "init" in log
    diff = repo.invoke("git_diff", {"path": "README.md"}).content
    assert "+again" in diff


@pytest.mark.parametrize(("command", "expected"), [
    (("git", "show", "HEAD:README.md"), "hello"),
    (("git", "cat-file", "-p", "HEAD:cfg/app.toml"), "debug = false"),
    (("git", "show", "HEAD"), "+world"),
    (("git", "log", "-p", "README.md"), "+world"),
    (("git", "log", "--oneline"), "init"),
    (("git", "log", "--follow", "--format=%s", "--", "README.md"), "second line"),
    (("git", "log", "-L1,1:README.md", "--format=%s"), "init"),
    (("git", "diff", "HEAD~1", "--", "README.md"), "+again"),
    (("git", "diff", "--stat"), "README.md"),
    (("git", "grep", "-n", "hello", "HEAD"), "HEAD:README.md:1:hello"),
    (("git", "grep", "debug"), "cfg/app.toml"),
    (("git", "blame", "README.md"), "hello"),
    (("git", "ls-files", "*.md"), "README.md"),
    (("git", "ls-tree", "-r", "--name-only", "HEAD"), "README.md"),
    (("git", "status", "--short"), "README.md"),
    (("git", "shortlog", "-s", "HEAD"), "2"),
], ids=lambda c: " ".join(c[1:]) if isinstance(c, tuple) else c)
def test_ordinary_shell_git_reads_still_work(repo: Repo, command: tuple[str, ...],
                                             expected: str) -> None:
    result = repo.shell(*command)
    assert result.ok and result.content.startswith("exit code 0"), result
    assert expected in result.content


def test_a_commit_shown_by_id_and_a_file_by_its_blob_path(repo: Repo) -> None:
    assert "second line" in repo.shell("git", "show", repo.commit).content
    assert "hello" in repo.shell("git", "show", f"{repo.commit}:README.md").content
    assert "hello" in repo.shell("git", "cat-file", "-p", f"{repo.commit[:12]}:README.md").content


# -- deny globs anchored in the workspace -----------------------------------------------------
def test_an_anchored_deny_glob_is_rebased_onto_nested_repositories_and_trees(
        tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    proj = ws / "proj"
    (proj / "conf" / "vault").mkdir(parents=True)
    (proj / "README.md").write_text("hi\n")
    (proj / "conf" / "vault" / "token.txt").write_text("ANCHORED_MARKER_1\n")
    (proj / "conf" / "app.txt").write_text("fine\n")
    _git(ws, "init", "-q", "-b", "main")
    _git(proj, "init", "-q", "-b", "main")
    _git(proj, "add", ".")
    _git(proj, "commit", "-qm", "init")
    (proj / "conf" / "vault" / "token.txt").write_text("ANCHORED_MARKER_2\n")
    (proj / "conf" / "app.txt").write_text("still fine\n")
    _git(proj, "commit", "-qam", "rotate")
    safety = {"paths": {"deny_globs": [*al.SafetyPolicy().paths.deny_globs,
                                       "proj/conf/vault/*.txt"]}}
    with al.Lab(home=tmp_path / "home", workspace=ws, safety=safety) as lab:
        refused = lab.tools.invoke("git_show", {"rev": "HEAD:conf/vault/token.txt",
                                                "repo": "proj"})
        assert refused.rule == "git.denied_path"
        outputs = [lab.tools.invoke("git_show", {"rev": rev, "repo": "proj"}).content
                   for rev in ("HEAD", "HEAD~1", "HEAD:conf")]
        outputs.append(lab.tools.invoke("git_diff", {"repo": "proj", "staged": True}).content)
        assert "+still fine" in outputs[0]
        for out in outputs:
            assert "ANCHORED_MARKER" not in out


def test_an_anchored_deny_glob_is_rebased_onto_a_tree_named_as_commit_folder(
        tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "conf" / "vault").mkdir(parents=True)
    (ws / "conf" / "vault" / "token.txt").write_text("ANCHORED_MARKER_3\n")
    (ws / "conf" / "app.txt").write_text("ANCHORED_OK\n")
    _git(ws, "init", "-q", "-b", "main")
    _git(ws, "add", ".")
    _git(ws, "commit", "-qm", "init")
    safety = {"paths": {"deny_globs": ["conf/vault/*.txt"]}}
    with al.Lab(home=tmp_path / "home", workspace=ws, safety=safety) as lab:
        for command in (["git", "grep", "ANCHORED", "HEAD:conf"],
                        ["git", "grep", "ANCHORED", "HEAD:conf/vault"],
                        ["git", "diff", "HEAD:conf/vault", "HEAD:conf"]):
            result = lab.tools.invoke("run_shell", {"command": command})
            assert "ANCHORED_MARKER" not in result.content, (command, result)
        grep = lab.tools.invoke("run_shell", {"command": ["git", "grep", "ANCHORED", "HEAD:conf"]})
        assert "ANCHORED_OK" in grep.content
