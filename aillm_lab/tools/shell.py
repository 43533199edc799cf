"""The Shell tool: run one allowlisted program with arguments in the workspace, never a shell.

Two layers. The first is readable refusals: a command is an argv list, or a string split
like POSIX ``shlex`` would; anything only a shell would understand (``;``, ``$( )``,
redirections, ``PATH=``) is refused with what to send instead, and arguments that name a
path outside the workspace or a denied file (after ``--``, inside ``--opt=value`` or a
combined short flag like ``-uo/tmp/x``) are refused by name. Globs, variables and ``~`` are
not expanded: ``find . -name '*.py'`` works, ``cat *.py`` looks for a file named ``*.py``.

The second layer does not depend on recognising anything: the program runs in the OS
``Jail`` (``jail.py``), where no path outside the workspace exists, denied files are empty,
``.git`` is read-only, ``/proc`` shows only the call's own processes and the environment
holds five fixed variables. Where the OS cannot confine (macOS, containers without user
namespaces), every call needs approval, and the request and the refusal say why.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import PurePosixPath

from pydantic import PositiveFloat

from aillm_lab.errors import SafetyViolation
from aillm_lab.runtime import LoopRunner
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.jail import Jail
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.policy import CommandPolicy
from aillm_lab.tools.process import (
    SAFE_PATH,
    CommandError,
    CommandResult,
    resolve_program,
    run_command,
    safe_env,
)

MAX_ARGV_CHARS = 65_536  # all arguments together; Linux allows 128 KiB for a single one
MAX_ARGS = 1_000
_OPERATORS = frozenset({";", ";;", "&", "&&", "||", "|", "|&", "(", ")"})
_REDIRECTION = re.compile(r"\d*(>>?|<<?<?|>&|<&|&>>?|>\|)\S*")
_FIND_NAME_TESTS = frozenset({"-name", "-iname", "-path", "-ipath", "-wholename",
                              "-iwholename", "-regex", "-iregex", "-lname", "-ilname"})
# values grep reads as a pattern or glob, and options that take some other value
_GREP_PATTERN_OPTIONS = frozenset({"-e", "--regexp", "--include", "--exclude", "--exclude-dir"})
_GREP_VALUE_OPTIONS = frozenset({"--file", "--max-count", "--after-context",
                                 "--before-context", "--context", "--directories", "--devices",
                                 "--label", "--binary-files", "--exclude-from",
                                 "--group-separator"})
_SHELL_HINT = ("pass a single program and its arguments, e.g. ['grep', '-n', 'TODO', 'app.py'] "
               "or \"grep -n TODO app.py\"; run several commands as several calls, and write "
               "files with the file tools instead of redirections")


def shell_tools(ws: Workspace, policy: CommandPolicy, jail: Jail | None = None) -> list[Tool]:
    """The ``run_shell`` tool bound to one workspace, one command policy and one ``Jail``.

    Without ``jail`` one is made for ``ws`` (it starts on the first call).
    """
    jail = jail if jail is not None else shell_jail(ws, policy)

    async def run_shell(command: str | list[str], timeout_s: PositiveFloat | None = None) -> str:
        """Run one program with its arguments in the workspace (no shell: no pipes,
        redirections, variables or glob expansion; arguments are passed literally).

        Args:
            command: the program and its arguments, as a list or one string quoted like a
                POSIX shell would quote it, e.g. "grep -rn 'def main' src".
            timeout_s: seconds before the program and its children are killed (at most
                the policy's limit).
        """
        argv, env = check_command(command, ws, policy)
        confined = jail if await jail.available() else None
        if argv[0] == "git":
            from aillm_lab.tools.git import run_shell_git

            result = await run_shell_git(argv, ws=ws, policy=policy, jail=confined,
                                         timeout_s=timeout_s)
        else:
            result = await run_command(argv, cwd=ws.root, policy=policy, timeout_s=timeout_s,
                                       env=env, jail=confined)
        return result.render()

    async def unconfined_reason() -> str | None:
        if await jail.available():
            return None
        return (f"OS confinement is unavailable here ({jail.why}), so run_shell runs programs "
                f"with only its argument checks and every call needs approval")

    allowed = ", ".join(policy.allow)
    description = (f"Run one allowlisted program ({allowed}) with arguments in the workspace; "
                   f"no shell, so no pipes, redirections, variables or glob expansion. "
                   f"Returns the exit code, stdout and stderr.")
    return [Tool(run_shell, name="run_shell", description=description, risk=RiskLevel.EXECUTE,
                 approval_reason=unconfined_reason)]


def shell_jail(ws: Workspace, policy: CommandPolicy, runner: LoopRunner | None = None) -> Jail:
    """The jail for ``ws``, with the interpreter's folders when python is allowed."""
    extra: tuple[str, ...] = ()
    if {"python", "python3"} & set(policy.allow):
        extra = tuple(dict.fromkeys((sys.base_prefix, sys.prefix)))
    return Jail(ws, extra_binds=extra, runner=runner)


def parse_command(command: str | Sequence[str]) -> list[str]:
    """The argv for a string or list, refusing what only a shell would understand."""
    if isinstance(command, str):
        _refuse_shell_syntax(command)
        try:
            argv = shlex.split(command, posix=True)
        except ValueError as exc:  # "No closing quotation"
            raise CommandError(f"command {command[:200]!r} cannot be split: {exc}; "
                               f"check its quotes") from None
    else:
        argv = [str(a) for a in command]
        for token in argv:
            _refuse_shell_token(token)
    if not argv:
        raise CommandError("command is empty; give a program name and its arguments, "
                           "e.g. 'ls -la'")
    return argv


def check_command(command: str | Sequence[str], ws: Workspace,
                  policy: CommandPolicy) -> tuple[list[str], dict[str, str]]:
    """Parse and check a command; returns the argv to run and any extra environment.

    Raises ``SafetyViolation`` for anything the policy refuses, so the model learns why.
    """
    argv = parse_command(command)
    _check_size(argv)
    program, args = argv[0], argv[1:]
    resolve_program(program, policy)
    operands_only = False
    patterns = pattern_arguments(program, args)
    for i, token in enumerate(args):
        if not operands_only:
            _check_denied(program, token, policy)
        # git's own guard (git_paths.guard_read) reads revisions and pathspecs by name
        by_name = program != "git" and i not in patterns
        _check_paths(token, ws, operand=operands_only, by_name=by_name)
        operands_only = operands_only or token == "--"
    if program == "git":
        from aillm_lab.tools import git  # git.py imports this module's siblings only

        return git.harden_shell_argv(args, ws, policy)
    return argv, {"HOME": str(ws.root)}


# -- checks -----------------------------------------------------------------------------------
def _refuse_shell_syntax(command: str) -> None:
    """Scan a command string like a shell would, refusing the parts only a shell runs."""
    if "\n" in command or "\r" in command:
        _shell_syntax("a newline (two commands in one)")
    quote: str | None = None
    i = 0
    while i < len(command):
        ch, nxt = command[i], command[i + 1:i + 2]
        if quote == "'":
            quote = None if ch == "'" else quote
        elif ch == "\\":
            i += 1  # the next character is literal (outside single quotes)
        elif ch == '"':
            quote = None if quote == '"' else '"'
        elif ch == "'" and quote is None:
            quote = "'"
        elif ch == "`" or (ch == "$" and nxt in ("(", "{")):
            _shell_syntax(f"command or parameter substitution {ch + nxt!r}")
        elif ch == "$" and (nxt.isalpha() or nxt == "_"):
            _shell_syntax("a variable ($NAME); variables are not expanded")
        elif quote is None and ch in ";&|<>()":
            _shell_syntax(f"the shell operator {ch!r}")
        i += 1


def _refuse_shell_token(token: str) -> None:
    """List form: an argument that is a shell operator or substitution is a mistake."""
    if token in _OPERATORS or _REDIRECTION.fullmatch(token):
        _shell_syntax(f"the shell operator {token!r}")
    if "$(" in token or "`" in token:
        _shell_syntax(f"command substitution in {token!r}")


def _shell_syntax(what: str) -> None:
    raise SafetyViolation("command.shell_syntax",
                          f"the command contains {what}, which needs a shell, and commands "
                          f"run without one; {_SHELL_HINT}")


def _check_size(argv: list[str]) -> None:
    if len(argv) > MAX_ARGS or sum(len(a) for a in argv) > MAX_ARGV_CHARS:
        raise SafetyViolation("command.too_long", f"the command has {len(argv)} arguments and "
                              f"{sum(len(a) for a in argv)} characters; the limits are "
                              f"{MAX_ARGS} and {MAX_ARGV_CHARS}: put long input in a file")
    for token in argv:
        if "\x00" in token:
            raise SafetyViolation("command.bad_argument",
                                  f"argument {token[:40]!r} contains a NUL byte; remove it")


def _check_denied(program: str, token: str, policy: CommandPolicy) -> None:
    """Exact match, ``--opt=value``, an abbreviated long option, or a combined short flag."""
    for denied in policy.deny_args.get(program, []):
        name = token.split("=", 1)[0]
        hit = token == denied or name == denied
        if denied.startswith("--") and name.startswith("--") and len(name) > 3:
            hit = hit or denied.startswith(name)  # git and getopt accept '--upload-pa'
        if (len(denied) == 2 and denied[0] == "-" and not token.startswith("--")
                and re.match(r"-[A-Za-z]*?" + re.escape(denied[1]), token)):
            hit = True  # '-Sc' is '-S -c', and '-Ocmd' is '-O cmd'
        if hit:
            raise SafetyViolation("command.denied_argument",
                                  f"argument {token!r} is not allowed for {program} "
                                  f"(denied: {', '.join(policy.deny_args[program])})")


def pattern_arguments(program: str, args: Sequence[str]) -> set[int]:
    """Indexes of the arguments ``program`` reads as a pattern, never as a file name.

    Only these escape the by-name deny-list check: grep's pattern (the first operand unless
    ``-e``/``-f`` gave one, and the values of ``-e``, ``--regexp``, ``--include``,
    ``--exclude``, ``--exclude-dir``), find's name tests (``-name .env``) and everything
    given to echo, which opens no file. Anything else could name a file to create.
    """
    if program == "echo":
        return set(range(len(args)))
    if program == "find":
        return {i + 1 for i, a in enumerate(args) if a in _FIND_NAME_TESTS}
    return _grep_patterns(args) if program == "grep" else set()


def _grep_patterns(args: Sequence[str]) -> set[int]:
    """Walk grep's arguments as its option parser does (see ``pattern_arguments``)."""
    exempt: set[int] = set()
    pattern_given = operands = False
    value_of: str | None = None  # the option whose value the next argument is
    for i, token in enumerate(args):
        if value_of is not None:
            if value_of in _GREP_PATTERN_OPTIONS:
                exempt.add(i)
            value_of = None
        elif operands or token == "-" or not token.startswith("-"):
            if not pattern_given:
                exempt.add(i)
                pattern_given = True
        elif token == "--":
            operands = True
        elif token.startswith("--"):
            name, has_value = token.split("=", 1)[0], "=" in token
            if name in _GREP_PATTERN_OPTIONS and has_value:
                exempt.add(i)
            elif name in _GREP_PATTERN_OPTIONS or name in _GREP_VALUE_OPTIONS:
                value_of = None if has_value else name
            pattern_given = pattern_given or name in ("--regexp", "--file")
        else:  # a cluster of short flags: the first that takes a value ends it
            for j, letter in enumerate(token[1:], start=1):
                if letter in "efmABCdD":
                    option = "-" + letter
                    if j + 1 < len(token):
                        if option in _GREP_PATTERN_OPTIONS:
                            exempt.add(i)
                    else:
                        value_of = option
                    pattern_given = pattern_given or letter in "ef"
                    break
    return exempt


def _check_paths(token: str, ws: Workspace, *, operand: bool = False,
                 by_name: bool = True) -> None:
    """Every spelling of a path inside an argument must stay in the workspace.

    The whole argument (after ``--`` every argument is a name, even ``--x/../..``), the
    value of ``--opt=value``, and every tail of a combined short flag (``-uo/tmp/x`` is
    ``-u -o /tmp/x``; ``-hf/etc/passwd`` is ``-h -f /etc/passwd``) are checked as paths
    when they look like one: absolute, with a ``..`` part, or naming an existing entry.
    With ``by_name`` each of them is also matched against the deny list as a name, whether
    or not it exists: ``uniq a .env`` or ``sort -o server.key a`` would create the file.
    This is the readable refusal only; the jail is what makes other paths not exist.
    """
    candidates = [token]
    if "=" in token:
        candidates.append(token.split("=", 1)[1])
    if not operand and token.startswith("-") and not token.startswith("--"):
        candidates.extend(token[i:] for i in range(1, len(token)))
    for cand in candidates:
        parts = PurePosixPath(cand).parts
        if cand and (cand.startswith("/") or ".." in parts
                     or os.path.lexists(os.path.join(ws.root, parts[0] if parts else cand))):
            try:  # a first part that exists may be a link that leads out (or into /.jail)
                real = ws.resolve(cand)
            except SafetyViolation as exc:
                raise SafetyViolation(exc.rule, f"{exc.detail} (arguments that look like paths "
                                      f"are checked; if {token!r} is a pattern rather than a "
                                      f"path, write it without a leading '/' or '..')") from None
            if ".git" in ws.relative(real).lower().split("/"):
                raise SafetyViolation("command.git_internal", f"argument {token!r} names a "
                                      f"path inside a .git folder, which programs may not "
                                      f"read or change; use the git tools (git_log, git_show)")
        if by_name and _denied_name(cand, ws):
            named = f"argument {token!r}" + (f" names {cand!r}, which" if cand != token else "")
            raise SafetyViolation("path.denied", f"{named} matches the deny list "
                                  f"(PathPolicy.deny_globs: {ws.policy.deny_globs}) whether "
                                  f"or not it exists; no program may create, read or change "
                                  f"such a file, pick another name")


def _denied_name(cand: str, ws: Workspace) -> bool:
    """Whether ``cand``, read as a workspace path (no I/O), matches the deny list."""
    if not cand or "\x00" in cand:
        return False
    lexical = os.path.normpath(os.path.join(ws.root, cand))
    return ws.contains(lexical) and ws.is_denied(ws.relative(lexical))


__all__ = ["SAFE_PATH", "CommandError", "CommandResult", "check_command", "parse_command",
           "resolve_program", "run_command", "safe_env", "shell_tools"]
