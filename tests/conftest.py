"""Fixtures and helpers shared by the test suite: MNIST, found as the commands find it, and
one small trained model."""

import gzip
import os
import pathlib

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
# Where this repository's CI and development machines keep the real MNIST IDX files.
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
MNIST_FILE_NAMES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


# The IDX element-type codes, written out here rather than taken from `lenet_tf.data` so that
# the reference writer below does not share a mistake with the reader it tests.
TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(array):
    """The IDX encoding of `array`: magic number, big-endian uint32 sizes, big-endian data."""
    array = np.asarray(array)
    header = bytes([0, 0, TYPE_CODES[array.dtype], array.ndim])
    sizes = np.asarray(array.shape, dtype=">u4").tobytes()
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz=False):
    """Writes `array` as an IDX file (gzip-compressed if `gz`) and returns its path."""
    encoded = idx_bytes(array)
    path.write_bytes(gzip.compress(encoded) if gz else encoded)
    return path


def run_cli(main, argv, capsys):
    """Runs a command's `main` as `python -m` would, in this process.

    Returns:
        `(exit status, stdout, stderr)`.
    """
    with pytest.raises(SystemExit) as exit_info:
        main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def assert_one_line_error(status, err, *fragments):
    """Checks a command refused its input: exit status 2, no traceback, one `error:` line
    holding every fragment. Returns that line."""
    assert status == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert lines, err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])
    return lines[-1]


def model_weights(path):
    """The weights of a `.keras` file as NumPy arrays by HDF5 path, read without building it."""
    import zipfile

    import h5py

    arrays = {}
    with zipfile.ZipFile(path) as archive, h5py.File(archive.open("model.weights.h5"), "r") as h5:
        h5["layers"].visititems(
            lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return arrays


def node_with_packages(folder, installed):
    """The `node` executable, after `npm ci --ignore-scripts` in `folder` if `installed` (a path
    `npm ci` creates) is missing; skips the test without `node` or `npm`."""
    import shutil
    import subprocess

    node = shutil.which("node")
    if node is None:
        pytest.skip(f"node is not installed: {folder.name} cannot run")
    if not installed.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"npm is not installed and {installed} is missing: cannot install {folder}'s packages")
        proc = subprocess.run(
            [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
            cwd=folder, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, f"npm ci failed in {folder}:\n{proc.stderr[-2000:]}"
    return node


# The test files that take longest (a minute or more of CPU each, `--durations`), longest first.
# Under xdist a file runs on one worker; started first (`--no-loadscope-reorder` keeps this
# order), they do not leave one worker running a long file alone at the end.
LONGEST_FILES = ("test_train.py", "test_export.py", "test_benchmarks.py", "test_distribute.py", "test_notebook.py")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (CI does)")


def pytest_collection_modifyitems(config, items):
    """Puts `LONGEST_FILES` first, in that order, and skips `slow` tests without `--runslow`."""

    def rank(item):
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)
    if not config.getoption("--runslow"):
        skip = pytest.mark.skip(reason="slow: `python -m pytest --runslow` runs it, as CI does")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A folder of the real MNIST IDX files, found as the commands find MNIST.

    `$LENET_MNIST_DIR`, else `../shared/data/mnist`, else tensorflow-datasets (which downloads
    MNIST on first use): its arrays are written out as IDX files, so that tests can pass a
    folder to the commands they run.
    """
    from lenet_tf.data import load_mnist

    for candidate in (os.environ.get("LENET_MNIST_DIR"), SHARED_MNIST):
        if candidate and pathlib.Path(candidate).is_dir():
            return pathlib.Path(candidate).resolve()
    folder = tmp_path_factory.mktemp("mnist")
    for split, arrays in zip(("train", "test"), load_mnist()):
        for name, array in zip(MNIST_FILE_NAMES[split], arrays):
            write_idx(folder / name, array)
    return folder


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """((x_train, y_train), (x_test, y_test)) as uint8 arrays, decoded once per session."""
    from lenet_tf.data import load_mnist

    return load_mnist(mnist_dir)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_dir, worker_id):
    """A paper-variant run folder: one epoch of `lenet_tf.training.train` with its defaults.

    About 98% test accuracy, enough to tell a working model (or export) from a broken one;
    shared by every test that needs a trained `model.keras`. Under pytest-xdist the workers
    share one run: the first to need it trains it in the session's common temporary folder
    while the others wait on its lock, then read it.
    """
    import json

    from filelock import FileLock

    from lenet_tf.training import TrainConfig, train

    # Under xdist each worker's temporary folder is inside one of the session's own.
    shared = tmp_path_factory.mktemp("shared") if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    out = shared / "trained_run"
    with FileLock(shared / "trained_run.lock"):
        if not (out / "metrics.json").exists():
            train(TrainConfig(epochs=1, data_dir=str(mnist_dir), out=str(out), verbose=0))
    return out, json.loads((out / "metrics.json").read_text())


# --- Exported artifacts (export/) -------------------------------------------------------------

# The README's export commands, as `python -m` runs them: name -> (module, options after
# `--model`). `{out}` is the artifacts folder, `{mnist}` the MNIST folder. Only int8 reads
# MNIST (its calibration images), so only it is given `--data-dir`.
EXPORT_COMMANDS = {
    "savedmodel": ("export.savedmodel", ["--out", "{out}/lenet5_savedmodel"]),
    "none": ("export.tflite", ["--out", "{out}/lenet5_none.tflite"]),
    "float16": ("export.tflite", ["--out", "{out}/lenet5_float16.tflite", "--quantize", "float16"]),
    "dynamic": ("export.tflite", ["--out", "{out}/lenet5_dynamic.tflite", "--quantize", "dynamic"]),
    "int8": ("export.tflite", ["--out", "{out}/lenet5_int8.tflite", "--quantize", "int8", "--data-dir", "{mnist}",
                               "--c-array", "{out}/lenet5_int8_model_data.cc"]),
    "onnx": ("export.onnx", ["--out", "{out}/lenet5.onnx"]),
}  # fmt: skip
# One command of each export module runs as a real process, where its stderr is what a user
# sees; the other exports run the same `main` in this process, which saves a TensorFlow
# start-up (about 5 s of CPU) each.
SUBPROCESS_EXPORTS = ("savedmodel", "int8", "onnx")


def command_env():
    """The environment of a user's shell: no MNIST folder, no verbosity, log-level or oneDNN settings."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("LENET_MNIST_DIR", "LENET_TF_VERBOSE", "TF_CPP_MIN_LOG_LEVEL", "TF_ENABLE_ONEDNN_OPTS")}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return env


def run_module(module, *args, timeout=300):
    """Runs `python -m module args...` from the repository root; returns the CompletedProcess."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO, env=command_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def run_module_in_process(module, *args):
    """Runs `module.main(args)` here, as `python -m` would; returns a CompletedProcess."""
    import contextlib
    import importlib
    import io
    import subprocess

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = importlib.import_module(module).main([str(arg) for arg in args])
        except SystemExit as exit_info:
            status = exit_info.code
    return subprocess.CompletedProcess([module, *args], status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def exported(trained_run, mnist_dir, tmp_path_factory):
    """Every artifact of `trained_run`'s model, written by the README's export command lines.

    `SUBPROCESS_EXPORTS` run as processes, two at a time, while the others run in this one.
    None sees `$LENET_MNIST_DIR`: a float export that read MNIST would fail. Returns a
    namespace: `model_path`, `metrics`, `folder`, and `paths` and `results` (a
    `CompletedProcess` each) keyed as `EXPORT_COMMANDS`.
    """
    import concurrent.futures
    import types

    run_dir, metrics = trained_run
    out = tmp_path_factory.mktemp("artifacts")
    model_path = run_dir / "model.keras"
    argv = {
        name: (module, ["--model", model_path, *(option.format(out=out, mnist=mnist_dir) for option in options)])
        for name, (module, options) in EXPORT_COMMANDS.items()
    }
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        running = {name: pool.submit(run_module, module, *args)
                   for name, (module, args) in argv.items() if name in SUBPROCESS_EXPORTS}  # fmt: skip
        with pytest.MonkeyPatch.context() as patch:
            patch.delenv("LENET_MNIST_DIR", raising=False)
            results = {name: run_module_in_process(module, *args)
                       for name, (module, args) in argv.items() if name not in SUBPROCESS_EXPORTS}  # fmt: skip
        results.update((name, future.result()) for name, future in running.items())
    paths = {name: pathlib.Path(args[3]) for name, (_, args) in argv.items()}
    return types.SimpleNamespace(
        model_path=model_path, metrics=metrics, folder=out, paths=paths, results=results
    )
