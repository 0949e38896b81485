"""Training throughput of the paper model beside a stock-Keras and a PyTorch LeNet, in one run.

Usage:

    python -m benchmarks.train_throughput [--batch-sizes 32 128 512] [--images 25600] \
        [--repeats 3] [--optimizer muon|adamw] [--data-dir DIR] [--json results.json]

The contenders are `benchmarks.trainers`' (the paper model as `python -m lenet_tf.train`
compiles it, the stock-Keras LeNet through the same `model.fit` and in-memory stream, the
PyTorch LeNet when PyTorch is installed), each in its own worker process, at each batch size
(`--images` images per measurement, whatever the batch size). Measurements alternate between
them; each times its steps after as many untimed ones in the same call (which absorb tracing:
Keras traces again for every `fit`), and the median of the repeats is reported, so machine noise
hits all sides alike. A ratio above 1 means the paper model is faster.
"""

import statistics

from benchmarks.output import add_json_argument, report
from benchmarks.trainers import OPTIMIZERS, add_contender_arguments
from lenet_tf.commands import base


THROUGHPUT_BATCH_SIZES = (32, 128, 512)


def measure(data_dir=None, batch_size=128, steps=300, repeats=3, seed=0, optimizer=OPTIMIZERS[0]):
    """Training images/s of each contender at one batch size, alternating, median of `repeats`.

    Args:
        data_dir: MNIST folder (None: `lenet_tf.data.load_mnist`'s default).
        batch_size: Images per step for every contender.
        steps: Training steps per measurement (each after as many untimed ones, in the same call).
        repeats: Measurements per contender.
        seed: Seed of the weights and the data order.
        optimizer: Every contender's optimizer, one of `benchmarks.trainers.OPTIMIZERS` (the
            recipe's by default).

    Returns:
        `{"batch_size", "optimizer", "images_per_second": {contender: images/s},
        "ratio_vs_stock"` and, with PyTorch installed, `"ratio_vs_torch"}`: paper model / other.
    """
    from benchmarks.trainers import TrainerProcess, available_contenders

    trainer_args = {"batch_size": batch_size, "total_steps": 2 * repeats * steps, "steps_per_call": steps,
                    "seed": seed, "optimizer": optimizer}  # fmt: skip
    workers = {}
    try:
        for name in available_contenders():
            workers[name] = TrainerProcess(name, data_dir, **trainer_args)
        samples = {name: [] for name in workers}
        for _ in range(repeats):
            for name, worker in workers.items():
                samples[name].append(worker.images_per_second(steps))
    finally:
        for worker in workers.values():
            worker.close()
    speeds = {name: statistics.median(values) for name, values in samples.items()}
    result = {"batch_size": batch_size, "optimizer": optimizer, "images_per_second": speeds,
              "ratio_vs_stock": speeds["paper"] / speeds["stock"]}  # fmt: skip
    if "torch" in speeds:
        result["ratio_vs_torch"] = speeds["paper"] / speeds["torch"]
    return result


def measure_batch_sizes(data_dir=None, batch_sizes=THROUGHPUT_BATCH_SIZES, images=25_600, repeats=3,
                        optimizer=OPTIMIZERS[0]):  # fmt: skip
    """`measure` at each batch size, with `images` images per measurement; a list of its results."""
    return [measure(data_dir, size, max(1, images // size), repeats, optimizer=optimizer) for size in batch_sizes]


MODEL_LABELS = {
    "paper": "paper LeNet-5 (lenet_tf, `model.fit`)",
    "stock": "stock-Keras LeNet (`model.fit`)",
    "torch": "PyTorch LeNet (training loop)",
}


def markdown(results):
    """Images/s per model (rows) and batch size (columns), and the paper model's ratio to each."""
    sizes = " | ".join(f"batch {result['batch_size']}" for result in results)
    lines = [f"| training images/s ({results[0]['optimizer']}) | {sizes} |", "|---|" + "---:|" * len(results)]
    for name in results[0]["images_per_second"]:
        cells = [f"{result['images_per_second'][name]:,.0f}" for result in results]
        lines.append(f"| {MODEL_LABELS[name]} | {' | '.join(cells)} |")
    for name in results[0]["images_per_second"]:
        if name != "paper":
            ratios = [f"{result['images_per_second']['paper'] / result['images_per_second'][name]:.2f}" for result in results]
            lines.append(f"| paper model / {name} | {' | '.join(ratios)} |")
    return "\n".join(lines)


def add_throughput_arguments(parser):
    """--batch-sizes and --images, for this benchmark and `benchmarks.run`."""
    parser.add_argument("--batch-sizes", type=base.positive_int, nargs="+", default=THROUGHPUT_BATCH_SIZES,
                        metavar="N", help="batch sizes to measure (default: 32 128 512)")  # fmt: skip
    parser.add_argument("--images", type=base.positive_int, default=25_600, metavar="N",
                        help="training images per measurement (default: 25600)")  # fmt: skip


def build_parser(prog=None):
    """The parser of `python -m benchmarks.train_throughput`."""
    parser = base.ArgumentParser(
        prog=prog or "python -m benchmarks.train_throughput",
        description="Training images/s of the paper LeNet-5 vs a stock-Keras and a PyTorch LeNet, same run.",
    )
    add_throughput_arguments(parser)
    parser.add_argument("--repeats", type=base.positive_int, default=3, metavar="N",
                        help="alternating measurements per model (default: 3)")  # fmt: skip
    add_json_argument(parser)
    add_contender_arguments(parser, batch_size=False)
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    """Measures every contender; prints the table (and writes `--json`)."""
    from lenet_tf.data import load_mnist

    load_mnist(args.data_dir)  # a bad folder is reported here, in one line, not by each worker
    result = measure_batch_sizes(args.data_dir, args.batch_sizes, args.images, args.repeats, args.optimizer)
    report(markdown(result), result, args.json)


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
