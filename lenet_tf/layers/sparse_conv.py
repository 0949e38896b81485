"""The sparsely connected C3 convolution of LeNet-5."""

import keras
import numpy as np
from keras import ops

from lenet_tf.initializers import FanInUniform
from lenet_tf.layers.block_conv import block_conv, blocks_faster

# Table 1 of LeCun et al. (1998): the S2 maps that each of the 16 C3 maps reads. Six maps read
# 3 contiguous maps, six read 4 contiguous, three read 4 discontinuous and one reads all six.
# The paper leaves connections out to break the symmetry between maps and to keep the number
# of connections down.
LENET5_C3_INPUTS = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)  # fmt: skip


def lenet5_connection_table():
    """Returns the paper's C3 connection table as a boolean array.

    Returns:
        A `(6, 16)` boolean NumPy array; entry `[i, k]` is True when C3 map `k` reads S2 map `i`.
    """
    table = np.zeros((6, len(LENET5_C3_INPUTS)), dtype=bool)
    for output_map, input_maps in enumerate(LENET5_C3_INPUTS):
        table[list(input_maps), output_map] = True
    return table


def unpack_kernel(packed, dense_index):
    """The dense kernel a packed sparse kernel stands for, zeros where not connected.

    Args:
        packed: A `(..., connections)` tensor: a `SparseConv2D` kernel, or anything shaped like
            it (its gradient, an optimizer's momentum).
        dense_index: The layer's `SparseConv2D.dense_index`.

    Returns:
        A `(..., input_maps, output_maps)` tensor.
    """
    padded = ops.pad(packed, [[0, 0]] * (len(packed.shape) - 1) + [[1, 0]])
    dense = ops.take(padded, dense_index.reshape(-1), axis=-1)
    return ops.reshape(dense, tuple(packed.shape[:-1]) + dense_index.shape)


def pack_kernel(dense, dense_index):
    """The connected entries of a dense `(..., input_maps, output_maps)` kernel, packed.

    The inverse of `unpack_kernel` on its image: entries where `dense_index` is 0 are dropped.

    Args:
        dense: A `(..., input_maps, output_maps)` tensor.
        dense_index: The layer's `SparseConv2D.dense_index`.

    Returns:
        A `(..., connections)` tensor, in the packed kernel's order.
    """
    flat_index = dense_index.reshape(-1)
    connected = np.flatnonzero(flat_index)
    packed_order = connected[np.argsort(flat_index[connected])]
    flat = ops.reshape(dense, tuple(dense.shape[:-2]) + (flat_index.size,))
    return ops.take(flat, packed_order, axis=-1)


@keras.saving.register_keras_serializable(package="lenet_tf")
class SparseConv2D(keras.layers.Layer):
    """2D convolution in which each output map sees only some of the input maps.

    Output map `k` is `sum over i with connection_table[i, k] of conv(input_i, kernel_ik)
    + bias_k`. Only the connected `kernel_ik` exist as weights, so `count_params()` counts
    exactly the paper's parameters (1516 for C3). The call places them into a zero dense
    kernel and runs one ordinary convolution: disconnected pairs have an exact zero kernel,
    get no gradient, and the whole layer exports as a single CONV_2D / Conv node once the
    weights are frozen (no per-map split and concat).

    Args:
        kernel_size: Side of the square kernel. The paper uses 5.
        connection_table: Boolean array-like of shape `(input_maps, output_maps)`. Defaults
            to the paper's Table 1, `lenet5_connection_table()`, for 6 input and 16 output maps.
        strides: Stride of the convolution.
        padding: `"valid"` (the paper) or `"same"`.
        activation: Activation applied to the output. Defaults to none.
        kernel_initializer: Initializer of the packed kernel of shape
            `(kernel_size, kernel_size, connections)`, connections ordered by output map and
            then input map. Defaults to the paper's uniform +-2.4 / fan-in with each output
            map's own fan-in (`kernel_size**2` times the number of maps it reads).
        bias_initializer: Initializer of the bias, one per output map.
        use_blocks: Compute the convolution on 2x2 blocks of pixels (`block_conv`) where it
            applies (stride 1, `"valid"` padding, odd kernel size, even input sides) and is the
            faster way (`blocks_faster`): the same result, faster to train on a CPU. The
            exporters turn it off, for a plain convolution.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch, height, width, input_maps)`.

    Output shape:
        `(batch, new_height, new_width, output_maps)`.

    Example:

    >>> import numpy as np
    >>> c3 = SparseConv2D(kernel_size=5, name="C3")
    >>> tuple(c3(np.zeros((1, 14, 14, 6))).shape)
    (1, 10, 10, 16)
    >>> c3.count_params()
    1516
    """

    def __init__(
        self,
        kernel_size=5,
        connection_table=None,
        strides=1,
        padding="valid",
        activation=None,
        kernel_initializer=None,
        bias_initializer="zeros",
        use_blocks=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        table = lenet5_connection_table() if connection_table is None else connection_table
        table = np.asarray(table)
        if table.ndim != 2 or not np.isin(table, (0, 1)).all():
            raise ValueError(
                "`connection_table` must be a 2-D boolean array (input_maps, output_maps). "
                f"Received shape {table.shape}"
            )
        table = table.astype(bool)
        if not table.any(axis=0).all():
            unconnected = np.flatnonzero(~table.any(axis=0)).tolist()
            raise ValueError(f"`connection_table` leaves output maps {unconnected} with no input.")
        if padding not in ("valid", "same"):
            raise ValueError(f"`padding` must be 'valid' or 'same'. Received: padding={padding}")
        self.kernel_size = kernel_size
        self.connection_table = table
        self.filters = table.shape[1]
        self.strides = strides
        self.padding = padding
        self.activation = keras.activations.get(activation)
        inputs_per_map = table.sum(axis=0)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer
            or FanInUniform(
                2.4, fan_in=np.repeat(kernel_size * kernel_size * inputs_per_map, inputs_per_map)
            )
        )
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.use_blocks = use_blocks
        # Entry i * output_maps + k of the dense kernel's last two axes takes packed weight
        # `_dense_index[...] - 1`, or the zero in front of the packed weights when i is not
        # connected to k. Packed weights are ordered by output map, then input map.
        output_map, input_map = np.nonzero(table.T)
        dense_index = np.zeros(table.shape, dtype="int32")
        dense_index[input_map, output_map] = np.arange(1, len(input_map) + 1)
        self._dense_index = dense_index.reshape(-1)

    @property
    def dense_index(self):
        """Where each packed weight sits in the dense kernel.

        Returns:
            An `(input_maps, output_maps)` int32 array: entry `[i, k]` is 1 + the packed
            kernel's column that connects input map `i` to output map `k`, or 0 where they are
            not connected.
        """
        return self._dense_index.reshape(self.connection_table.shape)

    def build(self, input_shape):
        input_maps = input_shape[-1]
        if input_maps != self.connection_table.shape[0]:
            raise ValueError(
                f"`connection_table` has {self.connection_table.shape[0]} rows but the input "
                f"has {input_maps} maps. Received input_shape={input_shape}"
            )
        k = self.kernel_size
        self.kernel = self.add_weight(
            name="kernel",
            shape=(k, k, int(self.connection_table.sum())),
            initializer=self.kernel_initializer,
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer=self.bias_initializer)

    def dense_kernel(self):
        """Returns the `(k, k, input_maps, output_maps)` kernel with zeros where not connected."""
        return unpack_kernel(self.kernel, self.dense_index)

    def convolution_op(self, inputs, kernel):
        """The convolution of `inputs` with a dense `(k, k, input_maps, output_maps)` kernel."""
        plain_stride = self.strides == 1 and self.padding == "valid"
        if self.use_blocks and plain_stride and blocks_faster(inputs.shape, kernel.shape):
            return block_conv(inputs, kernel)
        return ops.conv(inputs, kernel, strides=self.strides, padding=self.padding)

    def call(self, inputs):
        return self.activation(self.convolution_op(inputs, self.dense_kernel()) + self.bias)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape

        def side(n):
            if n is None:
                return None
            if self.padding == "same":
                return -(-n // self.strides)
            return (n - self.kernel_size) // self.strides + 1

        return (batch, side(height), side(width), self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "kernel_size": self.kernel_size,
                "connection_table": self.connection_table.tolist(),
                "strides": self.strides,
                "padding": self.padding,
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "use_blocks": self.use_blocks,
            }
        )
        return config
