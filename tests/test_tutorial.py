"""docs/tutorial.ipynb runs top to bottom in a kernel of this interpreter, on a subset of MNIST
(a few seconds per training cell), and is stored without outputs."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "docs" / "tutorial.ipynb"


@pytest.fixture(scope="module")
def notebook():
    return nbformat.read(NOTEBOOK, as_version=4)


def test_stored_without_outputs(notebook):
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_runs_top_to_bottom_on_a_subset(notebook, tmp_path, monkeypatch):
    # "python3" must be this venv's interpreter: ipykernel installs that kernelspec into the
    # venv, whose kernels take precedence there ("python" stands for the running interpreter)
    argv0 = KernelSpecManager().get_kernel_spec("python3").argv[0]
    assert argv0 in ("python", sys.executable), f"kernel python3 runs {argv0}; run make dev"
    monkeypatch.setenv("DIGITLAB_TUTORIAL_SUBSET", "2000")
    client = NotebookClient(notebook, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any error
    runs = tmp_path / "runs" / "tutorial"
    for model in ("dense", "mlp100", "cnn"):
        assert (runs / model / "metrics.json").is_file()
    assert (runs / "comparison" / "validation_curves.png").is_file()
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.outputs)
    assert "server stopped" in outputs and "top 3:" in outputs
