"""Exports a trained LeNet-5 as a TensorFlow SavedModel.

Usage:

    python -m export.savedmodel --model runs/paper/model.keras --out artifacts/lenet5_savedmodel

The SavedModel has two signatures: `serving_default`, from `image` (batch, 28, 28) float32 raw
pixels to `probabilities` (batch, 10), and `metadata`, which returns the artifact's metadata as
a JSON string (labels, input/output contract, the source model's test error):

    loaded = tf.saved_model.load("artifacts/lenet5_savedmodel")
    loaded.signatures["serving_default"](image=images)["probabilities"]

This export does not read MNIST.
"""

import json

from lenet_tf.commands import base

from export import cli


def write_saved_model(model, path, metadata=None, graph="folded"):
    """Writes `model` as a SavedModel whose `serving_default` signature keeps the contract.

    Written through `keras.export.ExportArchive`, which stores the weights as variables the
    TFLite converter freezes into constants (a `tf.Module` holding the Keras model leaves them
    as resource variables, which full-integer calibration cannot read).

    Args:
        model: The LeNet-5 to export.
        path: Folder to create. Not written atomically: see `export_saved_model`.
        metadata: Optional dict, served as JSON by a second signature, `metadata`.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.
    """
    import keras
    import tensorflow as tf

    from export.contract import input_signature, serving_function

    probabilities, serve = serving_function(model, graph)
    archive = keras.export.ExportArchive()
    archive.track(probabilities)
    archive.add_endpoint("serving_default", serve, input_signature=input_signature())
    if metadata is not None:
        text = json.dumps(metadata, sort_keys=True)
        archive.add_endpoint("metadata", lambda: {"metadata": tf.constant(text)}, input_signature=[])
    archive.write_out(str(path), verbose=False)


def export_saved_model(model, out, metadata, graph="folded"):
    """Writes `model` as a SavedModel folder `out`, replacing an old SavedModel only on success.

    A folder at `out` that holds other files than a SavedModel is left alone: `FileExistsError`.

    Args:
        model: The LeNet-5 to export.
        out: Folder to create or replace.
        metadata: Dict from `export.contract.build_metadata`.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.

    Returns:
        `out` as a `pathlib.Path`.
    """
    import pathlib

    from export.contract import SAVED_MODEL_FILE
    from lenet_tf.files import atomic_path

    metadata = dict(metadata, format="savedmodel", graph=graph)
    with atomic_path(out, folder_marker=SAVED_MODEL_FILE) as tmp:
        write_saved_model(model, tmp, metadata, graph)
    return pathlib.Path(out)


def read_saved_model_metadata(path):
    """The metadata dict a SavedModel written by `export_saved_model` serves."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return json.loads(loaded.signatures["metadata"]()["metadata"].numpy().decode())


def build_parser(prog=None):
    """The parser of `python -m export.savedmodel`."""
    return cli.export_parser(
        prog or "python -m export.savedmodel",
        description="Export a trained LeNet-5 as a TensorFlow SavedModel with a serving_default "
        "signature: image (batch, 28, 28) raw pixels 0-255 -> probabilities (batch, 10).",
        out_metavar="DIR",
        out_help="SavedModel folder to write (replaced if it exists)",
    )


def execute(args):
    """Writes the SavedModel and prints one line about it."""
    model, metadata = cli.load_source(args, "savedmodel")
    out = export_saved_model(model, args.out, metadata, args.graph)
    print(f"{out}: SavedModel, {cli.artifact_bytes(out):,} bytes")


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
