"""Trains LeNet-5 on MNIST with `model.fit`.

Usage:

    python -m lenet_tf.train --out runs/paper              # the paper's network, 20 epochs
    python -m lenet_tf.train --out runs/paper-distort --distort
    python -m lenet_tf.train --variant modern --out runs/modern

Writes into the run folder: `model.keras`, `metrics.json`, `training_log.csv` and TensorBoard
logs under `logs/`. While training, `backup/` holds the last completed epoch; rerunning the
same command after an interruption resumes from there.
"""

import argparse
import dataclasses
import json
import math
import pathlib
import platform
import time

from lenet_tf import cli

SCHEDULES = ("paper", "cosine", "constant")
OPTIMIZERS = ("adam", "adamw", "sgd")

# The paper's global learning rate per pass (section III.B), as multiples of its first value
# 0.0005: passes 1-2, 3-5, 6-8, 9-12, then 13 on.
PAPER_SCHEDULE_BOUNDARIES = (2, 5, 8, 12)
PAPER_SCHEDULE_FACTORS = (1.0, 0.4, 0.2, 0.1, 0.02)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. The defaults reproduce the README's results.

    Args:
        variant: `"paper"` or `"modern"`.
        epochs: Passes over the training set. The paper made 20.
        batch_size: Images per update.
        optimizer: `"adam"`, `"adamw"` or `"sgd"` (with Nesterov momentum 0.9).
        learning_rate: Initial learning rate.
        schedule: `"paper"` (steps down after epochs 2, 5, 8, 12 by the paper's ratios),
            `"cosine"` or `"constant"`.
        weight_decay: Decoupled weight decay for `"adamw"`.
        map_j: The constant `j` of the MAP loss (paper variant).
        distort: Random affine distortions of the training images, as the paper's 0.8% run.
        seed: Seed of the initial weights, the data order and the distortions.
        deterministic: Make TensorFlow's ops deterministic, so two runs give identical weights.
        data_dir: Folder with the MNIST IDX files; None uses `$LENET_MNIST_DIR` or TFDS.
        out: Run folder.
        train_limit: Use only the first N training images (for quick checks).
        steps_per_execution: Training steps per call into the compiled function.
        jit_compile: `"auto"` (XLA on a GPU only), `"on"` or `"off"`.
        mixed_precision: Compute in float16 with float32 weights (for GPUs with tensor cores).
        trainable_centers: Train the RBF centres too (the paper keeps them fixed).
        verbose: Keras progress bar setting for `fit`.
    """

    variant: str = "paper"
    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    schedule: str = "cosine"
    weight_decay: float = 0.0
    map_j: float = 1.0
    distort: bool = False
    seed: int = 0
    deterministic: bool = False
    data_dir: str | None = None
    out: str = "runs/lenet5"
    train_limit: int | None = None
    steps_per_execution: int = 8
    jit_compile: str = "auto"
    mixed_precision: bool = False
    trainable_centers: bool = False
    verbose: str | int = "auto"


def learning_rate_schedule(config, steps_per_epoch):
    """Returns the learning rate, or a Keras schedule over training steps, for `config`."""
    import keras

    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch
        )
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [b * steps_per_epoch for b in PAPER_SCHEDULE_BOUNDARIES],
        [config.learning_rate * f for f in PAPER_SCHEDULE_FACTORS],
    )


def make_optimizer(config, steps_per_epoch):
    """Returns the Keras optimizer `config` asks for."""
    import keras

    learning_rate = learning_rate_schedule(config, steps_per_epoch)
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(learning_rate)


def compile_lenet5(model, config, steps_per_epoch, jit_compile):
    """Compiles `model` with the loss and accuracy its variant needs."""
    import keras

    from lenet_tf.losses import MAPLoss
    from lenet_tf.metrics import NearestPrototypeAccuracy
    from lenet_tf.model import model_variant

    if model_variant(model) == "paper":
        loss, accuracy = MAPLoss(j=config.map_j), NearestPrototypeAccuracy()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=loss,
        metrics=[accuracy],
        steps_per_execution=config.steps_per_execution,
        jit_compile=jit_compile,
    )


def _resume_epoch(backup_dir):
    """The number of epochs a backup of an interrupted run has completed, or 0."""
    metadata = backup_dir / "training_metadata.json"
    if not metadata.exists():
        return 0
    return int(json.loads(metadata.read_text())["epoch"])


def library_versions():
    """Versions of what produced a result, for metrics.json."""
    import keras
    import numpy as np
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def train(config):
    """Trains a LeNet-5 as `config` says and writes the run folder.

    Args:
        config: A `TrainConfig`.

    Returns:
        The metrics written to `metrics.json`, as a dict.
    """
    import keras
    import tensorflow as tf

    from lenet_tf.data import load_mnist, make_dataset, steps_per_epoch
    from lenet_tf.evaluate import evaluate_model
    from lenet_tf.files import atomic_path, write_json
    from lenet_tf.model import build_lenet5

    out = pathlib.Path(config.out)
    backup_dir = out / "backup"
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    jit_compile = {"auto": on_gpu, "on": True, "off": False}[config.jit_compile]
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    (x_train, y_train), (x_test, y_test) = load_mnist(config.data_dir)
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    steps = steps_per_epoch(len(x_train), config.batch_size)
    first_epoch = _resume_epoch(backup_dir)
    if first_epoch:
        print(f"Resuming from the backup of epoch {first_epoch} in {backup_dir}")

    model = build_lenet5(config.variant, trainable_centers=config.trainable_centers)
    compile_lenet5(model, config, steps, jit_compile)
    # The data stream is a function of (seed, epoch), so a resumed run sees the same batches
    # as an uninterrupted one from its first resumed epoch on.
    train_data = make_dataset(
        x_train, y_train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
        distort=config.distort, first_epoch=first_epoch,
    )  # fmt: skip
    test_data = make_dataset(x_test, y_test, batch_size=1024)
    out.mkdir(parents=True, exist_ok=True)
    callbacks = [
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True),
        keras.callbacks.CSVLogger(out / "training_log.csv", append=first_epoch > 0),
        keras.callbacks.TensorBoard(out / "logs"),
    ]
    start = time.perf_counter()
    model.fit(
        train_data,
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=test_data,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    seconds = time.perf_counter() - start

    with atomic_path(out / "model.keras") as tmp:
        model.save(tmp)
    result = evaluate_model(model, x_test, y_test)
    metrics = {
        "test_error": result["test_error"],
        "test_accuracy": result["test_accuracy"],
        "test_errors": result["errors"],
        "epochs": config.epochs,
        "resumed_from_epoch": first_epoch,
        "seconds": round(seconds, 1),
        "images_per_second": round((config.epochs - first_epoch) * steps * config.batch_size / seconds),
        "variant": config.variant,
        "seed": config.seed,
        "device": "GPU" if on_gpu else "CPU",
        "config": dataclasses.asdict(config),
        "versions": library_versions(),
    }
    write_json(out / "metrics.json", metrics)
    return metrics


def build_parser():
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m lenet_tf.train",
        description="Train LeNet-5 on MNIST. Defaults reproduce the README's paper-variant result.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--variant", choices=("paper", "modern"), default=defaults.variant,
                        help="paper: LeCun et al. 1998 as published; modern: ReLU, max-pool, softmax")
    parser.add_argument("--epochs", type=_positive_int, default=defaults.epochs, help="passes over the training set")
    parser.add_argument("--batch-size", type=_positive_int, default=defaults.batch_size, help="images per update")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument("--lr", type=_positive_float, default=defaults.learning_rate, dest="learning_rate",
                        help="initial learning rate")
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help="learning-rate schedule; 'paper' steps down after epochs 2, 5, 8 and 12")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="for --optimizer adamw")
    parser.add_argument("--map-j", type=_positive_float, default=defaults.map_j,
                        help="constant j of the paper's MAP loss (paper variant)")
    parser.add_argument("--distort", action="store_true", help="random affine distortions of training images")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed for weights, data order, distortions")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic TensorFlow ops: same seed, bit-identical weights (slower)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the MNIST IDX files (default: $LENET_MNIST_DIR, else tensorflow-datasets)")
    parser.add_argument("--out", metavar="RUN_DIR", default=defaults.out, help="run folder")
    parser.add_argument("--train-limit", type=_positive_int, metavar="N", help="train on the first N images only")
    parser.add_argument("--steps-per-execution", type=_positive_int, default=defaults.steps_per_execution,
                        help="training steps per compiled call (fewer Python round trips)")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default=defaults.jit_compile,
                        help="XLA compilation; auto uses it on a GPU only (it is slower on CPU)")
    parser.add_argument("--mixed-precision", action="store_true",
                        help="float16 compute with float32 weights (GPUs with tensor cores)")
    parser.add_argument("--trainable-centers", action="store_true",
                        help="train the RBF centres too (the paper keeps them fixed)")
    return parser


def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text):
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def main(argv):
    args = build_parser().parse_args(argv)
    cli.quiet_tensorflow()
    metrics = train(TrainConfig(**vars(args)))
    print(
        f"test error {100 * metrics['test_error']:.2f}% ({metrics['test_errors']} errors) "
        f"after {metrics['epochs']} epochs in {metrics['seconds']:.0f} s; "
        f"model in {pathlib.Path(args.out) / 'model.keras'}"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
