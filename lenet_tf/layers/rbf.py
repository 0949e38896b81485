"""The Euclidean RBF output layer of LeNet-5."""

import keras
from keras import ops

from lenet_tf.prototypes import rbf_prototypes


@keras.saving.register_keras_serializable(package="lenet_tf")
class PaperPrototypes(keras.initializers.Initializer):
    """Initializer giving the paper's 7x12 digit bitmaps as RBF centres, shape `(10, 84)`.

    Example:

    >>> tuple(PaperPrototypes()((10, 84)).shape)
    (10, 84)
    """

    def __call__(self, shape, dtype=None):
        centres = rbf_prototypes()
        if tuple(shape) != centres.shape:
            raise ValueError(
                f"The paper's prototypes have shape {centres.shape}; the layer asked for {tuple(shape)}. "
                "Use 10 units on 84 inputs, or pass another `centers_initializer`."
            )
        return ops.convert_to_tensor(centres, dtype=dtype)


@keras.saving.register_keras_serializable(package="lenet_tf")
class EuclideanRBF(keras.layers.Layer):
    """Euclidean radial basis function units: `y_i = sum_j (x_j - w_ij)^2`.

    The output layer of LeCun et al. (1998). Each unit outputs the squared distance between
    the input and its centre, so the *smallest* output is the prediction. The centres default
    to the paper's fixed +-1 bitmaps of the digits and are not trained unless asked.

    The distance is computed as `||x||^2 - 2 x.w_i + ||w_i||^2`: one matrix product instead of
    a `(batch, units, features)` difference tensor, and ops (MUL, SUM, FULLY_CONNECTED, ADD)
    that every TFLite and TFLite Micro integer kernel set has. In float32 it agrees with the
    direct sum of squared differences to about 1e-5 at the paper's magnitudes.

    Args:
        units: Number of output units (classes).
        centers_initializer: Initializer of the `(units, features)` centres. Defaults to the
            paper's bitmaps, which need 10 units on 84 features.
        trainable_centers: Whether the centres are trained. The paper keeps them fixed.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch, features)`.

    Output shape:
        `(batch, units)`: squared distances, smallest wins.

    Example:

    >>> import numpy as np
    >>> rbf = EuclideanRBF(name="OUTPUT")
    >>> tuple(rbf(np.zeros((2, 84))).shape)
    (2, 10)
    >>> rbf.count_params(), len(rbf.trainable_weights)
    (840, 0)
    """

    def __init__(self, units=10, centers_initializer=None, trainable_centers=False, **kwargs):
        super().__init__(**kwargs)
        if units < 1:
            raise ValueError(f"`units` must be >= 1. Received: units={units}")
        self.units = units
        self.centers_initializer = keras.initializers.get(centers_initializer or PaperPrototypes())
        self.trainable_centers = trainable_centers

    def build(self, input_shape):
        self.centers = self.add_weight(
            name="centers",
            shape=(self.units, input_shape[-1]),
            initializer=self.centers_initializer,
            trainable=self.trainable_centers,
        )

    def call(self, inputs):
        input_norm = ops.sum(inputs * inputs, axis=-1, keepdims=True)
        center_norm = ops.sum(self.centers * self.centers, axis=-1)
        cross = ops.matmul(inputs, ops.transpose(self.centers))
        # Rounding can take an exact match a hair below zero; a distance is never negative.
        return ops.maximum(input_norm - 2.0 * cross + center_norm, 0.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "centers_initializer": keras.initializers.serialize(self.centers_initializer),
                "trainable_centers": self.trainable_centers,
            }
        )
        return config
