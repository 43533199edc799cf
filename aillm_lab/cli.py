"""``aillm-lab``: doctor, reset, models pull/list, and serve the workbench.

argparse rather than click or typer: a few small commands do not justify a dependency, and
the CLI must start fast and work before any extra is installed.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from aillm_lab.config import LabSettings
from aillm_lab.errors import AillmError, ConfigError

PACKAGES = ("aillm-lab", "pydantic", "pydantic-settings", "llama-cpp-python", "torch",
            "transformers", "xgrammar", "sentence-transformers", "panel", "openai", "anthropic",
            "ollama")
EXIT_CONFIG, EXIT_FAILED = 2, 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_CONFIG
    try:
        if args.config is not None and not args.config.expanduser().is_file():
            raise ConfigError(f"--config {str(args.config)!r}: no such TOML file. Create it "
                              "or give the path of one that exists.", fields=("config",))
        settings = LabSettings.load(config_file=args.config)
        return args.run(args, settings) or 0
    except ConfigError as exc:
        print(f"aillm-lab: configuration error\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except AillmError as exc:
        print(f"aillm-lab: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


# -- doctor -----------------------------------------------------------------------------------
def doctor(args: argparse.Namespace, settings: LabSettings) -> int:
    """Print what this machine has and which model a bare ``al.chat`` would use, and why."""
    from aillm_lab.db import check
    from aillm_lab.llm.local_files import list_models, pull_command
    from aillm_lab.llm.registry import _ollama_answers, default_model
    from aillm_lab.tools.git_exec import exec_guard_status
    from aillm_lab.tools.jail import confinement_status

    say = print
    say(f"python      {platform.python_version()} ({sys.executable})")
    for name in PACKAGES:
        say(f"  {name:<22} {_version(name)}")
    say(f"home        {settings.home}")
    say("data")
    for label, path in _data_paths(settings):
        say(f"  {label:<22} {path} ({_size(path)})")
    healthy, detail = check(settings.db_path)
    say(f"  {'lab.db check':<22} {'ok' if healthy else 'PROBLEM'}: {detail}")
    if healthy and settings.db_path.exists():
        for info in _collections(settings):
            say(f"  {'collection ' + info.name:<22} {info.documents} docs, {info.chunks} "
                f"chunks, {info.model_id}, about {info.disk_bytes / 1e6:.1f} MB")
    _, confinement = confinement_status(settings.workspace_path)
    say(f"tools\n  {'shell and git':<22} {confinement}")
    say(f"  {'git exec allowlist':<22} {exec_guard_status()[1]}")
    say("local models")
    for row in list_models(settings.model_path):
        say(f"  {row['model']:<22} {row['status']:<8} {row['path']}")
        if row["status"] == "missing":
            name = row["model"].removeprefix("local:")
            say(f"  {'':<22} fetch it with: {pull_command(name, settings.model_path)}")
    engine, why = _local_engine(settings)
    say(f"  {'engine':<22} {engine}: {why}")
    say("provider keys")
    for label, key in (("OPENAI_API_KEY", settings.openai_api_key),
                       ("ANTHROPIC_API_KEY", settings.anthropic_api_key)):
        say(f"  {label:<22} {mask(None if key is None else key.get_secret_value())}")
    answers = _ollama_answers(settings.ollama_host)
    say(f"ollama      {settings.ollama_host}: {'answers' if answers else 'no server answers'}")
    spec, reason = default_model(settings)
    say(f"default model  {spec}\n  why: {reason}")
    return 0 if healthy else EXIT_FAILED


def _collections(settings: LabSettings) -> list[Any]:
    """The RAG collections in ``lab.db`` with what each holds and about how much disk."""
    from aillm_lab.rag.retriever import Knowledge

    with Knowledge(settings, progress=False) as kb:
        return kb.collections()


def _local_engine(settings: LabSettings) -> tuple[str, str]:
    """Which engine runs a ``local:`` GGUF here, and why (llama.cpp, or the fallback)."""
    from aillm_lab.llm.llamacpp import default_threads
    from aillm_lab.llm.local import choose_backend
    from aillm_lab.llm.local_files import KNOWN_MODELS

    try:
        engine, why = choose_backend(settings.model_path / KNOWN_MODELS["smollm2"].filename,
                                     settings)
    except AillmError as exc:
        return "none", str(exc)
    if engine == "llama.cpp":
        threads = settings.local.n_threads or default_threads()
        why += f"; {threads} threads (local.n_threads)"
    return engine, why


def _data_paths(settings: LabSettings) -> list[tuple[str, Path]]:
    """Where each store lives, so users know what to back up, inspect or delete."""
    return [("call log (Parquet)", settings.home / "calls"),
            (f"record/replay ({settings.cache_mode})", settings.home / "cache.db"),
            ("lab.db (audit, RAG, memory)", settings.db_path),
            ("tool workspace", settings.workspace_path)]


def _size(path: Path) -> str:
    if not path.exists():
        return "not created yet"
    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    total = sum(p.stat().st_size for p in files)
    return f"{len(files)} file{'s' * (len(files) != 1)}, {total / 1e6:.1f} MB"


def mask(secret: str | None) -> str:
    """Whether a key is set, never the key: only its length and a 3-character vendor prefix."""
    if not secret:
        return "not set"
    prefix = secret[:3] if len(secret) >= 20 else ""
    return f"set ({prefix}{'*' * 8}, {len(secret)} chars)"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


# -- reset ------------------------------------------------------------------------------------
def reset(args: argparse.Namespace, settings: LabSettings) -> int:
    """Move a lost, damaged or foreign ``lab.db`` aside (never delete it) and start empty.

    Only with ``--confirm``: CI has no stdin, so it never prompts; without it, it says what
    it would do and exits with status 2.
    """
    from aillm_lab.db import check, id_path
    from aillm_lab.db import reset as reset_db

    path = settings.db_path
    healthy, detail = check(path)
    print(f"lab.db  {path}\n  {'ok' if healthy else 'PROBLEM'}: {detail}")
    moves = reset_db(path, dry_run=not args.confirm)
    if not args.confirm:
        for src, dst in moves:
            print(f"  would move {src} -> {dst}")
        print(f"  would start an empty lab with a new id in {id_path(path)}\n"
              "aillm-lab reset: nothing changed; run `aillm-lab reset --confirm` to do it "
              "(close any lab using this home first).", file=sys.stderr)
        return EXIT_CONFIG
    for src, dst in moves:
        print(f"  moved {src} -> {dst}")
    print(f"  started an empty lab: {path} with id {id_path(path).read_text().strip()}")
    return 0


# -- models -----------------------------------------------------------------------------------
def models_pull(args: argparse.Namespace, settings: LabSettings) -> int:
    from aillm_lab.llm.local_files import pull

    pull(args.name, settings.model_path, force=args.force, progress=not args.no_progress)
    return 0


def models_list(args: argparse.Namespace, settings: LabSettings) -> int:
    from aillm_lab.llm.local_files import list_models

    print(f"models in {settings.model_path}")
    for row in list_models(settings.model_path):
        print(f"  {row['model']:<22} {row['status']:<8} {row['description']}\n"
              f"  {'':<22} {row['path']}")
    return 0


# -- serve ------------------------------------------------------------------------------------
def serve(args: argparse.Namespace, settings: LabSettings) -> int:
    """Serve the workbench with Panel until interrupted."""
    try:
        import panel as pn
    except ImportError:
        raise AillmError('the dashboard needs Panel: pip install "aillm-lab[dashboard]"') from None
    from aillm_lab.core.lab import Lab
    from aillm_lab.llm.registry import check_spec
    from aillm_lab.ui.workbench.app import TITLE, create_app
    from aillm_lab.ui.workbench.preload import Preload

    host = args.host or settings.dashboard_host
    port = settings.dashboard_port if args.port is None else args.port
    if not 1 <= port <= 65535:
        raise ConfigError(f"--port = {port}: must be between 1 and 65535.", fields=("port",))
    if args.model is not None:  # Lab checks it too, but would name model=, not the option
        check_spec(args.model, "--model")
    extra = model_list(args.models)
    lab = Lab(settings, model=args.model)
    model_id, reason = lab.default_model_reason()
    print(f"AILLM Lab workbench on http://{host}:{port} — model {model_id} ({reason})",
          flush=True)
    preload = Preload(lab)  # pages show a loading state until the model is in memory
    origins = [f"{h}:{port}" for h in {host, "localhost", "127.0.0.1"}]
    pn.serve({"/": lambda: create_app(lab, max_tokens=args.max_tokens, preload=preload,
                                      models=extra)},
             port=port,
             address=host, websocket_origin=origins, show=args.show, title=TITLE,
             liveness=True, verbose=False)
    return 0


def model_list(text: str | None) -> list[str]:
    """``--models a:b,c:d`` as specs, each checked here (its form and a known provider), so
    a typo stops the server at start instead of failing in the picker later. No model is
    created: a key or a download is needed only when the model is picked."""
    from aillm_lab.llm.registry import check_spec

    specs = [s.strip() for s in (text or "").split(",") if s.strip()]
    for spec in specs:
        check_spec(spec, "--models", "; separate several with commas")
    return specs


# -- parser -----------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aillm-lab", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=None,
                        help="a TOML settings file (default: $AILLM_CONFIG)")
    commands = parser.add_subparsers(title="commands")
    _command(commands, "doctor", doctor, "show versions, models, keys (masked), the default "
             "model and whether lab.db passes PRAGMA quick_check")
    reset_cmd = _command(commands, "reset", reset, "move a lost, damaged or foreign lab.db "
                         "aside (renamed, never deleted) and start an empty lab")
    reset_cmd.add_argument("--confirm", action="store_true",
                           help="do it; without this flag reset only says what it would do")
    models = commands.add_parser("models", help="fetch and list local models")
    sub = models.add_subparsers(title="models commands", required=True)
    pull = _command(sub, "pull", models_pull, "download and verify a known local model")
    pull.add_argument("name", help="a known model, e.g. smollm2")
    pull.add_argument("--force", action="store_true", help="download again even if present")
    pull.add_argument("--no-progress", action="store_true",
                      help="no progress bars for the download and the extraction (logs, CI)")
    _command(sub, "list", models_list, "show known and downloaded local models")
    serve_cmd = _command(commands, "serve", serve, "serve the Panel workbench")
    serve_cmd.add_argument("--host", "--address", dest="host", default=None,
                           help="the address to listen on; default: settings.dashboard_host")
    serve_cmd.add_argument("--port", type=int, default=None,
                           help="default: settings.dashboard_port (5006)")
    serve_cmd.add_argument("--model", default=None, help="e.g. local:smollm2 or scripted:echo")
    serve_cmd.add_argument("--models", default="",
                           help="more models for the chat's picker, comma-separated, e.g. "
                           "openai:gpt-4o-mini,ollama:llama3.2")
    serve_cmd.add_argument("--max-tokens", type=int, default=256)
    serve_cmd.add_argument("--show", action="store_true", help="open a browser tab")
    return parser


def _command(commands: Any, name: str, run: Callable[..., int],
             text: str) -> argparse.ArgumentParser:
    cmd = commands.add_parser(name, help=text, description=text)
    cmd.set_defaults(run=run)
    return cmd


if __name__ == "__main__":
    sys.exit(main())
