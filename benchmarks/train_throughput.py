"""Training throughput of the paper model beside a stock-Keras and a PyTorch LeNet, in one run.

Usage:

    python -m benchmarks.train_throughput [--batch-size 128] [--steps 300] [--repeats 3] \
        [--data-dir DIR] [--json results.json]

The contenders are `benchmarks.trainers`' (the paper model as `python -m lenet_tf.train`
compiles it, the stock-Keras LeNet through the same `model.fit` and in-memory stream, the
PyTorch LeNet when PyTorch is installed), each in its own worker process. Measurements
alternate between them, after one warm-up measurement each that absorbs tracing, and the
median of the repeats is reported, so machine noise hits all sides alike. A ratio above 1
means the paper model is faster.
"""

import statistics

from benchmarks.trainers import add_contender_arguments
from lenet_tf.commands import base


def measure(data_dir=None, batch_size=128, steps=300, repeats=3, seed=0):
    """Training images/s of each contender, alternating, median of `repeats`.

    Args:
        data_dir: MNIST folder (None: `lenet_tf.data.load_mnist`'s default).
        batch_size: Images per step for every contender.
        steps: Training steps per measurement (one more measurement warms each up).
        repeats: Measurements per contender.
        seed: Seed of the weights and the data order.

    Returns:
        `{"batch_size", "images_per_second": {contender: images/s}, "ratio_vs_stock"` and,
        with PyTorch installed, `"ratio_vs_torch"}`: paper model / other.
    """
    from benchmarks.trainers import TrainerProcess, available_contenders

    trainer_args = {"batch_size": batch_size, "total_steps": (repeats + 1) * steps, "steps_per_call": steps, "seed": seed}
    workers = {}
    try:
        for name in available_contenders():
            workers[name] = TrainerProcess(name, data_dir, **trainer_args)
            workers[name].train(steps)  # tracing and first-call allocations
        samples = {name: [] for name in workers}
        for _ in range(repeats):
            for name, worker in workers.items():
                samples[name].append(worker.images_per_second(steps))
    finally:
        for worker in workers.values():
            worker.close()
    speeds = {name: statistics.median(values) for name, values in samples.items()}
    result = {"batch_size": batch_size, "images_per_second": speeds, "ratio_vs_stock": speeds["paper"] / speeds["stock"]}
    if "torch" in speeds:
        result["ratio_vs_torch"] = speeds["paper"] / speeds["torch"]
    return result


MODEL_LABELS = {
    "paper": "paper LeNet-5 (lenet_tf, `model.fit`)",
    "stock": "stock-Keras LeNet (`model.fit`)",
    "torch": "PyTorch LeNet (training loop)",
}


def markdown(result):
    """The throughput table, one row per model, with the paper model's speed ratio to each."""
    speeds = result["images_per_second"]
    lines = [f"| model | training images/s (batch {result['batch_size']}) | paper model / this |", "|---|---:|---:|"]
    for name, speed in speeds.items():
        lines.append(f"| {MODEL_LABELS[name]} | {speed:,.0f} | {speeds['paper'] / speed:.2f} |")
    return "\n".join(lines)


def build_parser(prog=None):
    """The parser of `python -m benchmarks.train_throughput`."""
    parser = base.ArgumentParser(
        prog=prog or "python -m benchmarks.train_throughput",
        description="Training images/s of the paper LeNet-5 vs a stock-Keras and a PyTorch LeNet, same run.",
    )
    parser.add_argument("--steps", type=base.positive_int, default=300, metavar="N",
                        help="training steps per measurement (default: 300)")  # fmt: skip
    parser.add_argument("--repeats", type=base.positive_int, default=3, metavar="N",
                        help="alternating measurements per model (default: 3)")  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    add_contender_arguments(parser)
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    """Measures every contender; prints the table (and writes `--json`)."""
    from lenet_tf.data import load_mnist
    from lenet_tf.files import write_json

    load_mnist(args.data_dir)  # a bad folder is reported here, in one line, not by each worker
    result = measure(args.data_dir, args.batch_size, args.steps, args.repeats)
    print(markdown(result))
    if args.json:
        write_json(args.json, result)


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
