"""Fixtures shared by the test suite: the real MNIST files and one small trained model."""

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder of the real MNIST IDX files: $LENET_MNIST_DIR, else ../shared/data/mnist."""
    path = pathlib.Path(os.environ.get("LENET_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist")).resolve()
    if not path.is_dir():
        pytest.fail(f"MNIST IDX files not found in {path}; set LENET_MNIST_DIR")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """((x_train, y_train), (x_test, y_test)) as uint8 arrays, decoded once per session."""
    from lenet_tf.data import load_mnist

    return load_mnist(mnist_dir)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_dir):
    """A paper-variant run folder: one epoch of `lenet_tf.train.train` with its defaults.

    About 98% test accuracy, enough to tell a working model (or export) from a broken one;
    shared by every test that needs a trained `model.keras`.
    """
    from lenet_tf.train import TrainConfig, train

    out = tmp_path_factory.mktemp("run")
    metrics = train(TrainConfig(epochs=1, data_dir=str(mnist_dir), out=str(out), verbose=0))
    return out, metrics
