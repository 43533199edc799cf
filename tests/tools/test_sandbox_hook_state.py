"""Model code cannot switch off the sandbox's audit hook by rebinding what the hook reads.

Red-team finding: after one refusal, ``e.__traceback__`` leads to the hook's frame; its
locals held the hook's helpers, and setting ``cell_contents`` on their closure cells made
every path readable and writable as far as the hook was concerned (Landlock still held).
The hook now keeps no closures and reads no globals: its data are positional defaults,
and replacing its functions' defaults or code is refused.

Each attack below tries every route it finds; afterwards a read of /etc/passwd must still
be refused *by the hook* (its readable ``SandboxRefused``, not only Landlock's EACCES).
"""

from __future__ import annotations

import dis
import sys
import types
from collections.abc import Iterator

import pytest

from aillm_lab.tools import _sandbox_hook
from aillm_lab.tools.policy import CodePolicy
from aillm_lab.tools.python import PythonSandbox

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sandbox")

# defined in the sandbox: every way to open what the hook reads, from the frames given
NEUTER = '''
import shutil, sys, types
OPEN = ("/",)
done, seen = [], []

def is_roots(v):
    return isinstance(v, tuple) and v and all(isinstance(x, str) and x.startswith("/")
                                              for x in v)

def neuter(frames):
    for f in frames:
        if f.f_code.co_filename.startswith("<cell"):
            continue  # the attacker's own code
        seen.append(f.f_code.co_name)
        for v in list(f.f_locals.values()):
            if not isinstance(v, types.FunctionType):
                continue
            for cell in v.__closure__ or ():
                try:
                    if is_roots(cell.cell_contents):
                        cell.cell_contents = OPEN
                        done.append("cell")
                except Exception:
                    pass
            if v.__defaults__:
                try:
                    v.__defaults__ = tuple(OPEN if is_roots(d) else d for d in v.__defaults__)
                    done.append("defaults")
                except Exception:
                    pass
            try:
                v.__code__ = (lambda *a, **k: ("", "")).__code__
                done.append("code")
            except Exception:
                pass
        f.f_locals.update({k: OPEN for k, v in f.f_locals.items() if is_roots(v)})

def frames_of(tb):
    out = []
    while tb is not None:
        out.append(tb.tb_frame)
        tb = tb.tb_next
    return out
'''

HOOK_REFUSED = "sandbox refused open: read access to '/etc/passwd'"


@pytest.fixture
def sb() -> Iterator[PythonSandbox]:
    box = PythonSandbox(CodePolicy(memory_mb=512, wall_s=20))
    assert box.run(NEUTER).ok
    yield box
    box.close()


def assert_hook_still_refuses(sb: PythonSandbox) -> None:
    result = sb.run("open('/etc/passwd').read()")
    assert not result.ok
    assert HOOK_REFUSED in (result.error or ""), result.error
    assert "code.path (open)" in result.refused
    result = sb.run("open('/tmp/written_by_the_sandbox_hook_test', 'w')")
    assert not result.ok and "sandbox refused open: write access" in (result.error or "")


def test_rebinding_the_hooks_state_from_a_refusals_traceback_fails(sb: PythonSandbox) -> None:
    result = sb.run("try:\n    open('/etc/passwd')\nexcept PermissionError as e:\n"
                    "    neuter(frames_of(e.__traceback__))\ndone")
    assert sb.run("'hook' in seen").value == "True"  # the attack did reach the hook
    assert_hook_still_refuses(sb)
    assert "code.tamper (object.__setattr__)" in result.refused  # defaults or code swaps
    assert "'cell'" not in (result.value or "")


def test_rebinding_the_hooks_state_from_inside_the_hook_fails(sb: PythonSandbox) -> None:
    """A path object's ``__fspath__`` runs inside the hook (``shutil.rmtree``'s event
    carries the object itself), where the hook's frames are live."""
    code = ("class P:\n    def __fspath__(self):\n"
            "        f, frames = sys._getframe(1), []\n"
            "        while not f.f_code.co_filename.startswith('<cell'):\n"
            "            frames.append(f)\n"
            "            f = f.f_back\n"
            "        neuter(frames)\n        return '/etc'\n"
            "try:\n    shutil.rmtree(P())\nexcept PermissionError:\n    pass\ndone")
    result = sb.run(code)
    assert sb.run("{'check_writes', 'hook', 'target', 'text'} <= set(seen)").value == "True"
    assert_hook_still_refuses(sb)
    assert "'cell'" not in (result.value or "")


def test_the_hook_keeps_no_closures_and_reads_no_globals() -> None:
    """The rule that makes the above hold, checked on every function the hook is made of."""
    forbidden = {"LOAD_GLOBAL", "STORE_GLOBAL", "DELETE_GLOBAL", "LOAD_NAME", "LOAD_DEREF",
                 "STORE_DEREF", "LOAD_CLOSURE", "MAKE_CELL", "LOAD_CLASSDEREF"}
    pending = [c for c in _sandbox_hook.make_hook.__code__.co_consts
               if isinstance(c, types.CodeType)]
    assert len(pending) >= 8
    while pending:
        code = pending.pop()
        assert code.co_freevars == () and code.co_cellvars == (), code.co_name
        used = {ins.opname for ins in dis.get_instructions(code)} & forbidden
        assert not used, f"{code.co_name} uses {used}"
        pending += [c for c in code.co_consts if isinstance(c, types.CodeType)]
