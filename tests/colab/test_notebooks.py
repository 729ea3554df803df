"""Every notebook in colab/ runs top to bottom (nbclient, a python3 kernel) with its CI switch
``TURBJAX_NOTEBOOK_SMALL=1``: the same cells and code path at smoke-test size. A failing cell fails the test.

The kernel sees one CPU device, as a user's CPU runtime does, not the 8 virtual devices of the tests,
and keeps the persistent compilation cache of tests/conftest.py (tests/one_device.py): 03 and 04 run the
same micro configurations as the end-to-end tests of experiments.train / experiments.distill, in the same
xdist group, so their programs are compiled once.
"""

import json

import nbformat
import pytest
from nbclient import NotebookClient

from tests.one_device import ROOT, one_device_env

NOTEBOOKS = sorted((ROOT / "colab").glob("*.ipynb"))
# Notebooks that share compiled programs with an end-to-end test (its xdist group).
SHARED_PROGRAMS = {"03_tmts": "tmts_micro", "04_jdatt": "jdatt_micro"}
CELL_TIMEOUT_S = 900


def test_the_four_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == ["01_simulator_tour", "02_differentiable_physics", "03_tmts", "04_jdatt"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_outputs_are_stripped(path):
    notebook = json.loads(path.read_text())
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: outputs not stripped"


def _grouped(path):
    group = SHARED_PROGRAMS.get(path.stem)
    return pytest.param(path, id=path.stem, marks=[pytest.mark.xdist_group(group)] if group else [])


@pytest.mark.parametrize("path", [_grouped(p) for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    for name, value in one_device_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TURBJAX_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("TURBJAX_NOTEBOOK_WORKDIR", str(tmp_path / "workdir"))
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    executed = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in executed)
    errors = [o for cell in executed for o in cell.outputs if o.get("output_type") == "error"]
    assert not errors, errors
