"""The IPython extension: ``%load_ext aillm_lab``, then ``%%llm``, ``%%agent``, ``%%sql`` and
``%lab`` in any cell.

The magics are thin doors onto the public API of one Lab (``al.default_lab()``, or the one
``%lab --use NAME`` points at), so a cell does exactly what the same call in Python would do:
every model call through the Lab's gateway, every tool call through its Safety Guard. A bad
model name, option or query is one ``UsageError`` line, not a traceback: a typo in a cell
should read like one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from aillm_lab.errors import AillmError

if TYPE_CHECKING:
    from IPython.core.interactiveshell import InteractiveShell

    from aillm_lab import Lab
    from aillm_lab.agents.base import Agent

T = TypeVar("T")
# %%agent KIND -> the agent class's name in aillm_lab (loaded on use, like every export)
AGENTS = {"react": "ReActAgent", "code": "CodeWriterAgent", "research": "ResearchAgent",
          "data": "DataAnalysisAgent"}
# our own errors, and the ones bad user input raises (a bad SQL, an unknown column); a
# TypeError is a bug, so it keeps its traceback
_USER_ERRORS = (AillmError, ValueError, LookupError)


class Lines(str):
    """Text a magic returns: a cell shows it as lines, not as a quoted string with ``\n``
    (what IPython shows for a plain ``str``); it is still the str for code that uses it."""

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        p.text(str(self))


@magics_class
class LabMagics(Magics):
    """``%%llm``, ``%%agent``, ``%%sql`` and ``%lab`` over one Lab."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self._lab: Lab | None = None

    @property
    def active_lab(self) -> Lab:
        """The Lab the magics use: ``%lab --use NAME``'s, else ``al.default_lab()``."""
        if self._lab is None:
            import aillm_lab

            return aillm_lab.default_lab()
        return self._lab

    @cell_magic
    @magic_arguments()
    @argument("model", nargs="?", default=None,
              help="a provider:model string; the Lab's default model when left out")
    @argument("--json", action="store_true",
              help="ask for a JSON object (constrained where the model can) and return it")
    @argument("--system", default=None, help="a system message")
    def llm(self, line: str, cell: str) -> Any:
        """``%%llm [model] [--json] [--system TEXT]``: send the cell as the prompt; returns
        the ``Completion`` (or, with ``--json``, the parsed object)."""
        args = _parse(self.llm, line)
        prompt = _text(cell, "%%llm")
        system = None if args.system is None else _unquote(args.system)
        if args.json:
            return _call(lambda: self.active_lab.complete(prompt, args.model, system=system,
                                                   output={"type": "object"}))
        return _call(lambda: self.active_lab.chat(prompt, args.model, system=system))

    @cell_magic
    @magic_arguments()
    @argument("kind", help=f"the agent: {', '.join(AGENTS)}")
    @argument("--model", default=None, help="a provider:model string")
    @argument("--tools", default="",
              help="comma-separated tools: names of tools or functions in the notebook, "
                   "or built-in tool names (react)")
    @argument("--data", default="",
              help="comma-separated DataFrame variables or workspace files (data)")
    @argument("--tests", default=None, help="a variable holding the tests' source (code)")
    @argument("--max-steps", type=int, default=10)
    def agent(self, line: str, cell: str) -> Any:
        """``%%agent KIND [--model M] [--tools a,b] [--data df] [--tests t]``: run an agent
        on the cell's task; returns the ``AgentRun`` (shown with its steps)."""
        args = _parse(self.agent, line)
        task = _text(cell, "%%agent")
        name = AGENTS.get(args.kind)
        if name is None:
            raise UsageError(f"%%agent {args.kind!r}: no such agent; use one of "
                             f"{', '.join(AGENTS)}")
        import aillm_lab

        options: dict[str, Any] = {"model": args.model, "lab": self.active_lab,
                                   "max_steps": args.max_steps}
        if args.tools:
            options["tools"] = [self._tool(n) for n in _names(args.tools)]
        agent: Agent = _call(lambda: getattr(aillm_lab, name)(**options))
        if args.kind == "data":
            data = {n: self.shell.user_ns.get(n, n) for n in _names(args.data)}
            return _call(lambda: agent.run(task, data=data))  # type: ignore[call-arg]
        if args.kind == "code":
            tests = None if args.tests is None else self._variable(args.tests, "--tests")
            return _call(lambda: agent.run(task, tests=tests))  # type: ignore[call-arg]
        return _call(lambda: agent.run(task))

    @cell_magic
    @magic_arguments()
    @argument("--calls", action="store_true",
              help="query the call log (the view `calls`) instead of the Lab's tables")
    @argument("--out", default=None, help="also store the DataFrame in this variable")
    def sql(self, line: str, cell: str) -> Any:
        """``%%sql [--calls] [--out NAME]``: one read-only DuckDB query over the Lab's
        tables (``lab.tools.database``) or, with ``--calls``, over the call log; returns a
        DataFrame."""
        args = _parse(self.sql, line)
        query = _text(cell, "%%sql")
        if args.calls:
            frame = _call(lambda: self.active_lab.calls(query))
        else:
            frame = _call(lambda: self.active_lab.tools.database.query(query))
        if args.out:
            if not args.out.isidentifier():
                raise UsageError(f"%%sql --out {args.out!r}: give a Python variable name")
            self.shell.user_ns[args.out] = frame
        return frame

    @line_magic("lab")
    @magic_arguments()
    @argument("--use", default=None, help="a variable holding the Lab the magics should use")
    def lab_status(self, line: str) -> Lines:
        """``%lab``: the Lab's home, default model (and why), calls and spend so far;
        ``%lab --use NAME`` points the magics at the Lab in variable NAME."""
        args = _parse(self.lab_status, line)
        if args.use is not None:
            import aillm_lab

            value = self._variable(args.use, "--use")
            if not isinstance(value, aillm_lab.Lab):
                raise UsageError(f"%lab --use {args.use}: that variable holds a "
                                 f"{type(value).__name__}, not an al.Lab")
            self._lab = value
        lab = self.active_lab
        model, why = lab.default_model_reason()
        totals = _call(lambda: lab.calls(
            "select count(*) as n, coalesce(sum(cost_usd), 0) as usd from calls"))
        return Lines(f"home: {lab.settings.home}\ndefault model: {model} ({why})\n"
                     f"calls on this home: {int(totals['n'].iloc[0])}, "
                     f"spent: ${float(totals['usd'].iloc[0]):.4f}")

    # -- helpers -------------------------------------------------------------------------------
    def _variable(self, name: str, option: str) -> Any:
        if name not in self.shell.user_ns:
            raise UsageError(f"{option} {name}: no variable named {name!r} in the notebook")
        return self.shell.user_ns[name]

    def _tool(self, name: str) -> Any:
        """A tool or function from the notebook by that name, else a built-in tool name."""
        value = self.shell.user_ns.get(name)
        return value if callable(value) else name


def _parse(magic: Callable[..., Any], line: str) -> Any:
    try:
        return parse_argstring(magic, line)
    except UsageError:
        raise
    except SystemExit as exc:  # argparse's own exit on a bad option
        raise UsageError(f"bad options {line!r}: see %{magic.__name__}?") from exc


def _text(cell: str, magic: str) -> str:
    if not cell.strip():
        raise UsageError(f"{magic}: the cell is empty; write the prompt (or query) below "
                         "the magic line")
    return cell.strip()


def _unquote(text: str) -> str:
    """IPython's argument splitter keeps the quotes around a value; drop one pair."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _names(csv: str) -> list[str]:
    return [n.strip() for n in csv.split(",") if n.strip()]


def _call(work: Callable[[], T]) -> T:
    """Run ``work``; our typed errors and bad input become one UsageError line."""
    try:
        return work()
    except _USER_ERRORS as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{type(exc).__name__}: {text}") from exc


def load(shell: InteractiveShell) -> None:
    """What ``%load_ext aillm_lab`` does: register the magics."""
    shell.register_magics(LabMagics)


__all__ = ["AGENTS", "LabMagics", "load"]
