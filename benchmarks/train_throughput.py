"""Training throughput of the paper model beside a stock-Keras LeNet, in one process.

Usage:

    python -m benchmarks.train_throughput [--batch-size 32] [--steps 600] [--repeats 3] \
        [--data-dir DIR] [--json results.json]

Both models train with `model.fit` on the same in-memory MNIST stream (lenet_tf.data), the
same batch size, optimizer and `steps_per_execution`. Measurements alternate between the
models, each after a warm-up epoch that absorbs tracing, and the median of the repeats is
reported, so machine noise hits both sides alike. The ratio > 1 means the paper model is
faster.
"""

import argparse
import statistics
import time

from lenet_tf import cli


def _images_per_second(model, dataset, steps, batch_size):
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0)
    return steps * batch_size / (time.perf_counter() - start)


def measure(batch_size, steps, repeats, data_dir):
    """Returns {"paper": images/s, "stock": images/s, "ratio": paper/stock} (medians)."""
    import keras

    from benchmarks.stock_lenet import build_stock_lenet, compile_stock_lenet
    from lenet_tf.data import load_mnist, make_dataset
    from lenet_tf.model import build_lenet5
    from lenet_tf.train import TrainConfig, compile_lenet5

    keras.utils.set_random_seed(0)
    (x_train, y_train), _ = load_mnist(data_dir)
    config = TrainConfig(batch_size=batch_size)
    models = {"paper": build_lenet5("paper"), "stock": build_stock_lenet()}
    compile_lenet5(models["paper"], config, steps, jit_compile=False)
    compile_stock_lenet(models["stock"], config.steps_per_execution, config.learning_rate)
    data = make_dataset(x_train, y_train, batch_size=batch_size, shuffle=True, seed=0)
    for model in models.values():  # warm-up: tracing and the first-call allocations
        model.fit(data, epochs=1, steps_per_epoch=steps // 4, verbose=0)
    samples = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            samples[name].append(_images_per_second(model, data, steps, batch_size))
    result = {name: statistics.median(values) for name, values in samples.items()}
    result["ratio"] = result["paper"] / result["stock"]
    return result


def main(argv):
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train_throughput",
        description="Training images/s of the paper LeNet-5 vs a stock-Keras LeNet, same run.",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=600, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternating measurements per model")
    parser.add_argument("--data-dir", metavar="DIR", help="MNIST IDX folder (default: $LENET_MNIST_DIR)")
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    args = parser.parse_args(argv)
    cli.quiet_tensorflow()
    result = measure(args.batch_size, args.steps, args.repeats, args.data_dir)
    print(f"| model | training images/s (batch {args.batch_size}) |\n|---|---|")
    print(f"| paper LeNet-5 (lenet_tf) | {result['paper']:,.0f} |")
    print(f"| stock-Keras LeNet | {result['stock']:,.0f} |")
    print(f"| ratio paper / stock | {result['ratio']:.2f} |")
    if args.json:
        from lenet_tf.files import write_json

        write_json(args.json, {"batch_size": args.batch_size, **result})
    return 0


if __name__ == "__main__":
    cli.run(main)
