"""Every notebook in colab/ runs top to bottom (nbclient, a python3 kernel) with its CI switch
``TURBJAX_NOTEBOOK_SMALL=1``: the same cells and code path at smoke-test size. A failing cell fails the test.

The kernel sees one CPU device, as a user's CPU runtime does, not the 8 virtual devices of the tests:
in-process collectives over 8 virtual devices on 2 loaded cores can exceed XLA's 40 s rendezvous limit
and abort the kernel. It keeps the persistent compilation cache of tests/conftest.py.
"""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
CELL_TIMEOUT_S = 900


def test_the_four_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_simulator_tour", "02_differentiable_physics", "03_tmts", "04_jdatt"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_are_stripped(path):
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    monkeypatch.setenv("TURBJAX_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TURBJAX_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("XLA_FLAGS", "")  # one CPU device (module doc)
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    executed = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in executed)
    errors = [o for cell in executed for o in cell.outputs if o.get("output_type") == "error"]
    assert not errors, errors
