"""What every export shares: the model to export, its input/output contract, metadata, the
calibration images, command-line options and writing files that are never half-written."""

import hashlib
import json
import os
import pathlib

from lenet_tf import cli

INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
IMAGE_SIZE = 28
CLASS_LABELS = tuple(str(digit) for digit in range(10))
# Identifies the JSON metadata this package embeds in an artifact.
METADATA_NAME = "lenet_tf"

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
    """The `tf.TensorSpec` of the input every export is traced with: `(None, 28, 28)` float32."""
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


def write_saved_model(model, path, metadata=None, graph="folded"):
    """Writes `model` as a SavedModel whose `serving_default` signature keeps the contract.

    Written through `keras.export.ExportArchive`, which stores the weights as variables the
    TFLite converter freezes into constants (a `tf.Module` holding the Keras model leaves them
    as resource variables, which full-integer calibration cannot read).

    Args:
        model: The LeNet-5 to export (distances or probabilities; see `serving_function`).
        path: Folder to create. Not written atomically: use `atomic_path` around this.
        metadata: Optional dict, served as JSON by a second signature, `metadata`.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.
    """
    import keras
    import tensorflow as tf

    probabilities, serve = serving_function(model, graph)
    archive = keras.export.ExportArchive()
    archive.track(probabilities)
    archive.add_endpoint("serving_default", serve, input_signature=input_signature())
    if metadata is not None:
        text = json.dumps(metadata, sort_keys=True)
        archive.add_endpoint("metadata", lambda: {"metadata": tf.constant(text)}, input_signature=[])
    archive.write_out(str(path), verbose=False)


def representative_images(x_train, count=500, seed=0):
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
    anchors = np.stack([np.zeros((IMAGE_SIZE, IMAGE_SIZE)), np.full((IMAGE_SIZE, IMAGE_SIZE), 255.0)])
    return np.concatenate([anchors, x_train[np.sort(picks)]]).astype(np.float32)


def file_sha256(path):
    """Hex SHA-256 of a file, to tie an artifact to the exact model it came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_metadata(model, artifact_format, quantization="none", test_error=None, source=None, graph="folded"):
    """The metadata every artifact carries: labels, input/output contract, source and error.

    Args:
        model: The exported LeNet-5.
        artifact_format: `"savedmodel"`, `"tflite"` or `"onnx"`.
        quantization: `"none"`, `"float16"`, `"dynamic"` or `"int8"`.
        test_error: The source Keras model's error on the 10,000 MNIST test images (a
            fraction), or None when unknown.
        source: Path of the `.keras` file, or None.
        graph: The exported graph, `"folded"` or `"literal"` (`export.folding`).

    Returns:
        A JSON-serialisable dict. Exports of quantized models add the quantization of the
        input and output to `input` and `output`.
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
        "test_set": "MNIST test set, 10,000 images",
        "producer": {
            "lenet_tf": lenet_tf.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    }
    if source is not None:
        metadata["source_model"] = pathlib.Path(source).name
        metadata["source_sha256"] = file_sha256(source)
    return metadata


def write_bytes(path, data):
    """Writes `data` to `path` through a temporary file in the same folder and a rename."""
    from lenet_tf.files import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_writable(path, flag="--out"):
    """Fails early, before minutes of work, when `path` cannot be written.

    Args:
        path: The file or folder an export will create or replace.
        flag: The option it came from, for the message.

    Returns:
        `path` as a `pathlib.Path`.

    Raises:
        UsageError: When the nearest existing folder above `path` is not a writable folder.
    """
    path = pathlib.Path(path)
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise cli.UsageError(f"{flag} {path}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise cli.UsageError(f"{flag} {path}: cannot write in {parent} (permission denied)")
    return path


def add_model_arguments(parser):
    """Adds `--model`, `--data-dir` and `--graph`, the options every export command has."""
    parser.add_argument(
        "--model", required=True, metavar="PATH", help="the .keras file written by lenet_tf.train"
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder with the MNIST IDX files, for the test error recorded in the metadata "
        "(default: $LENET_MNIST_DIR, else tensorflow-datasets)",
    )
    parser.add_argument(
        "--graph",
        choices=("folded", "literal"),
        default="folded",
        help="folded: the paper model rewritten in standard layers, same function, smaller "
        "int8 error and faster (see export/folding.py); literal: the trained layers as they "
        "are (default: folded)",
    )


def load_for_export(args):
    """Loads `--model` and MNIST for an export command.

    Returns:
        `(model, metadata_kwargs, mnist)`: the Keras model, the `test_error`, `source` and
        `graph` arguments of `build_metadata`, and `load_mnist`'s `((x_train, y_train), (x_test, y_test))`.
    """
    from lenet_tf.data import load_mnist
    from lenet_tf.evaluate import evaluate_model
    from lenet_tf.saving import load_lenet5

    model = load_lenet5(args.model)
    mnist = load_mnist(args.data_dir)
    x_test, y_test = mnist[1]
    test_error = evaluate_model(model, x_test, y_test)["test_error"]
    return model, {"test_error": test_error, "source": args.model, "graph": args.graph}, mnist


def file_size(path):
    """Bytes of a file, or of every file under a folder (a SavedModel)."""
    path = pathlib.Path(path)
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size
