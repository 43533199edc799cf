"""The one background event loop that owns every async resource.

Why a thread: Jupyter already runs a loop on the main thread, so a sync facade cannot use
``asyncio.run`` or ``run_until_complete`` there. Hopping to a private loop thread works the
same in cells, scripts, pytest, ``asyncio.run(main())`` and ``panel serve``, and keeps
HTTP clients and database connections bound to a single loop for their whole life.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import inspect
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, overload

from aillm_lab.errors import RunnerError

T = TypeVar("T")
S = TypeVar("S")
P = ParamSpec("P")
Closer = Callable[[], Awaitable[None]]

log = logging.getLogger(__name__)

_SLICE = 0.05  # seconds between checks for KeyboardInterrupt while waiting
_CANCEL_GRACE = 1.0  # how long a cancelled task gets to unwind before we return
_DONE = object()


class LoopRunner:
    """A lazily started daemon thread running one event loop, with sync and async doors."""

    def __init__(self, name: str = "aillm-lab-loop") -> None:
        self.name = name
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closers: list[Closer] = []
        self._closing: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None
        self._atexit_registered = False

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The runner's loop, started on first use (and again after ``close()``)."""
        loop = self._loop
        return loop if loop is not None else self._start()

    @property
    def started(self) -> bool:
        return self._loop is not None

    def in_runner_thread(self) -> bool:
        me = threading.get_ident()
        closing = self._closing
        return any(t is not None and t.ident == me
                   for t in (self._thread, closing[1] if closing else None))

    def on_close(self, closer: Closer) -> None:
        """Register an async cleanup that runs on the loop when the runner closes."""
        self.loop  # noqa: B018 - closers belong to the loop that is current now
        self._closers.append(closer)

    def off_close(self, closer: Closer) -> None:
        """Forget a cleanup registered with ``on_close`` (its owner closed first), so a
        long-lived runner does not keep every closed object alive until it closes."""
        with contextlib.suppress(ValueError):
            self._closers.remove(closer)

    def close(self, timeout: float = 10.0) -> None:
        """Close resources, cancel tasks, stop the loop and join the thread; idempotent."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            if self.in_runner_thread():
                raise RunnerError("LoopRunner.close() was called from the runner thread; "
                                  "call it from any other thread, or use `await aclose()`.")
            self._loop = self._thread = None
            self._closing = (loop, thread)
            closers, self._closers = self._closers, []
        try:
            asyncio.run_coroutine_threadsafe(_shutdown(closers), loop).result(timeout)
        except Exception as exc:  # cleanup must not stop interpreter exit
            log.warning("runner shutdown was incomplete: %r", exc)
        finally:
            self._closing = None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if not thread.is_alive():
            loop.close()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is not None:
                return self._loop
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(target=_serve, args=(loop, ready), name=self.name,
                                      daemon=True)
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            if not self._atexit_registered:
                atexit.register(self.close)
                self._atexit_registered = True
            return loop

    # -- sync door -------------------------------------------------------------------------
    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the runner loop and wait; Ctrl-C or a timeout cancels it."""
        if self.in_runner_thread():
            coro.close()
            raise RunnerError(
                "A sync aillm_lab call was made from the runner's own event loop thread, "
                "where it would deadlock. Use the async form (`await lab.achat(...)`) there.")
        call = _Call(coro, self.loop)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                wait = _SLICE if deadline is None else min(_SLICE, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError(f"aillm_lab call timed out after {timeout} s")
                if call.finished.acquire(timeout=wait):
                    break
        except BaseException:
            call.cancel()
            raise
        return call.result()

    def iterate(self, make: Callable[[], AsyncIterator[T]],
                timeout: float | None = None) -> Iterator[T]:
        """Drive an async iterator on the runner loop and yield its items to a sync caller."""
        if self.in_runner_thread():
            raise RunnerError("A sync aillm_lab stream was started from the runner thread; "
                              "use the async form (`async for ... in lab.astream(...)`).")
        items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        finished = threading.Event()
        fut = asyncio.run_coroutine_threadsafe(
            _tracked(_pump(make, items.put), finished), self.loop)
        fut.add_done_callback(lambda _: items.put(_DONE))
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"aillm_lab stream timed out after {timeout} s")
                try:
                    item = items.get(timeout=_SLICE)
                except queue.Empty:
                    continue
                if item is _DONE:
                    fut.result()  # re-raise the producer's error, if any
                    return
                yield item
        finally:
            if not fut.done():
                _cancel(fut, finished)

    # -- async door ------------------------------------------------------------------------
    def arun(self, coro: Coroutine[Any, Any, T],
             timeout: float | None = None) -> Coroutine[Any, Any, T]:
        """Await ``coro`` on the runner loop; no thread hop when already on it.

        On the runner loop without a timeout this is ``coro`` itself, so a call made there
        carries no extra frame; otherwise a coroutine that hops over and back.
        """
        current = _running_loop()
        closing = self._closing
        if current is not None and (current is self._loop or (closing and current is closing[0])):
            return coro if timeout is None else asyncio.wait_for(coro, timeout)
        return self._across(coro, timeout)

    async def _across(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        caller = asyncio.get_running_loop()
        done: asyncio.Future[T] = caller.create_future()
        hop = _Hop(coro, self.loop, caller, done)
        try:
            return await (done if timeout is None else asyncio.wait_for(done, timeout))
        finally:
            if not done.done() or done.cancelled():
                hop.cancel()  # we were cancelled or timed out: so is the runner task

    async def aiterate(self, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Async twin of :meth:`iterate` for callers on another loop (Jupyter, Panel)."""
        loop = self.loop
        caller = asyncio.get_running_loop()
        if caller is loop:
            async for item in make():
                yield item
            return
        items: asyncio.Queue[Any] = asyncio.Queue()

        def put(item: Any) -> None:
            caller.call_soon_threadsafe(items.put_nowait, item)

        fut = asyncio.run_coroutine_threadsafe(_pump(make, put), loop)
        fut.add_done_callback(lambda _: _safe_call(caller, items.put_nowait, _DONE))
        try:
            while (item := await items.get()) is not _DONE:
                yield item
            fut.result()
        finally:
            fut.cancel()


_default_runner: LoopRunner | None = None
_default_lock = threading.Lock()


def get_runner() -> LoopRunner:
    """The process-wide runner shared by every Lab unless one is given its own."""
    global _default_runner
    if _default_runner is None:
        with _default_lock:
            if _default_runner is None:
                _default_runner = LoopRunner()
    return _default_runner


def run_sync(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run a coroutine on the shared runner from sync code, in or out of a running loop."""
    return get_runner().run(coro, timeout)


# -- sync twins ---------------------------------------------------------------------------
@overload
def sync_twin(amethod: Callable[Concatenate[S, P], Coroutine[Any, Any, T]]
              ) -> Callable[Concatenate[S, P], T]: ...
@overload
def sync_twin(amethod: Callable[Concatenate[S, P], AsyncIterator[T]]
              ) -> Callable[Concatenate[S, P], Iterator[T]]: ...
def sync_twin(amethod: Callable[..., Any]) -> Callable[..., Any]:
    """The sync twin of an async method, in one line: ``chat = sync_twin(achat)``.

    Why one helper: the async method is the only implementation, and every sync door behaves
    the same (Jupyter cells, scripts, ``asyncio.run``, Ctrl-C cancels the work in flight).
    The twin goes through ``self.runner`` (the shared runner when an object has none) with
    ``self.sync_timeout`` if it has one, and looks the async method up by name on each call,
    so a subclass that overrides ``aclose`` gets a ``close`` that runs its override.
    """
    name = amethod.__name__
    if inspect.isasyncgenfunction(amethod):
        @functools.wraps(amethod)
        def iterate(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
            return _runner_of(self).iterate(lambda: getattr(self, name)(*args, **kwargs),
                                            getattr(self, "sync_timeout", None))
        twin = iterate
    elif inspect.iscoroutinefunction(amethod):
        @functools.wraps(amethod)
        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            return _runner_of(self).run(getattr(self, name)(*args, **kwargs),
                                        getattr(self, "sync_timeout", None))
        twin = call
    else:
        raise TypeError(f"sync_twin({name}): pass an `async def` method or async generator")
    twin.__doc__ = amethod.__doc__ or f"The sync twin of ``{name}``."
    twin.__sync_twin_of__ = name  # type: ignore[attr-defined]  # the parity test reads it
    del twin.__wrapped__  # the twin's signature is its own: the same parameters, sync result
    twin.__signature__ = _sync_signature(amethod)  # type: ignore[attr-defined]
    return twin


def _sync_signature(amethod: Callable[..., Any]) -> inspect.Signature:
    sig = inspect.signature(amethod)
    ret = sig.return_annotation
    if isinstance(ret, str) and ret.startswith("AsyncIterator["):
        ret = ret.removeprefix("Async")
    elif ret is not inspect.Signature.empty and not isinstance(ret, str):
        origin = getattr(ret, "__origin__", None)
        if origin is AsyncIterator or ret is AsyncIterator:
            ret = Iterator[ret.__args__[0]] if getattr(ret, "__args__", None) else Iterator
    return sig.replace(return_annotation=ret)


def _runner_of(obj: Any) -> LoopRunner:
    runner = getattr(obj, "runner", None)
    return runner if isinstance(runner, LoopRunner) else get_runner()


class Lifecycle:
    """``aclose`` is the one implementation; ``close``, ``with`` and ``async with`` derive
    from it. A class mixes this in and writes only ``async def aclose``."""

    async def aclose(self) -> None:
        """Release what this object holds; idempotent."""

    close = sync_twin(aclose)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


# -- helpers ------------------------------------------------------------------------------
def _serve(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set)
    loop.run_forever()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _tracked(coro: Coroutine[Any, Any, T], finished: threading.Event) -> T:
    try:
        return await coro
    finally:
        finished.set()


async def _pump(make: Callable[[], AsyncIterator[T]], put: Callable[[Any], None]) -> None:
    agen = make()
    try:
        async for item in agen:
            put(item)
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            await aclose()


class _Call:
    """One sync-facade call: a task on the runner loop and a lock released when it ends.

    Why not ``run_coroutine_threadsafe(...).result()``: a bare lock and one task cost about
    two thirds of that (no concurrent Future, no waiter objects), and the sync facade is on
    every call path (see benchmarks/bench_runtime.py).
    """

    __slots__ = ("coro", "loop", "finished", "task", "cancelled")

    def __init__(self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop) -> None:
        self.coro, self.loop = coro, loop
        self.finished = threading.Lock()
        self.finished.acquire()
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False
        loop.call_soon_threadsafe(self._start)

    def result(self) -> Any:
        assert self.task is not None
        return self.task.result()

    def cancel(self) -> None:
        """Cancel the task and give it a moment to unwind, so its resources are freed."""
        self.cancelled = True
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._cancel_task)
            self.finished.acquire(timeout=_CANCEL_GRACE)

    def _start(self) -> None:  # on the runner loop
        if self.cancelled:
            self.coro.close()
            self.finished.release()
            return
        self.task = self.loop.create_task(self.coro)
        self.task.add_done_callback(self._done)

    def _done(self, _: asyncio.Task[Any]) -> None:
        self.finished.release()

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()


class _Hop:
    """One ``arun`` from another loop: a task on the runner loop whose outcome is copied
    into a future of the caller's loop.

    Why not ``run_coroutine_threadsafe`` + ``wrap_future``: they chain three futures (a
    concurrent one, with its lock and condition, between two asyncio ones) where one task
    and one caller future do; an agent run from a notebook makes this hop once per run.
    Cancelling is FIFO-safe: ``_cancel_task`` is queued on the runner loop after ``_start``.
    """

    __slots__ = ("coro", "loop", "caller", "done", "task", "cancelled")

    def __init__(self, coro: Coroutine[Any, Any, Any], loop: asyncio.AbstractEventLoop,
                 caller: asyncio.AbstractEventLoop, done: asyncio.Future[Any]) -> None:
        self.coro, self.loop, self.caller, self.done = coro, loop, caller, done
        self.task: asyncio.Task[Any] | None = None
        self.cancelled = False
        loop.call_soon_threadsafe(self._start)

    def _start(self) -> None:  # on the runner loop
        if self.cancelled:
            self.coro.close()
            return
        self.task = self.loop.create_task(self.coro)
        self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:  # on the runner loop
        if not task.cancelled():
            task.exception()  # retrieved here, so a caller gone meanwhile logs no warning
        _safe_call(self.caller, self._resolve, task)

    def _resolve(self, task: asyncio.Task[Any]) -> None:  # on the caller's loop
        done = self.done
        if done.done():
            return
        if task.cancelled():
            done.cancel()
        elif (exc := task.exception()) is not None:
            done.set_exception(exc)
        else:
            done.set_result(task.result())

    def cancel(self) -> None:  # on the caller's loop
        self.cancelled = True
        if not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.loop.call_soon_threadsafe(self._cancel_task)

    def _cancel_task(self) -> None:
        if self.task is not None:
            self.task.cancel()


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has unwound, without raising what it raised (a
    supervisor that stops its body must not die of the body's error, nor leave it running)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait({task})
    if task.done() and not task.cancelled():
        task.exception()  # retrieved, so asyncio does not log it as lost


def _cancel(fut: concurrent.futures.Future[Any], finished: threading.Event) -> None:
    """Cancel the runner task and give it a moment to unwind, so its resources are freed."""
    fut.cancel()
    finished.wait(_CANCEL_GRACE)


def _safe_call(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    if not loop.is_closed():
        loop.call_soon_threadsafe(fn, *args)


async def _shutdown(closers: list[Closer]) -> None:
    for closer in reversed(closers):
        try:
            await closer()
        except Exception as exc:
            log.warning("closer %r failed: %r", closer, exc)
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
