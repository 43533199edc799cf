"""What git may print: deny-listed files stay out of history, as they stay out of the tree.

Why: the jail hides a deny-listed file (``**/.env``, keys) in the working tree, but git reads
committed blobs from ``.git/objects``, and a diff against the hidden, empty working copy
prints the whole committed secret as deleted lines. Three rules close that, for the git
tools and for ``run_shell git``:

1. Commands that take pathspecs get an ``:(exclude,top,glob,icase)<glob>`` pathspec for
   every deny glob (rebased onto the repository's folder and onto any ``REV:folder`` tree).
   Exclusions only ever subtract, so no pathspec the caller adds can undo them; options that
   would bypass them (``--full-diff``, ``--follow`` with patches, ``--literal-pathspecs``)
   are refused, and ``-L`` (which takes no pathspecs) gets ``--no-renames``.
2. A revision ``REV:path`` (or ``:path`` in the index) whose path is deny-listed is refused.
3. Content named by object id cannot be tied to a path, so the commands that print content
   refuse a blob (or, for diff and grep, a tree) addressed by id; ``object_refs`` lists what
   to ask git the type of, and ``check_objects`` asks (``git cat-file -t``, jailed).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import NamedTuple

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.path_rules import glob_to_regex
from aillm_lab.tools.paths import Workspace

EXCLUDE = ":(exclude,top,glob,icase)"
PATHSPEC_READS = frozenset({"diff", "log", "show", "grep", "shortlog", "ls-files", "status",
                            "whatchanged", "diff-tree", "diff-index", "diff-files"})
CONTENT_READS = frozenset({"show", "cat-file", "diff", "grep"})
_LOG_FAMILY = frozenset({"log", "show", "whatchanged", "shortlog"})
_DIFF_VALUES = frozenset({"-S", "-G", "-I", "-l", "-L", "-n", "--author", "--committer", "--grep",
                          "--since", "--after", "--until", "--before", "--skip", "--max-count",
                          "--find-object", "--anchored", "--word-diff-regex", "--src-prefix",
                          "--dst-prefix", "--line-prefix", "--rotate-to", "--skip-to",
                          "--diff-algorithm", "--color-moved-ws", "--ws-error-highlight",
                          "--inter-hunk-context", "--ignore-matching-lines"})
# Options that take the next argument as their value, per subcommand; only ones git always
# parses that way, since a value taken for an option is never checked as a revision.
_VALUES: dict[str, frozenset[str]] = {
    **dict.fromkeys(("log", "show", "whatchanged", "shortlog", "diff"), _DIFF_VALUES),
    "grep": frozenset({"-e", "-f", "-A", "-B", "-C", "-m", "--max-count", "--max-depth",
                       "--threads"}),
    "blame": frozenset({"-L", "-S", "--contents", "--ignore-rev", "--ignore-revs-file"}),
    **dict.fromkeys(("commit", "tag", "notes", "merge", "stash"),
                    frozenset({"-m", "--message", "-F", "--file"}))}
_REF_SETS = ("--all", "--branches", "--tags", "--remotes", "--glob", "--reflog",
             "--alternate-refs", "--exclude")
_PATCH_LONG = ("--patch", "--cc", "--dd", "--remerge-diff", "--binary", "--unified",
               "--word-diff", "--color-words", "--function-context", "--pickaxe", "--diff-merges")
_PATCH_SHORT = set("pucUWSG")
_SUFFIX = re.compile(r"\^(@|!|-\d*)\Z")
_COMMIT_ONLY = re.compile(r".*(~\d*|\^\d*|\^\{(commit|/.*)\})\Z", re.DOTALL)


class ObjectRef(NamedTuple):
    """An object name to ask git the type of, and the argument it came from."""

    token: str
    name: str
    rooted: bool  # the REV of REV:path: it must be a commit, so the path is from the top


def guard_read(sub: str | None, args: list[str], ws: Workspace, *, top: str, cwd: str
               ) -> list[str]:
    """``args`` (after the subcommand) checked, with the deny-list exclusions added.

    ``top`` and ``cwd`` are the repository's top folder and git's working folder, relative to
    the workspace. Raises ``SafetyViolation`` (``git.denied_path``, ``git.blob_by_id``) for a
    revision or option that would print a deny-listed file.
    """
    options, revs, paths = split_args(sub, args)
    flags = [o for o, _ in options]
    names = [f.split("=", 1)[0] for f in flags]
    if sub == "cat-file" and any(n == "--batch" or n.startswith("--batch-co") for n in names):
        raise SafetyViolation("git.blob_by_id", "git cat-file --batch prints objects by id, "
                              "which cannot be tied to a path the deny list allows; use 'git "
                              "cat-file -p COMMIT:path' for one file, or --batch-check for "
                              "ids, types and sizes")
    if "--submodule=diff" in flags:
        raise SafetyViolation("git.denied_path", "--submodule=diff prints a submodule's own "
                              "files without the deny-list exclusions; use --submodule=log")
    line_log = sub in _LOG_FAMILY and _check_log_options(sub, options, ws, top)
    bases = [_check_revision(tok, ws, top=top, cwd=cwd) for tok in revs]
    if sub == "blame":
        for path in [*(r for r in revs if ":" not in r), *paths]:
            _refuse_denied(path, _join(cwd, path), ws)
    if line_log:
        at = next((i for i, a in enumerate(args) if a in ("--end-of-options", "--")), len(args))
        return [*args[:at], "--no-renames", *args[at:]]  # -L takes no pathspecs; see above
    if (sub not in PATHSPEC_READS or "--follow" in flags
            or (sub == "diff" and "--no-index" in flags)):
        return args
    return [*args, *exclude_pathspecs(ws, top, (b for b in bases if b is not None))]


def exclude_pathspecs(ws: Workspace, top: str, bases: Iterable[str] = ()) -> list[str]:
    """An exclusion per deny glob, relative to the repository's top and to each tree base.

    A glob anchored in the workspace (``secrets/x``) is rebased onto the folder git matches
    paths from; ``**/``-led globs match at any depth as they are. ``<glob>/**`` is added so a
    folder that matches hides what is in it, as ``Workspace.is_denied`` does.
    """
    out: dict[str, None] = {}
    for glob in ws.policy.deny_globs:
        for base in dict.fromkeys([top, *(_join(top, b) for b in bases)]):
            for parts in _rebase(_split(glob), _split(base)):
                pattern = "/".join(parts) or "**"
                out[EXCLUDE + pattern] = None
                if not pattern.endswith("**"):
                    out[f"{EXCLUDE}{pattern}/**"] = None
    return list(out)


def object_refs(sub: str | None, args: list[str]) -> list[ObjectRef]:
    """The object names in ``args`` whose type decides whether content may be printed."""
    if sub not in CONTENT_READS:
        return []
    options, revs, _ = split_args(sub, args)
    if sub == "cat-file" and {"-t", "-s", "-e"} & {o for o, _ in options}:
        return []  # type, size or existence only
    refs: dict[ObjectRef, None] = {}
    for token in revs:
        for piece in _pieces(token):
            at = _colon(piece)
            if at < 0 and not _COMMIT_ONLY.match(piece):
                refs[ObjectRef(token, piece, rooted=False)] = None
            elif at > 0 and not _COMMIT_ONLY.match(piece[:at]):
                refs[ObjectRef(token, piece[:at], rooted=True)] = None
    return list(refs)


async def check_objects(sub: str | None, refs: list[ObjectRef],
                        object_type: Callable[[str], Awaitable[str | None]]) -> None:
    """Refuse a blob addressed by id, a ``REV:path`` whose REV is not a commit, and (for diff
    and grep, whose paths would be relative to an unknown folder) a tree addressed by id."""
    for ref in refs:
        kind = await object_type(ref.name + "^{}")  # ^{}: a tag is judged by what it points to
        bad = ({"tree", "blob"} if ref.rooted else
               {"blob", "tree"} if sub in ("diff", "grep") else {"blob"})
        if kind in bad:
            what = f"its revision {ref.name!r} is a {kind}" if ref.rooted else f"it is a {kind}"
            raise SafetyViolation("git.blob_by_id", f"{ref.token!r} is refused: {what} "
                                  f"addressed by id, which cannot be tied to a path the deny "
                                  f"list allows; name files as COMMIT:path, e.g. "
                                  f"'HEAD:README.md', and trees as COMMIT:folder")


def split_args(sub: str | None, args: list[str]
               ) -> tuple[list[tuple[str, str | None]], list[str], list[str]]:
    """(options with any separate value, revisions, paths after ``--``) as git reads them."""
    takes_value = _VALUES.get(sub or "", frozenset())
    options: list[tuple[str, str | None]] = []
    revs: list[str] = []
    literal = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return options, revs, args[i + 1:]
        if arg == "--end-of-options" and not literal:
            literal = True
        elif arg.startswith("-") and arg != "-" and not literal:
            value = args[i + 1] if arg in takes_value and i + 1 < len(args) else None
            options.append((arg, value))
            i += value is not None
        else:
            revs.append(arg)
        i += 1
    return options, revs, []


# -- checks -----------------------------------------------------------------------------------
def _check_log_options(sub: str, options: list[tuple[str, str | None]], ws: Workspace,
                       top: str) -> bool:
    """Refuse log options that get around the exclusions; True when ``-L`` is used."""
    flags = [o for o, _ in options]
    if "--full-diff" in flags:
        raise SafetyViolation("git.denied_path", "--full-diff shows every file of the chosen "
                              "commits, deny-listed ones too; leave it out and name the paths "
                              "you want after '--'")
    if "--follow" in flags and any(_shows_content(f) for f in flags):
        raise SafetyViolation("git.denied_path", "--follow with patches or -S/-G can follow a "
                              "file back to a deny-listed name, and git takes no exclusions with "
                              "it; use 'git log -p -- <path>' without --follow")
    if sub == "show" and any(f.startswith(_REF_SETS) for f in flags):
        raise SafetyViolation("git.blob_by_id", "git show --all/--tags/--branches/--glob can "
                              "name objects that cannot be tied to a path; name the commits to "
                              "show, e.g. 'git show HEAD~2'")
    line_log = False
    for flag, value in options:
        text = flag + (value or "") if flag == "-L" else flag if value is None else value
        if flag.startswith("-L"):
            line_log = True
            for at in (m.start() for m in re.finditer(":", text)):
                _refuse_denied(text, _join(top, text[at + 1:]), ws)
    return line_log


def _check_revision(token: str, ws: Workspace, *, top: str, cwd: str) -> str | None:
    """Refuse ``REV:path`` / ``:path`` naming a deny-listed file; return a tree base if any."""
    base = None
    for piece in _pieces(token):
        at = _colon(piece)
        if at < 0 or piece.startswith(":/"):
            continue
        path = (piece[3:] if re.match(r":[0-3]:", piece) else piece[1:]) if at == 0 \
            else piece[at + 1:]
        relative = path in (".", "..") or path.startswith(("./", "../"))
        repo_path = posixpath.normpath(_join(cwd, path) if relative else _join(top, path))
        _refuse_denied(token, repo_path, ws)
        _refuse_denied(token, _join(top, path), ws)
        if at > 0:
            base = posixpath.relpath(repo_path, top) if repo_path != top else "."
    return base


def _refuse_denied(token: str, rel: str, ws: Workspace) -> None:
    if ws.is_denied(rel):
        raise SafetyViolation("git.denied_path", f"{token[:120]!r} names {rel[:120]!r}, which "
                              f"matches the deny list (PathPolicy.deny_globs: "
                              f"{ws.policy.deny_globs}); committed secrets stay out of git "
                              f"output too, so show another file or a commit without it")


def _shows_content(flag: str) -> bool:
    if flag.startswith("--"):
        return flag.startswith(_PATCH_LONG)
    return flag.startswith("-") and bool(_PATCH_SHORT & set(flag[1:]))


# -- parsing ----------------------------------------------------------------------------------
def _pieces(token: str) -> list[str]:
    """The object names in a revision: itself, and both ends of a range, without ^ marks."""
    whole = token[1:] if token.startswith("^") else token
    dots = whole.find("..")
    out = [whole] if dots < 0 or ":" in whole else []  # no object name has '..' outside a path
    if dots >= 0:
        right = dots + (3 if whole[dots + 2:dots + 3] == "." else 2)
        out += [whole[:dots], whole[right:]]
    return [p for p in dict.fromkeys(_SUFFIX.sub("", p) for p in out) if p]


def _colon(piece: str) -> int:
    """Where ``REV:path`` splits, as git reads it: the first ':' outside ``{...}``."""
    depth = 0
    for i, ch in enumerate(piece):
        if ch == "{":
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
        elif ch == ":" and not depth:
            return i
    return -1


def _rebase(glob: list[str], base: list[str]) -> Iterator[list[str]]:
    """What is left of ``glob`` to match below ``base`` (every way its parts can line up)."""
    if not base:
        yield glob
    elif glob:
        if glob[0] == "**":
            yield from _rebase(glob, base[1:])
            yield from _rebase(glob[1:], base)
        elif re.fullmatch(glob_to_regex(glob[0]), base[0], re.IGNORECASE):
            yield from _rebase(glob[1:], base[1:])


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _join(folder: str, path: str) -> str:
    return path if folder in ("", ".") else f"{folder}/{path}"


__all__ = ["CONTENT_READS", "EXCLUDE", "PATHSPEC_READS", "ObjectRef", "check_objects",
           "exclude_pathspecs", "guard_read", "object_refs", "split_args"]
