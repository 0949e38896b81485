"""The weight initialisation of LeNet-5 (LeCun et al., 1998, Appendix C)."""

import math

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="lenet_tf")
class FanInUniform(keras.initializers.RandomUniform):
    """Uniform in `[-scale / fan_in, scale / fan_in]`.

    The paper draws every weight from this distribution with `scale = 2.4`, `fan_in` being the
    number of inputs of the unit the weight belongs to, so that the weighted sums start in the
    range where the squashing function is neither linear nor saturated.

    By default `fan_in` is the product of all but the last dimension of the shape: the number
    of inputs of a unit for `Dense` kernels `(in, out)` and `Conv2D` kernels `(h, w, in, out)`.

    Args:
        scale: Numerator of the bound. The paper uses 2.4.
        fan_in: Number of inputs per unit, for weights whose shape does not say it: an integer
            (the one coefficient per map of a subsampling layer has fan-in 4), or one integer
            per entry of the last axis (the packed kernel of a sparsely connected convolution,
            whose output maps have different fan-ins). `None` derives it from the shape.
        seed: Optional integer seed, as for the built-in Keras initializers: like them, an
            unseeded instance draws the same values on every call, so give each layer its own.

    Example:

    >>> init = FanInUniform(2.4, seed=1)
    >>> w = init((5, 5, 1, 6))  # fan-in 25: values in [-0.096, 0.096]
    >>> bool(keras.ops.max(keras.ops.abs(w)) <= 2.4 / 25)
    True
    """

    def __init__(self, scale=2.4, fan_in=None, seed=None):
        if scale <= 0:
            raise ValueError(f"`scale` must be positive. Received: scale={scale}")
        if fan_in is not None:
            fan_in = fan_in if isinstance(fan_in, int) else tuple(int(f) for f in fan_in)
            if min(np.atleast_1d(fan_in)) < 1:
                raise ValueError(f"`fan_in` must be >= 1. Received: fan_in={fan_in}")
        super().__init__(seed=seed)
        self.scale = scale
        self.fan_in = fan_in

    def __call__(self, shape, dtype=None):
        if self.fan_in is None:
            fan_in = math.prod(shape[:-1]) if len(shape) > 1 else shape[0]
        elif isinstance(self.fan_in, int):
            fan_in = self.fan_in
        else:
            if len(self.fan_in) != shape[-1]:
                raise ValueError(
                    f"`fan_in` has {len(self.fan_in)} entries for a last axis of {shape[-1]}."
                )
            fan_in = np.asarray(self.fan_in, dtype="float32")
        # Draw in [-1, 1] and scale, so a per-unit bound broadcasts over the last axis.
        unit = keras.random.uniform(shape, minval=-1.0, maxval=1.0, dtype=dtype, seed=self.seed)
        return unit * ops.cast(self.scale / fan_in, unit.dtype)

    def get_config(self):
        fan_in = self.fan_in if self.fan_in is None or isinstance(self.fan_in, int) else list(self.fan_in)
        return {"scale": self.scale, "fan_in": fan_in, "seed": super().get_config()["seed"]}
