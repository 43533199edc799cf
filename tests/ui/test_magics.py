"""``%load_ext aillm_lab``: the magics through a real IPython ``InteractiveShell``."""

from __future__ import annotations

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


@al.tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture
def shell():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "aillm_lab")
    yield shell
    for name in ("lab", "df", "res", "add", "tests_src"):
        shell.user_ns.pop(name, None)


def use(shell, lab: al.Lab) -> None:
    shell.user_ns["lab"] = lab
    shell.run_line_magic("lab", "--use lab")


def failure(shell, cell: str) -> BaseException:
    """Run a whole cell as a user would; the error IPython showed instead of a traceback."""
    result = shell.run_cell(cell)
    assert result.error_in_exec is not None, f"{cell!r} did not fail"
    return result.error_in_exec


def test_load_ext_registers_the_four_magics(shell):
    magics = shell.magics_manager.magics
    assert {"llm", "agent", "sql"} <= set(magics["cell"]) and "lab" in magics["line"]


def test_llm_sends_the_cell_through_the_lab_and_returns_the_completion(shell, make_lab):
    model = ScriptedModel(["Paris.", "Rome."])
    lab = make_lab(model)
    use(shell, lab)
    reply = shell.run_cell_magic("llm", "", "What is the capital of France?\n")
    assert isinstance(reply, al.Completion) and reply.text == "Paris."
    assert model.requests[0].messages[-1].text == "What is the capital of France?"
    shell.run_cell_magic("llm", '--system "Answer in one word."', "And of Italy?")
    assert model.requests[1].messages[0].text == "Answer in one word."
    assert len(lab.calls()) == 2  # through the gateway: in the call log


def test_llm_json_returns_the_parsed_object(shell, make_lab):
    model = ScriptedModel([{"city": "Paris", "country": "France"}])
    use(shell, make_lab(model))
    value = shell.run_cell_magic("llm", "--json", "Give the capital of France as JSON.")
    assert value == {"city": "Paris", "country": "France"}
    assert model.requests[0].output == {"type": "object"}


@pytest.mark.parametrize(("cell", "says"), [
    ("%%llm nosuch:model\nhello", "nosuch"),
    ("%%llm --bogus\nhello", "unrecognized arguments: --bogus"),
    ("%%llm\n   \n", "the cell is empty"),
    ("%%agent wizard\ndo it", "no such agent; use one of react, code, research, data"),
    ("%%sql --out 2bad\nselect 1", "give a Python variable name"),
    ("%lab --use nothing_here", "no variable named 'nothing_here'"),
])
def test_bad_input_is_one_usage_error_line(shell, make_lab, cell, says):
    use(shell, make_lab(ScriptedModel(["unused"])))
    error = failure(shell, cell)
    assert isinstance(error, UsageError) and says in str(error)
    assert "\n" not in str(error)


def test_lab_use_refuses_a_variable_that_is_not_a_lab(shell):
    shell.user_ns["df"] = pd.DataFrame()
    error = failure(shell, "%lab --use df")
    assert isinstance(error, UsageError) and "holds a DataFrame, not an al.Lab" in str(error)


def test_agent_react_runs_with_a_notebook_tool_and_returns_the_run(shell, make_lab):
    model = ScriptedModel([al.ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3}),
                           "2 + 3 = 5"])
    lab = make_lab(model)
    use(shell, lab)
    shell.user_ns["add"] = add
    run = shell.run_cell_magic("agent", "react --tools add --max-steps 4", "Add 2 and 3.")
    assert isinstance(run, al.AgentRun) and run.status == "completed"
    assert run.output == "2 + 3 = 5" and run.steps[0].tool_results[0].content == "5"
    assert list(lab.audit()["tool"]) == ["add"]  # through the Safety Guard


def test_agent_data_reads_a_dataframe_from_the_notebook(shell, make_lab):
    model = ScriptedModel(["```sql\nSELECT sum(x) AS total FROM df\n```", "The total is 6."])
    use(shell, make_lab(model))
    shell.user_ns["df"] = pd.DataFrame({"x": [1, 2, 3]})
    run = shell.run_cell_magic("agent", "data --data df", "What is the total of x?")
    assert run.status == "completed" and run.output.frame["total"].tolist() == [6]


def test_sql_queries_the_labs_tables_and_stores_the_frame(shell, make_lab):
    lab = make_lab(ScriptedModel(["unused"]))
    use(shell, lab)
    lab.tools.database.register("sales", pd.DataFrame({"region": ["n", "s", "n"],
                                                        "amount": [1, 2, 3]}))
    frame = shell.run_cell_magic(
        "sql", "--out res", "SELECT region, sum(amount) AS total FROM sales "
                            "GROUP BY region ORDER BY region")
    assert frame.to_dict("list") == {"region": ["n", "s"], "total": [4, 2]}
    assert shell.user_ns["res"] is frame


def test_sql_that_writes_is_refused_in_one_line(shell, make_lab):
    lab = make_lab(ScriptedModel(["unused"]))
    use(shell, lab)
    lab.tools.database.register("sales", pd.DataFrame({"amount": [1]}))
    error = failure(shell, "%%sql\nDROP TABLE sales")
    assert isinstance(error, UsageError) and "\n" not in str(error)
    assert lab.tools.database.query("SELECT count(*) AS n FROM sales")["n"].tolist() == [1]


def test_sql_calls_queries_the_call_log_and_lab_reports_status(shell, make_lab):
    lab = make_lab(ScriptedModel(["one", "two"]))
    use(shell, lab)
    shell.run_cell_magic("llm", "", "first")
    shell.run_cell_magic("llm", "", "second")
    frame = shell.run_cell_magic("sql", "--calls", "SELECT count(*) AS n FROM calls")
    assert frame["n"].tolist() == [2]
    status = shell.run_line_magic("lab", "")
    assert str(lab.settings.home) in status and "calls on this home: 2" in status
    assert f"default model: {lab.default_model_id}" in status
    # a cell shows it as lines, not as a quoted string with \n in it
    from IPython.lib.pretty import pretty

    assert pretty(status) == str(status) and "\\n" not in pretty(status)
