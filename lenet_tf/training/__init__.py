"""Training LeNet-5 on MNIST: `TrainConfig` says what to train, `train` does it.

    from lenet_tf.training import TrainConfig, train

    metrics = train(TrainConfig(epochs=2, out="runs/quick"))

One concern per module: `config` (the settings, importable without TensorFlow), `recipes`
(optimizer, schedule, weight average), `callbacks` (backup, NaN guard, signals, memory),
`run_folder` (lock, files, resume bookkeeping), `distribute` (strategies and their Keras
work-arounds) and `loop` (`train` itself).
"""

from lenet_tf.training.config import TrainConfig

__all__ = ["TrainConfig", "train"]


def __getattr__(name):
    # `train` pulls in TensorFlow: imported on first use, so that `TrainConfig` (and the
    # command line's --help) does not wait for it.
    if name == "train":
        from lenet_tf.training.loop import train

        return train
    raise AttributeError(f"module 'lenet_tf.training' has no attribute {name!r}")
