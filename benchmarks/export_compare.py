"""Exported size, test error and inference speed of the paper LeNet-5 beside a stock-Keras LeNet.

Usage:

    python -m benchmarks.export_compare --model runs/paper/model.keras [--data-dir DIR] \
        [--stock-epochs 1] [--repeats 3] [--graph folded|literal] [--out DIR] [--json results.json]

Both models are saved as `.keras` files and go through the same exporters (`export.tflite`
float32 and full int8, `export.onnx`) and the same runtimes (`lenet_tf.inference`: Keras
`predict_on_batch`, LiteRT, onnxruntime), with the same thread count, timed by
`benchmarks.inference`.
Measurements alternate between the two models, `--repeats` times, and the median is reported,
so machine noise hits both sides alike. Batch-1 latency is the median of single-image calls
after warm-up; throughput is images/s over the 10,000 test images in batches of 1024.

The stock model (`benchmarks.stock_lenet`: Conv2D, AveragePooling2D, Dense, tanh, softmax,
the same in-model preprocessing) is trained for `--stock-epochs` epochs with Adam and
cross-entropy; with `--stock-epochs 0` its weights stay random, which is enough for the
timing and size columns but makes its test error meaningless.
"""

import os
import pathlib
import statistics
import tempfile

from benchmarks.output import add_json_argument, report
from lenet_tf.commands import base

ARTIFACTS = (
    ("Keras float32", "keras", None),
    ("TFLite float32", "tflite", "none"),
    ("TFLite int8", "tflite", "int8"),
    ("ONNX float32", "onnx", None),
)


def train_stock(x_train, y_train, epochs, seed=0):
    """The stock-Keras LeNet, trained for `epochs` epochs (0: untrained)."""
    import keras

    from benchmarks.stock_lenet import build_stock_lenet, compile_stock_lenet

    keras.utils.set_random_seed(seed)
    model = build_stock_lenet()
    if epochs:
        compile_stock_lenet(model, keras.optimizers.Adam(1e-3))
        model.fit(x_train.astype("float32"), y_train, batch_size=64, epochs=epochs, verbose=0)
    return model


def export_all(model, folder, calibration, graph="folded"):
    """Writes the `.keras` file and the three exports of `model` into `folder`; returns {label: path}."""
    from export import onnx as onnx_export
    from export import tflite

    folder = pathlib.Path(folder)
    paths = {}
    for label, fmt, quantization in ARTIFACTS:
        if fmt == "keras":
            path = folder / f"{model.name}.keras"
            folder.mkdir(parents=True, exist_ok=True)
            model.save(path)
        elif fmt == "tflite":
            path = folder / f"{model.name}_{quantization}.tflite"
            tflite.export_tflite(model, path, quantization, calibration_images=calibration, graph=graph)
        else:
            path = folder / f"{model.name}.onnx"
            onnx_export.export_onnx(model, path, graph=graph)
        paths[label] = path
    return paths


def measure_once(path, images, labels, threads, latency_runs):
    """Test error, batch-1 latency (ms) and throughput (images/s) of one artifact, once."""
    from benchmarks.inference import batch1_latency_ms, throughput
    from benchmarks.stock_lenet import STOCK_LAYER_CLASSES
    from lenet_tf.inference import load_runtime

    runtime = load_runtime(path, num_threads=threads, also_allow=STOCK_LAYER_CLASSES)
    probabilities, images_per_second = throughput(runtime, images, 1024)
    return {
        "test_error": float((probabilities.argmax(-1) != labels).mean()),
        "latency_ms": batch1_latency_ms(runtime, images, latency_runs),
        "throughput": images_per_second,
    }


def compare(paper, stock, x_train, x_test, y_test, folder, repeats=3, threads=None, latency_runs=300, graph="folded"):
    """Exports both models and measures them alternately.

    Returns:
        `{label: {"paper": figures, "stock": figures}}` with `bytes`, `test_error`,
        `latency_ms` and `throughput` (medians over `repeats`). `graph` is how the paper
        model is exported (`export.folding`); the stock model is standard layers either way.
    """
    from export.tflite import representative_images

    calibration = representative_images(x_train)
    paths = {
        "paper": export_all(paper, pathlib.Path(folder) / "paper", calibration, graph),
        "stock": export_all(stock, pathlib.Path(folder) / "stock", calibration),
    }
    samples = {label: {name: [] for name in paths} for label, _, _ in ARTIFACTS}
    for _ in range(repeats):
        for label, _, _ in ARTIFACTS:
            for name in paths:
                samples[label][name].append(measure_once(paths[name][label], x_test, y_test, threads, latency_runs))
    result = {}
    for label, by_model in samples.items():
        result[label] = {}
        for name, runs in by_model.items():
            result[label][name] = {
                "bytes": paths[name][label].stat().st_size,
                "test_error": runs[0]["test_error"],
                "latency_ms": statistics.median(run["latency_ms"] for run in runs),
                "throughput": statistics.median(run["throughput"] for run in runs),
            }
    return result


def markdown(result, stock_note):
    """Side-by-side table; ratios > 1 mean the paper model is faster (or larger).

    Args:
        result: What `compare` returns.
        stock_note: How the stock model was trained, for the test-error column's heading.
    """
    lines = [
        f"| artifact | size paper / stock | test error paper / stock ({stock_note}) "
        "| batch-1 latency paper / stock | throughput paper / stock (batch 1024) | speed ratio paper/stock |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, pair in result.items():
        paper, stock = pair["paper"], pair["stock"]
        lines.append(
            f"| {label} | {paper['bytes'] / 1e3:.1f} / {stock['bytes'] / 1e3:.1f} kB "
            f"| {100 * paper['test_error']:.2f}% / {100 * stock['test_error']:.2f}% "
            f"| {paper['latency_ms']:.3f} / {stock['latency_ms']:.3f} ms "
            f"| {paper['throughput']:,.0f} / {stock['throughput']:,.0f} img/s "
            f"| latency {stock['latency_ms'] / paper['latency_ms']:.2f}, "
            f"throughput {paper['throughput'] / stock['throughput']:.2f} |"
        )
    return "\n".join(lines)


def build_parser(prog=None):
    """The parser of `python -m benchmarks.export_compare`."""
    parser = base.ArgumentParser(
        prog=prog or "python -m benchmarks.export_compare",
        description="Size, test error, batch-1 latency and throughput of the exported paper "
        "LeNet-5 beside a stock-Keras LeNet exported the same ways (TFLite float32, int8, ONNX).",
    )
    parser.add_argument("--model", required=True, metavar="PATH", help="the paper model's .keras file")
    parser.add_argument("--data-dir", metavar="DIR", help="MNIST IDX folder (default: $LENET_MNIST_DIR)")
    parser.add_argument("--stock-epochs", type=base.non_negative_int, default=1, metavar="N",
                        help="epochs to train the stock LeNet; 0 keeps random weights (default: 1)")  # fmt: skip
    parser.add_argument("--repeats", type=base.positive_int, default=3, metavar="N",
                        help="alternating measurements per artifact (default: 3)")  # fmt: skip
    parser.add_argument("--threads", type=base.positive_int, default=os.cpu_count(), metavar="N",
                        help="CPU threads per runtime (default: all cores)")  # fmt: skip
    parser.add_argument("--latency-runs", type=base.positive_int, default=300, metavar="N",
                        help="single-image calls per latency median (default: 300)")  # fmt: skip
    parser.add_argument("--graph", choices=("folded", "literal"), default="folded",
                        help="how the paper model is exported (default: folded, as export.* do)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="keep the exported artifacts here (default: a temporary folder)")
    add_json_argument(parser)
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    """Exports and measures both models; prints the table (and writes `--json`)."""
    from lenet_tf.data import load_mnist
    from lenet_tf.saving import load_lenet5

    paper = load_lenet5(args.model)
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir)
    stock = train_stock(x_train, y_train, args.stock_epochs)
    with tempfile.TemporaryDirectory(prefix="export_compare_") as scratch:
        result = compare(
            paper, stock, x_train, x_test, y_test, args.out or scratch, args.repeats, args.threads,
            args.latency_runs, args.graph,
        )  # fmt: skip
    print(f"paper model: {args.model} ({args.graph} graph)\n")
    stock_note = f"stock trained {args.stock_epochs} epoch(s)" if args.stock_epochs else "stock untrained (timing only)"
    figures = {"graph": args.graph, "stock_epochs": args.stock_epochs, "threads": args.threads, "results": result}
    report(markdown(result, stock_note), figures, args.json)


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
