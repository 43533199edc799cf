"""File tools: their specs, their output format, and readable errors for bad input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al
from aillm_lab.errors import SafetyViolation
from aillm_lab.runtime import get_runner
from aillm_lab.tools import files
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.files import FileToolError, file_tools
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import PathPolicy


class Files:
    def __init__(self, root: Path, policy: PathPolicy | None = None) -> None:
        self.root = root
        self.tools: dict[str, Tool] = {t.name: t for t in file_tools(Workspace(root, policy))}

    def __call__(self, name: str, **args: Any) -> Any:
        return get_runner().run(self.tools[name].acall(args), timeout=30)

    def put(self, rel: str, data: str | bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return path


@pytest.fixture
def fs(tmp_path: Path) -> Files:
    return Files(tmp_path)


def test_file_tools_have_the_expected_names_and_risks(fs: Files) -> None:
    risks = {name: t.risk for name, t in fs.tools.items()}
    assert risks == {"read_file": RiskLevel.READ, "write_file": RiskLevel.WRITE,
                     "append_file": RiskLevel.WRITE, "list_dir": RiskLevel.READ,
                     "glob_files": RiskLevel.READ, "search_text": RiskLevel.READ,
                     "diff_preview": RiskLevel.READ}


def test_tool_schemas_describe_every_parameter(fs: Files) -> None:
    read = fs.tools["read_file"].spec.parameters
    assert read["required"] == ["path"]
    assert set(read["properties"]) == {"path", "start_line", "end_line", "numbered"}
    for t in fs.tools.values():
        assert t.spec.description
        assert all(p.get("description") for p in t.spec.parameters["properties"].values()), t


def test_missing_file_error_names_the_relative_path_not_the_host_path(fs: Files) -> None:
    with pytest.raises(FileNotFoundError) as info:
        fs("read_file", path="docs/../docs/none.md")
    assert "'docs/none.md' does not exist" in str(info.value)
    assert str(fs.root) not in str(info.value)


def test_binary_and_non_utf8_files_are_refused_readably(fs: Files) -> None:
    fs.put("img.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    fs.put("latin1.txt", "café".encode("latin-1"))
    with pytest.raises(FileToolError, match="'img.png' looks like a binary file"):
        fs("read_file", path="img.png")
    with pytest.raises(FileToolError, match="'latin1.txt' is not UTF-8"):
        fs("read_file", path="latin1.txt")
    with pytest.raises(FileToolError, match="binary"):
        fs("read_file", path="img.png", start_line=1)


@pytest.mark.parametrize(("start", "end", "message"), [
    (0, None, "start_line=0 is invalid"), (None, 0, "end_line=0 is invalid"),
    (5, 2, "end_line=2 is before start_line=5"), (9, None, "past the end of 'f.txt'"),
])
def test_bad_line_ranges_are_refused_with_the_fix(fs: Files, start: int | None,
                                                  end: int | None, message: str) -> None:
    fs.put("f.txt", "a\nb\n")
    with pytest.raises(FileToolError, match=message):
        fs("read_file", path="f.txt", start_line=start, end_line=end)


def test_reading_a_folder_points_to_list_dir(fs: Files) -> None:
    (fs.root / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="use list_dir"):
        fs("read_file", path="d")


def test_read_limit_applies_but_a_range_near_the_top_of_a_big_file_works(tmp_path: Path) -> None:
    fs = Files(tmp_path, PathPolicy(max_read_bytes=64))
    fs.put("big.txt", "".join(f"{i:03}\n" for i in range(100)))  # 400 bytes
    with pytest.raises(SafetyViolation) as info:
        fs("read_file", path="big.txt")
    assert info.value.rule == "path.read_limit" and "start_line" in info.value.detail
    assert fs("read_file", path="big.txt", start_line=2, end_line=3) == "001\n002\n"


def test_write_file_reports_created_or_replaced_and_respects_the_limit(tmp_path: Path) -> None:
    fs = Files(tmp_path, PathPolicy(max_write_bytes=8))
    assert fs("write_file", path="n.txt", content="abc") == "created n.txt (3 bytes)"
    assert fs("write_file", path="n.txt", content="é") == "replaced n.txt (2 bytes)"
    with pytest.raises(SafetyViolation) as info:
        fs("write_file", path="n.txt", content="123456789")
    assert info.value.rule == "path.write_limit"
    assert (tmp_path / "n.txt").read_text() == "é"


def test_append_file_creates_then_appends_and_respects_the_limit(tmp_path: Path) -> None:
    fs = Files(tmp_path, PathPolicy(max_write_bytes=8))
    assert fs("append_file", path="log/a.txt", content="1\n") == "appended 2 bytes to log/a.txt"
    fs("append_file", path="log/a.txt", content="2\n")
    assert (tmp_path / "log" / "a.txt").read_text() == "1\n2\n"
    with pytest.raises(SafetyViolation):
        fs("append_file", path="log/a.txt", content="x" * 9)
    assert (tmp_path / "log" / "a.txt").read_text() == "1\n2\n"


def test_list_dir_reports_empty_folders_links_and_caps_long_listings(
        fs: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    (fs.root / "empty").mkdir()
    assert fs("list_dir", path="empty") == "empty/ is empty"
    for i in range(5):
        fs.put(f"many/f{i}.txt", "")
    (fs.root / "many" / "ln").symlink_to("f0.txt")
    assert "ln@ (symbolic link)" in fs("list_dir", path="many")
    monkeypatch.setattr(files, "MAX_LIST_ENTRIES", 3)
    assert fs("list_dir", path="many").splitlines()[-1].startswith("[3 more entries")
    with pytest.raises(NotADirectoryError):
        fs("list_dir", path="many/f1.txt")


def test_glob_reports_no_match_and_caps_results(fs: Files,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert fs("glob_files", pattern="*.nothing") == "no files match '*.nothing'"
    assert fs("glob_files", pattern="absent/*.py") == "no files match 'absent/*.py'"
    for i in range(4):
        fs.put(f"f{i}.txt", "")
    with pytest.raises(FileToolError, match="bad \\[...\\] class"):
        fs("glob_files", pattern="[z-a]*.txt")
    monkeypatch.setattr(files, "MAX_GLOB_RESULTS", 2)
    assert fs("glob_files", pattern="*.txt").splitlines() == [
        "f0.txt", "f1.txt", "[stopped at 2 files; use a narrower pattern]"]


@pytest.mark.parametrize(("args", "message"), [
    ({"pattern": "("}, "not a valid regular expression"),
    ({"pattern": ""}, "pattern is empty"),
    ({"pattern": "x", "max_matches": 0}, "max_matches=0 is out of range"),
])
def test_search_refuses_bad_arguments(fs: Files, args: dict[str, Any], message: str) -> None:
    with pytest.raises(FileToolError, match=message):
        fs("search_text", **({"regex": True} | args))


def test_search_stops_at_max_matches_skips_binaries_and_cuts_long_lines(fs: Files) -> None:
    fs.put("a.txt", "hit\n" * 5)
    fs.put("blob.bin", b"hit\x00hit")
    fs.put("long.txt", "hit" + "x" * 1000 + "\n")
    out = fs("search_text", pattern="hit", max_matches=3).splitlines()
    assert out == ["a.txt:1:hit", "a.txt:2:hit", "a.txt:3:hit",
                   "[stopped after 3 matches; narrow path or pattern]"]
    hits = fs("search_text", pattern="hit", path=".", max_matches=100)
    assert "blob.bin" not in hits and hits.endswith("[1 binary, oversized or refused files "
                                                    "skipped]")
    long_hit = [ln for ln in hits.splitlines() if ln.startswith("long.txt")][0]
    assert len(long_hit) == len("long.txt:1:") + files.MAX_LINE_CHARS + 1


def test_search_with_no_hits_says_so(fs: Files) -> None:
    fs.put("a.txt", "nothing here\n")
    assert fs("search_text", pattern="needle") == "no matches for 'needle' in ."


def test_diff_preview_with_identical_content_says_no_changes(fs: Files) -> None:
    fs.put("same.txt", "x\n")
    assert fs("diff_preview", path="same.txt", new_content="x\n") == (
        "no changes: same.txt already has exactly this content")
    fs.put("bin.dat", b"\x00\x01")
    with pytest.raises(FileToolError, match="binary"):
        fs("diff_preview", path="bin.dat", new_content="text")


# -- patterns that backtrack without end ---------------------------------------------------------
class Heartbeat:
    """A task on the Lab's runner loop noting when it runs: a frozen loop leaves a gap."""

    def __init__(self, lab: al.Lab, every_s: float = 0.05) -> None:
        self.beats: list[float] = []
        self._stop = False
        self._every = every_s
        self._fut = asyncio.run_coroutine_threadsafe(self._beat(), lab.runner.loop)

    async def _beat(self) -> None:
        while not self._stop:
            self.beats.append(time.monotonic())
            await asyncio.sleep(self._every)

    def stop(self) -> float:
        """The longest gap between two beats, up to now."""
        self._stop = True
        self._fut.result(timeout=10)
        now = [*self.beats, time.monotonic()]
        return max(b - a for a, b in zip(now, now[1:], strict=False))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[al.Lab]:
    with al.Lab(home=tmp_path / "home") as the_lab:
        the_lab.settings.workspace_path.mkdir(parents=True, exist_ok=True)
        yield the_lab


def test_a_catastrophic_regex_leaves_the_runner_loop_ticking(lab: al.Lab) -> None:
    """The finding: '^(a+)+$' on 28 'a's and '!' held the GIL for 22 s in ``re``."""
    (lab.settings.workspace_path / "aaa.txt").write_text("a" * 28 + "!\n")
    lab.tools.invoke("list_dir", {})  # tools loaded before the heartbeat starts
    beat = Heartbeat(lab)
    start = time.monotonic()
    result = lab.tools.invoke("search_text", {"pattern": "^(a+)+$", "regex": True})
    elapsed = time.monotonic() - start
    gap = beat.stop()
    assert result.ok and result.content.startswith("no matches"), result.content
    assert elapsed < 60
    assert gap < 2.0, f"the runner loop stood still for {gap:.1f} s"


def test_a_regex_that_backtracks_past_the_limit_is_refused_readably(lab: al.Lab) -> None:
    """'(a|a)+$' backtracks in any backtracking engine: 2^26 paths on this line."""
    (lab.settings.workspace_path / "aaa.txt").write_text("a" * 26 + "!\n")
    lab.tools.invoke("list_dir", {})
    beat = Heartbeat(lab)
    start = time.monotonic()
    result = lab.tools.invoke("search_text", {"pattern": "(a|a)+$", "regex": True})
    elapsed = time.monotonic() - start
    gap = beat.stop()
    assert not result.ok and result.rule == "files.regex_timeout", result.content
    assert "simplify" in result.content and "regex=false" in result.content
    assert elapsed < files.REGEX_TIMEOUT_S + 30
    assert gap < 2.0, f"the runner loop stood still for {gap:.1f} s"


def test_a_glob_with_many_stars_is_answered_without_backtracking(lab: al.Lab) -> None:
    """'*a' twelve times then '!' is a regex that backtracks ~10 s in ``re`` on 30 'a's."""
    ws = lab.settings.workspace_path
    (ws / ("a" * 30)).write_text("x")
    (ws / ("a" * 12 + "!")).write_text("x")
    lab.tools.invoke("list_dir", {})
    beat = Heartbeat(lab)
    result = lab.tools.invoke("glob_files", {"pattern": "*a" * 12 + "!"})
    gap = beat.stop()
    assert result.ok and result.content == "a" * 12 + "!", result.content
    assert gap < 2.0, f"the runner loop stood still for {gap:.1f} s"
