"""Seconds of training from scratch until a model reaches a test accuracy (99.0% by default).

Usage:

    python -m benchmarks.time_to_accuracy [--target 0.99] [--batch-size 128] [--epochs 12] \
        [--checks-per-epoch 2] [--data-dir DIR] [--json results.json]

Each contender of `benchmarks.trainers` (the paper model with its `lenet_tf.training` recipe, the
stock-Keras LeNet, the PyTorch LeNet when installed) trains from fresh weights, alone, in its
own worker process; `--checks-per-epoch` times per epoch the clock stops, the full 10,000-image test
set is classified, and the clock restarts. The time reported is training time only, up to the
first check at or above the target (tracing and the first step included: that is part of
training from scratch). A model that has not reached it after `--epochs` epochs is reported as
not reaching it. The paper model's learning-rate schedule spans `--epochs` epochs, so the
recipe is fixed before the run, not tuned to stop early.
"""

import time

from benchmarks.trainers import add_contender_arguments
from lenet_tf.commands import base


def time_to_accuracy(trainer, x_test, y_test, target, checks, steps_per_check):
    """Trains `trainer` in `checks` chunks of `steps_per_check` steps until `target` accuracy.

    Args:
        trainer: A `benchmarks.trainers.KerasTrainer` or `torch_lenet.TorchTrainer`.
        x_test: Raw test pixels `(N, 28, 28)`.
        y_test: Test digits `(N,)`.
        target: Test accuracy to reach, a fraction.
        checks: Most chunks to run.
        steps_per_check: Training steps between two accuracy checks.

    Returns:
        `{"reached": bool, "steps", "seconds", "accuracy"}` at the last check (the first at or
        above `target`, else the final one; seconds of training, checks excluded) and
        `"curve"`: the same three figures for every check.
    """
    curve, evaluation_seconds = [], 0.0
    start = time.perf_counter()

    def check(steps_done):
        nonlocal evaluation_seconds
        paused = time.perf_counter()
        accuracy = trainer.accuracy(x_test, y_test)
        curve.append({"steps": steps_done, "seconds": paused - start - evaluation_seconds, "accuracy": accuracy})
        evaluation_seconds += time.perf_counter() - paused
        return accuracy >= target

    trainer.train(checks * steps_per_check, every=steps_per_check, callback=check)
    last = curve[-1]
    return {"reached": last["accuracy"] >= target, **last, "curve": curve}


def measure(data_dir=None, target=0.99, batch_size=128, epochs=12, checks_per_epoch=2, seed=0, save_dir=None):
    """Time to `target` test accuracy for each contender, from fresh weights, one at a time.

    Args:
        data_dir: MNIST folder (None: `lenet_tf.data.load_mnist`'s default).
        target: Test accuracy to reach, a fraction.
        batch_size: Images per step for every contender.
        epochs: Most epochs per contender; the paper model's schedule spans them.
        checks_per_epoch: Test-accuracy checks per epoch.
        seed: Seed of the weights and the data order.
        save_dir: If given, the Keras contenders are saved there as `<name>.keras` as they
            stand after their run (for the inference benchmark).

    Returns:
        `{"target", "batch_size", "epochs", "models": {contender: time_to_accuracy result}}`.
    """
    import pathlib

    from benchmarks.trainers import TrainerProcess, available_contenders
    from lenet_tf.data import load_mnist, steps_per_epoch

    (_, y_train), _ = load_mnist(data_dir)
    steps_per_check = steps_per_epoch(len(y_train), batch_size) // checks_per_epoch
    checks = epochs * checks_per_epoch
    trainer_args = {"batch_size": batch_size, "total_steps": checks * steps_per_check,
                    "steps_per_call": steps_per_check, "seed": seed}  # fmt: skip
    models = {}
    for name in available_contenders():
        with TrainerProcess(name, data_dir, **trainer_args) as worker:
            models[name] = worker.time_to_accuracy(target, checks, steps_per_check)
            if save_dir is not None and name != "torch":
                worker.save(pathlib.Path(save_dir) / f"{name}.keras")
    return {"target": target, "batch_size": batch_size, "epochs": epochs, "train_examples": len(y_train), "models": models}


def markdown(result):
    """One row per model: seconds and epochs to the target, or how far it got."""
    from benchmarks.train_throughput import MODEL_LABELS

    target = f"{100 * result['target']:.1f}%"
    lines = [f"| model | seconds to {target} test accuracy (batch {result['batch_size']}) | epochs | accuracy at that check |",
             "|---|---:|---:|---:|"]  # fmt: skip
    for name, run in result["models"].items():
        epochs = run["steps"] * result["batch_size"] / result["train_examples"]
        seconds = f"{run['seconds']:.1f}" if run["reached"] else f"not in {run['seconds']:.1f} s ({result['epochs']} epochs)"
        lines.append(f"| {MODEL_LABELS[name]} | {seconds} | {epochs:.1f} | {100 * run['accuracy']:.2f}% |")
    return "\n".join(lines)


def build_parser(prog=None):
    """The parser of `python -m benchmarks.time_to_accuracy`."""
    parser = base.ArgumentParser(
        prog=prog or "python -m benchmarks.time_to_accuracy",
        description="Training seconds from scratch to a test accuracy, for the paper LeNet-5, a "
        "stock-Keras and a PyTorch LeNet.",
    )
    parser.add_argument("--target", type=base.positive_float, default=0.99, metavar="FRACTION",
                        help="test accuracy to reach (default: 0.99)")  # fmt: skip
    parser.add_argument("--epochs", type=base.positive_int, default=12, metavar="N",
                        help="most epochs per model; the paper model's schedule spans them (default: 12)")  # fmt: skip
    parser.add_argument("--checks-per-epoch", type=base.positive_int, default=2, metavar="N",
                        help="test-accuracy checks per epoch (default: 2)")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    add_contender_arguments(parser)
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    """Measures every contender; prints the table (and writes `--json`)."""
    from lenet_tf.errors import SettingError
    from lenet_tf.files import write_json

    if args.target >= 1:
        raise SettingError("target", f"must be below 1, got {args.target}")
    result = measure(args.data_dir, args.target, args.batch_size, args.epochs, args.checks_per_epoch)
    print(markdown(result))
    if args.json:
        write_json(args.json, result)


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
