"""Test error of a LeNet-5 on labelled images (the MNIST test set, usually).

>>> import numpy as np
>>> from lenet_tf.model import build_lenet5
>>> result = evaluate_model(build_lenet5("paper"), np.zeros((3, 28, 28)), [0, 1, 2])
>>> sorted(result)
['errors', 'examples', 'predictions', 'test_accuracy', 'test_error']
"""

import numpy as np

from lenet_tf.data import make_dataset
from lenet_tf.images import as_pixel_batch
from lenet_tf.model import probability_model


def check_labels(labels, count, name="labels"):
    """Returns `labels` as an int64 array after checking they are `count` digits 0-9."""
    array = np.asarray(labels)
    if array.shape != (count,):
        raise ValueError(f"`{name}` must have shape ({count},) to match the images. Received: shape={array.shape}")
    if array.dtype.kind not in "ui" and not (
        array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all()
    ):
        raise ValueError(f"`{name}` must be integer digits 0-9. Received: dtype={array.dtype}")
    if array.min() < 0 or array.max() > 9:
        raise ValueError(f"`{name}` must be digits 0-9. Received: values in [{array.min()}, {array.max()}]")
    return array.astype(np.int64)


def evaluate_model(model, images, labels, batch_size=1024):
    """Classifies `images` and compares with `labels`.

    Args:
        model: A LeNet-5 from `build_lenet5` or `load_lenet5` (either variant).
        images: Raw pixels, `(N, 28, 28)`.
        labels: Digits, `(N,)`.
        batch_size: Images per forward pass.

    Returns:
        A dict with `test_error` and `test_accuracy` (fractions), `errors` (count), `examples`
        and `predictions` (a NumPy array of the predicted digits).

    Raises:
        ValueError: If `images` or `labels` are malformed (see `lenet_tf.images.as_pixel_batch`, `check_labels`),
            for example NaN or infinite pixels.
    """
    images = as_pixel_batch(images)
    labels = check_labels(labels, len(images))
    dataset = make_dataset(images, labels, batch_size=batch_size).map(lambda x, y: x)
    probabilities = probability_model(model).predict(dataset, verbose=0)
    predictions = probabilities.argmax(axis=-1)
    errors = int((predictions != labels).sum())
    return {
        "test_error": errors / len(labels),
        "test_accuracy": 1.0 - errors / len(labels),
        "errors": errors,
        "examples": int(len(labels)),
        "predictions": predictions,
    }
