"""LeNet-5 as built by LeCun et al. (1998), and a modern variant for comparison."""

import keras

from lenet_tf.activations import scaled_tanh
from lenet_tf.initializers import FanInUniform
from lenet_tf.layers import (
    BlockConv2D,
    DistancePosterior,
    EuclideanRBF,
    MatmulConv2D,
    MNISTPreprocessing,
    SparseConv2D,
    TrainableSubsampling,
)

VARIANTS = ("paper", "modern")
PAPER_LAYERS = ("C1", "S2", "C3", "S4", "C5", "F6", "OUTPUT")

# Section II.B of the paper: trainable parameters and connections per layer. The RBF centres
# are 840 fixed parameters; the paper lists 840 connections for OUTPUT but no trainable ones.
PAPER_TABLE = {
    "C1": (156, 122_304),
    "S2": (12, 5_880),
    "C3": (1_516, 151_600),
    "S4": (32, 2_000),
    "C5": (48_120, 48_120),
    "F6": (10_164, 10_164),
    "OUTPUT": (0, 840),
}


def build_lenet5(variant="paper", trainable_centers=False, name=None):
    """Builds LeNet-5.

    Both variants take raw 28x28 MNIST pixels (0-255, ink bright), pad them to 32x32 and
    normalise them inside the model, and have layers named as in the paper.

    - `"paper"`: faithful to the paper: scaled tanh after C1, S2, C3, S4, C5 and F6, trainable
      subsampling, C3 with Table 1's connections, Euclidean RBF output with the fixed digit
      bitmaps (output: 10 squared distances, smallest wins; train with `MAPLoss`), weights
      uniform in +-2.4 / fan-in.
    - `"modern"`: ReLU, max pooling, fully connected C3, softmax output (output: 10
      probabilities; train with sparse categorical cross-entropy), Keras default initialisers.

    Args:
        variant: `"paper"` or `"modern"`.
        trainable_centers: Train the RBF centres (paper variant only). The paper keeps them fixed.
        name: Model name. Defaults to `"lenet5_<variant>"`.

    Returns:
        A `keras.Model` with input `image` of shape `(batch, 28, 28)`.

    Example:

    >>> model = build_lenet5("paper")
    >>> model.count_params() - 840  # trainable
    60000
    """
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}. Received: variant={variant!r}")
    inputs = keras.Input(shape=(28, 28), name="image")
    x = MNISTPreprocessing(name="preprocess")(inputs)
    if variant == "paper":
        x = BlockConv2D(6, 5, activation=scaled_tanh, kernel_initializer=FanInUniform(), name="C1")(x)
        x = TrainableSubsampling(2, name="S2")(x)
        x = SparseConv2D(5, activation=scaled_tanh, name="C3")(x)
        x = TrainableSubsampling(2, name="S4")(x)
        x = MatmulConv2D(120, 5, activation=scaled_tanh, kernel_initializer=FanInUniform(), name="C5")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(
            84, activation=scaled_tanh, kernel_initializer=FanInUniform(), name="F6"
        )(x)
        outputs = EuclideanRBF(10, trainable_centers=trainable_centers, name="OUTPUT")(x)
    else:
        x = BlockConv2D(6, 5, activation="relu", name="C1")(x)
        x = keras.layers.MaxPooling2D(2, name="S2")(x)
        x = keras.layers.Conv2D(16, 5, activation="relu", name="C3")(x)
        x = keras.layers.MaxPooling2D(2, name="S4")(x)
        x = MatmulConv2D(120, 5, activation="relu", name="C5")(x)
        x = keras.layers.Flatten(name="flatten")(x)
        x = keras.layers.Dense(84, activation="relu", name="F6")(x)
        outputs = keras.layers.Dense(10, activation="softmax", name="OUTPUT")(x)
    return keras.Model(inputs, outputs, name=name or f"lenet5_{variant}")


def model_variant(model):
    """Returns `"paper"` when the model ends in RBF distances, `"modern"` otherwise."""
    return "paper" if isinstance(model.layers[-1], EuclideanRBF) else "modern"


def probability_model(model):
    """Wraps a LeNet-5 so that it outputs class probabilities, the contract of every export.

    The paper variant's distances become the softmax of their negatives (the paper's
    posterior); the modern variant already outputs probabilities.

    Args:
        model: A model from `build_lenet5` (or loaded from its `.keras` file).

    Returns:
        A `keras.Model` from `image` (batch, 28, 28) raw pixels to `probabilities` (batch, 10).
    """
    scores = model.output
    if model_variant(model) == "paper":
        scores = DistancePosterior(name="probabilities")(scores)
    else:
        scores = keras.layers.Identity(name="probabilities")(scores)
    return keras.Model(model.input, scores, name=f"{model.name}_probabilities")


def _connections(layer):
    """Connections of a layer as the paper counts them: one per multiply-add, plus the bias."""
    shape = layer.output.shape
    positions = shape[1] * shape[2] if len(shape) == 4 else 1
    if isinstance(layer, TrainableSubsampling):
        return positions * shape[3] * (layer.pool_size**2 + 1)
    if isinstance(layer, keras.layers.MaxPooling2D):
        return positions * shape[3] * layer.pool_size[0] * layer.pool_size[1]
    # Convolutions share their weights over the output positions; dense and RBF units use each
    # weight once.
    return positions * layer.count_params()


def parameter_table(model):
    """Per-layer trainable parameters, fixed parameters and connections of a LeNet-5.

    Args:
        model: A model from `build_lenet5`.

    Returns:
        A list of dicts with keys `layer`, `trainable`, `fixed` and `connections`, one per
        layer named in the paper, then one with `layer` = `"total"`.

    Example:

    >>> rows = parameter_table(build_lenet5())
    >>> rows[-1]["connections"]
    340908
    """
    rows = []
    for name in PAPER_LAYERS:
        layer = model.get_layer(name)
        trainable = sum(int(w.numpy().size) for w in layer.trainable_weights)
        fixed = sum(int(w.numpy().size) for w in layer.non_trainable_weights)
        rows.append(
            {"layer": name, "trainable": trainable, "fixed": fixed, "connections": _connections(layer)}
        )
    rows.append(
        {
            "layer": "total",
            **{key: sum(row[key] for row in rows) for key in ("trainable", "fixed", "connections")},
        }
    )
    return rows


def parameter_table_markdown(model):
    """The `parameter_table` of `model` as Markdown, beside the paper's figures.

    Example:

    >>> print(parameter_table_markdown(build_lenet5()))  # doctest: +SKIP
    | layer | trainable (paper) | trainable (ours) | connections (paper) | connections (ours) |
    ...
    """
    lines = [
        "| layer | trainable params (paper) | trainable params (ours) | fixed params (ours) "
        "| connections (paper) | connections (ours) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    paper_total = [sum(column) for column in zip(*PAPER_TABLE.values())]
    for row in parameter_table(model):
        paper = PAPER_TABLE.get(row["layer"], paper_total)
        lines.append(
            f"| {row['layer']} | {paper[0]:,} | {row['trainable']:,} | {row['fixed']:,} "
            f"| {paper[1]:,} | {row['connections']:,} |"
        )
    return "\n".join(lines)
