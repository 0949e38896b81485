"""`lenet-tf train` / `python -m lenet_tf.train`: train LeNet-5 on MNIST into a run folder.

    python -m lenet_tf.train --out runs/paper              # the paper's network, 20 epochs
    python -m lenet_tf.train --recipe fast --out runs/fast # 6 epochs, one-cycle schedule
    python -m lenet_tf.train --out runs/paper-distort --distort
    python -m lenet_tf.train --variant modern --out runs/modern

Every option is a `lenet_tf.training.TrainConfig` field, with its default and help text; this
module only spells the flags. See `docs/training.md`.
"""

import argparse
import dataclasses
import pathlib
import signal
import sys

from lenet_tf.commands import base
from lenet_tf.errors import RunFolderError
from lenet_tf.training.config import RECIPES, TrainConfig

# Settings whose flag is not `--` + the dashed field name.
FLAGS = {"learning_rate": "--lr"}
VERBOSE_HELP = (
    "progress: auto (a bar on a terminal, one line per epoch otherwise), 0 silent, 1 bar, 2 one line "
    "per epoch; a bare --verbose keeps auto progress and also shows what TensorFlow and Keras print "
    "(as LENET_TF_VERBOSE=1 does)"
)


def build_parser(prog=None):
    """The parser of `python -m lenet_tf.train`, one flag per `TrainConfig` field."""
    parser = base.ArgumentParser(
        prog=prog or "python -m lenet_tf.train",
        description="Train LeNet-5 on MNIST. The defaults reproduce the paper-variant result of docs/training.md.",
        formatter_class=_HelpFormatter,
    )
    for field in dataclasses.fields(TrainConfig):
        parser.add_argument(base.flag_name(field.name, FLAGS), dest=field.name, **_argument(field))
    return parser


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends `(default: ...)` to each option's help, except where the default is None."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def _argument(field):
    """`add_argument` keywords for a `TrainConfig` field, from its default and metadata."""
    metadata = field.metadata
    options = {"default": field.default, "help": metadata["help"].replace("%", "%%")}
    if metadata["metavar"]:
        options["metavar"] = metadata["metavar"]
    if field.name == "verbose":
        # A bare `--verbose` is True: dependency logs on (`base.wants_dependency_logs`).
        return {**options, "nargs": "?", "const": True, "choices": metadata["choices"], "type": _progress,
                "help": VERBOSE_HELP}  # fmt: skip
    if field.name in RECIPE_SETTINGS:
        options["help"] += " " + _recipe_defaults(field.name)
    if metadata["boolean"]:
        return {**options, "action": argparse.BooleanOptionalAction}
    if metadata["choices"]:
        return {**options, "choices": metadata["choices"]}
    if metadata["check"]:
        check = metadata["check"]
        return {**options, "type": base.number_type(metadata["number"], check.accept, check.description)}
    return options


RECIPE_SETTINGS = frozenset(name for recipe in RECIPES.values() for name in recipe)


def _recipe_defaults(name):
    """`(default: 20 with recipe paper-schedule, 6 with fast)`, from `RECIPES`."""
    values = [f"{_spelled(recipe[name])} with {label}" for label, recipe in RECIPES.items()]
    return f"(default: {values[0].replace(' with ', ' with recipe ')}, {', '.join(values[1:])})"


def _spelled(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _progress(text):
    return int(text) if text.isdigit() else text


def execute(args):
    """Trains as `args` say; prints the test error (or how to resume) and returns the status."""
    settings = vars(args)
    if settings["verbose"] is True:
        settings = {**settings, "verbose": "auto"}
    config = TrainConfig(**settings)  # checked before TensorFlow loads: a bad setting answers at once
    base.prefer_onednn()
    from lenet_tf.training import train
    from lenet_tf.training.run_folder import RunFinished

    try:
        metrics = train(config)
    except RunFinished as err:
        raise RunFolderError(
            f"{err.folder}: holds a finished run ({err.summary}); pass --overwrite to train it again, "
            "or choose another --out"
        ) from None
    model_path = pathlib.Path(args.out) / "model.keras"
    if metrics["interrupted"]:
        print(
            f"interrupted by {metrics['signal']} after {metrics['completed_epochs']} of {metrics['epochs']} "
            f"epochs; current weights in {model_path}; rerun the same command to resume from epoch "
            f"{metrics['completed_epochs']}",
            file=sys.stderr,
        )
        return 128 + signal.Signals[metrics["signal"]].value
    if "test_error" not in metrics:  # a non-chief worker: the chief reports
        print(f"worker finished {_epochs(metrics['epochs'])} in {metrics['seconds']:.0f} s")
        return 0
    print(
        f"test error {100 * metrics['test_error']:.2f}% ({metrics['test_errors']} errors) after "
        f"{_epochs(metrics['epochs'])} in {metrics['seconds']:.0f} s; model in {model_path}"
    )
    return 0


def _epochs(count):
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def main(argv=None, prog=None):
    """Runs the command; exits with 0, 2 for bad input, 1 for a failed run, 128 + N after signal N."""
    return base.run(build_parser, execute, argv, prog, flags=FLAGS)
