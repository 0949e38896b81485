"""Training end to end: a real short training, the CLI on a tiny run, determinism, resumption.

The CLI runs share one deterministic reference run (4 epochs on 4,096 images, every setting that
matters given explicitly so that tuning the defaults cannot break it); each other run uses the
same command in its own folder, so any difference in the weights is a bug.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY_RUN = (
    "--deterministic", "--variant", "paper", "--train-limit", "4096", "--epochs", "4",
    "--batch-size", "64", "--optimizer", "sgd", "--lr", "5e-3", "--schedule", "cosine",
    "--no-ema", "--weight-decay", "0", "--seed", "0", "--no-validation",
)  # fmt: skip
RUN_TIMEOUT = 300


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def python_m(module, *args, timeout=RUN_TIMEOUT):
    """Runs `python -m module args` from the repository; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def train_cli(out, mnist_dir, *extra):
    result = python_m("lenet_tf.train", *TINY_RUN, "--data-dir", mnist_dir, "--out", out, *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def model_weights(path):
    """The weights of a `.keras` file as NumPy arrays, read without building the model."""
    import zipfile

    import h5py

    arrays = {}
    with zipfile.ZipFile(path) as archive, h5py.File(archive.open("model.weights.h5"), "r") as h5:
        h5["layers"].visititems(
            lambda name, item: arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return arrays


def assert_bit_identical(a, b):
    weights_a, weights_b = model_weights(a), model_weights(b)
    assert weights_a.keys() == weights_b.keys()
    assert len(weights_a) == 13  # C1-F6 kernels/coefficients and biases, OUTPUT's centres
    different = [name for name in weights_a if not np.array_equal(weights_a[name], weights_b[name])]
    assert not different, f"weights differ: {different}"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, mnist_dir):
    """The tiny deterministic run, uninterrupted: (run folder, metrics, seconds)."""
    out = tmp_path_factory.mktemp("reference")
    start = time.perf_counter()
    train_cli(out, mnist_dir)
    return out, json.loads((out / "metrics.json").read_text()), time.perf_counter() - start


@pytest.mark.parametrize(
    "steps, requested, expected", [(64, 8, 8), (1875, 8, 5), (32, 8, 8), (7, 8, 7), (13, 8, 1), (30, 4, 3)]
)
def test_steps_per_execution_divides_the_epoch(steps, requested, expected):
    from lenet_tf.train import effective_steps_per_execution

    assert effective_steps_per_execution(steps, requested) == expected


def test_short_training_beats_accuracy_bar(reference_run):
    _, metrics, _ = reference_run
    # 256 SGD steps on 4,096 images: the paper's network reaches about 94.6% on the full test
    # set (chance is 10%); a broken layer, loss or data stream stays far below.
    assert metrics["test_accuracy"] >= 0.93, metrics
    assert metrics["test_error"] == pytest.approx(1 - metrics["test_accuracy"])


def test_train_cli_writes_the_run_folder(reference_run):
    out, metrics, _ = reference_run
    assert (out / "model.keras").is_file()
    for key in ("test_error", "test_accuracy", "epochs", "seconds", "variant", "seed", "versions"):
        assert key in metrics, key
    assert metrics["epochs"] == metrics["completed_epochs"] == 4
    assert metrics["interrupted"] is False and metrics["resumed_from_epoch"] == 0
    assert metrics["variant"] == "paper" and metrics["seed"] == 0
    assert set(metrics["versions"]) >= {"python", "tensorflow", "keras", "numpy"}
    log = (out / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,") and [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]
    assert not (out / "backup").exists(), "the backup must go once the run is complete"
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.is_dir()], "temporary left"
    if __import__("importlib.util").util.find_spec("tensorboard"):
        assert (out / "logs").is_dir()


def test_evaluate_cli_json_agrees_with_metrics(reference_run, mnist_dir, capsys):
    from lenet_tf import cli, evaluate

    out, metrics, _ = reference_run
    argv = ["--model", str(out / "model.keras"), "--data-dir", str(mnist_dir), "--json"]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(evaluate.main, argv)  # the CLI's code, in this process: no second TensorFlow start-up
    assert exit_info.value.code == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["errors"] == metrics["test_errors"]
    assert evaluated["test_error"] == pytest.approx(metrics["test_error"])
    assert evaluated["examples"] == 10_000


def test_deterministic_flag_gives_bit_identical_weights(reference_run, mnist_dir, tmp_path):
    out, metrics, _ = reference_run
    train_cli(tmp_path, mnist_dir)
    assert_bit_identical(out / "model.keras", tmp_path / "model.keras")
    assert json.loads((tmp_path / "metrics.json").read_text())["test_errors"] == metrics["test_errors"]


def _wait_for_backup(out, process, epoch, timeout):
    """Waits until the run's backup holds `epoch` completed epochs; returns the time waited."""
    metadata = out / "backup" / "training_metadata.json"
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            pytest.fail(f"training ended (status {process.returncode}) before epoch {epoch}")
        if metadata.exists() and json.loads(metadata.read_text())["epoch"] >= epoch:
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"no backup of epoch {epoch} within {timeout} s")


def _start_training(out, mnist_dir, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "lenet_tf.train", *TINY_RUN, "--data-dir", str(mnist_dir), "--out", str(out), *extra],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_sigkill_mid_training_then_rerun_resumes_to_identical_weights(reference_run, mnist_dir, tmp_path):
    out, metrics, _ = reference_run
    process = _start_training(tmp_path, mnist_dir)
    try:
        _wait_for_backup(tmp_path, process, epoch=2, timeout=RUN_TIMEOUT)
        time.sleep(0.3)  # into epoch 3
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())["epoch"]
    assert killed_at in (2, 3) and not (tmp_path / "model.keras").exists(), "not killed mid-run"

    rerun = train_cli(tmp_path, mnist_dir)  # the same command
    assert f"Resuming from the backup of epoch {killed_at}" in rerun.stdout
    resumed = json.loads((tmp_path / "metrics.json").read_text())
    assert resumed["resumed_from_epoch"] == killed_at >= 2
    assert_bit_identical(out / "model.keras", tmp_path / "model.keras")
    assert resumed["test_error"] == metrics["test_error"]
    print(f"killed after epoch {killed_at}, resumed: {resumed['test_errors']} test errors, as uninterrupted")
    log = (tmp_path / "training_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]
    assert not (tmp_path / "backup").exists()


def test_sigint_stops_cleanly_after_saving_and_rerun_resumes(mnist_dir, tmp_path):
    process = _start_training(tmp_path, mnist_dir, "--validation")
    try:
        _wait_for_backup(tmp_path, process, epoch=1, timeout=RUN_TIMEOUT)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "rerun the same command to resume" in stderr.strip().splitlines()[-1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["signal"] == "SIGINT"
    assert 1 <= metrics["completed_epochs"] < 4
    from lenet_tf.saving import load_lenet5

    load_lenet5(tmp_path / "model.keras")  # a complete model of the weights at the stop
    backup = json.loads((tmp_path / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == metrics["completed_epochs"]

    rerun = train_cli(tmp_path, mnist_dir, "--no-validation")  # validation may differ on resume
    assert f"Resuming from the backup of epoch {backup['epoch']}" in rerun.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["interrupted"] is False and metrics["completed_epochs"] == 4


def test_memory_stays_flat_across_epochs(reference_run):
    _, metrics, _ = reference_run
    rss = metrics["rss_mb_per_epoch"]
    assert len(rss) == 4
    print(f"resident memory after each epoch (MiB): {rss}")
    # After the first epoch has traced the step and filled the pools, nothing should grow.
    assert rss[3] - rss[1] < 25, rss
