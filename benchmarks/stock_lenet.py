"""The baseline every benchmark compares against: LeNet-5 built from stock Keras layers.

Same shape as the paper's network (6-16-120-84-10, 5x5 kernels, 2x2 pooling, tanh) and the
same in-model input preprocessing, but with `Conv2D` (fully connected C3),
`AveragePooling2D`, `Dense` and a softmax output trained with cross-entropy: what a user
gets by typing LeNet-5 from a tutorial.
"""

import keras

from lenet_tf.layers import MNISTPreprocessing


def build_stock_lenet():
    """Returns the stock-layer LeNet-5: raw (batch, 28, 28) pixels in, 10 probabilities out."""
    inputs = keras.Input(shape=(28, 28), name="image")
    x = MNISTPreprocessing(name="preprocess")(inputs)
    x = keras.layers.Conv2D(6, 5, activation="tanh", name="C1")(x)
    x = keras.layers.AveragePooling2D(2, name="S2")(x)
    x = keras.layers.Conv2D(16, 5, activation="tanh", name="C3")(x)
    x = keras.layers.AveragePooling2D(2, name="S4")(x)
    x = keras.layers.Conv2D(120, 5, activation="tanh", name="C5")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(84, activation="tanh", name="F6")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="OUTPUT")(x)
    return keras.Model(inputs, outputs, name="lenet5_stock")


# What `lenet_tf.saving.load_lenet5` must also allow to load a stock LeNet's `.keras` file.
STOCK_LAYER_CLASSES = frozenset({"AveragePooling2D"})


def compile_stock_lenet(model, optimizer, steps_per_execution=8):
    """Compiles the stock LeNet with cross-entropy and `optimizer` (a Keras optimizer)."""
    model.compile(
        optimizer=optimizer,
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    # Its optimizer's variables now, as `lenet_tf.training.recipes.compile_lenet5` builds the
    # paper model's: otherwise `fit`'s first trace creates them, inside the time a benchmark counts.
    model.optimizer.build(model.trainable_variables)
