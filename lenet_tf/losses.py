"""The training criterion of LeNet-5: maximum a posteriori (eq. 9 of LeCun et al., 1998)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lenet_tf")
class MAPLoss(keras.losses.Loss):
    """`y_D + log(e^-j + sum_i e^-y_i)`, averaged over the batch.

    `y` are the RBF distances of a sample and `D` its class. The first term pulls the correct
    distance down; the second pushes the other distances up, which keeps trainable centres
    from collapsing onto each other (the plain criterion of eq. 8 lets them). `e^-j` acts as a
    "rubbish" class; as `j` grows the loss tends to the plain squared error of eq. 8.

    Args:
        j: The positive constant of eq. 9. The paper gives no value.
        **kwargs: Base loss keyword arguments, such as `name` and `reduction`.

    Example:

    >>> import numpy as np
    >>> loss = MAPLoss(j=1.0)
    >>> float(loss(np.array([0]), np.array([[0.0, 50.0]])))  # doctest: +ELLIPSIS
    0.31...
    """

    def __init__(self, j=1.0, name="map_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if j <= 0:
            raise ValueError(f"`j` must be positive. Received: j={j}")
        self.j = j

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1, 1)), "int32")
        correct = ops.take_along_axis(y_pred, labels, axis=-1)[:, 0]
        rubbish = ops.full_like(y_pred[:, :1], -self.j)
        # log(e^-j + sum e^-y) as one log-sum-exp, stable when every y is large.
        penalty = ops.logsumexp(ops.concatenate([rubbish, -y_pred], axis=-1), axis=-1)
        return correct + penalty

    def get_config(self):
        config = super().get_config()
        config.update({"j": self.j})
        return config
