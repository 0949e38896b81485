"""The skeleton every export command shares: its options, the source model and the output path.

`export.savedmodel`, `export.tflite` and `export.onnx` each build their parser with
`export_parser` (adding their own options), and start `execute` with `load_source`, which
checks the output path before any slow work, loads the `.keras` file and builds the metadata.
Nothing here imports TensorFlow at module level, so `--help` and a bad flag answer at once.
"""

import pathlib

from lenet_tf.commands import base

# `--data-dir` help of an export that never reads MNIST; the flag is kept so that one set of
# flags works for every export command.
NO_MNIST_HELP = (
    "not read by this export, which needs no MNIST (the test error in the metadata comes from "
    "the run's metrics.json beside --model, else it is left out); accepted so that every export "
    "command takes the same flags"
)


def export_parser(prog, description, out_metavar, out_help, data_dir_help=NO_MNIST_HELP):
    """A parser with the options every export command has.

    Args:
        prog: Program name for the usage line.
        description: What the command writes.
        out_metavar: How `--out` is shown (`FILE.tflite`, `DIR`).
        out_help: What `--out` is.
        data_dir_help: What `--data-dir` is for, in this command (whether it reads MNIST).

    Returns:
        A `lenet_tf.commands.base.ArgumentParser` with `--model`, `--out`, `--data-dir`,
        `--graph` and `--verbose`.
    """
    parser = base.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--model", required=True, metavar="PATH", help="the .keras file written by lenet-tf train")
    parser.add_argument("--out", required=True, metavar=out_metavar, help=out_help)
    parser.add_argument("--data-dir", metavar="DIR", help=data_dir_help)
    parser.add_argument(
        "--graph", choices=("folded", "literal"), default="folded",
        help="folded: the paper model rewritten in standard layers, same function, smaller int8 "
        "error and faster (see export/folding.py); literal: the trained layers as they are "
        "(default: folded)",
    )  # fmt: skip
    base.add_verbose_argument(parser)
    return parser


def load_source(args, artifact_format, quantization="none"):
    """Checks `--out`, loads `--model` and builds the metadata of its export.

    The test error in the metadata is the one in the run's `metrics.json` beside the model
    (`contract.recorded_test_error`); MNIST is not read.

    Args:
        args: The parsed options of `export_parser`.
        artifact_format: `"savedmodel"`, `"tflite"` or `"onnx"`.
        quantization: One of `contract.QUANTIZATIONS`.

    Returns:
        `(model, metadata)`.

    Raises:
        SettingError: `--out` cannot be written.
        OSError: `--out` is something the export must not replace (a folder, for a file).
        ModelFileError: `--model` is not a loadable LeNet-5.
    """
    from export import contract
    from lenet_tf.model import model_variant
    from lenet_tf.saving import load_lenet5

    folder_marker = contract.SAVED_MODEL_FILE if artifact_format == "savedmodel" else None
    base.check_writable(args.out, folder_marker=folder_marker)
    model = load_lenet5(args.model)
    test_error, origin = contract.recorded_test_error(args.model, model_variant(model))
    metadata = contract.build_metadata(
        model, artifact_format, quantization, source=args.model, graph=args.graph,
        test_error=test_error, test_error_source=origin,
    )  # fmt: skip
    return model, metadata


def artifact_bytes(path):
    """Bytes of a file, or of every file under a folder (a SavedModel)."""
    path = pathlib.Path(path)
    if path.is_dir():
        return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())
    return path.stat().st_size
