"""Reads digits from image files with any exported LeNet-5.

Usage:

    python -m lenet_tf.predict --model runs/paper/model.keras digit.png photo.jpg
    python -m lenet_tf.predict --model artifacts/lenet5_int8.tflite --json scans/*.png

ARTIFACT may be a `.keras` file, a SavedModel folder, a `.tflite` or an `.onnx` file; each runs
on its own runtime (Keras, TensorFlow, LiteRT, onnxruntime). Images may be PNG, JPEG, BMP or
any format Pillow reads, of any size and colour, dark ink on light paper or the reverse: each
is made MNIST-style first (see `lenet_tf.images`). A file that cannot be read gets a one-line
error; the others are still read, and the exit status is then 2.
"""

import json
import sys

import numpy as np

from lenet_tf import cli
from lenet_tf.images import MAX_PIXELS, ImageError, load_digit


def predict_files(runtime, paths):
    """Classifies image files.

    Args:
        runtime: A runtime from `export.runtimes.load_runtime`.
        paths: Image file paths.

    Returns:
        One dict per path, in order: `{"file", "digit", "probability"}`, or `{"file", "error"}`
        for a file that could not be read.
    """
    results, images, readable = [], [], []
    for path in paths:
        try:
            images.append(load_digit(path))
            readable.append(len(results))
            results.append({"file": str(path)})
        except ImageError as err:
            results.append({"file": str(path), "error": str(err)})
    if images:
        probabilities = runtime.predict(np.stack(images))
        for index, row in zip(readable, probabilities):
            digit = int(row.argmax())
            results[index].update({"digit": digit, "probability": round(float(row[digit]), 6)})
    return results


def build_parser():
    parser = cli.ArgumentParser(
        prog="python -m lenet_tf.predict",
        description="Read handwritten digits from image files with a trained or exported LeNet-5. "
        "Each image (any size and colour, dark ink on light paper or the reverse) is made "
        "MNIST-style first: grayscale, ink bright, cropped to the ink, fitted into 20x20, centred "
        "by centre of mass in 28x28.",
        epilog=f"Images above {MAX_PIXELS:,} pixels are refused. A file that cannot be read gets "
        "a one-line error on stderr; the other files are still read, and the exit status is 2.",
    )
    parser.add_argument("--model", required=True, metavar="ARTIFACT",
                        help="a .keras file, a SavedModel folder, a .tflite or an .onnx file")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, ...)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON array of {"file", "digit", "probability"} (or "error")')
    return parser


def main(argv):
    """Predicts every image named in `argv`; returns the exit status (2 if any file failed)."""
    args = build_parser().parse_args(argv)
    cli.quiet_tensorflow()
    from export.runtimes import load_runtime

    results = predict_files(load_runtime(args.model), args.images)
    if args.json:
        print(json.dumps(results))
    for result in results:
        if "error" in result:
            print(f"error: {result['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{result['file']}: {result['digit']} (probability {result['probability']:.3f})")
    return 2 if any("error" in result for result in results) else 0


if __name__ == "__main__":
    cli.run(main)
