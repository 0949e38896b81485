"""Training on more than one device: MirroredStrategy on two logical CPUs, MultiWorkerMirrored
with two worker processes on 127.0.0.1, and the TF_CONFIG checks.

Data parallelism with the global batch split across replicas must give the same weights as
one device (up to float rounding); both distributed runs are compared with one single-device
run of the same settings.
"""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, command_env, model_weights
from lenet_tf.errors import SettingError
from lenet_tf.training.distribute import is_chief, read_tf_config, task_name, worker_count

SETTINGS = dict(
    variant="paper", train_limit=1024, epochs=2, batch_size=64, optimizer="sgd", learning_rate=5e-3,
    schedule="cosine", ema=False, weight_decay=0.0, seed=0, validation=False,
)  # fmt: skip
FLAGS = [
    "--variant", "paper", "--train-limit", "1024", "--epochs", "2", "--batch-size", "64",
    "--optimizer", "sgd", "--lr", "5e-3", "--schedule", "cosine", "--no-ema", "--weight-decay", "0",
    "--seed", "0", "--no-validation",
]  # fmt: skip
TIMEOUT = 240


def _env(**extra):
    env = {key: value for key, value in command_env().items() if key != "TF_CONFIG"}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1", **extra}


def assert_same_training(a, b):
    weights_a, weights_b = model_weights(a), model_weights(b)
    assert weights_a.keys() == weights_b.keys() and len(weights_a) == 13
    for name in weights_a:
        np.testing.assert_allclose(weights_a[name], weights_b[name], rtol=0, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def single_device_run(tmp_path_factory, mnist_dir):
    """The settings trained on one device, in this process: (run folder, metrics)."""
    from lenet_tf.training import TrainConfig, train

    out = tmp_path_factory.mktemp("single")
    metrics = train(TrainConfig(**SETTINGS, data_dir=str(mnist_dir), out=str(out), verbose=0))
    return out, metrics


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus_matches_one_device(single_device_run, mnist_dir, tmp_path):
    reference, reference_metrics = single_device_run
    result = subprocess.run(
        [sys.executable, "-m", "lenet_tf.train", *FLAGS, "--strategy", "mirrored", "--cpu-devices", "2",
         "--data-dir", str(mnist_dir), "--out", str(tmp_path)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["strategy"], metrics["replicas"], metrics["workers"]) == ("mirrored", 2, 1)
    assert_same_training(reference / "model.keras", tmp_path / "model.keras")
    assert abs(metrics["test_errors"] - reference_metrics["test_errors"]) <= 2


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _start_workers(out, mnist_dir, count, started, *extra):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(count)]}
    for index in range(started):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        yield subprocess.Popen(
            [sys.executable, "-m", "lenet_tf.train", *FLAGS, "--strategy", "multiworker",
             "--data-dir", str(mnist_dir), "--out", str(out), *extra],
            cwd=REPO, env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip


def _finish(workers, timeout):
    """Waits for every worker (bounded); kills any left. Returns [(status, stdout, stderr)]."""
    deadline = time.monotonic() + timeout
    results = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=max(1, deadline - time.monotonic()))
            results.append((worker.returncode, out, err))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    return results


@pytest.mark.slow
def test_two_workers_on_loopback_match_one_device(single_device_run, mnist_dir, tmp_path):
    reference, reference_metrics = single_device_run
    start = time.monotonic()
    results = _finish(list(_start_workers(tmp_path, mnist_dir, 2, 2)), TIMEOUT)
    seconds = time.monotonic() - start
    for status, _, err in results:
        assert status == 0, err[-3000:]
    assert "test error" in results[0][1] and "worker finished" in results[1][1]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["strategy"], metrics["replicas"], metrics["workers"]) == ("multiworker", 2, 2)
    assert_same_training(reference / "model.keras", tmp_path / "model.keras")
    assert abs(metrics["test_errors"] - reference_metrics["test_errors"]) <= 2
    # Only the chief writes the run folder; the other worker's private folder is gone.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".lock", "logs", "metrics.json", "model.keras", "training_log.csv",
    ]  # fmt: skip
    print(f"two-worker run: {seconds:.1f} s wall, {metrics['seconds']} s training")


@pytest.mark.slow
def test_a_worker_that_never_starts_fails_in_bounded_time(mnist_dir, tmp_path):
    start = time.monotonic()
    [(status, _, err)] = _finish(list(_start_workers(tmp_path, mnist_dir, 2, 1, "--worker-timeout", "3")), 120)
    assert status != 0
    assert err.strip().splitlines()[-1].startswith(
        "error: strategy multiworker: the 2 workers in TF_CONFIG did not all start training within 3 s (worker_timeout)"
    )
    assert time.monotonic() - start < 100


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "TF_CONFIG is not set"),
        ("{not json", "TF_CONFIG is not valid (JSONDecodeError"),
        ('{"cluster": {}}', "TF_CONFIG is not valid (KeyError"),
        ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
         "task worker:3 is not in its cluster (1 worker address(es))"),
        ('{"cluster": {"worker": []}, "task": {"type": "worker", "index": 0}}', "non-empty cluster.worker"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task.type worker or chief"),
    ],
)
def test_bad_tf_config_is_one_clear_error(tf_config, message, monkeypatch):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(SettingError) as error:
        read_tf_config()
    assert error.value.setting == "strategy"  # the command names it --strategy
    assert error.value.message.startswith("multiworker: TF_CONFIG ") and message in error.value.message
    assert "\n" not in str(error.value)


def test_the_chief_is_the_chief_task_else_worker_0():
    workers = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}
    assert is_chief(workers) and task_name(workers) == "chief"
    workers["task"]["index"] = 1
    assert not is_chief(workers) and task_name(workers) == "worker-1"
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}
    assert not is_chief(with_chief) and task_name(with_chief) == "worker-0"
    assert is_chief(None) and task_name(None) == "chief"
    assert (worker_count(workers), worker_count(with_chief), worker_count(None)) == (2, 2, 1)


def test_cpu_devices_needs_a_distribution_strategy(tmp_path):
    from lenet_tf.training import TrainConfig, train

    with pytest.raises(SettingError, match="^cpu_devices: needs strategy 'mirrored' or 'multiworker'$"):
        TrainConfig(cpu_devices=2, out=str(tmp_path))
    config = TrainConfig(out=str(tmp_path))
    config.cpu_devices = 2  # set after construction: train checks again, before touching the folder
    with pytest.raises(SettingError, match="^cpu_devices: "):
        train(config)
    assert not any(tmp_path.iterdir())
