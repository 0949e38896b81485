"""Test error of a saved LeNet-5 on the MNIST test set.

Usage:

    python -m lenet_tf.evaluate --model runs/paper/model.keras [--data-dir DIR] [--json]
"""

import json

from lenet_tf import cli


def check_images(images, name="images"):
    """Returns `images` as a NumPy array after checking it is a batch of raw 28x28 pixels.

    Args:
        images: Array-like, `(N, 28, 28)` or `(N, 28, 28, 1)`, values in [0, 255].
        name: The argument's name, for the message.

    Raises:
        ValueError: Naming the argument and the fault: wrong shape, empty, not numbers,
            NaN or infinity, or values outside [0, 255].
    """
    import numpy as np

    array = np.asarray(images)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise ValueError(f"`{name}` must have shape (N, 28, 28). Received: shape={array.shape}")
    if len(array) == 0:
        raise ValueError(f"`{name}` is empty (0 images)")
    if array.dtype.kind not in "uif":
        raise ValueError(f"`{name}` must hold numbers. Received: dtype={array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise ValueError(f"`{name}` contains {bad} NaN or infinite value(s)")
    if array.min() < 0 or array.max() > 255:
        raise ValueError(
            f"`{name}` must be raw pixels in [0, 255]. "
            f"Received: values in [{array.min()}, {array.max()}]"
        )
    return array


def check_labels(labels, count, name="labels"):
    """Returns `labels` as an int64 array after checking they are `count` digits 0-9."""
    import numpy as np

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
        ValueError: If `images` or `labels` are malformed (see `check_images`, `check_labels`),
            for example NaN or infinite pixels.
    """
    from lenet_tf.data import make_dataset
    from lenet_tf.model import probability_model

    images = check_images(images)
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


def build_parser():
    parser = cli.ArgumentParser(
        prog="python -m lenet_tf.evaluate",
        description="Report the MNIST test error of a saved lenet-tf model.",
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="a .keras file written by lenet_tf.train")
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder with the MNIST IDX files (default: $LENET_MNIST_DIR, else tensorflow-datasets)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return parser


def main(argv):
    args = build_parser().parse_args(argv)
    cli.quiet_tensorflow()
    from lenet_tf.data import load_mnist
    from lenet_tf.saving import load_lenet5

    model = load_lenet5(args.model)
    _, (x_test, y_test) = load_mnist(args.data_dir)
    result = evaluate_model(model, x_test, y_test)
    del result["predictions"]
    result["model"] = str(args.model)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{args.model}: test error {100 * result['test_error']:.2f}% "
            f"({result['errors']} of {result['examples']} misclassified)"
        )
    return 0


if __name__ == "__main__":
    cli.run(main)
