"""Convolution on 2x2 blocks of pixels, for inputs with few channels; `BlockConv2D`.

C1 of LeNet-5 convolves one input channel, C3 six. TensorFlow's CPU convolution kernels do
little work per memory access with so few channels: C1's forward and kernel gradient took half
of a training step (`docs/performance.md#where-a-training-step-goes`). Rearranging the input
into 2x2 blocks (four times the channels at half the resolution) turns a 5x5 convolution into a
3x3 one producing the four outputs of each block at once: the same sums of products, about
2.5x faster for C1 and 1.5x for C3 (forward and backward). TensorFlow's oneDNN CPU kernels,
where they are on, run the plain convolution faster still, so there the layers use it
(`blocks_faster`).
"""

import functools

import keras
from keras import ops

BLOCK = 2


@keras.saving.register_keras_serializable(package="lenet_tf")
class BlockConv2D(keras.layers.Conv2D):
    """A `keras.layers.Conv2D` that convolves 2x2 blocks of pixels: same weights, same output.

    For stride 1, `"valid"` padding, no dilation, no groups and channels-last data, where
    `blocks_faster` (an odd kernel size, an input of even height and width, TensorFlow's oneDNN
    kernels off), the convolution is `block_conv`'s. Any other case is `Conv2D`'s own
    convolution. The weights, the configuration and every exporter see a plain `Conv2D` (an
    instance of it).

    Args:
        *args: `keras.layers.Conv2D` arguments.
        **kwargs: `keras.layers.Conv2D` keyword arguments.

    Example:

    >>> import numpy as np
    >>> images = np.random.default_rng(0).random((2, 32, 32, 1), dtype="float32")
    >>> blocks = BlockConv2D(6, 5)
    >>> plain = keras.layers.Conv2D(6, 5)
    >>> _ = blocks(images), plain(images)
    >>> plain.set_weights(blocks.get_weights())
    >>> bool(np.allclose(blocks(images), plain(images), atol=1e-5))
    True
    """

    def convolution_op(self, inputs, kernel):
        if self._blocks_apply(inputs.shape):
            return block_conv(inputs, kernel)
        return super().convolution_op(inputs, kernel)

    def _blocks_apply(self, input_shape):
        return (
            is_plain_valid_conv(self)
            and tuple(self.strides) == (1, 1)
            and blocks_faster(input_shape, self.kernel_size)
        )


def is_plain_valid_conv(layer):
    """Whether a `Conv2D` is the case a rewrite of its convolution assumes.

    Channels-last data, `"valid"` padding, no dilation and one group: `BlockConv2D` and
    `MatmulConv2D` compute such a convolution another way, and any other one as `Conv2D` does.

    Args:
        layer: A `keras.layers.Conv2D`.

    Returns:
        A bool.

    Example:

    >>> is_plain_valid_conv(keras.layers.Conv2D(6, 5))
    True
    >>> is_plain_valid_conv(keras.layers.Conv2D(6, 5, padding="same"))
    False
    """
    return (
        layer.data_format == "channels_last"
        and layer.padding == "valid"
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
    )


def blocks_faster(input_shape, kernel_shape):
    """Whether `block_conv` takes these shapes and is the faster way to convolve them here.

    It is on TensorFlow's own CPU kernels, TensorFlow's default on CPUs without AVX-512 VNNI,
    BF16 or AMX: 2.5x faster for C1, 1.5x for C3. With TensorFlow's oneDNN kernels on
    (`TF_ENABLE_ONEDNN_OPTS=1`, which `lenet-tf train` sets unless told otherwise, and the default
    on CPUs with those instructions) the plain convolution is the faster one
    (`docs/performance.md#onednn`). Other backends keep the blocks.

    Args:
        input_shape: `(batch, height, width, channels)`.
        kernel_shape: `(rows, cols, ...)`.

    Returns:
        A bool.
    """
    return blocks_fit(input_shape, kernel_shape) and not onednn_enabled()


@functools.cache
def onednn_enabled():
    """Whether this process runs TensorFlow with its oneDNN CPU kernels (fixed once it loads).

    Returns:
        A bool; False on other Keras backends.

    Example:

    >>> onednn_enabled() in (True, False)
    True
    """
    if keras.backend.backend() != "tensorflow":
        return False
    # TensorFlow's own answer (its build scripts ask it too): no public API gives it, and
    # TF_ENABLE_ONEDNN_OPTS alone does not, since the default depends on the CPU.
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def blocks_fit(input_shape, kernel_shape):
    """Whether `block_conv` takes inputs and a kernel of these shapes.

    Args:
        input_shape: `(batch, height, width, channels)`; height and width must be known and even.
        kernel_shape: `(rows, cols, ...)`; rows and cols must be odd.

    Returns:
        A bool.
    """
    height, width = input_shape[1], input_shape[2]
    return (
        height is not None
        and width is not None
        and height % BLOCK == 0
        and width % BLOCK == 0
        and all(size % 2 == 1 for size in kernel_shape[:2])
    )


def block_conv(inputs, kernel):
    """Stride-1, `"valid"` convolution of channels-last `inputs`, computed on 2x2 blocks.

    The input is rearranged into 2x2 blocks (space to depth), convolved with the kernel
    rearranged likewise, and the result rearranged back: what `keras.ops.conv(inputs, kernel)`
    gives, to float rounding.

    Args:
        inputs: `(batch, height, width, channels)` tensor, as `blocks_fit` requires.
        kernel: `(rows, cols, channels, filters)` tensor, as `blocks_fit` requires.

    Returns:
        The `(batch, height - rows + 1, width - cols + 1, filters)` convolution.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> images = rng.random((2, 14, 14, 6), dtype="float32")
    >>> kernel = rng.random((5, 5, 6, 16), dtype="float32")
    >>> blocks_fit(images.shape, kernel.shape)
    True
    >>> bool(np.allclose(block_conv(images, kernel), ops.conv(images, kernel), atol=1e-4))
    True
    """
    batch, height, width, channels = ops.shape(inputs)[0], *inputs.shape[1:]
    filters = kernel.shape[-1]
    blocks = ops.reshape(inputs, (batch, height // BLOCK, BLOCK, width // BLOCK, BLOCK, channels))
    blocks = ops.transpose(blocks, (0, 1, 3, 2, 4, 5))
    blocks = ops.reshape(blocks, (batch, height // BLOCK, width // BLOCK, BLOCK * BLOCK * channels))
    outputs = ops.conv(blocks, _block_kernel(kernel), padding="valid")
    out_height, out_width = outputs.shape[1], outputs.shape[2]
    outputs = ops.reshape(outputs, (batch, out_height, out_width, BLOCK, BLOCK, filters))
    outputs = ops.transpose(outputs, (0, 1, 3, 2, 4, 5))
    return ops.reshape(outputs, (batch, BLOCK * out_height, BLOCK * out_width, filters))


def _block_kernel(kernel):
    """`kernel` (k, k, c, f) as (m, m, 4c, 4f), m = (k + 1) / 2: one output per block position.

    Output position (di, dj) of a block sees the kernel shifted by (di, dj) inside a 2m x 2m
    window; that window, cut into 2x2 blocks, is an m x m kernel over the block channels.
    """
    rows, cols, channels, filters = kernel.shape
    m_rows, m_cols = (rows + 1) // BLOCK, (cols + 1) // BLOCK
    positions = []
    for di in range(BLOCK):
        for dj in range(BLOCK):
            shifted = ops.pad(kernel, [[di, BLOCK - 1 - di], [dj, BLOCK - 1 - dj], [0, 0], [0, 0]])
            shifted = ops.reshape(shifted, (m_rows, BLOCK, m_cols, BLOCK, channels, filters))
            shifted = ops.transpose(shifted, (0, 2, 1, 3, 4, 5))
            positions.append(ops.reshape(shifted, (m_rows, m_cols, BLOCK * BLOCK * channels, 1, filters)))
    # Output channels ordered (position, filter), as the outputs are rearranged back.
    stacked = ops.concatenate(positions, axis=3)
    return ops.reshape(stacked, (m_rows, m_cols, BLOCK * BLOCK * channels, BLOCK * BLOCK * filters))
