"""Exports a trained LeNet-5 as a TensorFlow SavedModel.

Usage:

    python -m export.savedmodel --model runs/paper/model.keras --out artifacts/lenet5_savedmodel

The SavedModel has two signatures: `serving_default`, from `image` (batch, 28, 28) float32 raw
pixels to `probabilities` (batch, 10), and `metadata`, which returns the artifact's metadata as
a JSON string (labels, input/output contract, the source model's test error):

    loaded = tf.saved_model.load("artifacts/lenet5_savedmodel")
    loaded.signatures["serving_default"](image=images)["probabilities"]
"""

import json

from lenet_tf import cli

from export import common


def export_saved_model(model, out, metadata, graph="folded"):
    """Writes `model` as a SavedModel folder `out`, replacing any old one only on success.

    Args:
        model: The LeNet-5 to export.
        out: Folder to create or replace.
        metadata: Dict from `common.build_metadata`.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.

    Returns:
        `out` as a `pathlib.Path`.
    """
    import pathlib

    from lenet_tf.files import atomic_path

    metadata = dict(metadata, format="savedmodel", graph=graph)
    with atomic_path(out) as tmp:
        common.write_saved_model(model, tmp, metadata, graph)
    return pathlib.Path(out)


def read_saved_model_metadata(path):
    """The metadata dict a SavedModel written by `export_saved_model` serves."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return json.loads(loaded.signatures["metadata"]()["metadata"].numpy().decode())


def build_parser():
    parser = cli.ArgumentParser(
        prog="python -m export.savedmodel",
        description="Export a trained LeNet-5 as a TensorFlow SavedModel with a serving_default "
        "signature: image (batch, 28, 28) raw pixels 0-255 -> probabilities (batch, 10).",
    )
    common.add_model_arguments(parser)
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="SavedModel folder to write (replaced if it exists)"
    )
    return parser


def main(argv):
    args = build_parser().parse_args(argv)
    cli.quiet_tensorflow()
    common.check_writable(args.out)
    model, source, _ = common.load_for_export(args)
    metadata = common.build_metadata(model, "savedmodel", **source)
    out = export_saved_model(model, args.out, metadata, args.graph)
    print(f"{out}: SavedModel, {common.file_size(out):,} bytes")
    return 0


if __name__ == "__main__":
    cli.run(main)
