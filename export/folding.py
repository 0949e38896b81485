"""The paper LeNet-5 rewritten for inference: the same function, in standard layers.

A trained paper-variant LeNet-5 computes, layer by layer, `A tanh(S z)` (the scaled tanh,
A = 1.7159, S = 2/3), trainable subsampling `f(coefficient * block_sum + bias)`, and a
posterior `softmax(-d)` over the squared RBF distances `d_i = ||x||^2 - 2 x.c_i + ||c_i||^2`.
`folded_model` computes the same probabilities with fewer, cheaper operations, by four exact
identities:

- The input normalisation `pixel * scale + background` is affine and C1 is linear, so it folds
  into C1's weights and bias. The raw pixels are padded with zeros, which is what the
  normalisation's padding does before it maps them (to the background value).
- The slope S folds into each layer's weights and bias; the amplitude A of one layer's output
  folds into the next layer's weights (a plain `tanh` remains).
- Subsampling is linear before its squashing: `coefficient * block_sum + bias` is a 2x2,
  stride-2 depthwise convolution whose four weights are all equal to the coefficient.
- `softmax` does not change when the same number is added to every logit, and `||x||^2` is the
  same for every class, so `softmax(-d) = softmax(2 x.c_i - ||c_i||^2)`: one dense layer. The
  distances' clamp at 0 only ever removed rounding noise.

This matters most for the int8 model: the distances are differences of numbers in the
hundreds, which 8 bits resolve only to a few units, while the dense logits quantize well; and
the exported graph has 10 operator kinds instead of 14, so it runs as fast as a stock LeNet.
The rewrite is checked against the Keras model, not trusted: `export.verify` and the tests
compare the exported probabilities with the original model's on the MNIST test set (max
difference about 1e-5 in float32).
"""

import keras
import numpy as np

from lenet_tf.activations import AMPLITUDE, SLOPE, scaled_tanh
from lenet_tf.layers import (
    CONV2D_REWRITES,
    EuclideanRBF,
    MNISTPreprocessing,
    SparseConv2D,
    TrainableSubsampling,
)

GRAPHS = ("folded", "literal")


class BatchReshape(keras.layers.Layer):
    """Reshapes to `(-1, *shape)`: one reshape by a constant shape.

    Keras' `Reshape` and `Flatten` read the batch size from the input at run time, which
    TFLite turns into `SHAPE`, `STRIDED_SLICE`, `PACK` and a `RESHAPE` by a computed shape:
    three extra operators that XNNPACK does not take, splitting its graph in two.

    Args:
        shape: The shape of one example after the reshape.
        **kwargs: Base layer keyword arguments, such as `name`.
    """

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.shape = tuple(shape)

    def call(self, inputs):
        return keras.ops.reshape(inputs, (-1, *self.shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.shape)

    def get_config(self):
        return {**super().get_config(), "shape": self.shape}


def _numpy(tensor):
    return np.asarray(keras.ops.convert_to_numpy(tensor), dtype=np.float32)


def _require(condition, layer, what):
    if not condition:
        raise ValueError(
            f"cannot fold layer {layer.name!r}: {what}; export the literal graph instead (graph='literal')"
        )


def _subsampling(layer, amplitude_in):
    """A `TrainableSubsampling` as a depthwise convolution with a plain tanh."""
    _require(layer.activation is scaled_tanh, layer, "its activation is not the scaled tanh")
    k = layer.pool_size
    coefficient, bias = _numpy(layer.coefficient), _numpy(layer.bias)
    kernel = np.tile((SLOPE * amplitude_in * coefficient).reshape(1, 1, -1, 1), (k, k, 1, 1))
    folded = keras.layers.DepthwiseConv2D(k, strides=k, padding="valid", activation="tanh", name=layer.name)
    return folded, [kernel, SLOPE * bias]


def _convolution(layer, amplitude_in, input_affine=None):
    """A `Conv2D` or `SparseConv2D` with scaled tanh as a `Conv2D` with a plain tanh.

    `input_affine`, `(scale, offset)`, is an affine map of the inputs to fold in as well.
    """
    _require(layer.activation is scaled_tanh, layer, "its activation is not the scaled tanh")
    if isinstance(layer, SparseConv2D):
        kernel, bias = _numpy(layer.dense_kernel()), _numpy(layer.bias)
        filters, size, strides, padding = layer.filters, layer.kernel_size, layer.strides, layer.padding
    else:
        _require(layer.use_bias and layer.data_format == "channels_last" and tuple(layer.dilation_rate) == (1, 1)
                 and layer.groups == 1, layer, "not a plain channels-last convolution")  # fmt: skip
        kernel, bias = _numpy(layer.kernel), _numpy(layer.bias)
        filters, size, strides, padding = layer.filters, layer.kernel_size, layer.strides, layer.padding
    if input_affine is not None:
        _require(padding == "valid", layer, "the input normalisation folds only into a 'valid' convolution")
        scale, offset = input_affine
        # conv(x * scale + offset) = conv(x) * scale + offset * (sum of each filter's weights)
        bias = bias + offset * kernel.sum(axis=(0, 1, 2))
        kernel = scale * kernel
    folded = keras.layers.Conv2D(filters, size, strides=strides, padding=padding, activation="tanh", name=layer.name)
    return folded, [SLOPE * amplitude_in * kernel, SLOPE * bias]


def _dense(layer, amplitude_in):
    _require(layer.activation is scaled_tanh and layer.use_bias, layer, "not a dense layer with scaled tanh")
    folded = keras.layers.Dense(layer.units, activation="tanh", name=layer.name)
    return folded, [SLOPE * amplitude_in * _numpy(layer.kernel), SLOPE * _numpy(layer.bias)]


def _posterior(layer, amplitude_in):
    """`EuclideanRBF` followed by the paper's posterior, as one dense softmax layer."""
    centers = _numpy(layer.centers)
    folded = keras.layers.Dense(layer.units, activation="softmax", name="probabilities")
    return folded, [2.0 * amplitude_in * centers.T, -(centers * centers).sum(axis=1)]


def folded_model(model):
    """The paper-variant `model` as an inference graph of standard layers (see module docstring).

    Args:
        model: A paper-variant LeNet-5 from `build_lenet5` or `load_lenet5`.

    Returns:
        A `keras.Model` from `image` (batch, 28, 28) raw pixels to `probabilities`
        (batch, 10), equal to `probability_model(model)` up to float rounding.

    Raises:
        ValueError: If the model is not the paper variant's layer sequence.
    """
    inputs = keras.Input(shape=(28, 28), name="image")
    x = inputs
    amplitude = 1.0  # the factor by which the folded activations are smaller than the original
    pending = []
    input_affine = None  # the input normalisation, until C1 has folded it in
    for layer in model.layers[1:]:
        if isinstance(layer, MNISTPreprocessing):
            x = BatchReshape((28, 28, 1), name="channel")(x)
            x = keras.layers.ZeroPadding2D(layer.padding, name=layer.name)(x)
            input_affine = ((layer.foreground - layer.background) / layer.max_value, layer.background)
            continue
        if isinstance(layer, keras.layers.Flatten):
            x = BatchReshape((int(np.prod(x.shape[1:])),), name=layer.name)(x)
            continue
        if isinstance(layer, TrainableSubsampling):
            folded, weights = _subsampling(layer, amplitude)
        elif isinstance(layer, (keras.layers.Conv2D, SparseConv2D)):
            folded, weights = _convolution(layer, amplitude, input_affine)
            input_affine = None
        elif isinstance(layer, keras.layers.Dense):
            folded, weights = _dense(layer, amplitude)
        elif isinstance(layer, EuclideanRBF):
            folded, weights = _posterior(layer, amplitude)
        else:
            raise ValueError(f"cannot fold layer {layer.name!r} of class {type(layer).__name__}")
        _require(input_affine is None, layer, "the input normalisation is not followed by a convolution")
        x = folded(x)
        pending.append((folded, weights))
        amplitude = AMPLITUDE
    if not isinstance(model.layers[-1], EuclideanRBF):
        raise ValueError("cannot fold a model that does not end in the RBF layer (not the paper variant)")
    result = keras.Model(inputs, x, name=f"{model.name}_folded")
    for layer, weights in pending:
        layer.set_weights([w.astype(np.float32) for w in weights])
    return result


def inference_model(model, graph="folded"):
    """The model every export traces: image (batch, 28, 28) -> probabilities (batch, 10).

    Args:
        model: A LeNet-5 (either variant).
        graph: `"folded"`: the paper variant through `folded_model` (the modern variant is
            made of standard layers and is only wrapped); `"literal"`: the layers as trained,
            through `lenet_tf.model.probability_model`. Either way C1 and C5 are exported as
            the plain `Conv2D` they compute (`plain_convolutions`).

    Returns:
        A `keras.Model`.
    """
    from lenet_tf.model import model_variant, probability_model

    if graph not in GRAPHS:
        raise ValueError(f"`graph` must be one of {GRAPHS}. Received: graph={graph!r}")
    if graph == "folded" and model_variant(model) == "paper":
        return folded_model(model)
    return probability_model(plain_convolutions(model))


def plain_convolutions(model):
    """`model` with plain convolutions in place of rearranged ones, and the same weights.

    Each of `CONV2D_REWRITES` (`BlockConv2D`, `MatmulConv2D`) becomes the `Conv2D` it computes,
    each `SparseConv2D` computes with `use_blocks` off and each `TrainableSubsampling` with
    `use_depthwise` off. The 2x2-block rearrangement speeds up training in TensorFlow, but
    exported it would be six-dimensional reshapes and transposes around the convolution: more
    operators for every runtime, and ones TensorFlow Lite Micro cannot allocate in int8. C5 as a
    matrix product would export as reshapes around a fully connected operator; exported, it
    stays the convolution every runtime was verified with. The subsampling's depthwise form is
    taken only where TensorFlow runs oneDNN: off, the literal graph is the same on every host.
    """
    switched_off = {SparseConv2D: "use_blocks", TrainableSubsampling: "use_depthwise"}

    def rearranged(layer):
        switch = switched_off.get(type(layer))
        return isinstance(layer, CONV2D_REWRITES) or bool(switch and getattr(layer, switch))

    if not any(rearranged(layer) for layer in model.layers):
        return model

    def plain(layer):
        if isinstance(layer, CONV2D_REWRITES):
            return keras.layers.Conv2D.from_config(layer.get_config())
        if type(layer) in switched_off:
            return type(layer).from_config({**layer.get_config(), switched_off[type(layer)]: False})
        return layer.__class__.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=plain)
    clone.set_weights(model.get_weights())
    return clone
