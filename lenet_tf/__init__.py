"""lenet-tf: LeNet-5 as LeCun et al. (1998) built it, in Keras 3."""

from lenet_tf.activations import scaled_tanh
from lenet_tf.initializers import FanInUniform
from lenet_tf.layers import (
    DistancePosterior,
    EuclideanRBF,
    MNISTPreprocessing,
    SparseConv2D,
    TrainableSubsampling,
    lenet5_connection_table,
)
from lenet_tf.losses import MAPLoss
from lenet_tf.metrics import NearestPrototypeAccuracy
from lenet_tf.model import build_lenet5, parameter_table, probability_model

__version__ = "0.1.0"

__all__ = [
    "DistancePosterior",
    "EuclideanRBF",
    "FanInUniform",
    "MAPLoss",
    "MNISTPreprocessing",
    "NearestPrototypeAccuracy",
    "SparseConv2D",
    "TrainableSubsampling",
    "build_lenet5",
    "lenet5_connection_table",
    "parameter_table",
    "probability_model",
    "scaled_tanh",
]
