"""Class probabilities from RBF distances."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lenet_tf")
class DistancePosterior(keras.layers.Layer):
    """Softmax of negative distances: `p_i = exp(-y_i) / sum_k exp(-y_k)`.

    With the MAP criterion the RBF distances `y_i` are negative log-likelihoods up to a
    constant, so this is the paper's class posterior (without the rubbish class `e^-j`).
    The negation is a multiply by -1, which TFLite Micro's integer kernels have (NEG is float
    only there).

    Example:

    >>> import numpy as np
    >>> tuple(DistancePosterior()(np.array([[0.0, 1.0]])).shape)
    (1, 2)
    """

    def call(self, distances):
        return ops.softmax(distances * -1.0, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape
