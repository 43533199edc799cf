"""Workspace: canonical resolution, deny globs, glob translation and the safe open/write doors."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from aillm_lab.errors import SafetyViolation, ToolError
from aillm_lab.tools.paths import Workspace, check_spelling, glob_to_regex
from aillm_lab.tools.policy import PathPolicy


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "f.txt").write_text("one\ntwo\n")
    return Workspace(root)


def _rule(fn: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(SafetyViolation) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    return info.value.rule


# -- resolve ---------------------------------------------------------------------------------
def test_resolve_returns_the_canonical_absolute_path(ws: Workspace) -> None:
    expected = ws.root / "sub" / "f.txt"
    for spelling in ["sub/f.txt", "./sub/f.txt", "sub/../sub/f.txt", str(expected),
                     Path("sub") / "f.txt", b"sub/f.txt"]:
        assert ws.resolve(spelling) == expected  # type: ignore[arg-type]


def test_resolve_accepts_files_that_do_not_exist_yet(ws: Workspace) -> None:
    assert ws.resolve("new/dir/file.txt", write=True) == ws.root / "new" / "dir" / "file.txt"


def test_root_given_through_a_symlink_is_resolved(tmp_path: Path, ws: Workspace) -> None:
    (tmp_path / "alias").symlink_to(ws.root)
    aliased = Workspace(tmp_path / "alias")
    assert aliased.root == ws.root
    assert aliased.resolve("sub/f.txt") == ws.root / "sub" / "f.txt"


def test_percent_names_are_used_literally_never_decoded(ws: Workspace) -> None:
    assert ws.resolve("a%20b.txt") == ws.root / "a%20b.txt"


@pytest.mark.parametrize(("raw", "rule"), [
    ("", "path.empty"), ("a\x00b", "path.nul"), ("a\tb", "path.control_char"),
    ("bad\udc80", "path.encoding"), ("n" * 256, "path.too_long"), ("a\\b", "path.windows"),
    ("Z:/x", "path.windows"), ("%2e%2e/x", "path.encoded"), ("%25%32%65", "path.encoded"),
    ("%c0%ae", "path.encoded"), ("%u002e", "path.encoded"), ("．．/x", "path.lookalike"),
    (".../x", "path.dots"), ("~/x", "path.home"), ("%252525252541", "path.encoded"),
])
def test_spellings_that_hide_their_meaning_are_refused(raw: str, rule: str) -> None:
    assert _rule(check_spelling, raw) == rule


def test_bytes_that_are_not_utf8_and_non_paths_are_refused(ws: Workspace) -> None:
    assert _rule(ws.resolve, b"\xff\xfe") == "path.encoding"
    with pytest.raises(ToolError, match="str or os.PathLike"):
        ws.resolve(42)  # type: ignore[arg-type]


def test_escape_rules_distinguish_plain_traversal_from_symlinks(tmp_path: Path,
                                                                 ws: Workspace) -> None:
    (tmp_path / "out.txt").write_text("x")
    (ws.root / "link").symlink_to(tmp_path / "out.txt")
    assert _rule(ws.resolve, "../out.txt") == "path.outside"
    assert _rule(ws.resolve, "link") == "path.symlink_escape"
    assert "outside the workspace" in str(pytest.raises(SafetyViolation, ws.resolve, "/").value)


def test_write_rules_protect_git_internals_and_the_root(ws: Workspace) -> None:
    assert ws.resolve(".git/HEAD") == ws.root / ".git" / "HEAD"  # reading is fine
    assert _rule(ws.resolve, ".git/hooks/pre-commit", write=True) == "path.git_internal"
    assert _rule(ws.resolve, "sub/.GIT/config2", write=True) == "path.git_internal"
    assert _rule(ws.resolve, ".", write=True) == "path.root"


def test_hard_linked_files_are_refused(tmp_path: Path, ws: Workspace) -> None:
    os.link(ws.root / "sub" / "f.txt", tmp_path / "twin.txt")
    assert _rule(ws.resolve, "sub/f.txt") == "path.hardlink"
    assert _rule(ws.open, "sub/f.txt", "w") == "path.hardlink"
    assert (tmp_path / "twin.txt").read_text() == "one\ntwo\n"  # not truncated


# -- deny globs and glob translation ----------------------------------------------------------
def test_deny_globs_match_at_any_depth_and_cover_folders_below(ws: Workspace) -> None:
    for denied in [".env", "a/b/.env", "key.PEM", ".ssh", ".ssh/known_hosts", "id_rsa.pub",
                   ".git/config", "x/.env/inside.txt"]:
        assert ws.is_denied(denied), denied
    for allowed in [".envs", "env.example", "env", "pem.txt", ".git/HEAD", "ssh/x"]:
        assert not ws.is_denied(allowed), allowed


def test_editing_the_policy_after_creation_takes_effect(ws: Workspace) -> None:
    assert not ws.is_denied("notes/secret.md")
    ws.policy.deny_globs = [*ws.policy.deny_globs, "notes/secret*"]
    assert ws.is_denied("notes/secret.md")
    assert _rule(ws.resolve, "notes/secret.md") == "path.denied"


@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("*.py", ["a.py"], ["d/a.py", "a.pyc"]),
    ("**/*.py", ["a.py", "d/e/a.py"], ["a.txt"]),
    ("d/**", ["d", "d/x", "d/x/y"], ["dx", "e/d/x"]),
    ("?.md", ["a.md"], ["ab.md", "/.md"]),
    ("[!a]*.txt", ["b.txt"], ["a.txt"]),
    ("f[0-9].csv", ["f1.csv"], ["fa.csv"]),
    ("a.b", ["a.b"], ["axb"]),
    ("[!].txt", ["[!].txt"], ["a.txt"]),
])
def test_glob_to_regex_keeps_single_stars_within_one_folder(pattern: str, yes: list[str],
                                                            no: list[str]) -> None:
    rx = re.compile(glob_to_regex(pattern))
    assert all(rx.match(p) for p in yes)
    assert not any(rx.match(p) for p in no)


def test_check_pattern_refuses_globs_that_leave_the_root(ws: Workspace) -> None:
    assert ws.check_pattern("src/**/*.py") == "src/**/*.py"
    for bad in ["../*", "a/../../*", "/etc/*", "~/*", "..\\*", "%2e%2e/*"]:
        assert _rule(ws.check_pattern, bad).startswith("path."), bad


def test_relative_and_display_show_workspace_relative_posix_paths(ws: Workspace) -> None:
    assert ws.relative(ws.root / "sub" / "f.txt") == "sub/f.txt"
    assert ws.relative(ws.root) == "."
    assert ws.display("sub/../sub/f.txt") == "sub/f.txt"
    assert ws.display("/etc/passwd") == "/etc/passwd"
    assert len(ws.display("/x" * 200)) == 120


# -- open ------------------------------------------------------------------------------------
def test_open_reads_text_and_bytes(ws: Workspace) -> None:
    with ws.open("sub/f.txt") as fh:
        assert fh.read() == "one\ntwo\n"
    with ws.open("sub/f.txt", "rb") as fh:
        assert fh.read() == b"one\ntwo\n"


def test_open_write_modes_truncate_append_and_create_exclusively(ws: Workspace) -> None:
    with ws.open("sub/f.txt", "w") as fh:
        fh.write("new")
    with ws.open("sub/f.txt", "a") as fh:
        fh.write("+more")
    assert (ws.root / "sub" / "f.txt").read_text() == "new+more"
    with pytest.raises(FileExistsError):
        ws.open("sub/f.txt", "x")
    with ws.open("made/here.txt", "xb", parents=True) as fh:
        fh.write(b"ok")
    assert (ws.root / "made" / "here.txt").read_bytes() == b"ok"


def test_open_errors_name_the_relative_path(ws: Workspace) -> None:
    with pytest.raises(FileNotFoundError, match="'sub/nope.txt' does not exist"):
        ws.open("sub/nope.txt")
    with pytest.raises(FileNotFoundError, match="'missing/x.txt' does not exist"):
        ws.open("missing/x.txt", "w")
    with pytest.raises(IsADirectoryError, match="'sub' is a folder"):
        ws.open("sub")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        ws.open("sub/f.txt/child", "w", parents=True)
    with pytest.raises(ToolError, match="mode 'r\\+'"):
        ws.open("sub/f.txt", "r+")


def test_open_enforces_read_and_write_limits(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, PathPolicy(max_read_bytes=10, max_write_bytes=10))
    (tmp_path / "big.txt").write_text("x" * 11)
    (tmp_path / "ok.txt").write_text("x" * 10)
    with ws.open("ok.txt") as fh:
        assert fh.read() == "x" * 10
    for mode in ("r", "rb"):
        with ws.open("big.txt", mode) as fh:
            assert _rule(fh.read) == "path.read_limit"
    with pytest.raises(SafetyViolation, match="write limit") as info:
        with ws.open("w.bin", "wb") as fh:
            fh.write(b"y" * 11)
            fh.flush()
    assert info.value.rule == "path.write_limit"


# -- write_atomic ----------------------------------------------------------------------------
def test_write_atomic_replaces_the_file_in_one_step(ws: Workspace) -> None:
    assert ws.write_atomic("sub/f.txt", "fresh") == ws.root / "sub" / "f.txt"
    assert (ws.root / "sub" / "f.txt").read_text() == "fresh"
    assert ws.write_atomic("deep/er/b.bin", b"\x00\x01") == ws.root / "deep" / "er" / "b.bin"
    assert sorted(p.name for p in (ws.root / "sub").iterdir()) == ["f.txt"]


def test_write_atomic_checks_size_before_touching_disk(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, PathPolicy(max_write_bytes=3))
    (tmp_path / "keep.txt").write_text("old")
    assert _rule(ws.write_atomic, "keep.txt", "toolong") == "path.write_limit"
    assert (tmp_path / "keep.txt").read_text() == "old"


def test_a_failed_replace_leaves_the_old_file_and_no_temp(ws: Workspace,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        ws.write_atomic("sub/f.txt", "new")
    assert sorted(p.name for p in (ws.root / "sub").iterdir()) == ["f.txt"]
    assert (ws.root / "sub" / "f.txt").read_text() == "one\ntwo\n"


def test_write_atomic_refuses_folders_and_missing_parents_without_parents(ws: Workspace) -> None:
    with pytest.raises(IsADirectoryError):
        ws.write_atomic("sub", "x")
    with pytest.raises(FileNotFoundError, match="no folder 'nope'"):
        ws.write_atomic("nope/x.txt", "x", parents=False)


# -- entries and walk ------------------------------------------------------------------------
def test_entries_list_dirs_first_hide_denied_and_do_not_follow_links(ws: Workspace) -> None:
    (ws.root / ".env").write_text("x")
    (ws.root / "b.txt").write_text("12")
    (ws.root / "link").symlink_to("b.txt")
    os.mkfifo(ws.root / "pipe")
    got = [(e.name, e.kind, e.size) for e in ws.entries(".")]
    assert got == [("sub", "dir", None), ("b.txt", "file", 2), ("link", "symlink", None),
                   ("pipe", "other", None)]
    with pytest.raises(NotADirectoryError):
        ws.entries("b.txt")


def test_names_that_are_not_utf8_are_listed_readably_but_cannot_be_opened(
        ws: Workspace) -> None:
    os.close(os.open(os.path.join(os.fsencode(ws.root), b"caf\xe9.txt"), os.O_CREAT | os.O_WRONLY))
    assert "caf\ufffd.txt" in [e.name for e in ws.entries(".")]
    raw_name = next(n for n in os.listdir(ws.root) if n.startswith("caf"))
    assert _rule(ws.open, raw_name) == "path.encoding"


def test_walk_skips_git_denied_and_linked_folders(ws: Workspace) -> None:
    for rel in [".git/HEAD", "a/.env", "a/keep.txt", "real/x.txt"]:
        (ws.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws.root / rel).write_text("x")
    (ws.root / "linked").symlink_to("real")
    assert list(ws.walk()) == ["a/keep.txt", "real/x.txt", "sub/f.txt"]
    assert ".git/HEAD" in list(ws.walk(include_git=True))
    assert list(ws.walk("sub/f.txt")) == ["sub/f.txt"]
    assert len(list(ws.walk(max_files=2))) == 2
