"""Convolution by a kernel as large as its input, as one matrix product; `MatmulConv2D`.

C5 of LeNet-5 convolves S4's 5x5 maps with 5x5 kernels: each output is a single pixel, so the
layer is a full connection from S4's 400 values to 120 units, as the paper says. TensorFlow's
CPU convolution kernels take that shape 1.4-1.8x longer than the matrix product of the same
numbers, and its oneDNN kernels 3.1-3.6x longer (forward and backward,
`docs/performance.md#where-a-training-step-goes`).
"""

import keras
from keras import ops

from lenet_tf.layers.block_conv import is_plain_valid_conv


@keras.saving.register_keras_serializable(package="lenet_tf")
class MatmulConv2D(keras.layers.Conv2D):
    """A `keras.layers.Conv2D` that is one matrix product where its kernel covers its input.

    For `"valid"` padding, no dilation, no groups and channels-last data, when the input's
    height and width are the kernel's (so the output is 1x1), the convolution is the product of
    the flattened input and the kernel reshaped to `(rows * cols * channels, filters)`: the
    same sums of products. Any other case is `Conv2D`'s own convolution. The weights, the
    configuration and every exporter see a plain `Conv2D` (an instance of it).

    Args:
        *args: `keras.layers.Conv2D` arguments.
        **kwargs: `keras.layers.Conv2D` keyword arguments.

    Example:

    >>> import numpy as np
    >>> maps = np.random.default_rng(0).random((2, 5, 5, 16), dtype="float32")
    >>> product = MatmulConv2D(120, 5)
    >>> plain = keras.layers.Conv2D(120, 5)
    >>> _ = product(maps), plain(maps)
    >>> plain.set_weights(product.get_weights())
    >>> bool(np.allclose(product(maps), plain(maps), atol=1e-5))
    True
    """

    def convolution_op(self, inputs, kernel):
        if not self._covers_input(inputs.shape):
            return super().convolution_op(inputs, kernel)
        values = ops.reshape(inputs, (-1, inputs.shape[1] * inputs.shape[2] * inputs.shape[3]))
        outputs = ops.matmul(values, ops.reshape(kernel, (-1, kernel.shape[-1])))
        return ops.reshape(outputs, (-1, 1, 1, kernel.shape[-1]))

    def _covers_input(self, input_shape):
        return is_plain_valid_conv(self) and tuple(input_shape[1:3]) == tuple(self.kernel_size)
