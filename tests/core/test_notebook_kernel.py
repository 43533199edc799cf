"""A real Jupyter kernel (via nbclient) mixing sync calls and top-level await across cells."""

from __future__ import annotations

import nbformat
from nbclient import NotebookClient


def test_notebook_mixes_sync_calls_and_top_level_await_across_cells():
    cells = [
        "import aillm_lab as al, asyncio\nr1 = al.chat('one', model='scripted:echo')",
        "r2 = await al.achat('two', model='scripted:echo')",
        "r3 = al.chat('three', model='scripted:echo')\n"
        "assert asyncio.get_event_loop().is_running()",
        "r4 = ''.join([str(e) async for e in al.astream('four five', model='scripted:echo')])",
        "async def inner():\n    return al.chat('six', model='scripted:echo').text\n"
        "r5 = await inner()",
        "import sys\nassert 'nest_asyncio' not in sys.modules\n"
        "print([str(r1), str(r2), str(r3), r4, r5])",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    out = nb.cells[-1].outputs[0]["text"]
    assert out.strip() == "['one', 'two', 'three', 'four five', 'six']"
