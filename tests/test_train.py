"""Training end to end: a real short training, the CLI on a tiny run, determinism, resumption,
finished runs, and the run folder's bookkeeping.

The CLI runs share one deterministic reference run (4 epochs on 4,096 images, every setting that
matters given explicitly so that tuning the defaults cannot break it); each other run uses the
same command in its own folder, so any difference in the weights is a bug. A training process
costs seconds of TensorFlow start-up and tracing, so each one checks several things: the kill
and Ctrl-C runs are also the determinism checks (other processes, bit-identical weights), and
the kill run also checks `--overwrite`.
"""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, command_env, model_weights, run_cli
from lenet_tf.files import file_sha256

TINY_RUN = (
    "--deterministic", "--variant", "paper", "--train-limit", "4096", "--epochs", "4",
    "--batch-size", "64", "--optimizer", "sgd", "--lr", "5e-3", "--schedule", "cosine",
    "--no-ema", "--weight-decay", "0", "--seed", "0", "--no-validation",
)  # fmt: skip
RUN_TIMEOUT = 300


def _env():
    # A user's shell (so the command's oneDNN default applies), with TensorFlow's logs off.
    return {**command_env(), "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


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


def assert_bit_identical(a, b):
    weights_a, weights_b = model_weights(a), model_weights(b)
    assert weights_a.keys() == weights_b.keys()
    assert len(weights_a) == 13  # C1-F6 kernels/coefficients and biases, OUTPUT's centres
    different = [name for name in weights_a if not np.array_equal(weights_a[name], weights_b[name])]
    assert not different, f"weights differ: {different}"


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, mnist_dir):
    """The tiny deterministic run, uninterrupted: (run folder, metrics, its stdout)."""
    out = tmp_path_factory.mktemp("reference")
    result = train_cli(out, mnist_dir)
    return out, json.loads((out / "metrics.json").read_text()), result.stdout


@pytest.mark.parametrize(
    "steps, requested, expected", [(64, 8, 8), (1875, 8, 5), (32, 8, 8), (7, 8, 7), (13, 8, 1), (30, 4, 3)]
)
def test_steps_per_execution_divides_the_epoch(steps, requested, expected):
    from lenet_tf.training.recipes import effective_steps_per_execution

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
    assert metrics["onednn"] is True, "lenet-tf train turns TensorFlow's oneDNN kernels on by default"
    assert metrics["model_sha256"] == file_sha256(out / "model.keras")  # the file the test error is of
    assert set(metrics["versions"]) >= {"python", "tensorflow", "keras", "numpy"}
    log = (out / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,") and [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]
    assert "val_" not in log[0], "columns of a validation that did not run"
    assert not (out / "backup").exists(), "the backup must go once the run is complete"
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.is_dir()], "temporary left"
    assert list((out / "logs").rglob("events.out.tfevents.*")), "no TensorBoard logs"


def test_redirected_progress_is_one_line_per_epoch(reference_run):
    _, _, stdout = reference_run  # `--verbose auto`, the default, with stdout a pipe
    assert not {"\r", "\x08", "\x1b"} & set(stdout), "progress-bar control characters in a log"
    assert [line for line in stdout.splitlines() if line.startswith("Epoch ")] == [f"Epoch {e}/4" for e in range(1, 5)]
    assert len(stdout) < 2000, stdout


def test_evaluate_cli_json_agrees_with_metrics(reference_run, mnist_dir, capsys):
    from lenet_tf.commands import evaluate

    out, metrics, _ = reference_run
    argv = ["--model", out / "model.keras", "--data-dir", mnist_dir, "--json"]
    status, stdout, _ = run_cli(evaluate.main, argv, capsys)  # in this process: no second TensorFlow start-up
    assert status == 0
    evaluated = json.loads(stdout.strip().splitlines()[-1])
    assert evaluated["errors"] == metrics["test_errors"]
    assert evaluated["test_error"] == pytest.approx(metrics["test_error"])
    assert evaluated["examples"] == 10_000


def test_rerunning_a_finished_run_is_refused_in_one_line(reference_run, mnist_dir, capsys):
    from lenet_tf.commands import train

    out, _, _ = reference_run
    before = {path.name: path.stat().st_mtime_ns for path in out.iterdir()}
    status, _, err = run_cli(train.main, [*TINY_RUN, "--data-dir", mnist_dir, "--out", out], capsys)
    assert_one_line_error(status, err, f"{out}: holds a finished run (4 epochs, test error ", "--overwrite")
    assert {path.name: path.stat().st_mtime_ns for path in out.iterdir() if path.name != ".lock"} == {
        name: mtime for name, mtime in before.items() if name != ".lock"
    }


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


def _events(folder):
    return {path.name for path in (folder / "logs").rglob("events.out.tfevents.*")}


def test_sigkill_mid_training_then_rerun_resumes_to_identical_weights(reference_run, mnist_dir, tmp_path):
    """Killed mid-run, the same command resumes and ends with the reference's weights, bit for bit.

    This is also the determinism check (`--deterministic`): a second process computes the same
    weights as the reference run. It runs with `--overwrite` over a copy of the finished
    reference folder, so it also checks that `--overwrite` replaces a finished run, and that a
    command with `--overwrite` still resumes an interrupted one.
    """
    out, metrics, _ = reference_run
    shutil.copytree(out, tmp_path, dirs_exist_ok=True)
    old_events = _events(tmp_path)
    process = _start_training(tmp_path, mnist_dir, "--overwrite")
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
    assert killed_at in (2, 3), "not killed mid-run"
    assert not (tmp_path / "model.keras").exists() and not (tmp_path / "metrics.json").exists(), "not replaced"

    rerun = train_cli(tmp_path, mnist_dir, "--overwrite")  # the same command
    assert f"Resuming from the backup of epoch {killed_at}" in rerun.stdout
    resumed = json.loads((tmp_path / "metrics.json").read_text())
    assert resumed["resumed_from_epoch"] == killed_at >= 2
    assert_bit_identical(out / "model.keras", tmp_path / "model.keras")
    assert resumed["test_errors"] == metrics["test_errors"]
    print(f"killed after epoch {killed_at}, resumed: {resumed['test_errors']} test errors, as uninterrupted")
    log = (tmp_path / "training_log.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in log[1:]] == ["0", "1", "2", "3"]
    assert not (tmp_path / "backup").exists()
    assert _events(tmp_path) and not old_events & _events(tmp_path), "the old run's TensorBoard logs stayed"


def test_sigint_stops_cleanly_after_saving_and_rerun_resumes(reference_run, mnist_dir, tmp_path):
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
    assert "val_loss" in (tmp_path / "training_log.csv").read_text().splitlines()[0]

    # Not a finished run: resumed, not refused. Validation is not part of the weights' trajectory,
    # so it may differ on resume, and the result is still the reference's, bit for bit.
    rerun = train_cli(tmp_path, mnist_dir, "--no-validation")
    assert f"Resuming from the backup of epoch {backup['epoch']}" in rerun.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["interrupted"] is False and metrics["completed_epochs"] == 4
    assert_bit_identical(reference_run[0] / "model.keras", tmp_path / "model.keras")
    with open(tmp_path / "training_log.csv", newline="") as file:
        rows = list(csv.DictReader(file))  # one header for the rows of both settings
    assert [row["epoch"] for row in rows] == ["0", "1", "2", "3"]
    assert all(float(row["loss"]) > 0 for row in rows)
    assert [row["val_loss"] != "" for row in rows] == [epoch < backup["epoch"] for epoch in range(4)]


def test_memory_stays_flat_across_epochs(reference_run):
    _, metrics, _ = reference_run
    rss = metrics["rss_mb_per_epoch"]
    assert len(rss) == 4
    print(f"resident memory after each epoch (MiB): {rss}")
    # After the first epoch has traced the step and filled the pools, nothing should grow.
    assert rss[3] - rss[1] < 25, rss


# --- the run folder, without training ------------------------------------------------------------


def _leftovers_of_a_run(folder, interrupted):
    """A run folder as a run leaves it: files, TensorBoard logs, a backup, and a file of the user's."""
    (folder / "backup").mkdir(parents=True)
    (folder / "backup" / "training_metadata.json").write_text('{"epoch": 2, "weights": "epoch-2.weights.h5"}')
    (folder / "logs" / "train").mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"a model")
    (folder / "metrics.json").write_text(json.dumps({"interrupted": interrupted, "completed_epochs": 2}))
    (folder / "training_log.csv").write_text("epoch,loss\n0,1.0\n1,0.5\n")
    (folder / "notes.txt").write_text("mine")


def test_training_log_rewrites_a_resumed_epoch_and_keeps_columns_aligned(tmp_path):
    from lenet_tf.training.callbacks import TrainingLog

    path = tmp_path / "training_log.csv"
    for epoch in range(3):  # interrupted after epoch 2 was logged, before its backup
        TrainingLog(path).on_epoch_end(epoch, {"loss": 3.0 - epoch, "val_loss": 2.0, "rss_mb": 800.0})
    TrainingLog(path).on_epoch_end(2, {"loss": 0.5, "rss_mb": 801.0})  # resumed without validation
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["epoch", "loss", "rss_mb", "val_loss"]
    assert [(row["epoch"], row["loss"], row["val_loss"]) for row in rows] == [
        ("0", "3.0", "2.0"), ("1", "2.0", "2.0"), ("2", "0.5", ""),
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["training_log.csv"], "a temporary file was left"


def test_an_interrupted_run_is_resumed_not_refused(tmp_path):
    from lenet_tf.training.run_folder import RunFolder

    _leftovers_of_a_run(tmp_path, interrupted=True)
    with RunFolder(tmp_path).claim():
        assert (tmp_path / "backup" / "training_metadata.json").exists()


@pytest.mark.parametrize("metrics", ['{"interrupted": false, "completed_epochs": 2}', "{not json", "[]"])
def test_a_finished_or_unreadable_run_is_refused(tmp_path, metrics):
    from lenet_tf.errors import RunFolderError
    from lenet_tf.training.run_folder import RunFolder

    _leftovers_of_a_run(tmp_path, interrupted=False)
    (tmp_path / "metrics.json").write_text(metrics)
    with pytest.raises(RunFolderError, match=f"^{tmp_path}: holds a finished run"):
        with RunFolder(tmp_path).claim():
            pass
    assert (tmp_path / "model.keras").read_bytes() == b"a model"


def test_overwrite_replaces_a_finished_run_and_nothing_else(tmp_path):
    from lenet_tf.training.run_folder import RunFolder

    _leftovers_of_a_run(tmp_path, interrupted=False)  # with a backup: killed before deleting it
    with RunFolder(tmp_path).claim(overwrite=True):
        assert sorted(path.name for path in tmp_path.iterdir()) == [".lock", "notes.txt"]


def test_overwrite_still_resumes_an_interrupted_run(tmp_path):
    from lenet_tf.training.run_folder import RunFolder

    _leftovers_of_a_run(tmp_path, interrupted=True)
    with RunFolder(tmp_path).claim(overwrite=True):
        assert (tmp_path / "backup" / "training_metadata.json").exists() and (tmp_path / "model.keras").exists()


def test_a_worker_keeps_its_state_in_a_private_folder(tmp_path):
    from lenet_tf.training.run_folder import RunFolder

    chief, worker = RunFolder(tmp_path, "chief"), RunFolder(tmp_path, "worker-1")
    assert chief.work == tmp_path and worker.work == tmp_path / ".worker-1"
    assert worker.backup == tmp_path / ".worker-1" / "backup" and worker.metrics == tmp_path / "metrics.json"
    with worker.claim():
        (worker.backup).mkdir()
    worker.finish()
    assert not worker.work.exists()


def test_config_checks_its_settings_and_names_the_one_at_fault():
    from lenet_tf.errors import SettingError
    from lenet_tf.training import TrainConfig

    for settings, message in [
        ({"epochs": 0}, "epochs: must be a positive integer, got 0"),
        ({"learning_rate": float("nan")}, "learning_rate: must be a positive number, got nan"),
        ({"optimizer": "adamx"}, "optimizer: must be one of 'adamw', 'muon', 'adam', 'sgd', 'sdlm', got 'adamx'"),
        ({"verbose": True}, "verbose: must be one of 'auto', 0, 1, 2, got True"),
        ({"ema": "yes"}, "ema: must be True or False, got 'yes'"),
        ({"cpu_devices": 2}, "cpu_devices: needs strategy 'mirrored' or 'multiworker'"),
    ]:
        with pytest.raises(SettingError) as error:
            TrainConfig(**settings)
        assert str(error.value) == message
    config = TrainConfig()
    config.batch_size = -1  # changed after construction: `train` checks again
    with pytest.raises(SettingError, match="batch_size"):
        config.validate()


def test_a_recipe_sets_what_is_not_given_and_nothing_else():
    from lenet_tf.training import TrainConfig
    from lenet_tf.training.config import RECIPES

    assert TrainConfig().recipe == "paper-schedule"
    for name, recipe in RECIPES.items():
        config = TrainConfig(recipe=name)
        assert {setting: getattr(config, setting) for setting in recipe} == recipe
    fast = TrainConfig(recipe="fast", epochs=2, ema=False, map_j=1.0)
    assert (fast.epochs, fast.ema, fast.map_j, fast.batch_size, fast.schedule) == (2, False, 1.0, 64, "onecycle")
    # Another optimizer gets its own default learning rate, not the recipe's Muon one.
    assert TrainConfig(recipe="fast", optimizer="sgd").initial_learning_rate() == 2e-3
    assert TrainConfig(recipe="fast", optimizer="sdlm", batch_size=1).initial_learning_rate() == 5e-5


def test_an_unknown_recipe_is_refused_by_name():
    from lenet_tf.errors import SettingError
    from lenet_tf.training import TrainConfig

    with pytest.raises(SettingError, match="^recipe: must be one of 'paper-schedule', 'fast', got 'quick'$"):
        TrainConfig(recipe="quick")


def test_onecycle_warms_up_to_the_peak_then_decays_to_zero():
    from lenet_tf.training import TrainConfig
    from lenet_tf.training.recipes import learning_rate_schedule

    config = TrainConfig(recipe="fast", epochs=5)
    schedule = learning_rate_schedule(config, steps_per_epoch=100)
    rates = np.array([float(schedule(step)) for step in range(0, 501, 10)])
    peak = config.initial_learning_rate()
    assert rates[0] == pytest.approx(peak / 25) and rates.max() == pytest.approx(peak)
    assert rates.argmax() == 10  # the peak after the first fifth of 500 steps
    assert np.all(np.diff(rates[:11]) > 0) and np.all(np.diff(rates[10:]) < 0) and rates[-1] == pytest.approx(0)


def test_onecycle_rates_are_keras_warmup_cosine_decay_traced_without_a_conditional():
    import keras
    import tensorflow as tf

    from lenet_tf.schedules import WarmupCosineDecay

    ours = WarmupCosineDecay(8e-3, warmup_steps=60, decay_steps=240, start_factor=0.04)
    reference = keras.optimizers.schedules.CosineDecay(8e-3 * 0.04, 240, warmup_target=8e-3, warmup_steps=60)
    steps = range(0, 321, 7)
    np.testing.assert_allclose([float(ours(s)) for s in steps], [float(reference(s)) for s in steps], atol=1e-9)
    traced = tf.function(ours).get_concrete_function(tf.TensorSpec([], tf.int64))
    assert not {op.type for op in traced.graph.get_operations()} & {"If", "StatelessIf"}
    assert WarmupCosineDecay.from_config(ours.get_config()).get_config() == ours.get_config()


def test_each_recipe_compiles_the_map_loss_with_its_own_j():
    from lenet_tf.model import build_lenet5
    from lenet_tf.training import TrainConfig
    from lenet_tf.training.recipes import compile_lenet5

    for settings, j in [({}, 1.0), ({"recipe": "fast"}, 2.0), ({"recipe": "fast", "map_j": 0.5}, 0.5)]:
        model = build_lenet5("paper")
        compile_lenet5(model, TrainConfig(**settings), steps_per_epoch=10)
        assert model.loss.j == j, settings


def test_compiling_builds_the_optimizer_before_fit_traces_anything():
    from lenet_tf.model import build_lenet5
    from lenet_tf.training import TrainConfig
    from lenet_tf.training.recipes import compile_lenet5

    model = build_lenet5("paper")
    compile_lenet5(model, TrainConfig(recipe="fast"), steps_per_epoch=10)
    assert model.optimizer.built
    # The step counter, a momentum and a weight average of every trainable variable, and AdamW's
    # second moment of each of the 8 vectors (Muon steps the 4 kernels without one).
    assert len(model.optimizer.variables) == 1 + 2 * len(model.trainable_variables) + 8


def test_two_epochs_of_the_fast_recipe_on_a_fifth_of_mnist_beat_a_low_bar(mnist_dir, tmp_path):
    from lenet_tf.training import TrainConfig, train

    config = TrainConfig(recipe="fast", epochs=2, train_limit=12_800, data_dir=str(mnist_dir), out=str(tmp_path),
                         verbose=0, validation=False, seed=0)  # fmt: skip
    metrics = train(config)
    # 400 steps: 97.5% on the full test set with Muon (95.4% with AdamW); a broken layer, loss or
    # schedule stays far below.
    assert metrics["test_accuracy"] >= 0.92, metrics
    assert metrics["config"]["recipe"] == "fast" and metrics["config"]["batch_size"] == 64


def test_resuming_needs_the_settings_that_shape_the_weights_only():
    from lenet_tf.training import TrainConfig

    fingerprint = TrainConfig().fingerprint()
    assert {"variant", "recipe", "epochs", "batch_size", "optimizer", "learning_rate", "seed", "distort"} <= set(fingerprint)
    assert not {"out", "data_dir", "verbose", "validation", "overwrite", "worker_timeout"} & set(fingerprint)
