"""lenet-tf: LeNet-5 as LeCun et al. (1998) built it, in Keras 3.

The public names below are imported on first use (PEP 562), so `import lenet_tf` and the
commands' `--help` do not load Keras and TensorFlow. Training is `lenet_tf.training.train`
(`lenet_tf.train` is the `python -m lenet_tf.train` command).

>>> import lenet_tf
>>> model = lenet_tf.build_lenet5("paper")
>>> model.output_shape
(None, 10)
"""

import importlib

__version__ = "0.1.0"

# Public name -> the module that defines it.
_EXPORTS = {
    "DistancePosterior": "lenet_tf.layers",
    "EuclideanRBF": "lenet_tf.layers",
    "MNISTPreprocessing": "lenet_tf.layers",
    "SparseConv2D": "lenet_tf.layers",
    "TrainableSubsampling": "lenet_tf.layers",
    "lenet5_connection_table": "lenet_tf.layers",
    "FanInUniform": "lenet_tf.initializers",
    "MAPLoss": "lenet_tf.losses",
    "NearestPrototypeAccuracy": "lenet_tf.metrics",
    "build_lenet5": "lenet_tf.model",
    "parameter_table": "lenet_tf.model",
    "probability_model": "lenet_tf.model",
    "scaled_tanh": "lenet_tf.activations",
    "load_lenet5": "lenet_tf.saving",
    "load_mnist": "lenet_tf.data",
    "evaluate_model": "lenet_tf.evaluation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lenet_tf' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
