"""Path traversal: every payload here must be refused with SafetyViolation by every file tool.

The world is real: a sentinel file sits next to the workspace, and the symlinks, FIFO,
socket and hard link that point at it are created at test time. Payloads that would write
aim at the sentinel (never at system files, since tests may run as root), and after each
write attempt the sentinel's content and mtime, and the outside folder's listing, must be
exactly as before. The TOCTOU tests swap a symlink in after ``resolve`` and before the open.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aillm_lab.errors import SafetyViolation
from aillm_lab.runtime import get_runner
from aillm_lab.tools.files import file_tools
from aillm_lab.tools.paths import Workspace

SECRET = "SENTINEL-CONTENT-do-not-leak"
S = "outside/secret.txt"  # the sentinel, relative to the folder that holds the workspace

# Each template is filled in per world: {abs} the sentinel's absolute path, {abs_} the same
# without the leading '/', {absdir} the outside folder, {root} the workspace, {up} enough
# '../' to reach '/' from the workspace. All of them aim at the sentinel or its folder.
ESCAPES = [
    *("sub/" * k + "../" * (k + 1) + S for k in range(6)),
    *("./" * k + "../" + S for k in range(1, 4)),
    "{up}{abs_}", "{up}../{abs_}", "{up}../../../../{abs_}", "{up}./{abs_}",
    "sub/./../../" + S, "sub//..//..//outside//secret.txt", ".././" + S,
    "sub/deeper/../../../" + S, "sub/../sub/../../" + S, "./sub/.././../outside/./secret.txt",
    "../outside/../" + S, "../ws/../" + S, "..", "../", "../.", "../outside", "../outside/",
    "sub/../..", "../outside/dir/inner.txt", "../" + S + "/", "../" + S + "/.",
    "../outside/new-file.txt", "../outside/newdir/new-file.txt", "sub/deeper/../../../outside",
]
ABSOLUTE = [
    "{abs}", "{absdir}", "{absdir}/", "{absdir}/dir/inner.txt", "{absdir}/new-file.txt",
    "{root}/../" + S, "{root}/sub/../../" + S, "/{abs}", "//{abs_}", "///{abs_}",
    "{root}/link_out", "{root}/link_dir/secret.txt", "/", "/tmp", "/.",
]
HOME = ["~", "~/", "~/.bashrc", "~/../../{abs_}", "~root", "~root/.ssh/authorized_keys",
        "~nobody/x", "~+", "~-", "~/.ssh/id_rsa", "~%2f"]
_ENCODED_UP = ["%2e%2e%2f", "%2e%2e/", "..%2f", "%2E%2E%2F", ".%2e/", "%2e./", "%2e%2e%5c",
               "..%5c", "%252e%252e%252f", "%252e%252e/", "..%252f", "%25252e%25252e%25252f",
               "%2e%2e%252f", "%%32%65%%32%65/"]
ENCODED = [
    *(up + "outside/secret.txt" for up in _ENCODED_UP),
    *(up + "outside%2fsecret.txt" for up in _ENCODED_UP),
    "%2f{abs_}", "%252f{abs_}", "secret.txt%00.png", "%00", "a%0ab", "%7e/.bashrc",
    "C%3a/x", "%2e%2e", "%25%32%65%25%32%65%25%32%66outside",
    "%2525252525252e%2525252525252e/outside",
]
OVERLONG = [
    "%c0%ae%c0%ae/" + S, "%c0%ae%c0%ae%c0%af" + S, "..%c0%af" + S, "%e0%80%ae%e0%80%ae/" + S,
    "%f0%80%80%ae%f0%80%80%ae/" + S, "..%c1%9c" + S, "%c0%2e%c0%2e/" + S, "..%c1%1c" + S,
    "%c0%af{abs_}", "%u002e%u002e/" + S, "%uff0e%uff0e/" + S, "..%u2215" + S,
]
LOOKALIKE = ["．．／outside／secret.txt", "\u2025/" + S, "．．/" + S, "..／" + S,
             "\ufe52\ufe52/" + S, "..＼" + S]
WINDOWS = [
    "..\\outside\\secret.txt", "..\\..\\..\\..\\..\\..\\..\\..\\{abs_}",
    "sub\\..\\..\\outside\\secret.txt", "..\\/outside/secret.txt", "C:\\Windows\\win.ini",
    "c:/windows/win.ini", "C:", "C:outside", "\\\\server\\share\\secret.txt",
    "\\\\?\\C:\\secret.txt", "\\\\.\\pipe\\x", "\\\\localhost\\c$\\x", "\\outside", "..\\",
    "/..\\..\\",
]
NUL_AND_CONTROL = ["a.txt\x00", "\x00", "../\x00", "a.txt\x00/../../" + S, "sub/\x00/x",
                   "a\nb", "a.txt\r", "\x1b[31m", "x\x7f"]
DENIED = [".env", "./.env", "sub/.env", "sub/../.env", ".env/", "sub/deeper/../.env",
          "server.pem", "keys/private.key", "id_rsa", "id_rsa.pub", ".ssh",
          ".ssh/authorized_keys", ".git/config", ".ENV", "SERVER.PEM", "env_link",
          "{root}/.env"]
SPECIAL = ["fifo", "sock", "dev_link", "fifo_link", "/dev/zero", "/dev/null"]
TOO_LONG = ["a" * 256, "a" * 5000, "a/" * 2049, ("b" * 200 + "/") * 25, "../" * 1400 + S]
SYMLINKS = [
    "link_out", "rel_out", "sub/rel_out2", "link_dir", "link_dir/", "link_dir/secret.txt",
    "link_dir/dir/inner.txt", "link_dir/new-file.txt", "link_dir/newdir/new.txt", "chain1",
    "chain2", "root_link", "root_link/{abs_}", "dangling_out", "sub/dir_up/../" + S,
    "loop_a", "loop_a/x", "hard_secret", "link_dir/../" + S, "sub/link_sub_out/secret.txt",
]
ATTACKS = (ESCAPES + ABSOLUTE + HOME + ENCODED + OVERLONG + LOOKALIKE + WINDOWS
           + NUL_AND_CONTROL + DENIED + SPECIAL + TOO_LONG + SYMLINKS)
# System files are only ever *read* at: a write bug must not be able to touch the host.
SYSTEM_READS = [
    "/etc/passwd", "/etc/shadow", "/etc/hosts", "../../../../../../../../etc/passwd",
    "{up}etc/passwd", "/proc/self/environ", "/proc/self/cmdline", "/proc/self/cwd/a.txt",
    "/proc/self/root/etc/passwd", "/proc/self/fd/0", "/dev/random", "/dev/stdin",
    "/sys/kernel/notes", "root_link/etc/passwd", "//etc/passwd", "/root/.ssh/id_rsa",
    "/var/log/syslog", "..%2f..%2f..%2fetc%2fpasswd", "....//....//etc/passwd",
]

READERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "read_file": lambda p: {"path": p},
    "list_dir": lambda p: {"path": p},
    "search_text": lambda p: {"pattern": "SENTINEL", "path": p},
    "glob_files": lambda p: {"pattern": p},
    "diff_preview": lambda p: {"path": p, "new_content": "pwned\n"},
}
WRITERS: dict[str, Callable[[str], dict[str, Any]]] = {
    "write_file": lambda p: {"path": p, "content": "pwned\n"},
    "append_file": lambda p: {"path": p, "content": "pwned\n"},
}


class World:
    """A workspace beside an ``outside`` folder, with every kind of escape hatch planted."""

    def __init__(self, base: Path) -> None:
        self.base, self.outside, self.root = base, base / "outside", base / "ws"
        self.sentinel = self.outside / "secret.txt"
        (self.outside / "dir").mkdir(parents=True)
        self.sentinel.write_text(SECRET)
        (self.outside / "dir" / "inner.txt").write_text(SECRET)
        self._plant(self.root)
        self.ws = Workspace(self.root)
        self.tools = {t.name: t for t in file_tools(self.ws)}
        self.before = self.snapshot()

    def _plant(self, r: Path) -> None:
        for rel, text in {"a.txt": "hello\n", "sub/b.txt": "b\n", "sub/deeper/c.txt": "c\n",
                          ".env": "TOKEN=TOPSECRET\n", "sub/.env": "TOPSECRET\n",
                          "server.pem": "TOPSECRET", "keys/private.key": "TOPSECRET",
                          "id_rsa": "TOPSECRET", "id_rsa.pub": "TOPSECRET",
                          ".ssh/authorized_keys": "TOPSECRET",
                          ".git/config": "[core]\nTOPSECRET\n"}.items():
            (r / rel).parent.mkdir(parents=True, exist_ok=True)
            (r / rel).write_text(text)
        links = {"link_out": self.sentinel, "rel_out": Path("../outside/secret.txt"),
                 "sub/rel_out2": Path("../../outside/secret.txt"), "link_dir": self.outside,
                 "chain1": Path("chain2"), "chain2": Path("chain3"), "chain3": self.sentinel,
                 "root_link": Path("/"), "dangling_out": self.outside / "not-yet.txt",
                 "env_link": Path(".env"), "dev_link": Path("/dev/zero"),
                 "loop_a": Path("loop_b"), "loop_b": Path("loop_a"), "sub/dir_up": Path(".."),
                 "fifo_link": Path("fifo"), "sub/link_sub_out": Path("../../outside")}
        for rel, target in links.items():
            (r / rel).symlink_to(target)
        os.mkfifo(r / "fifo")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(r / "sock"))
        sock.close()
        os.link(self.sentinel, r / "hard_secret")

    def fill(self, template: str) -> str:
        up = "../" * (len(self.root.parts) + 2)
        return (template.replace("{abs_}", str(self.sentinel).lstrip("/"))
                .replace("{abs}", str(self.sentinel)).replace("{absdir}", str(self.outside))
                .replace("{root}", str(self.root)).replace("{up}", up))

    def snapshot(self) -> dict[str, tuple[str, int]]:
        """Every file under the outside folder: content and mtime."""
        return {str(p.relative_to(self.base)): (p.read_text(), p.stat().st_mtime_ns)
                for p in sorted(self.outside.rglob("*")) if p.is_file()}

    def call(self, name: str, args: dict[str, Any]) -> Any:
        return get_runner().run(self.tools[name].acall(args), timeout=30)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("traversal"))
    yield w
    assert w.snapshot() == w.before


def _refused(world: World, tool: str, args: dict[str, Any]) -> SafetyViolation:
    with pytest.raises(SafetyViolation) as info:
        world.call(tool, args)
    err = info.value
    assert err.rule.startswith("path."), err
    assert err.detail and SECRET not in str(err)
    return err


def test_there_are_at_least_150_distinct_payloads() -> None:
    assert len(set(ATTACKS)) == len(ATTACKS)
    assert len(set(ATTACKS + SYSTEM_READS)) >= 150


@pytest.mark.parametrize("payload", ATTACKS)
@pytest.mark.parametrize("tool", sorted(READERS))
def test_read_tools_refuse_payload(world: World, tool: str, payload: str) -> None:
    _refused(world, tool, READERS[tool](world.fill(payload)))


@pytest.mark.parametrize("payload", ATTACKS)
@pytest.mark.parametrize("tool", sorted(WRITERS))
def test_write_tools_refuse_payload_and_leave_the_host_unharmed(world: World, tool: str,
                                                               payload: str) -> None:
    _refused(world, tool, WRITERS[tool](world.fill(payload)))
    assert world.snapshot() == world.before
    assert not os.path.lexists(world.outside / "not-yet.txt")


@pytest.mark.parametrize("payload", SYSTEM_READS)
@pytest.mark.parametrize("tool", sorted(READERS))
def test_system_files_are_refused_to_read_tools(world: World, tool: str, payload: str) -> None:
    _refused(world, tool, READERS[tool](world.fill(payload)))


def test_refusals_name_the_specific_rule(world: World) -> None:
    expect = {"../" + S: "path.outside", "link_out": "path.symlink_escape",
              "..%2fx": "path.encoded", "%c0%ae%c0%ae/x": "path.encoded",
              "..\\x": "path.windows", "~/x": "path.home", "a\x00": "path.nul",
              ".env": "path.denied", "fifo": "path.special", "a" * 300: "path.too_long",
              "loop_a": "path.symlink_loop", "hard_secret": "path.hardlink",
              "．．／x": "path.lookalike", "": "path.empty"}
    for payload, rule in expect.items():
        assert _refused(world, "read_file", {"path": payload}).rule == rule, payload


def test_writes_into_git_internals_are_refused(world: World) -> None:
    err = _refused(world, "write_file", {"path": ".git/hooks/post-commit", "content": "x"})
    assert err.rule == "path.git_internal"
    assert not (world.root / ".git" / "hooks").exists()


def test_listings_and_searches_never_show_denied_or_outside_files(world: World) -> None:
    everything = world.call("glob_files", {"pattern": "**/*"})
    listing = world.call("list_dir", {"path": "."})
    found = world.call("search_text", {"pattern": "SECRET", "path": "."})
    for text in (everything, listing, found):
        assert ".env" not in text and "id_rsa" not in text and "server.pem" not in text
        assert SECRET not in text and "TOPSECRET" not in text
    assert "a.txt" in everything and "sub/deeper/c.txt" in everything
    assert "link_out" not in everything and "chain1" not in everything
    assert "a.txt" in listing and "link_dir@" in listing


# -- TOCTOU: the target changes between resolve() and open() -----------------------------------
@pytest.fixture
def race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(tmp_path)
    (w.root / "data").mkdir()
    (w.root / "data" / "target.txt").write_text("inside\n")
    (w.outside / "target.txt").write_text(SECRET)
    w.before = w.snapshot()
    yield w
    assert w.snapshot() == w.before


def _swap_after_resolve(w: World, monkeypatch: pytest.MonkeyPatch, swap: Callable[[], None],
                        *, on_write: bool) -> None:
    """Run ``swap`` right after the resolve() that the open is about to trust."""
    original = w.ws.resolve

    def resolve(path: Any, *, write: bool = False) -> Path:
        result = original(path, write=write)
        if write == on_write:
            swap()
        return result

    monkeypatch.setattr(w.ws, "resolve", resolve)


def _file_to_link(w: World) -> Callable[[], None]:
    def swap() -> None:
        target = w.root / "data" / "target.txt"
        target.unlink()
        target.symlink_to(w.outside / "target.txt")
    return swap


def _file_to_hardlink(w: World) -> Callable[[], None]:
    def swap() -> None:
        target = w.root / "data" / "target.txt"
        target.unlink()
        os.link(w.outside / "target.txt", target)
    return swap


def _dir_to_link(w: World) -> Callable[[], None]:
    def swap() -> None:
        (w.root / "data").rename(w.root / "data-moved")
        (w.root / "data").symlink_to(w.outside)
    return swap


@pytest.mark.parametrize(("swap", "rule"), [(_file_to_link, "path.changed"),
                                            (_dir_to_link, "path.changed"),
                                            (_file_to_hardlink, "path.hardlink")])
@pytest.mark.parametrize(("tool", "args", "on_write"), [
    ("read_file", {"path": "data/target.txt"}, False),
    ("search_text", {"pattern": "SENTINEL", "path": "data/target.txt"}, False),
    ("write_file", {"path": "data/target.txt", "content": "pwned"}, True),
    ("append_file", {"path": "data/target.txt", "content": "pwned"}, True),
])
def test_symlink_swapped_in_after_resolve_is_refused_at_open(
        race: World, monkeypatch: pytest.MonkeyPatch, swap: Callable[[World], Any], rule: str,
        tool: str, args: dict[str, Any], on_write: bool) -> None:
    _swap_after_resolve(race, monkeypatch, swap(race), on_write=on_write)
    if tool == "search_text":  # search skips a file it cannot open safely, and says so
        assert SECRET not in race.call(tool, args)
        return
    assert _refused(race, tool, args).rule == rule


def test_folder_swapped_for_a_link_is_refused_by_list_dir(
        race: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _swap_after_resolve(race, monkeypatch, _dir_to_link(race), on_write=False)
    assert _refused(race, "list_dir", {"path": "data"}).rule == "path.changed"


def test_fifo_swapped_in_after_resolve_is_refused_without_blocking(
        race: World, monkeypatch: pytest.MonkeyPatch) -> None:
    def swap() -> None:
        target = race.root / "data" / "target.txt"
        target.unlink()
        os.mkfifo(target)

    _swap_after_resolve(race, monkeypatch, swap, on_write=False)
    assert _refused(race, "read_file", {"path": "data/target.txt"}).rule == "path.special"
