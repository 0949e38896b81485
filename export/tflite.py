"""Exports a trained LeNet-5 to TensorFlow Lite, optionally as a C array for TensorFlow Lite Micro.

Usage:

    python -m export.tflite --model runs/paper/model.keras --out artifacts/lenet5.tflite
    python -m export.tflite --model runs/paper/model.keras --out artifacts/lenet5_int8.tflite \
        --quantize int8 --data-dir path/to/mnist --c-array artifacts/lenet5_int8_model_data.cc

Quantization modes (`--quantize`):

- `none`: float32 weights and arithmetic.
- `float16`: float16 weights, float32 arithmetic (half the size).
- `dynamic`: int8 weights, float32 input and output (a quarter of the size).
- `int8`: full integer. Weights and activations int8, calibrated on 500 real training images
  plus an all-0 and an all-255 image; input int8 `pixel - 128` (scale 1, zero point -128,
  exact), output int8 probabilities (scale 1/256, zero point -128). Every operator is a
  builtin with an int8 kernel in TensorFlow Lite Micro; this is the model for the C array.

Only `int8` reads MNIST (its calibration images). Its dequantized probabilities sum to about
0.996, not 1: the largest output code, 127, means (127 + 128) / 256 = 255/256, so a digit the
model is sure of reads 0.996 and the others 0; the argmax is unaffected.

By default the paper model is exported as its folded inference graph (`export.folding`: the
same function in standard layers, with a smaller int8 error and faster); `--graph literal`
exports the trained layers as they are.

Every model uses builtin operators only (no Flex, no custom ops), takes `image` (batch, 28,
28) raw pixels and outputs `probabilities` (batch, 10) with a dynamic batch size, and carries
JSON metadata (labels, input/output contract, quantization, the source model's test error)
in a flatbuffer metadata entry named `lenet_tf`; `export.flatbuffer.read_metadata` reads it.

`--c-array FILE.cc` (int8 only) also writes `FILE.h`: the model as a 16-byte-aligned
`const unsigned char` array, its length, and the tensor-arena size TFLM needed for it
(`export.c_array`).
"""

import pathlib

from lenet_tf.commands import base

from export import cli
from export.contract import IMAGE_SIZE, PRECISION, QUANTIZATIONS

# Operators with int8 kernels in TensorFlow Lite Micro (SHAPE, STRIDED_SLICE and PACK handle
# the int32 shape of a dynamic-batch reshape, as in the literal graph). SQUARE, EXP, NEG and
# RSQRT are float-only there, which is why the RBF layer uses MUL/SUM/FULLY_CONNECTED and the
# posterior a MUL by -1 (the literal graph); the folded graph needs only CONV_2D,
# DEPTHWISE_CONV_2D, TANH, FULLY_CONNECTED and SOFTMAX besides its two RESHAPEs.
TFLM_INT8_OPERATORS = frozenset(
    {
        "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
        "DEQUANTIZE", "EXPAND_DIMS", "FULLY_CONNECTED", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D",
        "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "QUANTIZE", "RELU", "RESHAPE", "SHAPE", "SOFTMAX",
        "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH",
    }
)  # fmt: skip
# The int8 input quantization that makes `int8 = pixel - 128` exact: (scale, zero point).
EXACT_INPUT_QUANTIZATION = (1.0, -128)
CALIBRATION_IMAGES = 500
C_SUFFIXES = (".cc", ".cpp")


def representative_images(x_train, count=CALIBRATION_IMAGES, seed=0):
    """Images that calibrate full-integer quantization: two range anchors and real digits.

    An all-0 and an all-255 image come first, so calibration sees exactly the input range
    [0, 255] and picks input scale 1 and zero point -128, which makes `int8 = pixel - 128`
    exact. Then `count` training images drawn at random without replacement.

    Args:
        x_train: Training images, uint8 `(N, 28, 28)`.
        count: Training images to draw.
        seed: Seed of the draw, so the same model always quantizes the same way.

    Returns:
        float32 array `(count + 2, 28, 28)`.
    """
    import numpy as np

    picks = np.random.default_rng(seed).choice(len(x_train), size=min(count, len(x_train)), replace=False)
    size = (IMAGE_SIZE, IMAGE_SIZE)
    anchors = np.stack([np.zeros(size), np.full(size, 255.0)])
    return np.concatenate([anchors, x_train[np.sort(picks)]]).astype(np.float32)


def check_c_array(quantization, c_array):
    """Refuses a C array of a model TFLite Micro cannot run, or one not named `.cc`/`.cpp`.

    Raises:
        SettingError: For `c_array`.
    """
    from lenet_tf.errors import SettingError

    if c_array is None:
        return
    if quantization != "int8":
        raise SettingError(
            "c_array",
            f"needs the full-integer int8 model that TensorFlow Lite Micro runs; quantization is {quantization!r}",
        )
    if pathlib.Path(c_array).suffix not in C_SUFFIXES:
        raise SettingError("c_array", f"{c_array}: expected a .cc file name")


def _converter(saved_model, quantization, calibration_images):
    """A `TFLiteConverter` for the SavedModel folder, set up for `quantization`."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model, signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantization == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        converter.representative_dataset = lambda: ([image[None]] for image in calibration_images)
    return converter


def convert(model, quantization="none", calibration_images=None, graph="folded"):
    """Converts `model` to a TFLite flatbuffer with builtin operators only.

    The model is written to a temporary SavedModel first (`export.savedmodel.write_saved_model`),
    so the converter freezes its weights, folds the preprocessing into C1 and C3's masked
    kernel into one constant, and names the signature's tensors `image` and `probabilities`.

    Args:
        model: The LeNet-5 to convert.
        quantization: One of `QUANTIZATIONS`.
        calibration_images: float32 `(N, 28, 28)` raw pixels for `"int8"`, normally
            `representative_images(x_train)`.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.

    Returns:
        The `.tflite` bytes, without this package's metadata (see `export.flatbuffer.add_metadata`).

    Raises:
        SettingError: Unknown `quantization`, or `"int8"` without calibration images.
        RuntimeError: The int8 input quantization is not the exact `pixel - 128`.
    """
    import tempfile

    from lenet_tf.errors import SettingError

    from export.flatbuffer import io_quantization
    from export.savedmodel import write_saved_model

    if quantization not in QUANTIZATIONS:
        raise SettingError("quantization", f"must be one of {QUANTIZATIONS}. Received: {quantization!r}")
    if quantization == "int8" and calibration_images is None:
        raise SettingError("calibration_images", "are required for int8 quantization")
    with tempfile.TemporaryDirectory(prefix="lenet_tflite_") as folder:
        write_saved_model(model, folder, graph=graph)
        data = bytes(_converter(folder, quantization, calibration_images).convert())
    if quantization == "int8" and io_quantization(data)["input"] != EXACT_INPUT_QUANTIZATION:
        scale, zero_point = io_quantization(data)["input"]
        raise RuntimeError(
            f"int8 input quantization is scale={scale}, zero_point={zero_point}, not the exact pixel - 128 "
            "(scale 1, zero point -128); calibrate with representative_images"
        )
    return data


def tflm_arena_bytes(data):
    """Tensor-arena bytes TensorFlow Lite Micro allocates for `data`, or None without tflite-micro."""
    import importlib.util
    import tempfile

    from lenet_tf.inference import MicroRuntime

    if importlib.util.find_spec("tflite_micro") is None:
        return None
    with tempfile.TemporaryDirectory(prefix="lenet_tflm_") as folder:
        path = pathlib.Path(folder) / "model.tflite"
        path.write_bytes(data)
        return MicroRuntime(path).arena_bytes()


def _int8_metadata(metadata, data):
    """Adds the int8 input/output quantization and the TFLM arena to `metadata`."""
    from export.flatbuffer import io_quantization

    quant = io_quantization(data)
    formulas = {"input": "int8 = pixel - 128", "output": "p = (q - zero_point) * scale"}
    for side, formula in formulas.items():
        scale, zero_point = quant[side]
        metadata[side] = dict(
            metadata[side], dtype="int8", quantization={"scale": scale, "zero_point": zero_point, "formula": formula}
        )
    metadata["tflm_arena_bytes"] = tflm_arena_bytes(data)


def _write(path, data):
    from lenet_tf.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def export_tflite(
    model, out, quantization="none", metadata=None, calibration_images=None, c_array=None, graph="folded"
):
    """Converts `model` and writes `out` (and the C array), each file only once it is complete.

    Args:
        model: The LeNet-5 to export.
        out: The `.tflite` path.
        quantization: One of `QUANTIZATIONS`.
        metadata: Dict from `export.contract.build_metadata` (its `quantization`, `input`
            and `output` are completed here), or None for one without a test error.
        calibration_images: For `"int8"`: see `convert`.
        c_array: Optional `.cc` path (int8 only); its `.h` is written beside it.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.

    Returns:
        A dict: `path`, `bytes`, `quantization`, `operators`, `arena_bytes` (int8 only,
        None without tflite-micro), `metadata`.

    Raises:
        SettingError: A C array of a model that is not int8, or see `convert`.
    """
    from export import c_array as c_source
    from export import flatbuffer
    from export.contract import build_metadata

    check_c_array(quantization, c_array)
    data = convert(model, quantization, calibration_images, graph)
    metadata = dict(metadata or build_metadata(model, "tflite"))
    metadata.update(format="tflite", quantization=quantization, graph=graph)
    if quantization == "int8":
        _int8_metadata(metadata, data)
    data = flatbuffer.add_metadata(data, metadata)
    sources = None
    if c_array is not None:
        sources = c_source.c_array_sources(data, c_array, metadata, metadata["tflm_arena_bytes"])
    _write(out, data)
    if sources is not None:
        _write(pathlib.Path(c_array).with_suffix(".h"), sources[1].encode())
        _write(c_array, sources[0].encode())
    return {
        "path": pathlib.Path(out),
        "bytes": len(data),
        "quantization": quantization,
        "operators": flatbuffer.operators(data),
        "arena_bytes": metadata.get("tflm_arena_bytes"),
        "metadata": metadata,
    }


def build_parser(prog=None):
    """The parser of `python -m export.tflite`."""
    parser = cli.export_parser(
        prog or "python -m export.tflite",
        description="Export a trained LeNet-5 to TensorFlow Lite (builtin operators only), "
        "optionally quantized, optionally as a C array for TensorFlow Lite Micro.",
        out_metavar="FILE.tflite",
        out_help="model file to write (replaced if it exists)",
        data_dir_help="folder with the MNIST IDX files, read only for --quantize int8 (its calibration "
        "images; default: $LENET_MNIST_DIR, else tensorflow-datasets); the other modes need no MNIST "
        "(the test error in the metadata comes from the run's metrics.json beside --model)",
    )
    parser.add_argument(
        "--quantize", choices=QUANTIZATIONS, default="none",
        help="none: float32; float16: float16 weights; dynamic: int8 weights, float math; "
        "int8: full integer, int8 input (pixel - 128) and output, calibrated on real "
        "training images (default: none)",
    )  # fmt: skip
    parser.add_argument(
        "--c-array", metavar="FILE.cc",
        help="also write the model as a 16-byte-aligned C array (FILE.cc and FILE.h) for "
        "TensorFlow Lite Micro; needs --quantize int8",
    )  # fmt: skip
    parser.add_argument(
        "--calibration-images", type=base.positive_int, default=CALIBRATION_IMAGES, metavar="N",
        help=f"training images that calibrate --quantize int8 (default: {CALIBRATION_IMAGES})",
    )  # fmt: skip
    return parser


def execute(args):
    """Writes the `.tflite` file (and the C array) and prints one line about each."""
    check_c_array(args.quantize, args.c_array)
    if args.c_array is not None:
        base.check_writable(args.c_array, "c_array")
    model, metadata = cli.load_source(args, "tflite", args.quantize)
    calibration = None
    if args.quantize == "int8":
        from lenet_tf.data import load_mnist

        (x_train, _), _ = load_mnist(args.data_dir)
        calibration = representative_images(x_train, count=args.calibration_images)
    result = export_tflite(model, args.out, args.quantize, metadata, calibration, args.c_array, args.graph)
    line = (
        f"{result['path']}: TFLite {PRECISION[args.quantize]}, {result['bytes']:,} bytes, "
        f"{len(result['operators'])} operators"
    )
    if result["arena_bytes"] is not None:
        line += f", TFLM arena {result['arena_bytes']:,} bytes"
    print(line)
    if args.c_array is not None:
        from export.c_array import c_identifier

        header = pathlib.Path(args.c_array).with_suffix(".h")
        print(f"{args.c_array}, {header}: C array {c_identifier(args.c_array)}")


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog, flags={"quantization": "--quantize"})


if __name__ == "__main__":
    main()
