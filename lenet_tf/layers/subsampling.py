"""The S2 and S4 layers of LeNet-5."""

import keras
from keras import ops

from lenet_tf.activations import scaled_tanh
from lenet_tf.initializers import FanInUniform
from lenet_tf.layers import block_conv


@keras.saving.register_keras_serializable(package="lenet_tf")
class TrainableSubsampling(keras.layers.Layer):
    """Sum of each non-overlapping `pool_size` block, scaled and shifted per feature map.

    For feature map `c`: `y = f(coefficient[c] * sum(block) + bias[c])`, as the subsampling
    layers S2 and S4 of LeCun et al. (1998). Two trainable parameters per map.

    Args:
        pool_size: Side of the square block, and the stride. The paper uses 2.
        activation: Applied after the affine map. Defaults to the paper's scaled tanh.
        coefficient_initializer: Initializer of the per-map coefficient. Defaults to the
            paper's uniform +-2.4 / fan-in, the fan-in being `pool_size**2`.
        bias_initializer: Initializer of the per-map bias.
        use_depthwise: Compute `coefficient * sum(block)` as one depthwise convolution (the
            coefficient in each of its `pool_size**2` taps) where that is the faster way, on
            TensorFlow's oneDNN kernels (`lenet-tf train`'s default); elsewhere, and with this
            off, as an average pool and a multiply. The same result either way; the exporters
            turn it off.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch, height, width, channels)`.

    Output shape:
        `(batch, height // pool_size, width // pool_size, channels)`.

    Example:

    >>> import numpy as np
    >>> layer = TrainableSubsampling(name="S2")
    >>> tuple(layer(np.ones((1, 28, 28, 6))).shape)
    (1, 14, 14, 6)
    """

    def __init__(
        self,
        pool_size=2,
        activation=scaled_tanh,
        coefficient_initializer=None,
        bias_initializer="zeros",
        use_depthwise=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pool_size < 1:
            raise ValueError(f"`pool_size` must be >= 1. Received: pool_size={pool_size}")
        self.pool_size = pool_size
        self.activation = keras.activations.get(activation)
        # Each coefficient multiplies pool_size**2 inputs: that is its unit's fan-in.
        self.coefficient_initializer = keras.initializers.get(
            coefficient_initializer or FanInUniform(2.4, fan_in=pool_size * pool_size)
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.use_depthwise = use_depthwise

    def build(self, input_shape):
        channels = input_shape[-1]
        self.coefficient = self.add_weight(
            name="coefficient", shape=(channels,), initializer=self.coefficient_initializer
        )
        self.bias = self.add_weight(name="bias", shape=(channels,), initializer=self.bias_initializer)

    def call(self, inputs):
        k = self.pool_size
        # oneDNN's depthwise convolution makes whole training steps 1.03-1.10x faster than its
        # average pool and a multiply; TensorFlow's own kernels 0.84-0.99x
        # (docs/performance-log.md#s2-and-s4-as-one-depthwise-convolution).
        if self.use_depthwise and block_conv.onednn_enabled():
            channels = self.coefficient.shape[0]
            kernel = ops.broadcast_to(ops.reshape(self.coefficient, (1, 1, channels, 1)), (k, k, channels, 1))
            return self.activation(ops.depthwise_conv(inputs, kernel, strides=k, padding="valid") + self.bias)
        # An average pool times the block area is the block sum; folding the area into the
        # coefficient keeps it one multiply and exports as AVERAGE_POOL_2D + MUL + ADD.
        block_mean = ops.average_pool(inputs, pool_size=k, strides=k, padding="valid")
        return self.activation(block_mean * (self.coefficient * float(k * k)) + self.bias)

    def compute_output_shape(self, input_shape):
        k = self.pool_size
        batch, height, width, channels = input_shape
        return (
            batch,
            None if height is None else height // k,
            None if width is None else width // k,
            channels,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "pool_size": self.pool_size,
                "activation": keras.activations.serialize(self.activation),
                "coefficient_initializer": keras.initializers.serialize(
                    self.coefficient_initializer
                ),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "use_depthwise": self.use_depthwise,
            }
        )
        return config
