"""A Python installation without a venv or conda marker is read-only too (red-team F4b).

The attack: the workspace is a home folder with a pyenv install at
``.pyenv/versions/3.11.2`` (no ``pyvenv.cfg``, no ``conda-meta``); ``append_file`` adds a
line to ``lib/python3.11/encodings/__init__.py``, which that Python imports at every start.
The installation is recognised by its layout, the landmark CPython itself uses to find its
prefix (``lib/pythonX.Y/os.py``; ``Lib/os.py`` on Windows), or a standard library folder.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PREFIX = ".pyenv/versions/3.11.2"
STDLIB = f"{PREFIX}/lib/python3.11"
ENCODINGS = f"{STDLIB}/encodings/__init__.py"
ORIGINAL = "# the standard library's own\n"


def fake_install(ws: Path) -> None:
    """What ``pyenv install 3.11.2`` leaves (only the stdlib's landmark matters)."""
    (ws / STDLIB / "encodings").mkdir(parents=True)
    (ws / STDLIB / "site-packages").mkdir()
    (ws / PREFIX / "bin").mkdir()
    (ws / STDLIB / "os.py").write_text(ORIGINAL)
    (ws / ENCODINGS).write_text(ORIGINAL)
    (ws / PREFIX / "bin/python3.11").write_text("#!/bin/sh\n")


@pytest.fixture
def lab(python_shell_lab: Any) -> Any:
    fake_install(python_shell_lab.tools.workspace.root)
    return python_shell_lab


@pytest.mark.parametrize("path", [ENCODINGS, f"{STDLIB}/site.py", f"{PREFIX}/bin/python3.11",
                                  f"{STDLIB}/site-packages/zz.py", f"{PREFIX}/new.txt"])
def test_write_and_append_refuse_anything_inside_an_installation(lab: Any, path: str) -> None:
    ws = lab.tools.workspace.root
    for tool in ("write_file", "append_file"):
        result = lab.tools.invoke(tool, {"path": path, "content": "import os\n"})
        assert not result.ok and result.rule == "path.python_env", result.content
        assert f"'{PREFIX}'" in result.content and "lib/python3.11/os.py" in result.content
    assert (ws / ENCODINGS).read_text() == ORIGINAL


@pytest.mark.parametrize(("layout", "target"), [
    (["py/Lib/os.py"], "py/python.exe"),  # a Windows install
    (["std/os.py", "std/encodings/__init__.py"], "std/encodings/__init__.py"),  # a lone stdlib
    (["pp/lib/pypy3.10/os.pyc"], "pp/bin/pypy3"),  # PyPy, sourceless
])
def test_other_installation_layouts_are_read_only(python_shell_lab: Any, layout: list[str],
                                                  target: str) -> None:
    ws = python_shell_lab.tools.workspace.root
    for path in layout:
        (ws / path).parent.mkdir(parents=True, exist_ok=True)
        (ws / path).write_text(ORIGINAL)
    result = python_shell_lab.tools.invoke("write_file", {"path": target, "content": "x\n"})
    assert result.rule == "path.python_env", result.content


@pytest.mark.parametrize("path", ["src/lib/python_utils/os.py", "proj/lib/python3.11/notes.md",
                                  "tools/os.py", "lib/helpers.py"])
def test_folders_that_only_look_a_little_like_python_stay_writable(python_shell_lab: Any,
                                                                   path: str) -> None:
    ws = python_shell_lab.tools.workspace.root
    (ws / "src/lib/python_utils").mkdir(parents=True)
    (ws / "src/lib/python_utils/os.py").write_text("# a project's own module\n")
    result = python_shell_lab.tools.invoke("write_file", {"path": path, "content": "x = 1\n"})
    assert result.ok, result.content
    assert python_shell_lab.tools.invoke("write_file", {"path": "src/other.py",
                                                        "content": "x\n"}).ok


def test_a_real_python_prefix_is_recognised(python_shell_lab: Any) -> None:
    """The layout rule against a real interpreter's own prefix, not a hand-made one."""
    out = subprocess.run([sys.executable, "-c", "import os, sysconfig; "
                          "print(os.path.relpath(sysconfig.get_path('stdlib'), "
                          "sysconfig.get_config_var('installed_base')))"],
                         capture_output=True, text=True, check=True)
    rel = out.stdout.strip()  # lib/python3.X on POSIX
    ws = python_shell_lab.tools.workspace.root
    (ws / "prefix" / rel / "encodings").mkdir(parents=True)
    (ws / "prefix" / rel / "os.py").write_text(ORIGINAL)
    result = python_shell_lab.tools.invoke("write_file", {"path": "prefix/bin/python3",
                                                          "content": "x\n"})
    assert result.rule == "path.python_env", result.content


# -- the shell jail ---------------------------------------------------------------------------
def test_a_shell_call_sees_the_installation_read_only(lab: Any) -> None:
    ws = lab.tools.workspace.root
    script = ("import os\n"
              f"for path in ({ENCODINGS!r}, {STDLIB + '/site-packages/a.pth'!r},\n"
              f"             {PREFIX + '/bin/python3.11'!r}):\n"
              "    try:\n"
              "        open(path, 'a').write('import os\\n')\n"
              "        print('WROTE', path)\n"
              "    except OSError as exc:\n"
              "        print('refused', exc.errno)\n"
              "open('notes.txt', 'w').write('fine\\n')\n")
    assert lab.tools.invoke("write_file", {"path": "mk.py", "content": script}).ok
    result = lab.tools.invoke("run_shell", {"command": "python3 mk.py"})
    assert result.ok and "exit code 0" in result.content, result.content
    assert "WROTE" not in result.content and result.content.count("refused") == 3
    assert (ws / ENCODINGS).read_text() == ORIGINAL
    assert (ws / "notes.txt").exists()


def test_an_installation_made_in_an_old_folder_is_protected_at_the_next_call(
        python_shell_lab: Any) -> None:
    """The jail's scan re-reads only changed folders: a landmark two levels down must still
    make the prefix read-only at the next call."""
    ws = python_shell_lab.tools.workspace.root
    (ws / "opt/py/lib/python3.12").mkdir(parents=True)
    (ws / "opt/py/bin").mkdir()
    (ws / "opt/py/bin/python3").write_text(ORIGINAL)
    assert python_shell_lab.tools.invoke("run_shell", {"command": "ls opt/py"}).ok
    (ws / "opt/py/lib/python3.12/os.py").write_text(ORIGINAL)
    result = python_shell_lab.tools.invoke("run_shell", {"command": "sort -o opt/py/bin/python3 "
                                                                    "opt/py/bin/python3"})
    assert "exit code 0" not in str(result.content), result.content
