"""The squashing function of LeNet-5 (LeCun et al., 1998, Appendix A)."""

import keras
from keras import ops

# A = 1.7159 and S = 2/3 make f(1) = 1 and f(-1) = -1, and put the largest curvature of f at
# +-1, where the paper's targets lie.
AMPLITUDE = 1.7159
SLOPE = 2.0 / 3.0


@keras.saving.register_keras_serializable(package="lenet_tf")
def scaled_tanh(x):
    """Scaled hyperbolic tangent `f(a) = 1.7159 * tanh(2/3 * a)`.

    Args:
        x: Input tensor.

    Returns:
        A tensor of the same shape as `x`, in (-1.7159, 1.7159).

    Example:

    >>> round(float(scaled_tanh(1.0)), 4)  # the paper's choice: f(1) = 1
    1.0
    """
    return AMPLITUDE * ops.tanh(SLOPE * x)
