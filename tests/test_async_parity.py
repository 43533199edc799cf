"""Sync and async stay in step: every public async method has its sync twin and vice versa.

The async method is the only implementation; its twin is derived in one line with
``runtime.sync_twin`` (like simonw/llm's ``test_async_parity``, but checked for every public
class of the package, not one pair). A class whose public interface is async only must say
why in ``ASYNC_ONLY``, so a new class cannot skip its sync door by accident.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import aillm_lab
from aillm_lab.runtime import Lifecycle, LoopRunner, sync_twin

PACKAGE = Path(aillm_lab.__file__).parent

# Classes whose public async methods have no sync twin on purpose, and why.
ASYNC_ONLY = {
    "aillm_lab.experiments.ray_executor.RayExecutor": "an executor Experiment.arun/run awaits; "
                                                     "users call the experiment's doors",
    "aillm_lab.llm.base.Model": "the provider contract: users call models through Lab's doors",
    "aillm_lab.llm.gateway.Gateway": "behind Lab.achat/chat; runs on the runner loop",
    "aillm_lab.llm.gateway.StoreHook": "a protocol the gateway awaits",
    "aillm_lab.llm.store.ResponseStore": "the gateway's record/replay store, on the loop",
    "aillm_lab.llm.store.TieredStore": "the gateway's store in front of the memory cache",
    "aillm_lab.llm.limits.TokenBucket": "a gateway limiter, awaited before each call",
    "aillm_lab.llm.limits.ConcurrencyLimit": "a gateway limiter, awaited before each call",
    "aillm_lab.llm.limits.ModelLimiter": "a gateway limiter, awaited before each call",
    "aillm_lab.llm.calllog.CallLog": "sync-first: DuckDB and SQLite in threads; its async "
                                     "methods offload the sync ones (Lab.calls is the door)",
    "aillm_lab.db.LabDB": "the connection every store shares, used on the runner loop",
    "aillm_lab.rag.embeddings.Embedder": "behind Lab.embed/aembed and Knowledge",
    "aillm_lab.rag.embeddings.EmbeddingCache": "Knowledge's cache, on the runner loop",
    "aillm_lab.rag.index.DenseIndex": "Knowledge's usearch index, on the runner loop",
    "aillm_lab.tools.audit.AuditLog": "behind Toolbox.audit/aaudit and the guard",
    "aillm_lab.tools.safety.SafetyGuard": "behind Toolbox.call/acall and invoke/ainvoke",
    "aillm_lab.tools.jail.Jail": "behind run_shell and the git tools, on the runner loop",
    "aillm_lab.tools.jail.JailedProcess": "a process the jail started, awaited by its tool",
    "aillm_lab.tools.base.Tool": "a tool is awaited by the guard; Toolbox.call is the sync "
                                 "door, and the decorated function stays callable as is",
    "aillm_lab.runtime.LoopRunner": "the primitive the twins are built on",
}


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(PACKAGE)], "aillm_lab."):
        parts = info.name.split(".")[1:]
        if any(p.startswith("_") for p in parts) or parts[0] == "ui":
            continue
        names.append(info.name)
    return names


def _public_classes() -> list[type]:
    found: dict[str, type] = {}
    for name in _public_modules():
        module = importlib.import_module(name)
        for cname, cls in vars(module).items():
            if (not cname.startswith("_") and inspect.isclass(cls)
                    and cls.__module__ == module.__name__):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return list(found.values())


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _async_only(cls: type) -> str | None:
    if getattr(cls, "_is_protocol", False):
        return "a Protocol: it says what a collaborator must offer"
    for base in cls.__mro__:
        reason = ASYNC_ONLY.get(_qualname(base))
        if reason is not None:
            return reason
    return None


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def _public_members(cls: type) -> dict[str, object]:
    return {n: v for n, v in inspect.getmembers(cls) if not n.startswith("_")}


CLASSES = _public_classes()


def test_the_walk_finds_the_classes_users_reach() -> None:
    names = {_qualname(c) for c in CLASSES}
    for expected in ("aillm_lab.core.lab.Lab", "aillm_lab.tools.toolbox.Toolbox",
                     "aillm_lab.rag.retriever.Knowledge",
                     "aillm_lab.memory.long_term.LongTermMemory",
                     "aillm_lab.tools.python.PythonSandbox", "aillm_lab.tools.database.Database"):
        assert expected in names


@pytest.mark.parametrize("cls", CLASSES, ids=_qualname)
def test_every_public_async_method_has_a_derived_sync_twin(cls: type) -> None:
    if _async_only(cls) is not None:
        return
    members = _public_members(cls)
    missing = []
    for name, fn in members.items():
        if not _is_async(fn):
            continue
        twin = members.get(name[1:]) if name.startswith("a") else None
        if twin is None or getattr(twin, "__sync_twin_of__", None) != name:
            missing.append(name)
    assert not missing, (
        f"{_qualname(cls)}: async {missing} have no sync twin made by sync_twin; write "
        f"`x = sync_twin(ax)` or, if the class is async-only on purpose, add it to ASYNC_ONLY "
        f"with the reason")


@pytest.mark.parametrize("cls", CLASSES, ids=_qualname)
def test_every_sync_method_with_an_async_sibling_is_its_derived_twin(cls: type) -> None:
    members = _public_members(cls)
    for name, fn in members.items():
        async_fn = members.get(f"a{name}")
        if _is_async(fn) or not _is_async(async_fn) or not callable(fn):
            continue
        if _qualname(cls) in ("aillm_lab.runtime.LoopRunner", "aillm_lab.llm.calllog.CallLog"):
            continue  # the primitive itself, and the sync-first call log (see ASYNC_ONLY)
        assert getattr(fn, "__sync_twin_of__", None) == f"a{name}", (
            f"{_qualname(cls)}.{name} is written by hand; derive it: "
            f"`{name} = sync_twin(a{name})`")
        async_params = list(inspect.signature(async_fn).parameters.values())
        assert list(inspect.signature(fn).parameters.values()) == async_params, name


@pytest.mark.parametrize("cls", CLASSES, ids=_qualname)
def test_every_twin_names_an_async_method_of_its_class(cls: type) -> None:
    members = _public_members(cls)
    for name, fn in members.items():
        source = getattr(fn, "__sync_twin_of__", None)
        if source is not None:
            assert _is_async(getattr(cls, source, None)), f"{_qualname(cls)}.{name} -> {source}"


def test_the_context_manager_methods_come_from_lifecycle_only() -> None:
    """``__enter__/__exit__/__aenter__/__aexit__`` are written once, in ``Lifecycle``."""
    offenders = []
    for cls in CLASSES:
        for dunder in ("__enter__", "__exit__", "__aenter__", "__aexit__"):
            if dunder in vars(cls) and cls is not Lifecycle:
                offenders.append(f"{_qualname(cls)}.{dunder}")
    allowed = {"aillm_lab.testing.fake_servers.FakeServer.__enter__",
               "aillm_lab.testing.fake_servers.FakeServer.__exit__"}
    assert set(offenders) <= allowed, offenders


def test_no_sync_twin_is_written_out_by_hand() -> None:
    """No method outside runtime.py drives its own async sibling through a runner."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "runtime.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for method in cls.body:
                if not isinstance(method, ast.FunctionDef):
                    continue
                for call in (n for n in ast.walk(method) if isinstance(n, ast.Call)):
                    func = call.func
                    if isinstance(func, ast.Attribute) and func.attr in ("run", "iterate") \
                            and call.args and _drives_self(call.args[0]):
                        offenders.append(f"{path.relative_to(PACKAGE)}:{call.lineno} "
                                         f"{cls.name}.{method.name}")
    assert not offenders, offenders


def _drives_self(node: ast.expr) -> bool:
    """``self.aX(...)``, ``self._x(...)`` or a lambda around one: a runner driving us."""
    if isinstance(node, ast.Lambda):
        node = node.body
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "self")


# -- the helper itself ------------------------------------------------------------------
class _Counter(Lifecycle):
    def __init__(self, runner: LoopRunner) -> None:
        self.runner, self.closed, self.sync_timeout = runner, 0, None

    async def aadd(self, x: int, *, y: int = 1) -> int:
        """Add."""
        return x + y

    add = sync_twin(aadd)

    async def acount(self, n: int):  # type: ignore[no-untyped-def]
        for i in range(n):
            yield i

    count = sync_twin(acount)

    async def aclose(self) -> None:
        self.closed += 1


def test_sync_twin_runs_the_async_method_on_the_objects_runner(runner: LoopRunner) -> None:
    counter = _Counter(runner)
    assert counter.add(1, y=2) == 3
    assert list(counter.count(3)) == [0, 1, 2]
    assert inspect.signature(_Counter.add) == inspect.signature(_Counter.aadd)
    assert _Counter.add.__doc__ == "Add."
    with counter:
        pass
    assert counter.closed == 1


def test_sync_twin_honours_sync_timeout(runner: LoopRunner) -> None:
    class Slow(_Counter):
        async def aadd(self, x: int, *, y: int = 1) -> int:
            import asyncio

            await asyncio.sleep(5)
            return 0

    slow = Slow(runner)
    slow.sync_timeout = 0.1
    with pytest.raises(TimeoutError):
        slow.add(1)  # the twin looked aadd up by name: the subclass's override ran


def test_sync_twin_inside_a_running_loop_works_and_async_with_closes(runner: LoopRunner) -> None:
    import asyncio

    async def main() -> tuple[int, int]:
        async with _Counter(runner) as counter:
            inside = counter.add(2)  # sync door inside a running loop, as in Jupyter
            awaited = await counter.aadd(2)
        return inside + awaited, counter.closed

    assert asyncio.run(main()) == (6, 1)


def test_sync_twin_refuses_a_plain_function() -> None:
    def plain(self: object) -> None: ...

    with pytest.raises(TypeError, match="async def"):
        sync_twin(plain)
