"""The walkthrough notebook executes top to bottom, as a reader would run it.

Runs `notebooks/lenet5_walkthrough.ipynb` with nbclient in a fresh kernel from the repository
root, reading MNIST from `$LENET_MNIST_DIR` (set from the `mnist_dir` fixture), and checks
that every code cell ran and that the figures and tables it promises are in its outputs.
About 1-2 minutes on a 2-core CPU (a short training run and three exports).
"""

import os

import pytest
from conftest import REPO

NOTEBOOK = REPO / "notebooks" / "lenet5_walkthrough.ipynb"
CELL_TIMEOUT_S = 600


@pytest.mark.slow
def test_walkthrough_notebook_runs_top_to_bottom(mnist_dir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # The kernel inherits this process's environment: where MNIST is, and quiet TensorFlow.
    monkeypatch.setenv("LENET_MNIST_DIR", str(mnist_dir))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}
    ).execute()  # raises CellExecutionError, naming the cell, if any cell fails

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    # The connection table, the prototypes and four report plots.
    assert len(images) >= 6
    tables = "".join(output.get("data", {}).get("text/markdown", "") for output in outputs)
    assert "| total | 60,000 | 60,000 |" in tables  # the parameter table against the paper
    assert "| TFLite int8 | litert |" in tables and "| ONNX float32 | onnxruntime |" in tables
    text = "".join(output.get("text", "") for output in outputs)
    assert "test error after 2 epochs" in text
    assert "'digit': 7" in text  # the drawn seven, read by the ONNX export
