"""`lenet-tf predict`: read handwritten digits from image files with any LeNet-5 artifact.

    lenet-tf predict digit.png                     # the pretrained model shipped with lenet-tf
    lenet-tf predict --model runs/paper/model.keras digit.png photo.jpg
    lenet-tf predict --model artifacts/lenet5_int8.tflite --json scans/*.png

Without `--model` it reads with the pretrained paper model (`lenet_tf.pretrained`). The model
may be a `.keras` file, a SavedModel folder, a `.tflite` or an `.onnx` file, each run
on its own runtime (`lenet_tf.inference`); `.tflite` and `.onnx` models never load TensorFlow.
Each image is made MNIST-style first (`lenet_tf.images`). A file that cannot be read gets a
one-line error; the others are still read, and the exit status is then 2.
"""

import json
import sys

from lenet_tf.commands import base


def build_parser(prog=None):
    from lenet_tf.images import MAX_PIXELS  # numpy and Pillow only: cheap

    parser = base.ArgumentParser(
        prog=prog or "python -m lenet_tf.predict",
        description="Read handwritten digits from image files with a trained or exported LeNet-5. "
        "Each image (any size and colour, dark ink on light paper or the reverse) is made "
        "MNIST-style first: grayscale, ink bright, cropped to the ink, fitted into 20x20, centred "
        "by centre of mass in 28x28.",
        epilog=f"Images above {MAX_PIXELS:,} pixels are refused. A file that cannot be read gets "
        "a one-line error on stderr; the other files are still read, and the exit status is 2.",
    )
    parser.add_argument("--model", metavar="ARTIFACT",
                        help="a .keras file, a SavedModel folder, a .tflite or an .onnx file "
                             "(default: the pretrained paper model shipped with lenet-tf, as ONNX)")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, BMP, ...)")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON array of {"file", "digit", "probability"} (or "error")')
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    """Predicts every image; returns the exit status (2 if any file failed)."""
    from lenet_tf import pretrained
    from lenet_tf.inference import load_runtime, predict_files

    model = args.model or pretrained.path("paper", format="onnx")
    results = predict_files(load_runtime(model), args.images)
    if args.json:
        print(json.dumps(results))
    for result in results:
        if "error" in result:
            print(f"error: {result['error']}", file=sys.stderr)
        elif not args.json:
            print(f"{result['file']}: {result['digit']} (probability {result['probability']:.3f})")
    return base.EXIT_USAGE if any("error" in result for result in results) else 0


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)
