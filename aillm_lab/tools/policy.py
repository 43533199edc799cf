"""``SafetyPolicy``: one pydantic model for every rule the Safety Guard enforces.

Data only (no tool imports), so ``LabSettings`` can hold it and a TOML file can set it.
Defaults are strict: a workspace-only file system, a short program allowlist, public
hosts only, read-only SQL, a sandbox without network, and approval for git writes.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

Decision = Literal["auto", "ask", "deny"]


class _Policy(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PathPolicy(_Policy):
    """Which files inside the workspace tools may touch, and how much of them.

    ``deny_globs`` names the usual places secrets live: dotenv files, keys (SSH ones too),
    git's configs (remote URLs with tokens), and the credential files of common clients
    (netrc, pgpass, npm, PyPI, git's credential store, AWS, Docker, kubectl, Terraform
    state and tokens, secrets.yaml, direnv's .envrc, Streamlit secrets, Google OAuth
    clients, service-account keys and gcloud credentials, s3cmd, boto, Vault, the GitHub
    CLI, htpasswd, PKCS#12 bundles, cargo and gem tokens).
    ``**/.env.*`` also denies templates such as ``.env.example``: a copy with real values
    is named the same way, so none is trusted; a project that needs its template readable
    can drop that glob.
    """

    deny_globs: list[str] = Field(
        default_factory=lambda: ["**/.env", "**/.env.*", "**/*.pem", "**/*.key", "**/id_rsa*",
                                 "**/id_ed25519*", "**/id_ecdsa*", "**/id_dsa*",
                                 "**/.git/config", "**/.git/**/config",
                                 "**/.git/**/config.worktree", "**/.ssh/**",
                                 "**/.netrc", "**/_netrc", "**/.pgpass", "**/.npmrc",
                                 "**/.pypirc", "**/.git-credentials", "**/.aws/credentials",
                                 "**/.aws/config", "**/.docker/config.json",
                                 "**/.kube/config", "**/secrets.y*ml", "**/secrets.json",
                                 "**/*.tfstate", "**/*.tfstate.backup",
                                 "**/.envrc", "**/.streamlit/secrets.toml",
                                 "**/credentials.json", "**/client_secret*.json",
                                 "**/service-account*.json",
                                 "**/application_default_credentials.json", "**/.s3cfg",
                                 "**/.boto", "**/.vault-token", "**/.config/gh/hosts.yml",
                                 "**/.htpasswd", "**/*.p12", "**/*.pfx",
                                 "**/.cargo/credentials*", "**/.gem/credentials",
                                 "**/.terraform.d/credentials.tfrc.json"],
        description="workspace-relative globs no tool may read or write")
    max_read_bytes: int = Field(default=2_000_000, ge=1, le=10**10)
    max_write_bytes: int = Field(default=5_000_000, ge=1, le=10**10)


class CommandPolicy(_Policy):
    """Programs the Shell tool may start (by name, resolved on a fixed PATH)."""

    allow: list[str] = Field(default_factory=lambda: [
        "ls", "cat", "head", "tail", "wc", "grep", "sort", "uniq", "cut", "echo", "pwd",
        "find", "diff", "date", "true", "false", "git"],
        description="programs run_shell may start; python is left out because it would run "
                    "code outside the sandbox (use run_python), add it only if you trust that")
    deny_args: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "find": ["-exec", "-execdir", "-ok", "-okdir", "-delete", "-fprint", "-fprint0",
                     "-fprintf", "-fls", "-files0-from"],
            "python": ["-c", "-m"], "python3": ["-c", "-m"],
            "sort": ["--compress-program", "--files0-from"], "wc": ["--files0-from"],
            "grep": ["-R", "--dereference-recursive"], "date": ["-s", "--set"],
            "git": ["-c", "--exec-path", "--upload-pack", "--receive-pack", "-C",
                    "--git-dir", "--work-tree", "--config-env", "-O", "--open-files-in-pager",
                    "--output", "--ext-diff", "--textconv", "--exec", "--template",
                    "--no-index", "--contents"]},
        description="per-program arguments that are refused (exact, '--opt=' or a combined "
                    "short flag like '-Sc' for '-c')")
    git_subcommands: list[str] = Field(
        default_factory=lambda: [
            "status", "diff", "log", "show", "rev-parse", "ls-files", "ls-tree", "cat-file",
            "blame", "grep", "describe", "shortlog", "version"],
        description="what `run_shell git ...` may run: reads only by default, so writes go "
                    "through the git tools and their approval; config, aliases, transports and "
                    "commands that start other programs are never listed")
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_output_bytes: int = Field(default=200_000, ge=1, le=10**9)
    memory_mb: int = Field(default=4096, ge=64, le=1_000_000,
                           description="address space per program (RLIMIT_AS) in the jail")
    max_processes: int = Field(default=512, ge=8, le=65_536,
                               description="processes of the Lab's user (RLIMIT_NPROC); not "
                                           "enforced by the kernel for root")
    max_file_mb: int = Field(default=1024, ge=1, le=1_000_000,
                             description="largest file a program may write (RLIMIT_FSIZE)")
    tmp_mb: int = Field(default=64, ge=1, le=100_000,
                        description="size of each call's private /tmp (memory-backed)")


class NetworkPolicy(_Policy):
    """Where the Web tool may connect; private addresses are refused after DNS."""

    allow_hosts: list[str] = Field(default_factory=list,
                                   description="if set, only these hosts (and subdomains)")
    deny_hosts: list[str] = Field(default_factory=list)
    allow_loopback: StrictBool = Field(default=False, description="for tests against 127.0.0.1")
    max_bytes: int = Field(default=5_000_000, ge=1, le=10**9)
    timeout_s: float = Field(default=20.0, gt=0, le=600)
    max_redirects: int = Field(default=5, ge=0, le=30)


class SqlPolicy(_Policy):
    """Read-only DuckDB: caps on what a query may return, use and how long it may run."""

    max_rows: int = Field(default=10_000, ge=1, le=10**9)
    max_result_bytes: int = Field(default=20_000_000, ge=1, le=10**10)
    timeout_s: float = Field(default=30.0, gt=0, le=3600)
    memory_limit_mb: int = Field(
        default=1024, ge=16, le=10**7,
        description="DuckDB's memory_limit for sorts, joins and aggregates (no spilling to "
                    "disk); a query that needs more is refused (rule sql.memory_limit)")
    threads: int | None = Field(
        default=None, ge=1, le=1024,
        description="DuckDB worker threads; None leaves one core free for the runner loop")


class CodePolicy(_Policy):
    """OS limits for the Python sandbox process."""

    memory_mb: int = Field(default=1024, ge=64, le=1_000_000)
    cpu_s: int = Field(default=30, ge=1, le=86_400)
    wall_s: float = Field(default=60.0, gt=0, le=86_400)
    max_open_files: int = Field(default=256, ge=16, le=65_536)
    max_processes: int = Field(default=64, ge=1, le=65_536)
    max_file_mb: int = Field(default=100, ge=1, le=1_000_000)
    max_disk_mb: int = Field(
        default=200, ge=1, le=10_000_000,
        description="all files in the sandbox folders together; a call that writes past it "
                    "is stopped and its new files removed (rule code.disk_quota)")
    max_output_bytes: int = Field(default=200_000, ge=1, le=10**9)
    network: bool = Field(default=False, description="allow sockets inside the sandbox")


class ApprovalPolicy(_Policy):
    """``auto | ask | deny`` per risk level, overridden per tool name."""

    by_risk: dict[Literal["read", "write", "execute", "network"], Decision] = Field(
        default_factory=lambda: {"read": "auto", "write": "auto", "execute": "auto",
                                 "network": "auto"})
    by_tool: dict[str, Decision] = Field(
        default_factory=lambda: {"git_add": "ask", "git_commit": "ask",
                                 "git_create_branch": "ask"})
    timeout_s: float = Field(default=300.0, gt=0, le=86_400,
                             description="an unanswered approval is a denial after this")


class OutputPolicy(_Policy):
    """What the guard does to tool output before the model sees it."""

    max_chars: int = Field(default=20_000, ge=100, le=10**8)
    scan_injection: StrictBool = True
    redact_secrets: StrictBool = True


class AuditPolicy(_Policy):
    """When a tool call's audit row must be on disk before its result is returned."""

    durable: list[Literal["read", "write", "execute", "network"]] = Field(
        default_factory=lambda: ["write", "execute", "network"],
        description="risk levels whose audit row is committed before the call's result is "
                    "returned (calls that change or reach something: they cost far more than "
                    "a commit); the others are committed in groups within 0.1 s, so they are "
                    "on disk within a second of returning")


class SafetyPolicy(_Policy):
    """Every rule in one place; ``LabSettings.safety`` holds one."""

    paths: PathPolicy = Field(default_factory=PathPolicy)
    commands: CommandPolicy = Field(default_factory=CommandPolicy)
    network: NetworkPolicy = Field(default_factory=NetworkPolicy)
    sql: SqlPolicy = Field(default_factory=SqlPolicy)
    code: CodePolicy = Field(default_factory=CodePolicy)
    approvals: ApprovalPolicy = Field(default_factory=ApprovalPolicy)
    output: OutputPolicy = Field(default_factory=OutputPolicy)
    audit: AuditPolicy = Field(default_factory=AuditPolicy)
