"""The benchmark suite measures what it says: its bookkeeping, not the speeds (those vary).

Speeds are never asserted here: `python -m benchmarks.run` measures them and the README shows
them. These tests pin down how the figures are taken: checks are not counted as training time,
a run stops at the first check at the target, workers run real models and report failures.
"""

import numpy as np
import pytest

from benchmarks import time_to_accuracy, trainers


class ScriptedTrainer:
    """Trains instantly; each step and each check advance a fake clock by a set amount.

    `accuracy` returns the next scripted value. With `clock`, the clock is patched into
    `time_to_accuracy` so that its timing is exact, not measured.
    """

    def __init__(self, accuracies, step_seconds=0.0, check_seconds=0.0):
        self.accuracies = list(accuracies)
        self.step_seconds, self.check_seconds = step_seconds, check_seconds
        self.steps, self.now = 0, 0.0

    def clock(self):
        return self.now

    def train(self, steps, every=None, callback=None):
        for step in range(1, steps + 1):
            self.now += self.step_seconds
            self.steps += 1
            if callback is not None and step % every == 0 and callback(step):
                return

    def accuracy(self, images, labels):
        self.now += self.check_seconds
        return self.accuracies.pop(0)


def test_time_to_accuracy_stops_at_the_first_check_at_the_target():
    trainer = ScriptedTrainer([0.95, 0.985, 0.991, 0.995])
    result = time_to_accuracy.time_to_accuracy(trainer, None, None, target=0.99, checks=4, steps_per_check=5)
    assert result["reached"] and result["steps"] == 15 and result["accuracy"] == 0.991
    assert trainer.steps == 15
    assert [check["accuracy"] for check in result["curve"]] == [0.95, 0.985, 0.991]


def test_time_to_accuracy_does_not_count_the_checks_as_training_time(monkeypatch):
    trainer = ScriptedTrainer([0.5, 0.6, 0.7], step_seconds=0.01, check_seconds=5.0)
    monkeypatch.setattr(time_to_accuracy.time, "perf_counter", trainer.clock)
    result = time_to_accuracy.time_to_accuracy(trainer, None, None, target=0.99, checks=3, steps_per_check=2)
    assert not result["reached"] and result["steps"] == 6 and result["accuracy"] == 0.7
    # 6 steps of 10 ms trained; the 3 checks of 5 s each are not in the figures.
    assert [check["seconds"] for check in result["curve"]] == pytest.approx([0.02, 0.04, 0.06])
    assert result["seconds"] == pytest.approx(0.06)


def test_time_to_accuracy_table_says_when_the_target_was_not_reached():
    result = {
        "target": 0.99, "batch_size": 128, "epochs": 12, "train_examples": 60_000,
        "models": {
            "paper": {"reached": True, "seconds": 21.04, "steps": 2340, "accuracy": 0.9903},
            "stock": {"reached": False, "seconds": 40.0, "steps": 5616, "accuracy": 0.9871},
        },
    }  # fmt: skip
    table = time_to_accuracy.markdown(result)
    assert "| 21.0 | 5.0 | 99.03% |" in table
    assert "not in 40.0 s (12 epochs)" in table and "98.71%" in table


@pytest.fixture(scope="module")
def stock_worker(mnist_dir):
    worker = trainers.TrainerProcess("stock", mnist_dir, batch_size=32, total_steps=40, steps_per_call=10)
    yield worker
    worker.close()


def test_trainer_process_trains_a_real_model_and_saves_it(stock_worker, tmp_path):
    assert stock_worker.images_per_second(10) > 0
    stock_worker.save(tmp_path / "stock.keras")
    from benchmarks.stock_lenet import STOCK_LAYER_CLASSES
    from lenet_tf.errors import ModelFileError
    from lenet_tf.saving import load_lenet5

    assert load_lenet5(tmp_path / "stock.keras", also_allow=STOCK_LAYER_CLASSES).name == "lenet5_stock"
    with pytest.raises(ModelFileError, match="'AveragePooling2D', which is not part of a lenet-tf LeNet-5"):
        load_lenet5(tmp_path / "stock.keras")  # the library alone knows only its own layers


def test_trainer_process_passes_worker_errors_back_as_one_line(stock_worker, tmp_path):
    with pytest.raises(RuntimeError, match=r"^stock worker: \w+Error: "):
        stock_worker.save(tmp_path / "stock.txt")  # Keras refuses a name not ending in .keras
    assert stock_worker.images_per_second(10) > 0  # and the worker still serves


def test_trainer_process_for_an_unknown_contender_fails_cleanly(mnist_dir):
    with pytest.raises(RuntimeError, match="worker exited"):
        trainers.TrainerProcess("caffe", mnist_dir, batch_size=32, total_steps=10, steps_per_call=10)


def test_torch_lenet_reads_exactly_the_keras_preprocessed_input(mnist):
    torch_lenet = pytest.importorskip("benchmarks.torch_lenet")
    if not torch_lenet.available():
        pytest.skip("PyTorch is not installed (the optional `bench` extra)")
    import keras

    from lenet_tf.layers import MNISTPreprocessing

    (x_train, y_train), _ = mnist
    trainer = torch_lenet.TorchTrainer(x_train[:64], y_train[:64], batch_size=32)
    expected = keras.ops.convert_to_numpy(MNISTPreprocessing()(x_train[:64].astype(np.float32)))
    np.testing.assert_array_equal(trainer.images.numpy(), expected.transpose(0, 3, 1, 2))
    assert trainer.model(trainer.images[:2]).shape == (2, 10)
