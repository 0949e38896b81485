"""Keras layers of LeNet-5 (LeCun et al., 1998)."""

from lenet_tf.layers.block_conv import BlockConv2D
from lenet_tf.layers.matmul_conv import MatmulConv2D
from lenet_tf.layers.posterior import DistancePosterior
from lenet_tf.layers.preprocessing import MNISTPreprocessing
from lenet_tf.layers.rbf import EuclideanRBF, PaperPrototypes
from lenet_tf.layers.sparse_conv import LENET5_C3_INPUTS, SparseConv2D, lenet5_connection_table
from lenet_tf.layers.subsampling import TrainableSubsampling

# `keras.layers.Conv2D` subclasses that compute Conv2D's convolution another way, with its
# weights and configuration: exporters turn them back into `Conv2D`, SDLM treats them as one.
CONV2D_REWRITES = (BlockConv2D, MatmulConv2D)

__all__ = [
    "BlockConv2D",
    "CONV2D_REWRITES",
    "DistancePosterior",
    "EuclideanRBF",
    "LENET5_C3_INPUTS",
    "MNISTPreprocessing",
    "MatmulConv2D",
    "PaperPrototypes",
    "SparseConv2D",
    "TrainableSubsampling",
    "lenet5_connection_table",
]
