"""A process that makes audited tool calls until it is killed (``test_audit_durability.py``).

    python tests/tools/_audit_writer.py HOME TAG [--never-commit]
    python tests/tools/_audit_writer.py --serve

Each call goes through ``SafetyGuard.invoke`` with the built-in file tools and the default
policy, in bursts: every third burst opens with a ``write_file`` (durable on return), then
10-100 ``read_file`` calls (group-committed), then 1-2 s of rest, during which only the
commit timer can write the last reads. Once a call has returned, a line "<call id> <wall
time>" is printed and flushed, so whoever kills the process knows which rows must be in
``lab.db``.
``--never-commit`` makes only reads and switches the group commit off: the test uses it to
show that it notices lost rows.

``--serve`` imports everything once, then forks one writer per line "HOME TAG OUT
[--never-commit]" read from stdin (its output goes to OUT, its errors to OUT.err) and
prints the writer's pid: twenty writers then start in milliseconds, not seconds each.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sys
import time
import traceback
import warnings
from typing import Any


def main(argv: list[str]) -> None:
    from aillm_lab.config import LabSettings
    from aillm_lab.db import SqliteVersionWarning
    from aillm_lab.runtime import LoopRunner
    from aillm_lab.tools.audit import AuditLog
    from aillm_lab.tools.files import file_tools
    from aillm_lab.tools.paths import Workspace
    from aillm_lab.tools.safety import SafetyGuard

    warnings.simplefilter("ignore", SqliteVersionWarning)
    home, tag = argv[0], argv[1]
    never_commit = "--never-commit" in argv
    if never_commit:
        async def buffer_only(self: AuditLog, entries: list[Any], *, durable: bool = False
                              ) -> None:
            self._rows.extend(entry.row() for entry in entries)  # and no commit, ever

        AuditLog.record_many = buffer_only  # type: ignore[method-assign]
    settings = LabSettings.load(home=home)
    settings.workspace_path.mkdir(parents=True, exist_ok=True)
    (settings.workspace_path / "notes.txt").write_text("A line of ordinary notes.\n" * 8)
    tools = {t.name: t for t in file_tools(Workspace(settings.workspace_path,
                                                     settings.safety.paths))}
    runner = LoopRunner(name="audit-writer")
    guard = SafetyGuard(settings.safety, audit=AuditLog(settings.db_path, runner=runner))
    rng = random.Random(tag)
    i = 0
    for burst in itertools.count():
        for n in range(rng.randint(10, 100)):
            call_id = f"{tag}-{i}"
            if n == 0 and burst % 3 == 0 and not never_commit:
                result = runner.run(guard.invoke(tools["write_file"], {
                    "path": f"out/{tag}.txt", "content": f"call {i}\n"}, call_id))
            else:
                result = runner.run(guard.invoke(tools["read_file"], {"path": "notes.txt"},
                                                 call_id))
            assert result.ok, result.content
            sys.stdout.write(f"{call_id} {time.time():.6f}\n")
            sys.stdout.flush()
            i += 1
        time.sleep(rng.uniform(1.0, 2.0))


def serve() -> None:
    """Fork a writer per request; no thread is started before a fork."""
    import aillm_lab.config
    import aillm_lab.tools.files
    import aillm_lab.tools.safety  # noqa: F401 - imported once, here, for every writer

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps killed writers
    for line in sys.stdin:
        home, tag, out, *flags = line.split()
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for fd, path in ((1, out), (2, out + ".err")):
                    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
                main([home, tag, *flags])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(status)
        print(pid, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        main(sys.argv[1:])
