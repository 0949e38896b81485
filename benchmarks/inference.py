"""Inference speed of LeNet-5 artifacts: batch-1 latency and batched throughput.

Usage:

    python -m benchmarks.inference [--data-dir DIR] [--threads N] [--latency-runs 200] \
        artifacts/lenet5_savedmodel artifacts/lenet5.tflite artifacts/lenet5_int8.tflite \
        artifacts/lenet5.onnx

Each artifact runs through `lenet_tf.inference.load_runtime`, the runtime a deployment would
use (a `.keras` file through Keras, SavedModel through TensorFlow, `.tflite` through LiteRT,
`.onnx` through onnxruntime); `--tflm` adds TensorFlow Lite Micro for `.tflite` files.
Batch-1 latency is the median of single-image calls after warm-up; throughput is images/s
over the MNIST test images in batches of `--batch-size`, after one warm-up batch (tracing,
allocation and delegate set-up, which a deployed model pays once). Whether the artifacts
compute the right thing is `export.verify`'s job; this only times them.
"""

import os
import statistics
import time

from lenet_tf.commands import base


def throughput(runtime, images, batch_size, warmup=None):
    """Probabilities of all `images` in batches, and the images per second of that pass.

    Args:
        runtime: A `lenet_tf.inference.Runtime`.
        images: Raw pixels `(N, 28, 28)`.
        batch_size: Images per call.
        warmup: Images of the untimed first call (default: one batch).

    Returns:
        `(probabilities, images_per_second)`.
    """
    import numpy as np

    runtime.predict(images[: warmup or batch_size])
    parts = []
    start = time.perf_counter()
    for i in range(0, len(images), batch_size):
        parts.append(runtime.predict(images[i : i + batch_size]))
    seconds = time.perf_counter() - start
    return np.concatenate(parts), len(images) / seconds


def batch1_latency_ms(runtime, images, runs, warmup=10):
    """Median milliseconds of `runs` single-image calls, after `warmup` untimed calls."""
    for i in range(warmup):
        runtime.predict(images[i % len(images)][None])
    times = []
    for i in range(runs):
        image = images[i % len(images)][None]
        start = time.perf_counter()
        runtime.predict(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(runtime, images, latency_runs, batch_size=1024):
    """`{"latency_ms", "throughput"}` of one runtime on `images`."""
    _, images_per_second = throughput(runtime, images, batch_size)
    return {"latency_ms": batch1_latency_ms(runtime, images, latency_runs), "throughput": images_per_second}


def build_parser(prog=None):
    """The parser of `python -m benchmarks.inference`."""
    parser = base.ArgumentParser(
        prog=prog or "python -m benchmarks.inference",
        description="Batch-1 latency and throughput of LeNet-5 artifacts (.keras, SavedModel, "
        ".tflite, .onnx) on the MNIST test images, each in the runtime a deployment would use.",
    )
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                        help=".keras files, SavedModel folders, .tflite and .onnx files")  # fmt: skip
    parser.add_argument("--data-dir", metavar="DIR",
                        help="MNIST IDX folder (default: $LENET_MNIST_DIR, else tensorflow-datasets)")  # fmt: skip
    parser.add_argument("--threads", type=base.positive_int, default=os.cpu_count(), metavar="N",
                        help="CPU threads for LiteRT and onnxruntime (default: all cores)")  # fmt: skip
    parser.add_argument("--batch-size", type=base.positive_int, default=1024, metavar="N",
                        help="images per call in the throughput pass (default: 1024)")  # fmt: skip
    parser.add_argument("--latency-runs", type=base.positive_int, default=200, metavar="N",
                        help="single-image calls whose median is the latency (default: 200)")  # fmt: skip
    parser.add_argument("--tflm", action="store_true", help="also time .tflite files on TensorFlow Lite Micro (slow)")
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    """Times every artifact and prints a Markdown table."""
    from lenet_tf.data import load_mnist
    from lenet_tf.inference import load_runtime

    runtimes = [load_runtime(path, num_threads=args.threads) for path in args.artifacts]
    if args.tflm:
        runtimes += [load_runtime(path, backend="tflm") for path in args.artifacts if path.endswith(".tflite")]
    _, (images, _) = load_mnist(args.data_dir)
    print("| artifact | runtime | batch-1 latency | throughput |\n|---|---|---:|---:|")
    for runtime in runtimes:
        # TFLM loops over single images in Python: a tenth of the test set is enough to time it.
        subset = images[: len(images) // 10] if runtime.backend == "tflm" else images
        figures = measure(runtime, subset, args.latency_runs, args.batch_size)
        print(f"| {runtime.path.name} | {runtime.backend} | {figures['latency_ms']:.3f} ms "
              f"| {figures['throughput']:,.0f} img/s |")  # fmt: skip


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
