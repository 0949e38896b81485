"""`lenet-tf` and `python -m lenet_tf`: one entry point for every command.

    lenet-tf train --out runs/paper
    lenet-tf predict --model runs/paper/model.keras digit.png
    lenet-tf export tflite --model runs/paper/model.keras --out lenet5.tflite --quantize int8

Each subcommand is the module that `python -m` also runs (`python -m lenet_tf.train` is
`lenet-tf train`), imported only when it is chosen, so `lenet-tf --help` answers at once.
"""

import importlib
import sys

from lenet_tf.commands import base

COMMANDS = {
    "train": ("lenet_tf.commands.train", "train LeNet-5 on MNIST into a run folder"),
    "evaluate": ("lenet_tf.commands.evaluate", "test error of a trained model on MNIST"),
    "predict": ("lenet_tf.commands.predict", "read digits from image files"),
    "report": ("lenet_tf.commands.report", "plots of a run: curves, confusion matrix, feature maps"),
}
# `export` builds on `lenet_tf`; the entry point only names its command modules.
EXPORTS = {
    "savedmodel": ("export.savedmodel", "write a TensorFlow SavedModel"),
    "tflite": ("export.tflite", "write a TFLite model (float, float16, dynamic or int8; C array)"),
    "onnx": ("export.onnx", "write an ONNX model"),
    "verify": ("export.verify", "check exported artifacts against their Keras model on MNIST"),
}


EXPORT_SUMMARY = "export a trained model: savedmodel, tflite, onnx or verify"


def _usage(prog, table):
    rows = {name: text for name, (_, text) in table.items()}
    if table is COMMANDS:
        rows["export"] = EXPORT_SUMMARY
    width = max(len(name) for name in rows)
    lines = "\n".join(f"  {name:<{width}}  {text}" for name, text in rows.items())
    return (
        f"usage: {prog} {{{','.join(rows)}}} ...\n\ncommands:\n{lines}\n\n"
        f"Run '{prog} COMMAND --help' for a command's options."
    )


def _dispatch(prog, table, argv):
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(prog, table), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else base.EXIT_USAGE
    name, rest = argv[0], argv[1:]
    if name == "export" and table is COMMANDS:
        return _dispatch(f"{prog} export", EXPORTS, rest)
    if name not in table:
        choices = ", ".join(list(table) + (["export"] if table is COMMANDS else []))
        print(f"error: unknown command {name!r}; choose from {choices} (see {prog} --help)", file=sys.stderr)
        return base.EXIT_USAGE
    module = importlib.import_module(table[name][0])
    return module.main(rest, prog=f"{prog} {name}")


def main(argv=None):
    """Runs `lenet-tf COMMAND ...` and exits with the command's status."""
    sys.exit(_dispatch("lenet-tf", COMMANDS, sys.argv[1:] if argv is None else argv))
