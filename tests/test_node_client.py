"""The Node.js client in examples/node agrees with onnxruntime in Python on the same ONNX file.

The client is run as a user would run it (`node mnist_accuracy.js --model ... --data-dir ...`)
on the full MNIST test set. Skipped only when `node` is not installed; when
`examples/node/node_modules` is missing, `npm ci --ignore-scripts` installs the pinned
onnxruntime-node first (the registry must then be reachable; the install script is skipped
because it downloads GPU binaries, the CPU ones ship in the package).
"""

import json
import pathlib
import subprocess

import numpy as np
import pytest

from conftest import node_with_packages, run_module_in_process

NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "examples" / "node"


@pytest.fixture(scope="module")
def node_client():
    """The `node` executable, with the client's dependencies installed."""
    return node_with_packages(NODE_DIR, NODE_DIR / "node_modules" / "onnxruntime-node")


@pytest.fixture(scope="module")
def onnx_file(trained_run, tmp_path_factory):
    """conftest's `trained_run` model as `python -m export.onnx` writes it."""
    out = tmp_path_factory.mktemp("node") / "lenet5.onnx"
    result = run_module_in_process("export.onnx", "--model", trained_run[0] / "model.keras", "--out", out)
    assert result.returncode == 0, result.stderr
    return out


def run_client(node, *args):
    return subprocess.run(
        [node, "mnist_accuracy.js", *map(str, args)], cwd=NODE_DIR, capture_output=True, text=True, timeout=300
    )


def test_node_client_accuracy_and_predictions_equal_python_onnxruntime(node_client, onnx_file, mnist, mnist_dir):
    from lenet_tf.inference import load_runtime

    _, (x_test, y_test) = mnist
    python_digits = load_runtime(onnx_file).predict(x_test).argmax(axis=1)
    python_accuracy = float((python_digits == y_test).mean())

    proc = run_client(node_client, "--model", onnx_file, "--data-dir", mnist_dir, "--predictions")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["images"] == len(y_test) == 10_000
    assert result["accuracy"] == python_accuracy
    assert result["correct"] == int((python_digits == y_test).sum())
    mismatches = np.flatnonzero(np.asarray(result["predictions"]) != python_digits)
    assert mismatches.size == 0, f"Node and Python disagree on test images {mismatches[:20].tolist()}"
    assert python_accuracy > 0.9  # a trained model, so the comparison means something


def test_node_client_reports_bad_input_in_one_line(node_client, onnx_file, mnist_dir, tmp_path):
    not_a_model = tmp_path / "model.onnx"
    not_a_model.write_text("not a model")
    cases = [
        (["--model", tmp_path / "missing.onnx", "--data-dir", mnist_dir], "missing.onnx: no such file"),
        (["--model", not_a_model, "--data-dir", mnist_dir], "model.onnx: not a valid ONNX model"),
        (["--model", onnx_file, "--data-dir", tmp_path], "no t10k-images-idx3-ubyte"),
        (["--model", onnx_file, "--data-dir", mnist_dir, "--limit", "0"], "--limit must be a positive integer"),
    ]
    for args, message in cases:
        proc = run_client(node_client, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("error: ") and message in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
