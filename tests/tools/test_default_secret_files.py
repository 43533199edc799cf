"""The default deny list covers the usual credential files, not only ``.env`` (red-team D1, DL1).

Before: ``read_file`` returned ``.env.local``, ``.netrc``, ``.pgpass``, ``.npmrc``,
``.git-credentials``, ``.aws/credentials``, a Docker ``config.json`` with registry auth and
``secrets.yaml`` in clear, and ``write_file`` could create ``.env.local``. Each file here
holds a value that must never reach the model through the file tools or a shell command.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al

SECRET = "DenyListProbe_7f3a9c"
SECRET_FILES = [
    ".env.local", "app/.env.production", ".env.example", ".netrc", "_netrc", ".pgpass",
    ".npmrc", ".pypirc", ".git-credentials", ".aws/credentials", ".aws/config",
    ".docker/config.json", ".kube/config", "secrets.yaml", "deploy/secrets.yml",
    "secrets.json", "infra/terraform.tfstate", "infra/terraform.tfstate.backup",
    "keys/id_ed25519", "id_ecdsa", "id_dsa.pub",
    # red-team DL1: direnv, Streamlit, Google OAuth / service accounts, s3cmd, Vault, gh ...
    ".envrc", ".streamlit/secrets.toml", "credentials.json", "gcp/credentials.json",
    "client_secret_123.apps.googleusercontent.com.json", "gcp/service-account.json",
    "service-account-key.json", ".config/gcloud/application_default_credentials.json",
    ".s3cfg", ".boto", ".vault-token", ".config/gh/hosts.yml", "site/.htpasswd",
    "certs/client.p12", "certs/client.pfx", ".cargo/credentials.toml", ".gem/credentials",
    ".terraform.d/credentials.tfrc.json",
]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    ws = tmp_path / "ws"
    ws.mkdir()
    for rel in SECRET_FILES:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(f"password = {SECRET}\n")
    (ws / "notes.txt").write_text("nothing secret\n")
    with al.Lab(home=tmp_path / "home", workspace=ws) as the_lab:
        yield the_lab


def test_the_defaults_still_deny_the_old_names() -> None:
    globs = al.SafetyPolicy().paths.deny_globs
    for old in ("**/.env", "**/*.pem", "**/*.key", "**/id_rsa*", "**/.git/config",
                "**/.ssh/**"):
        assert old in globs


@pytest.mark.parametrize("rel", SECRET_FILES)
def test_read_file_refuses_a_credential_file(lab: Any, rel: str) -> None:
    result = lab.tools.invoke("read_file", {"path": rel})
    assert not result.ok and result.rule == "path.denied", result.content
    assert SECRET not in str(result.content)


@pytest.mark.parametrize("rel", ["new/.env.local", ".netrc", "x/.aws/credentials",
                                 "secrets.yml", "state.tfstate"])
def test_write_file_refuses_a_credential_file(lab: Any, rel: str) -> None:
    result = lab.tools.invoke("write_file", {"path": rel, "content": "OPENAI_BASE_URL=x\n"})
    assert not result.ok and result.rule == "path.denied", result.content
    ws = lab.tools.workspace.root
    assert rel in SECRET_FILES or not (ws / rel).exists()


@pytest.mark.parametrize("rel", [".env.local", ".git-credentials", ".docker/config.json",
                                 "deploy/secrets.yml"])
def test_run_shell_cannot_read_a_credential_file(lab: Any, rel: str) -> None:
    result = lab.tools.invoke("run_shell", {"command": ["cat", rel]})
    assert SECRET not in str(result.content), result.content


def test_a_shell_search_sees_none_of_them(lab: Any) -> None:
    result = lab.tools.invoke("run_shell", {"command": "grep -r password ."})
    assert SECRET not in str(result.content), result.content
    assert "nothing secret" in str(
        lab.tools.invoke("run_shell", {"command": "grep -r nothing ."}).content)


def test_ordinary_files_beside_them_stay_readable(lab: Any) -> None:
    ws = lab.tools.workspace.root
    for rel in (".env_notes.md", "env.local", "secrets.md", "config.json",
                "aws/credentials.txt", "credentials.md", "service.json", "gh/hosts.yml"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text("fine\n")
        result = lab.tools.invoke("read_file", {"path": rel})
        assert result.ok and "fine" in str(result.content), (rel, result.content)


def test_the_refusal_names_the_globs_that_matched_not_the_whole_list(lab: Any) -> None:
    result = lab.tools.invoke("read_file", {"path": "app/.env.local"})
    assert result.rule == "path.denied"
    assert "(PathPolicy.deny_globs: **/.env.*)" in result.content
    assert "**/.netrc" not in result.content  # the other globs are not listed
