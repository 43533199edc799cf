"""What the Python sandbox may read as "Python's libs": the standard library and the
environment's site-packages, never other ``sys.path`` entries such as an editable project.

Red-team finding: a venv whose site-packages holds a path-style editable ``.pth`` (as
hatchling, poetry, pdm, uv and setuptools' src layout write) put the user's project folder
on the worker's ``sys.path``, and every ``sys.path`` folder was readable, so model code read
the project's ``.env``. The test builds that venv and runs the sandbox from its interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import aillm_lab

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX sandbox")

SECRET = "STRIPE_SECRET=sk_live_projectsecret_0123456789"
REPO = Path(aillm_lab.__file__).resolve().parent.parent
OUR_SITE = next(p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p))

# runs in the user's venv: aillm_lab and its dependencies come from sys.path set at run
# time, so the only .pth-added folder is the editable project's
CHILD = """
import json, sys
sys.path[:0] = [{repo!r}, {site!r}]
from aillm_lab.tools.policy import CodePolicy
from aillm_lab.tools.python import PythonSandbox
out = []
with PythonSandbox(CodePolicy(memory_mb=512, wall_s=20)) as sb:
    for code in {codes!r}:
        r = sb.run(code)
        out.append({{"ok": r.ok, "text": r.to_text(), "refused": r.refused, "value": r.value}})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The sandbox's answers to the codes below, run from a venv with an editable project."""
    root = tmp_path_factory.mktemp("userenv")
    proj = root / "proj"
    proj.mkdir()
    (proj / ".env").write_text(SECRET + "\n")
    (proj / "projmod.py").write_text("VALUE = 'from the project'\n")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    (site / "__editable__.proj-0.1.pth").write_text(f"{proj}\n")
    (site / "sitepkg_ok.py").write_text("VALUE = 'from site-packages'\n")
    codes = [
        f"open({str(proj / '.env')!r}).read()",
        f"import os\nos.listdir({str(proj)!r})",
        f"import sys\n[p for p in sys.path if p.startswith({str(proj)!r})]",
        "import json, sitepkg_ok\nsitepkg_ok.VALUE",
        "import projmod",
    ]
    child = CHILD.format(repo=str(REPO), site=OUR_SITE, codes=codes)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", child], capture_output=True,
                          text=True, timeout=240, env=env, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_an_editable_projects_env_file_is_not_readable(results: list[dict]) -> None:
    read = results[0]
    assert SECRET not in read["text"] and "sk_live" not in read["text"]
    assert not read["ok"] and "code.path (open)" in read["refused"]


def test_an_editable_projects_folder_cannot_be_listed(results: list[dict]) -> None:
    listing = results[1]
    assert ".env" not in listing["text"] and not listing["ok"]


def test_the_project_folder_is_not_on_the_sandboxs_sys_path(results: list[dict]) -> None:
    assert results[2]["ok"] and results[2]["value"] == "[]"


def test_the_stdlib_and_site_packages_still_import(results: list[dict]) -> None:
    imported = results[3]
    assert imported["ok"], imported["text"]
    assert imported["value"] == "'from site-packages'" and imported["refused"] == []


def test_the_editable_package_is_simply_not_found_without_a_refusal(
        results: list[dict]) -> None:
    """The documented cost: it does not import, and the miss is no refused listing."""
    missing = results[4]
    assert not missing["ok"] and "ModuleNotFoundError" in missing["text"]
    assert missing["refused"] == []
