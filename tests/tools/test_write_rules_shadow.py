"""No tool call can plant a module that the Lab's own Python imports (red-team F3).

The attack: the workspace is the notebook's working folder and ipykernel puts ``''`` first
on ``sys.path``; ``write_file`` creates ``duckdb.py`` in the workspace root, and the next
``sql_query`` imports duckdb lazily and runs that file in the Lab's process, with every API
key, outside jail and sandbox. The rule judges names, not payloads: a module file directly
in a folder on ``sys.path`` may not take a name this Python imports.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al

PAYLOAD = "import os\nraise ImportError('planted')\n"


def write(lab: Any, path: str, content: str = PAYLOAD) -> Any:
    return lab.tools.invoke("write_file", {"path": path, "content": content})


@pytest.fixture
def lab(python_shell_lab: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Lab whose workspace is this process's working folder, with ``''`` first on
    ``sys.path``: what a notebook kernel started in the workspace has."""
    monkeypatch.chdir(python_shell_lab.tools.workspace.root)
    monkeypatch.setattr(sys, "path", ["", *sys.path])
    return python_shell_lab


@pytest.mark.parametrize("path", ["duckdb.py", "pandas.py", "numpy.pyc", "json.py",
                                  "duckdb.cpython-311-x86_64-linux-gnu.so",
                                  "duckdb/__init__.py", "httpx/__init__.pyc"])
def test_write_file_refuses_a_module_that_shadows_one_the_lab_imports(lab: Any,
                                                                      path: str) -> None:
    ws = lab.tools.workspace.root
    result = write(lab, path)
    assert not result.ok and result.rule == "path.shadows_module", result.content
    module = path.split("/")[0].split(".")[0]
    assert f"'{module}'" in result.content and "another file name" in result.content
    assert not (ws / path).exists()


def test_the_planted_module_is_not_what_python_would_import(lab: Any) -> None:
    ws = lab.tools.workspace.root
    assert not write(lab, "duckdb.py").ok
    appended = lab.tools.invoke("append_file", {"path": "duckdb.py", "content": PAYLOAD})
    assert appended.rule == "path.shadows_module", appended.content
    spec = importlib.util.find_spec("duckdb")
    assert spec is not None and spec.origin and not spec.origin.startswith(str(ws))


def test_a_name_only_this_process_has_loaded_is_protected_too(
        lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zz_loaded_plugin", types.ModuleType("zz_loaded_plugin"))
    assert write(lab, "zz_loaded_plugin.py").rule == "path.shadows_module"


def test_a_module_an_installed_package_imports_optionally_is_protected(lab: Any) -> None:
    """duckdb and pandas import pyarrow when they find one (an extra they declare), and
    pyarrow need not be installed for a planted ``pyarrow.py`` to run."""
    assert write(lab, "pyarrow.py").rule == "path.shadows_module"
    assert write(lab, "pyarrow/__init__.py").rule == "path.shadows_module"


@pytest.mark.parametrize("path", ["mpl_toolkits/mplot3d/__init__.py",
                                  "mpl_toolkits/evil.py", "duckdb/experimental/x.py"])
def test_a_module_below_a_package_named_folder_is_refused(lab: Any, path: str) -> None:
    """A namespace package (``mpl_toolkits``) takes parts from every folder on sys.path, the
    working folder first: a planted ``mplot3d`` there comes before matplotlib's own."""
    result = write(lab, path)
    assert result.rule == "path.shadows_module", result.content
    assert not (lab.tools.workspace.root / path).exists()


def test_an_ordinary_module_name_or_folder_stays_writable(lab: Any) -> None:
    ws = lab.tools.workspace.root
    for path in ("my_helpers.py", "scripts/duckdb.py", "duckdb_notes.md", "pandas.txt",
                 "numpy/data.csv", "scripts/duckdb/__init__.py", "my-lib/pandas/__init__.py"):
        result = write(lab, path, "x = 1\n")
        assert result.ok, (path, result.content)
        assert (ws / path).exists()


def test_a_module_this_process_loaded_from_the_workspace_stays_editable(
        lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook's own ``zz_analysis.py`` and ``zz_pkg/``, imported from its working
    folder, are the user's code, not shadows of it; a library's name beside them still is."""
    ws = lab.tools.workspace.root
    (ws / "zz_analysis.py").write_text("x = 1\n")
    own = types.ModuleType("zz_analysis")
    own.__file__ = str(ws / "zz_analysis.py")
    monkeypatch.setitem(sys.modules, "zz_analysis", own)
    assert write(lab, "zz_analysis.py", "x = 2\n").ok
    assert write(lab, "zz_analysis.pyc").rule == "path.shadows_module"
    (ws / "zz_pkg").mkdir()
    package = types.ModuleType("zz_pkg")
    package.__path__ = [str(ws / "zz_pkg")]
    monkeypatch.setitem(sys.modules, "zz_pkg", package)
    assert write(lab, "zz_pkg/__init__.py", "x = 1\n").ok
    assert write(lab, "zz_pkg/models/core.py", "x = 1\n").ok
    assert write(lab, "duckdb.py").rule == "path.shadows_module"
    assert write(lab, "duckdb/core.py").rule == "path.shadows_module"


def test_the_same_name_is_fine_when_the_workspace_is_not_on_sys_path(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    assert str(ws) not in sys.path
    with al.Lab(home=tmp_path / "home", workspace=ws) as the_lab:
        assert write(the_lab, "duckdb.py", "x = 1\n").ok


def test_a_folder_on_sys_path_below_the_workspace_is_protected(
        python_shell_lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = python_shell_lab.tools.workspace.root
    (ws / "src").mkdir()
    (ws / "src_link").symlink_to(ws / "src")
    monkeypatch.setattr(sys, "path", [*sys.path, str(ws / "src_link")])
    assert write(python_shell_lab, "src/pandas.py").rule == "path.shadows_module"
    assert write(python_shell_lab, "pandas.py", "x = 1\n").ok  # the root is not on the path


# -- the shell jail ---------------------------------------------------------------------------
def test_a_shell_call_that_plants_shadowing_modules_has_them_swept(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "numpy").mkdir()  # the user's data folder of that name: kept
    (ws / "numpy/data.csv").write_text("a\n1\n")
    script = ("import os\n"
              "open('duckdb.py', 'w').write('import os\\n')\n"
              "os.makedirs('pandas', exist_ok=True)\n"
              "open('pandas/__init__.py', 'w').write('import os\\n')\n"
              "open('numpy/__init__.py', 'w').write('import os\\n')\n"
              "os.makedirs('mpl_toolkits/mplot3d', exist_ok=True)\n"
              "open('mpl_toolkits/mplot3d/__init__.py', 'w').write('import os\\n')\n"
              "os.makedirs('sub', exist_ok=True)\n"
              "open('sub/__init__.py', 'w').write('import os\\n')\n"
              "os.symlink('sub', 'httpx')\n"
              "open('my_helpers.py', 'w').write('x = 1\\n')\n"
              "os.makedirs('scripts', exist_ok=True)\n"
              "open('scripts/duckdb.py', 'w').write('x = 1\\n')\n")
    assert write(lab, "mk.py", script).ok
    result = lab.tools.invoke("run_shell", {"command": "python3 mk.py"})
    assert result.ok and "exit code 0" in result.content, result.content
    for made in ("duckdb.py", "pandas/__init__.py", "numpy/__init__.py",
                 "mpl_toolkits/mplot3d/__init__.py", "httpx"):
        assert not (ws / made).is_symlink() and not (ws / made).exists(), result.content
        assert f"removed {made} " in result.content
    assert "sys.path" in result.content and (ws / "sub/__init__.py").exists()
    assert (ws / "numpy/data.csv").exists() and (ws / "my_helpers.py").exists()
    assert (ws / "scripts/duckdb.py").exists()


def test_an_existing_shadowing_module_is_read_only_to_the_shell(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "duckdb.py").write_text("# the user's own\n")
    script = ("try:\n"
              "    open('duckdb.py', 'a').write('import os\\n')\n"
              "    print('WROTE')\n"
              "except OSError as exc:\n"
              "    print('refused', exc.errno)\n")
    assert write(lab, "mk.py", script).ok
    result = lab.tools.invoke("run_shell", {"command": "python3 mk.py"})
    assert result.ok and "refused" in result.content and "WROTE" not in result.content
    assert (ws / "duckdb.py").read_text() == "# the user's own\n"
