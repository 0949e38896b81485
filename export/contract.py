"""The contract every exported LeNet-5 keeps: its input, its output and the metadata it carries.

- input `image`: a batch of raw 28x28 grayscale pixels, float32 in 0-255, ink bright, shape
  `(batch, 28, 28)`, any batch size. The int8 TFLite model takes int8 `pixel - 128` (scale 1,
  zero point -128: exact). Padding to 32x32 and the paper's normalisation happen inside.
- output `probabilities`: `(batch, 10)` float32 summing to 1; argmax is the digit. The int8
  TFLite model outputs int8 with scale 1/256 and zero point -128 (see `export.tflite`).

Each artifact embeds the same metadata (`build_metadata`): labels, this contract, the
quantization, the source model's file name, SHA-256 and test error, and where that test error
came from. The figure is the one the training run recorded in `metrics.json` beside the model
(`recorded_test_error`); exports do not read MNIST to measure it.
"""

import json
import pathlib

from lenet_tf.files import file_sha256

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
IMAGE_SIZE = 28
CLASS_LABELS = tuple(str(digit) for digit in range(10))
# Names the JSON metadata this package embeds in a TFLite file.
METADATA_NAME = "lenet_tf"
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
# How each quantization is named to people: `none` keeps float32.
PRECISION = {"none": "float32", "float16": "float16", "dynamic": "dynamic", "int8": "int8"}
# The run file that records a model's test error, beside its `model.keras`.
RUN_METRICS = "metrics.json"
# The file that marks a folder as a SavedModel, which a SavedModel export may replace.
SAVED_MODEL_FILE = "saved_model.pb"

INPUT_CONTRACT = {
    "name": INPUT_NAME,
    "shape": ["batch", IMAGE_SIZE, IMAGE_SIZE],
    "dtype": "float32",
    "range": [0, 255],
    "description": (
        "a batch of raw 28x28 grayscale MNIST-style pixels, 0 = background, 255 = full ink "
        "(white digit on black), any batch size; padding to 32x32 and the paper's "
        "normalisation happen inside the model"
    ),
}
OUTPUT_CONTRACT = {
    "name": OUTPUT_NAME,
    "shape": ["batch", len(CLASS_LABELS)],
    "dtype": "float32",
    "description": "class probabilities summing to 1, in the order of `labels`; argmax is the digit",
}
# What the output is, per variant of `lenet_tf.model.build_lenet5`.
OUTPUT_MEANING = {
    "paper": "softmax of the negative squared RBF distances, the paper's class posterior",
    "modern": "softmax output of the modern variant",
}


def input_signature():
    """The `tf.TensorSpec` every export is traced with: `image`, `(None, 28, 28)` float32."""
    import tensorflow as tf

    return (tf.TensorSpec((None, IMAGE_SIZE, IMAGE_SIZE), tf.float32, name=INPUT_NAME),)


def serving_function(model, graph="folded"):
    """Returns `f(image) -> {"probabilities": ...}`, the function every format exports.

    Args:
        model: A LeNet-5 from `build_lenet5` or `load_lenet5`.
        graph: `"folded"` (default) or `"literal"`; see `export.folding.inference_model`.

    Returns:
        `(inference_model, f)`: the `keras.Model` that computes the probabilities (to be
        tracked, so its weights are saved) and the plain Python function to trace.
    """
    from export.folding import inference_model

    probabilities = inference_model(model, graph)

    def serve(image):
        return {OUTPUT_NAME: probabilities(image, training=False)}

    return probabilities, serve


def recorded_test_error(model_path, variant=None):
    """The test error the training run recorded beside `model_path`, and that file's name.

    `lenet-tf train` writes `metrics.json` into the run folder after measuring `model.keras`
    on the 10,000 MNIST test images, with that file's SHA-256. A missing or unreadable file,
    one without a test error (an interrupted run), one of another variant, or one that names
    another model file (`model_sha256`: the model was replaced after training) gives
    `(None, None)`: the figure is optional, and an export must not fail or read MNIST for it.

    Args:
        model_path: The exported `.keras` file.
        variant: The model's variant; a `metrics.json` of another variant is ignored.

    Returns:
        `(test_error, source)`: a fraction and `"metrics.json"`, or `(None, None)`.
    """
    path = pathlib.Path(model_path).with_name(RUN_METRICS)
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    error = metrics.get("test_error") if isinstance(metrics, dict) else None
    if not isinstance(error, (int, float)) or not 0 <= error <= 1:
        return None, None
    if variant is not None and metrics.get("variant", variant) != variant:
        return None, None
    if "model_sha256" in metrics and metrics["model_sha256"] != file_sha256(model_path):
        return None, None
    return float(error), RUN_METRICS


def build_metadata(
    model, artifact_format, quantization="none", source=None, graph="folded", test_error=None, test_error_source=None
):
    """The metadata every artifact carries: labels, input/output contract, source and error.

    Args:
        model: The exported LeNet-5.
        artifact_format: `"savedmodel"`, `"tflite"` or `"onnx"`.
        quantization: One of `QUANTIZATIONS`.
        source: Path of the `.keras` file, or None.
        graph: The exported graph, `"folded"` or `"literal"` (`export.folding`).
        test_error: The source Keras model's error on the 10,000 MNIST test images (a
            fraction), or None when unknown.
        test_error_source: Where `test_error` came from (`"metrics.json"`), or None.

    Returns:
        A JSON-serialisable dict. The int8 TFLite export adds the quantization of the input
        and output to `input` and `output`.
    """
    import keras
    import tensorflow as tf

    import lenet_tf
    from lenet_tf.model import model_variant

    variant = model_variant(model)
    metadata = {
        "name": model.name,
        "variant": variant,
        "format": artifact_format,
        "quantization": quantization,
        "graph": graph,
        "labels": list(CLASS_LABELS),
        "input": dict(INPUT_CONTRACT),
        "output": dict(OUTPUT_CONTRACT, meaning=OUTPUT_MEANING[variant]),
        "test_error": test_error,
        "test_error_source": test_error_source if test_error is not None else None,
        "test_set": "MNIST test set, 10,000 images",
        "producer": {"lenet_tf": lenet_tf.__version__, "tensorflow": tf.__version__, "keras": keras.__version__},
    }
    if source is not None:
        metadata["source_model"] = pathlib.Path(source).name
        metadata["source_sha256"] = file_sha256(source)
    return metadata
