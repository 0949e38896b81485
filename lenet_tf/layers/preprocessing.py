"""Turns raw MNIST pixels into the input field LeNet-5 was trained on."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lenet_tf")
class MNISTPreprocessing(keras.layers.Layer):
    """Pads raw 28x28 pixels to 32x32 and maps them to the paper's input range.

    LeCun et al. (1998) centre the 28x28 MNIST digit in a 32x32 field and scale pixels so that
    the background is -0.1 and the ink 1.175, which gives inputs of mean about 0 and variance
    about 1. Doing it inside the model means every exported artifact takes raw pixels, so a
    client in any language feeds the image as it is.

    The padding is applied to the raw pixels (value 0, MNIST's background) before the affine
    map, so it lands on the background value and converts to a plain PAD op.

    Args:
        padding: Pixels added on each side. The paper's 28 -> 32 is 2.
        background: Value the background (raw 0) maps to. The paper uses -0.1.
        foreground: Value full ink (raw `max_value`) maps to. The paper uses 1.175.
        max_value: Raw value of full ink, 255 for 8-bit images.
        **kwargs: Base layer keyword arguments, such as `name` and `dtype`.

    Input shape:
        `(batch, 28, 28)` or `(batch, 28, 28, 1)`, raw pixels in `[0, max_value]`, ink bright.

    Output shape:
        `(batch, 28 + 2 * padding, 28 + 2 * padding, 1)`.

    Example:

    >>> import numpy as np
    >>> layer = MNISTPreprocessing()
    >>> tuple(layer(np.zeros((1, 28, 28))).shape)
    (1, 32, 32, 1)
    """

    def __init__(self, padding=2, background=-0.1, foreground=1.175, max_value=255.0, **kwargs):
        super().__init__(**kwargs)
        if padding < 0:
            raise ValueError(f"`padding` must be >= 0. Received: padding={padding}")
        if max_value <= 0:
            raise ValueError(f"`max_value` must be positive. Received: max_value={max_value}")
        self.padding = padding
        self.background = background
        self.foreground = foreground
        self.max_value = max_value

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        if len(x.shape) == 3:
            x = ops.expand_dims(x, -1)
        p = self.padding
        x = ops.pad(x, [[0, 0], [p, p], [p, p], [0, 0]])
        scale = (self.foreground - self.background) / self.max_value
        return x * scale + self.background

    def compute_output_shape(self, input_shape):
        p = 2 * self.padding
        height, width = input_shape[1], input_shape[2]
        return (
            input_shape[0],
            None if height is None else height + p,
            None if width is None else width + p,
            1,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "padding": self.padding,
                "background": self.background,
                "foreground": self.foreground,
                "max_value": self.max_value,
            }
        )
        return config
