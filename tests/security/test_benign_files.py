"""No false positives: ordinary file work that looks a little like an attack is allowed.

Each case goes through the tools (validation, executor, Workspace) and checks the result
against the file system, not just that no error was raised.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aillm_lab.runtime import get_runner
from aillm_lab.tools.files import file_tools
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import PathPolicy


class Bench:
    def __init__(self, root: Path, policy: PathPolicy | None = None) -> None:
        self.root = root
        self.ws = Workspace(root, policy)
        self.tools = {t.name: t for t in file_tools(self.ws)}

    def __call__(self, name: str, **args: Any) -> Any:
        return get_runner().run(self.tools[name].acall(args), timeout=30)

    def put(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path


@pytest.fixture
def bench(tmp_path: Path) -> Bench:
    root = tmp_path / "ws"
    root.mkdir()
    return Bench(root)


# Names that contain '..', '%', '~', ':', spaces, unicode or dots, but are plain files here.
ODD_NAMES = [
    "a..b.txt", "..hidden-but-fine.txt", "trailing..", "notes/v1..v2.md", "100%.txt",
    "50%off.txt", "a%20b.txt", "backup~", "dir/~draft.md", "notes:v2.txt", "my notes/to do.txt",
    "données/résumé.txt", "日本語/ファイル.md", "emoji-🙂.txt", "ﬁle-ligature.txt",
    ".gitignore", ".config/settings.toml", "env.example", ".editorconfig", "env", "pem.txt",
    "keys/public.txt", "con.txt", "nul", "a/b/c/d/e/f/g/h/deep.txt", "x" * 255,
    "-dash-first.txt", "#hash.txt", "semi;colon.txt", "quote's.txt",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_odd_but_legal_names_round_trip(bench: Bench, name: str) -> None:
    text = f"content of {name}\nline 2\n"
    assert "created" in bench("write_file", path=name, content=text)
    assert (bench.root / name).read_text(encoding="utf-8") == text
    assert bench("read_file", path=name) == text
    bench("append_file", path=name, content="line 3\n")
    assert bench("read_file", path=name, start_line=3) == "line 3\n"


def test_write_creates_nested_folders_inside_the_workspace(bench: Bench) -> None:
    bench("write_file", path="a/b/c/new.txt", content="x")
    assert (bench.root / "a" / "b" / "c" / "new.txt").read_text() == "x"


def test_paths_with_dot_segments_that_stay_inside_are_allowed(bench: Bench) -> None:
    bench.put("sub/file.txt", "one\n")
    for path in ["./sub/file.txt", "sub/./file.txt", "sub//file.txt", "other/../sub/file.txt",
                 "sub/../sub/file.txt", str(bench.root / "sub" / "file.txt"),
                 f"../{bench.root.name}/sub/file.txt"]:
        assert bench("read_file", path=path) == "one\n", path


def test_symlinks_that_stay_inside_the_workspace_are_followed(bench: Bench) -> None:
    bench.put("real/data.txt", "real\n")
    (bench.root / "alias.txt").symlink_to("real/data.txt")
    (bench.root / "alias_dir").symlink_to("real")
    assert bench("read_file", path="alias.txt") == "real\n"
    assert bench("read_file", path="alias_dir/data.txt") == "real\n"
    assert bench("list_dir", path="alias_dir") == "data.txt (5 bytes)"
    bench("write_file", path="alias.txt", content="new\n")
    assert (bench.root / "real" / "data.txt").read_text() == "new\n"
    assert (bench.root / "alias.txt").is_symlink()


def test_line_ranges_and_numbering(bench: Bench) -> None:
    bench.put("f.txt", "".join(f"line {i}\n" for i in range(1, 11)))
    assert bench("read_file", path="f.txt", start_line=3, end_line=4) == "line 3\nline 4\n"
    assert bench("read_file", path="f.txt", end_line=2) == "line 1\nline 2\n"
    assert bench("read_file", path="f.txt", start_line=9, end_line=99) == "line 9\nline 10\n"
    assert bench("read_file", path="f.txt", start_line=10, numbered=True) == "    10\tline 10\n"


def test_crlf_and_missing_final_newline_are_preserved(bench: Bench) -> None:
    bench("write_file", path="win.txt", content="a\r\nb")
    assert (bench.root / "win.txt").read_bytes() == b"a\r\nb"
    assert bench("read_file", path="win.txt") == "a\r\nb"


def test_empty_file_reads_as_empty_text(bench: Bench) -> None:
    bench.put("empty.txt", "")
    assert bench("read_file", path="empty.txt") == ""


@pytest.mark.parametrize(("pattern", "expected"), [
    ("*.txt", ["a.txt", "b.txt"]),
    ("**/*.py", ["src/app.py", "src/pkg/mod.py", "tests/test_app.py"]),
    ("src/*.py", ["src/app.py"]),
    ("src/**/*.py", ["src/app.py", "src/pkg/mod.py"]),
    ("tests/test_*.py", ["tests/test_app.py"]),
    ("data/[ab].csv", ["data/a.csv", "data/b.csv"]),
    ("?.txt", ["a.txt", "b.txt"]),
    ("my docs/*.md", ["my docs/read me.md"]),
    ("src/app.py", ["src/app.py"]),
])
def test_globs_find_exactly_the_matching_files(bench: Bench, pattern: str,
                                               expected: list[str]) -> None:
    for rel in ["a.txt", "b.txt", "src/app.py", "src/pkg/mod.py", "tests/test_app.py",
                "data/a.csv", "data/b.csv", "data/c.csv", "my docs/read me.md", "notes.md"]:
        bench.put(rel, "x\n")
    assert bench("glob_files", pattern=pattern).splitlines() == expected


def test_search_finds_literal_regex_and_case_insensitive_hits(bench: Bench) -> None:
    bench.put("src/app.py", "import os\nTODO: fix\nprint('todo later')\n")
    bench.put("notes/plan.md", "# Plan\nTODO write docs\n")
    assert bench("search_text", pattern="TODO").splitlines() == [
        "notes/plan.md:2:TODO write docs", "src/app.py:2:TODO: fix"]
    assert bench("search_text", pattern=r"^import \w+$", regex=True) == "src/app.py:1:import os"
    assert len(bench("search_text", pattern="todo", ignore_case=True).splitlines()) == 3
    assert bench("search_text", pattern="TODO", path="src/app.py") == "src/app.py:2:TODO: fix"


def test_diff_preview_shows_changes_and_writes_nothing(bench: Bench) -> None:
    path = bench.put("code.py", "a = 1\nb = 2\n")
    diff = bench("diff_preview", path="code.py", new_content="a = 1\nb = 3\n")
    assert diff.splitlines()[:2] == ["--- a/code.py", "+++ b/code.py"]
    assert "-b = 2" in diff and "+b = 3" in diff
    assert path.read_text() == "a = 1\nb = 2\n"
    new = bench("diff_preview", path="new/file.md", new_content="hello\n")
    assert new.startswith("--- /dev/null\n+++ b/new/file.md") and "+hello" in new
    assert not (bench.root / "new").exists()


def test_list_dir_shows_folders_files_and_sizes(bench: Bench) -> None:
    bench.put("docs/readme.md", "hi\n")
    bench.put("z.txt", "12345")
    bench.put(".gitignore", "*.pyc\n")
    assert bench("list_dir").splitlines() == ["docs/", ".gitignore (6 bytes)", "z.txt (5 bytes)"]
    assert bench("list_dir", path="docs") == "readme.md (3 bytes)"


def test_files_exactly_at_the_size_limits_are_allowed(tmp_path: Path) -> None:
    bench = Bench(tmp_path, PathPolicy(max_read_bytes=100, max_write_bytes=100))
    bench("write_file", path="edge.txt", content="x" * 100)
    assert bench("read_file", path="edge.txt") == "x" * 100


def test_rewriting_a_file_keeps_its_mode_and_leaves_no_temp_files(bench: Bench) -> None:
    path = bench.put("script.sh", "echo 1\n")
    os.chmod(path, 0o750)
    bench("write_file", path="script.sh", content="echo 2\n")
    assert path.read_text() == "echo 2\n"
    assert path.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in bench.root.iterdir()) == ["script.sh"]
