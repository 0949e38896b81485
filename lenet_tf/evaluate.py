"""Test error of a saved LeNet-5 on the MNIST test set.

Usage:

    python -m lenet_tf.evaluate --model runs/paper/model.keras [--data-dir DIR] [--json]
"""

import argparse
import json

from lenet_tf import cli


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
    """
    import numpy as np

    from lenet_tf.data import make_dataset
    from lenet_tf.model import probability_model

    dataset = make_dataset(images, labels, batch_size=batch_size).map(lambda x, y: x)
    probabilities = probability_model(model).predict(dataset, verbose=0)
    predictions = probabilities.argmax(axis=-1)
    errors = int((predictions != np.asarray(labels)).sum())
    return {
        "test_error": errors / len(labels),
        "test_accuracy": 1.0 - errors / len(labels),
        "errors": errors,
        "examples": int(len(labels)),
        "predictions": predictions,
    }


def build_parser():
    parser = argparse.ArgumentParser(
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
