"""Legitimate work in PythonSandbox: the guard must not get in the way of real analysis."""

from __future__ import annotations

import ast
import json
import sys
from collections.abc import Iterator

import pytest

from aillm_lab.tools.policy import CodePolicy
from aillm_lab.tools.python import PythonSandbox

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX sandbox")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sb() -> Iterator[PythonSandbox]:
    box = PythonSandbox(CodePolicy(memory_mb=1536, wall_s=60, max_output_bytes=2_000))
    yield box
    box.close()


def test_arithmetic_returns_the_last_expressions_repr(sb: PythonSandbox) -> None:
    result = sb.run("a = 6\nb = 7\na * b")
    assert result.ok and result.value == "42" and result.error is None


def test_a_statement_has_no_value(sb: PythonSandbox) -> None:
    assert sb.run("c = 1").value is None


def test_prints_are_captured_in_order(sb: PythonSandbox) -> None:
    result = sb.run("for i in range(3):\n    print('line', i)")
    assert result.stdout == "line 0\nline 1\nline 2\n"


def test_stderr_is_captured_separately(sb: PythonSandbox) -> None:
    result = sb.run("import sys\nprint('oops', file=sys.stderr)\nprint('fine')")
    assert result.stderr == "oops\n" and result.stdout == "fine\n"


def test_state_persists_across_calls(sb: PythonSandbox) -> None:
    sb.run("counter = 10\ndef bump():\n    global counter\n    counter += 1\n    return counter")
    sb.run("bump()")
    assert sb.run("bump()").value == "12"


def test_reset_clears_state_but_keeps_files(sb: PythonSandbox) -> None:
    sb.run("kept_var = 1\nopen('kept.txt', 'w').write('still here')")
    sb.reset()
    result = sb.run("'kept_var' in globals(), open('kept.txt').read()")
    assert result.value == "(False, 'still here')"
    assert result.restarted


def test_numpy_and_pandas_compute(sb: PythonSandbox) -> None:
    code = ("import numpy as np, pandas as pd\n"
            "df = pd.DataFrame({'g': ['a', 'b', 'a'], 'x': np.array([1.5, 2.0, 3.5])})\n"
            "df.groupby('g')['x'].sum().to_dict()")
    result = sb.run(code)
    assert result.ok, result.error
    assert result.value == "{'a': 5.0, 'b': 2.0}"


def test_writing_a_file_reports_it_with_its_size(sb: PythonSandbox) -> None:
    result = sb.run("with open('report.csv', 'w') as f:\n    f.write('a,b\\n1,2\\n')")
    assert [(f.name, f.size) for f in result.files] == [("report.csv", 8)]
    assert (sb.workdir / "report.csv").read_text() == "a,b\n1,2\n"


def test_unchanged_files_are_not_reported_again(sb: PythonSandbox) -> None:
    sb.run("open('once.txt', 'w').write('x')")
    assert sb.run("open('once.txt').read()").files == []


def test_files_in_subfolders_are_reported_relative(sb: PythonSandbox) -> None:
    result = sb.run("import os\nos.makedirs('out/deep', exist_ok=True)\n"
                    "open('out/deep/r.json', 'w').write('{}')")
    assert [f.name for f in result.files] == ["out/deep/r.json"]


def test_a_matplotlib_figure_comes_back_as_png(sb: PythonSandbox) -> None:
    code = ("import matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots()\nax.plot([1, 2, 3], [3, 1, 2])\nax.set_title('t')")
    result = sb.run(code)
    assert result.ok, result.error
    assert len(result.figures) == 1
    assert result.figure_png(0).startswith(PNG_MAGIC)
    assert sb.run("import matplotlib.pyplot as plt\nlen(plt.get_fignums())").value == "0"


def test_exceptions_come_back_as_readable_tracebacks(sb: PythonSandbox) -> None:
    result = sb.run("def f(x):\n    return 1 / x\nf(0)")
    assert not result.ok
    assert result.error is not None
    assert "ZeroDivisionError: division by zero" in result.error
    assert 'File "<cell' in result.error and "return 1 / x" in result.error
    assert "_sandbox_worker" not in result.error


def test_syntax_errors_are_readable(sb: PythonSandbox) -> None:
    result = sb.run("def broken(:\n    pass")
    assert not result.ok and "SyntaxError" in (result.error or "")


def test_system_exit_does_not_end_the_session(sb: PythonSandbox) -> None:
    sb.run("survivor = 'yes'")
    result = sb.run("raise SystemExit(3)")
    assert "SystemExit: 3" in (result.error or "")
    assert sb.run("survivor").value == "'yes'"


def test_unicode_output_round_trips(sb: PythonSandbox) -> None:
    result = sb.run("print('héllo wörld ✓ 你好 🚀')\n'naïve'")
    assert result.stdout == "héllo wörld ✓ 你好 🚀\n" and result.value == "'naïve'"


def test_large_output_is_capped_with_a_statement(sb: PythonSandbox) -> None:
    result = sb.run("print('x' * 10_000)")
    assert len(result.stdout.encode()) == 2_000
    assert result.stdout_truncated == 10_001 - 2_000
    assert "[stdout truncated: 8001 more bytes not shown]" in result.to_text()


def test_json_and_math_work(sb: PythonSandbox) -> None:
    code = ("import json, math\n"
            "json.dumps({'pi': round(math.pi, 4), 'fact': math.factorial(10)})")
    result = sb.run(code)
    assert json.loads(ast.literal_eval(result.value or "''")) == {"pi": 3.1416,
                                                                  "fact": 3628800}


def test_a_timeout_is_readable_and_the_next_call_works(sb: PythonSandbox) -> None:
    result = sb.run("import time\ntime.sleep(30)", timeout_s=0.5)
    assert result.timed_out and not result.ok
    assert "timed out after 0.5 s" in result.to_text()
    after = sb.run("2 + 2")
    assert after.value == "4" and after.restarted


def test_threads_and_asyncio_work_inside(sb: PythonSandbox) -> None:
    code = ("import asyncio, concurrent.futures\n"
            "async def main():\n    await asyncio.sleep(0)\n    return 5\n"
            "with concurrent.futures.ThreadPoolExecutor(2) as ex:\n"
            "    doubled = list(ex.map(lambda v: v * 2, [1, 2]))\n"
            "asyncio.run(main()), doubled")
    result = sb.run(code)
    assert result.value == "(5, [2, 4])", result.error


def test_temporary_files_and_sqlite_in_the_sandbox_work(sb: PythonSandbox) -> None:
    code = ("import sqlite3, tempfile\n"
            "with tempfile.NamedTemporaryFile('w+') as t:\n    t.write('tmp'); t.seek(0)\n"
            "    data = t.read()\n"
            "con = sqlite3.connect('local.db')\ncon.execute('create table t(x)')\n"
            "con.execute('insert into t values (1)')\ncon.commit()\n"
            "data, con.execute('select count(*) from t').fetchone()[0]")
    result = sb.run(code)
    assert result.value == "('tmp', 1)", result.error


def test_duckdb_and_mimetypes_work(sb: PythonSandbox) -> None:
    code = ("import duckdb, mimetypes\n"
            "duckdb.sql('select 40 + 2').fetchall()[0][0], mimetypes.guess_type('a.csv')[0]")
    result = sb.run(code)
    assert result.value == "(42, 'text/csv')", result.error


def test_the_user_name_is_the_sandboxs_own(sb: PythonSandbox) -> None:
    assert sb.run("import getpass\ngetpass.getuser()").value == "'sandbox'"


def test_dataclasses_and_pickle_work_in_main(sb: PythonSandbox) -> None:
    code = ("import dataclasses, pickle\n@dataclasses.dataclass\nclass P:\n    x: int\n"
            "pickle.loads(pickle.dumps(P(3)))")
    assert sb.run(code).value == "P(x=3)"
