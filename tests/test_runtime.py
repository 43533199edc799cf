"""The background loop thread: sync, async and iterator doors, cancellation and lifecycle.

Every test uses its own ``LoopRunner`` and closes it, so a broken runner cannot leak into
the next test. Behaviour that needs a clean interpreter (exit, imports) runs in a subprocess.
"""

from __future__ import annotations

import _thread
import ast
import asyncio
import contextlib
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import aillm_lab.runtime as runtime_module
from aillm_lab.errors import RunnerError
from aillm_lab.runtime import LoopRunner, get_runner, run_sync

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "aillm_lab"


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter rooted at the repo, with warnings as errors."""
    return subprocess.run([sys.executable, "-W", "error", "-c", textwrap.dedent(code)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout)


class _Slow:
    """A long coroutine that reports when it starts and when it is cancelled."""

    def __init__(self, seconds: float = 30.0) -> None:
        self.seconds = seconds
        self.started = threading.Event()
        self.cancelled = threading.Event()
        self.finished = threading.Event()

    async def __call__(self) -> str:
        self.started.set()
        try:
            await asyncio.sleep(self.seconds)
            return "slept"
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        finally:
            self.finished.set()


async def _ident() -> int:
    return threading.get_ident()


async def _value(value: object) -> object:
    await asyncio.sleep(0)
    return value


# -- lifecycle ------------------------------------------------------------------------------
def test_runner_starts_lazily_and_only_on_first_use():
    r = LoopRunner(name="aillm-test-lazy")
    try:
        assert not r.started
        assert not any(t.name == "aillm-test-lazy" for t in threading.enumerate())
        assert r.run(_value(3)) == 3
        assert r.started
        threads = [t for t in threading.enumerate() if t.name == "aillm-test-lazy"]
        assert len(threads) == 1 and threads[0].daemon
    finally:
        r.close()
    assert not r.started


def test_sync_call_runs_on_the_runner_thread_not_the_caller(runner):
    ident = runner.run(_ident())
    assert ident != threading.get_ident()
    assert ident == runner.run(_ident())
    assert not runner.in_runner_thread()


def test_sync_call_returns_the_coroutine_result_and_reraises_its_error(runner):
    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("boom from the loop")

    assert runner.run(_value({"a": 1})) == {"a": 1}
    with pytest.raises(ValueError, match="boom from the loop"):
        runner.run(boom())
    assert runner.run(_value("still fine")) == "still fine"


def test_sync_call_in_a_plain_script_returns_and_leaves_no_non_daemon_threads():
    proc = _python("""
        import asyncio, threading
        from aillm_lab.runtime import LoopRunner, run_sync

        async def answer():
            await asyncio.sleep(0.01)
            return 42

        r = LoopRunner()
        assert r.run(answer()) == 42
        assert run_sync(answer()) == 42
        leftover = [t.name for t in threading.enumerate()
                    if not t.daemon and t is not threading.main_thread()]
        assert leftover == [], leftover
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_sync_call_inside_asyncio_run_works_without_nest_asyncio(runner):
    async def main() -> tuple[int, int]:
        outer = threading.get_ident()
        # a sync facade called from inside a running loop (as in a Jupyter cell)
        inner = runner.run(_ident())
        return outer, inner

    outer, inner = asyncio.run(main())
    assert outer == threading.get_ident()
    assert inner != outer
    assert "nest_asyncio" not in sys.modules


def test_sync_call_from_the_runner_thread_raises_runner_error_instead_of_hanging(runner):
    async def nested() -> None:
        inner = _value(1)
        try:
            runner.run(inner)
        finally:
            # run() must not leave the rejected coroutine un-awaited and un-closed
            assert inner.cr_frame is None

    start = time.monotonic()
    with pytest.raises(RunnerError, match="runner"):
        runner.run(nested(), timeout=10)
    assert time.monotonic() - start < 5
    assert runner.run(_value("usable")) == "usable"


def test_sync_iterate_from_the_runner_thread_raises_runner_error_instead_of_hanging(runner):
    made = []

    async def agen() -> AsyncIterator[int]:
        made.append(True)
        yield 1

    async def nested() -> None:
        next(iter(runner.iterate(agen)))

    with pytest.raises(RunnerError, match="stream"):
        runner.run(nested(), timeout=10)
    assert made == []
    assert list(runner.iterate(agen)) == [1]


def test_close_from_the_runner_thread_raises_runner_error(runner):
    async def closer_in_loop() -> None:
        runner.close()

    with pytest.raises(RunnerError, match="close"):
        runner.run(closer_in_loop(), timeout=10)
    assert runner.started
    assert runner.run(_value(1)) == 1


def test_two_hundred_sequential_sync_calls_reuse_one_loop_and_its_resources(runner):
    class Resource:
        """Loop-bound state, created lazily on the first call like an HTTP client."""

        def __init__(self) -> None:
            self.loop = asyncio.get_running_loop()
            self.lock = asyncio.Lock()
            self.queue: asyncio.Queue[int] = asyncio.Queue()

    holder: dict[str, Resource] = {}

    async def call(i: int) -> int:
        res = holder.get("r")
        if res is None:
            res = holder["r"] = Resource()
        assert asyncio.get_running_loop() is res.loop
        # make the lock and the queue bind to the loop by really waiting on them
        async with res.lock:
            waiter = asyncio.ensure_future(res.lock.acquire())
            await asyncio.sleep(0)
            assert not waiter.done()
        await waiter
        res.lock.release()
        getter = asyncio.ensure_future(res.queue.get())
        await asyncio.sleep(0)
        res.queue.put_nowait(i)
        return await getter

    errors: list[BaseException] = []
    for i in range(200):
        try:
            assert runner.run(call(i), timeout=10) == i
        except RuntimeError as exc:  # "Event loop is closed" / "attached to a different loop"
            errors.append(exc)
    assert errors == []
    assert holder["r"].loop is runner.loop


def test_keyboard_interrupt_during_a_sync_call_cancels_the_task_and_keeps_the_runner(runner):
    slow = _Slow(30)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            runner.run(slow())
        interrupted_after = time.monotonic() - start
    finally:
        timer.cancel()
        timer.join()
    assert slow.started.is_set()
    assert slow.cancelled.wait(1.0), "the runner task was not cancelled within 1 s"
    assert interrupted_after < 10
    assert runner.run(_value("after ctrl-c"), timeout=10) == "after ctrl-c"


def test_timed_out_sync_call_raises_timeout_error_cancels_the_task_and_keeps_the_runner(runner):
    slow = _Slow(30)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="timed out"):
        runner.run(slow(), timeout=0.2)
    assert time.monotonic() - start < 10
    assert slow.cancelled.wait(1.0), "the runner task was not cancelled within 1 s"
    assert runner.run(_value("after timeout"), timeout=10) == "after timeout"


def test_a_fast_call_with_a_timeout_returns_normally(runner):
    assert runner.run(_value(7), timeout=5) == 7


def test_close_joins_the_thread_is_idempotent_and_the_runner_restarts(runner):
    async def thread() -> threading.Thread:
        return threading.current_thread()

    first = runner.run(thread())
    first_loop = runner.loop
    runner.close()
    assert not first.is_alive()
    assert first_loop.is_closed()
    assert not runner.started
    runner.close()  # second close is a no-op
    assert not runner.started

    second = runner.run(thread())
    assert second is not first and second.is_alive()
    assert runner.loop is not first_loop
    assert runner.run(_value("restarted")) == "restarted"


def test_close_on_a_runner_that_never_started_does_nothing():
    r = LoopRunner()
    r.close()
    r.close()
    assert not r.started


def test_process_that_never_closes_the_runner_exits_cleanly():
    proc = _python("""
        import asyncio
        from aillm_lab.runtime import LoopRunner, run_sync

        r = LoopRunner()

        async def forever():
            await asyncio.sleep(3600)

        async def setup():
            asyncio.get_running_loop().create_task(forever())  # still pending at exit
            await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2])

        async def cleanup():
            await asyncio.sleep(0)

        r.run(setup())
        r.on_close(cleanup)
        run_sync(asyncio.sleep(0))
    """)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_close_runs_registered_closers_on_the_loop_in_reverse_order(runner):
    calls: list[tuple[str, int, bool]] = []
    loop = runner.loop
    runner_ident = runner.run(_ident())

    def closer(name: str):
        async def close() -> None:
            await asyncio.sleep(0)
            calls.append((name, threading.get_ident(), asyncio.get_running_loop() is loop))
        return close

    runner.on_close(closer("first"))
    runner.on_close(closer("second"))
    runner.close()
    assert calls == [("second", runner_ident, True), ("first", runner_ident, True)]

    # closers belong to one lifetime: a restarted runner does not run them again
    runner.run(_value(0))
    runner.close()
    assert len(calls) == 2


def test_a_failing_closer_does_not_stop_the_others_or_the_close(runner):
    ran: list[str] = []

    async def good() -> None:
        ran.append("good")

    async def bad() -> None:
        raise OSError("disk vanished")

    async def thread() -> threading.Thread:
        return threading.current_thread()

    t = runner.run(thread())
    runner.on_close(good)
    runner.on_close(bad)
    runner.close()
    assert ran == ["good"]
    assert not t.is_alive()
    assert runner.run(_value("restarted"), timeout=10) == "restarted"


def test_a_closer_can_use_the_async_door_while_the_runner_closes(runner):
    seen: list[int] = []

    async def closer() -> None:
        seen.append(await runner.arun(_ident(), timeout=5))

    runner_ident = runner.run(_ident())
    runner.on_close(closer)
    runner.close(timeout=10)
    assert seen == [runner_ident]


def test_close_cancels_pending_tasks_and_shuts_down_the_default_executor(runner):
    slow = _Slow(3600)

    async def setup() -> threading.Thread:
        loop = asyncio.get_running_loop()
        loop.create_task(slow())
        return await loop.run_in_executor(None, threading.current_thread)

    worker = runner.run(setup())
    assert worker is not threading.current_thread()
    assert worker.is_alive()
    assert slow.started.wait(1.0)
    runner.close()
    assert slow.cancelled.is_set()
    assert not worker.is_alive()


# -- async door ------------------------------------------------------------------------------
def test_arun_from_the_runner_loop_awaits_directly_without_a_thread_hop(runner):
    async def outer() -> tuple[int, int, bool]:
        here = threading.get_ident()
        there = await runner.arun(_ident())
        same_loop = await runner.arun(_loop_of())
        return here, there, same_loop is asyncio.get_running_loop()

    async def _loop_of() -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    here, there, same_loop = runner.run(outer())
    assert here == there
    assert same_loop


def test_arun_on_the_runner_loop_hands_back_the_coroutine_and_still_honours_a_timeout(runner):
    async def outer() -> None:
        coro = _ident()
        assert runner.arun(coro) is coro  # no wrapper frame for each call made on the loop
        await coro
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await runner.arun(asyncio.sleep(5), timeout=0.05)
        assert time.monotonic() - started < 2

    runner.run(outer())


def test_arun_from_another_loop_runs_on_the_runner_thread(runner):
    runner_ident = runner.run(_ident())

    async def main() -> tuple[int, object]:
        return await runner.arun(_ident()), await runner.arun(_value("x"), timeout=5)

    ident, value = asyncio.run(main())
    assert ident == runner_ident != threading.get_ident()
    assert value == "x"


def test_arun_reraises_the_coroutine_error_in_the_caller_loop(runner):
    async def boom() -> None:
        raise KeyError("missing")

    async def main() -> None:
        await runner.arun(boom())

    with pytest.raises(KeyError, match="missing"):
        asyncio.run(main())


def test_cancelling_the_outer_await_cancels_the_runner_task(runner):
    slow = _Slow(30)

    async def main() -> None:
        task = asyncio.ensure_future(runner.arun(slow()))
        for _ in range(200):
            if slow.started.is_set():
                break
            await asyncio.sleep(0.01)
        assert slow.started.is_set()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert slow.cancelled.wait(1.0), "the runner task was not cancelled within 1 s"
    assert runner.run(_value(1)) == 1


def test_arun_timeout_from_another_loop_cancels_the_runner_task(runner):
    slow = _Slow(30)

    async def main() -> None:
        await runner.arun(slow(), timeout=0.2)

    with pytest.raises(TimeoutError):
        asyncio.run(main())
    assert slow.cancelled.wait(1.0)


# -- iterator doors --------------------------------------------------------------------------
def _counting(n: int, fail_at: int | None = None, done: threading.Event | None = None,
              pause: float = 0.0):
    async def agen() -> AsyncIterator[int]:
        try:
            for i in range(n):
                if i == fail_at:
                    raise ValueError(f"producer failed at {i}")
                if pause:
                    await asyncio.sleep(pause)
                else:
                    await asyncio.sleep(0)
                yield i
        finally:
            if done is not None:
                done.set()
    return agen


def test_iterate_yields_items_in_order(runner):
    assert list(runner.iterate(_counting(100))) == list(range(100))


def test_iterate_propagates_the_producer_exception_after_the_items_before_it(runner):
    got: list[int] = []
    with pytest.raises(ValueError, match="producer failed at 3"):
        for item in runner.iterate(_counting(10, fail_at=3)):
            got.append(item)
    assert got == [0, 1, 2]
    assert runner.run(_value("ok")) == "ok"


def test_breaking_out_of_iterate_early_cancels_the_producer(runner):
    done = threading.Event()
    got = []
    for item in runner.iterate(_counting(10_000, done=done, pause=0.01)):
        got.append(item)
        if item == 2:
            break
    assert got == [0, 1, 2]
    assert done.wait(1.0), "the producer's finally did not run within 1 s"


def test_iterate_timeout_raises_and_cancels_the_producer(runner):
    done = threading.Event()
    got = []
    with pytest.raises(TimeoutError):
        for item in runner.iterate(_counting(10_000, done=done, pause=0.05), timeout=0.3):
            got.append(item)
    assert 0 < len(got) < 10_000
    assert done.wait(1.0)
    assert runner.run(_value("ok")) == "ok"


def test_aiterate_from_another_loop_yields_items_in_order(runner):
    async def main() -> list[int]:
        return [i async for i in runner.aiterate(_counting(50))]

    assert asyncio.run(main()) == list(range(50))


def test_aiterate_on_the_runner_loop_yields_items_in_order(runner):
    async def main() -> list[int]:
        return [i async for i in runner.aiterate(_counting(20))]

    assert runner.run(main()) == list(range(20))


def test_aiterate_propagates_the_producer_exception(runner):
    got: list[int] = []

    async def main() -> None:
        async for item in runner.aiterate(_counting(10, fail_at=2)):
            got.append(item)

    with pytest.raises(ValueError, match="producer failed at 2"):
        asyncio.run(main())
    assert got == [0, 1]


def test_closing_aiterate_early_cancels_the_producer(runner):
    done = threading.Event()

    async def main() -> list[int]:
        got = []
        async with contextlib.aclosing(
                runner.aiterate(_counting(10_000, done=done, pause=0.01))) as items:
            async for item in items:
                got.append(item)
                if item == 2:
                    break
        return got

    assert asyncio.run(main()) == [0, 1, 2]
    assert done.wait(1.0), "the producer's finally did not run within 1 s"


# -- the shared runner -----------------------------------------------------------------------
def test_get_runner_is_one_shared_instance_and_run_sync_uses_it():
    shared = get_runner()
    assert get_runner() is shared
    assert run_sync(_value("shared")) == "shared"
    assert run_sync(_ident()) == shared.run(_ident())


def test_get_runner_is_created_once_under_concurrent_first_use():
    proc = _python("""
        import threading
        from aillm_lab.runtime import get_runner

        seen = []
        barrier = threading.Barrier(8)

        def grab():
            barrier.wait()
            seen.append(get_runner())

        threads = [threading.Thread(target=grab) for _ in range(8)]
        for t in threads: t.start()
        for t in threads: t.join()
        assert len({id(r) for r in seen}) == 1
    """)
    assert proc.returncode == 0, proc.stderr


# -- process-wide invariants -----------------------------------------------------------------
def test_import_aillm_lab_sets_no_start_method_and_loads_no_heavy_modules_or_network():
    proc = _python("""
        import socket, sys

        attempts = []
        real_connect = socket.socket.connect

        def connect(self, address):
            attempts.append(address)
            return real_connect(self, address)

        socket.socket.connect = connect

        import aillm_lab
        import multiprocessing

        assert multiprocessing.get_start_method(allow_none=True) is None
        heavy = sorted({"torch", "transformers", "panel"} & set(sys.modules))
        assert heavy == [], heavy
        # light public names load without dragging in the heavy stack either
        aillm_lab.LabSettings, aillm_lab.Message, aillm_lab.LoopRunner, aillm_lab.registry
        heavy = sorted({"torch", "transformers", "panel"} & set(sys.modules))
        assert heavy == [], heavy
        assert multiprocessing.get_start_method(allow_none=True) is None
        assert attempts == [], attempts
        print("ok")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def _forbidden_calls(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    asyncio_names = {"asyncio"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "nest_asyncio":
                    found.append((node.lineno, "import nest_asyncio"))
                if alias.name == "asyncio" and alias.asname:
                    asyncio_names.add(alias.asname)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] == "nest_asyncio":
                found.append((node.lineno, "from nest_asyncio import"))
            if module == "asyncio" and any(a.name == "run" for a in node.names):
                found.append((node.lineno, "from asyncio import run"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "run_until_complete":
            found.append((node.lineno, "run_until_complete"))
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "run" and isinstance(node.func.value, ast.Name)
                and node.func.value.id in asyncio_names):
            found.append((node.lineno, "asyncio.run("))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "__import__" and node.args \
                and isinstance(node.args[0], ast.Constant) and node.args[0].value == "nest_asyncio":
            found.append((node.lineno, "__import__('nest_asyncio')"))
    return found


def test_the_forbidden_call_finder_catches_each_forbidden_form():
    src = textwrap.dedent("""
        import asyncio
        import asyncio as aio
        import nest_asyncio
        from asyncio import run
        asyncio.run(main())
        aio.run(main())
        loop.run_until_complete(main())
        '''asyncio.run( in a docstring is fine'''
    """)
    kinds = sorted(kind for _, kind in _forbidden_calls(ast.parse(src)))
    assert kinds == sorted(["import nest_asyncio", "from asyncio import run", "asyncio.run(",
                            "asyncio.run(", "run_until_complete"])


def test_no_library_code_calls_asyncio_run_run_until_complete_or_nest_asyncio():
    files = sorted(PACKAGE.rglob("*.py"))
    assert files, "aillm_lab sources not found"
    offenders = {}
    for path in files:
        found = _forbidden_calls(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}


def test_an_error_raised_by_the_coroutine_reaches_the_caller_at_once(runner, monkeypatch):
    async def boom() -> None:
        raise ValueError("boom")

    monkeypatch.setattr(runtime_module, "_CANCEL_GRACE", 30.0)
    runner.run(asyncio.sleep(0))
    start = time.monotonic()
    with pytest.raises(ValueError, match="boom"):
        runner.run(boom())
    assert time.monotonic() - start < 15, "an error must not wait out the cancel grace"


def test_off_close_forgets_a_cleanup_so_closed_owners_are_not_kept(runner: LoopRunner) -> None:
    ran: list[str] = []

    async def first() -> None:
        ran.append("first")

    async def second() -> None:
        ran.append("second")

    runner.on_close(first)
    runner.on_close(second)
    runner.off_close(first)
    runner.off_close(first)  # twice is harmless
    runner.close()
    assert ran == ["second"]
