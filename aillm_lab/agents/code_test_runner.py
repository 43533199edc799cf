"""The tests of a ``CodeWriterAgent`` try, as they run in the sandbox and come back.

Why apart from the agent: this is a protocol between two processes, not agent logic.
``runner_program`` is the code, the tests and a small runner, sent through the guard's
``run_python`` into the per-run ``PythonSandbox`` (it never runs in our process); the runner
prints one line per test, then its counts after a per-run marker (``new_marker``).
``read_report`` reads the counts back (None when the runner never finished: a timeout, a
crash, a refusal) and the output without the marker line; ``clip_feedback`` cuts that output
to what the next prompt carries back to the model.
"""

from __future__ import annotations

import json
import secrets

from aillm_lab.tools.base import ToolResult

MAX_FEEDBACK = 6_000  # characters of test output put in the next prompt


def new_marker() -> str:
    """A per-run marker for the runner's counts line."""
    return f"@@aillm-tests-{secrets.token_hex(6)}@@"


def runner_program(code: str, tests: str, marker: str) -> str:
    """The program sent to the sandbox: the runner, then one call of it on code and tests."""
    return f"{TEST_RUNNER}\n_aillm_check({code!r}, {tests!r}, {marker!r})\n"


def read_report(result: ToolResult, marker: str) -> tuple[dict[str, int] | None, str]:
    """The runner's counts (None if it never finished: a timeout, a crash, a refusal) and
    the output shown to the model, without the marker line."""
    raw = result.value if isinstance(result.value, str) else result.content
    counts = None
    for line in raw.splitlines():
        if line.startswith(marker):
            try:
                counts = json.loads(line[len(marker):])
            except ValueError:
                counts = None
    shown = "\n".join(line for line in result.content.splitlines() if marker not in line)
    return counts, shown.strip() or "(no output)"


def clip_feedback(text: str) -> str:
    """``text`` cut to ``MAX_FEEDBACK`` characters, saying how many more there were."""
    if len(text) <= MAX_FEEDBACK:
        return text
    return text[:MAX_FEEDBACK] + f"\n[... {len(text) - MAX_FEEDBACK} more characters]"


# The runner sent with every test run (inside the sandbox; it never runs in our process).
# The code becomes module ``solution``; the tests run in a fresh namespace that also holds
# its names, with pytest's assertion rewriting when pytest is importable (so a failure says
# ``assert -1 == 5``); it runs each ``test_*`` function and ``Test*`` method, prints one line
# per test with the failure's traceback (frames of the code and tests only), then the counts
# after a per-run marker the parent looks for.
TEST_RUNNER = r'''
def _aillm_check(code, tests, marker, show=4000):
    import ast, contextlib, inspect, io, json, linecache, sys, traceback, types
    files = ("solution.py", "test_solution.py")
    def compiled(src, name):
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)
        tree = ast.parse(src, name)
        if name == files[1]:
            try:
                from _pytest.assertion.rewrite import rewrite_asserts
                rewrite_asserts(tree, src.encode(), name)
            except Exception:
                pass
        return compile(tree, name, "exec")
    out = io.StringIO()
    def attempt(fn):
        try:
            with contextlib.redirect_stdout(out):
                fn()
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in files]
            return "".join(traceback.format_list(frames)
                           + traceback.format_exception_only(type(exc), exc))
        return None
    counts, lines = {"passed": 0, "failed": 0, "errors": 0}, []
    solution = types.ModuleType("solution")
    solution.__file__ = files[0]
    sys.modules["solution"] = solution
    try:
        error = attempt(lambda: exec(compiled(code, files[0]), solution.__dict__))
        if error:
            counts["errors"] += 1
            lines.append("ERROR loading the code (solution.py):\n" + error)
        else:
            ns = {k: v for k, v in vars(solution).items() if not k.startswith("__")}
            ns["__name__"] = "test_solution"
            error = attempt(lambda: exec(compiled(tests, files[1]), ns))
            if error:
                counts["failed"] += 1
                lines.append("FAILED the tests' top level:\n" + error)
            found = []
            for name, obj in list(ns.items()):
                if name.startswith("test") and getattr(obj, "__code__", None) is not None \
                        and obj.__code__.co_filename == files[1]:
                    found.append((name, obj))
                elif name.startswith("Test") and inspect.isclass(obj) and \
                        obj.__module__ == "test_solution":
                    found += [(f"{name}.{m}", lambda c=obj, m=m: getattr(c(), m)())
                              for m in vars(obj) if m.startswith("test")]
            if not found and not error:
                counts["passed"] += 1
                lines.append("passed the tests' asserts")
            for name, fn in found:
                if any(p.default is p.empty and p.kind <= p.POSITIONAL_OR_KEYWORD
                       for p in inspect.signature(fn).parameters.values()):
                    error = "it takes arguments (fixtures are not supported here)\n"
                elif inspect.iscoroutinefunction(fn):
                    error = "async tests are not supported here\n"
                else:
                    error = attempt(fn)
                counts["failed" if error else "passed"] += 1
                lines.append(f"FAILED {name}:\n{error}" if error else f"passed {name}")
    finally:
        sys.modules.pop("solution", None)
        for name in files:
            linecache.cache.pop(name, None)
    printed = out.getvalue()
    if printed:
        cut = f"\n[... {len(printed) - show} more characters]" if len(printed) > show else ""
        lines.append("[printed by the code and tests]\n" + printed[:show] + cut)
    lines.append(f"{counts['passed']} passed, {counts['failed']} failed, "
                 f"{counts['errors']} errors")
    print("\n".join(lines))
    print(marker + json.dumps(counts))
'''


__all__ = ["MAX_FEEDBACK", "TEST_RUNNER", "clip_feedback", "new_marker", "read_report",
           "runner_program"]
