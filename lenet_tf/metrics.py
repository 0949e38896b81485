"""Accuracy for outputs where the smallest score wins."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="lenet_tf")
def nearest_prototype_accuracy(y_true, y_pred):
    """1.0 where the smallest distance in `y_pred` is at the label, else 0.0, per sample."""
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    predicted = ops.cast(ops.argmin(y_pred, axis=-1), "int32")
    return ops.cast(ops.equal(predicted, labels), "float32")


@keras.saving.register_keras_serializable(package="lenet_tf")
class NearestPrototypeAccuracy(keras.metrics.MeanMetricWrapper):
    """Accuracy of a distance output: the prediction is the class with the smallest distance.

    Args:
        name: Metric name.
        dtype: Metric dtype.

    Example:

    >>> m = NearestPrototypeAccuracy()
    >>> m.update_state([1], [[3.0, 0.5]])
    >>> float(m.result())
    1.0
    """

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(nearest_prototype_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
