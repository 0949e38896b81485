"""Checks exported LeNet-5 artifacts against their Keras model on the 10,000 MNIST test images.

Usage:

    python -m export.verify --model runs/paper/model.keras [--data-dir DIR] [--json] \
        artifacts/lenet5_savedmodel artifacts/lenet5.tflite artifacts/lenet5_int8.tflite \
        artifacts/lenet5.onnx

Each artifact runs on every test image through the runtime a deployment would use: a
SavedModel through TensorFlow, a `.tflite` through LiteRT, an `.onnx` through onnxruntime, and
an int8 `.tflite` also through TensorFlow Lite Micro's kernels. One Markdown table row per run:
test error, top-1 agreement with the Keras model, max |probability difference|, size, batch-1
latency (median) and batched throughput. `--json` prints the rows as a JSON list instead.

Bars (exit status 1 when any artifact misses one, 2 for bad input):

- float32 (SavedModel, TFLite, ONNX): 100% agreement, max |difference| <= 1e-4.
- float16 and dynamic-range TFLite: agreement >= 99.9%.
- int8 TFLite: test error at most 0.1 point above the Keras model's, size <= 80 kB, input
  quantization exactly `pixel - 128`, every operator an int8 kernel TensorFlow Lite Micro
  has; on TFLM, the same predicted digits as LiteRT's builtin kernels.
- every TFLite model: builtin operators only; TFLite and ONNX: C1, C3, C5 as exactly three
  convolutions (C3 not split into 16); ONNX: default domain only, passes the full checker.
"""

import contextlib
import dataclasses
import json
import os
import pathlib
import statistics
import sys
import time

from lenet_tf import cli

FLOAT_MAX_ABS_DIFF = 1e-4
FLOAT_AGREEMENT = 1.0
REDUCED_AGREEMENT = 0.999
INT8_ERROR_MARGIN = 0.001
INT8_MAX_BYTES = 80_000
CONVOLUTIONS = 3


@dataclasses.dataclass
class Check:
    """One bar: its name, whether it passed, and the measured value or the reason."""

    name: str
    passed: bool
    detail: str = ""


@dataclasses.dataclass
class Row:
    """The figures of one artifact on one runtime."""

    artifact: str
    runtime: str
    format: str
    quantization: str
    bytes: int
    test_error: float
    agreement: float | None = None
    max_abs_diff: float | None = None
    latency_ms: float | None = None
    throughput: float | None = None
    arena_bytes: int | None = None
    checks: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    @property
    def passed(self):
        return all(check.passed for check in self.checks)

    def as_dict(self):
        result = dataclasses.asdict(self)
        result["passed"] = self.passed
        return result


def artifact_format(path):
    """`("savedmodel" | "tflite" | "onnx", quantization)` of an artifact path."""
    from export import tflite

    path = pathlib.Path(path)
    if path.is_dir():
        return "savedmodel", "none"
    if path.suffix == ".tflite":
        return "tflite", tflite.quantization_mode(path.read_bytes())
    return "onnx", "none"


def structure_checks(path, fmt, quantization):
    """Bars on how an artifact is built: its operators, domains and quantization."""
    from export import tflite

    path = pathlib.Path(path)
    checks = []
    if fmt == "tflite":
        data = path.read_bytes()
        ops = tflite.operators(data)
        custom = sorted({op for op in ops if op.startswith("CUSTOM")})
        checks.append(Check("builtin operators only", not custom, ", ".join(custom) or f"{len(set(ops))} kinds"))
        checks.append(_convolution_check(ops.count("CONV_2D"), {"SPLIT", "SPLIT_V", "CONCATENATION"} & set(ops)))
        if quantization == "int8":
            missing = sorted(set(ops) - tflite.TFLM_INT8_OPERATORS)
            checks.append(Check("int8 kernels TFLM has", not missing, ", ".join(missing) or "all"))
            scale, zero_point = tflite.io_quantization(data)["input"]
            checks.append(Check("input int8 = pixel - 128", (scale, zero_point) == (1.0, -128),
                                f"scale {scale:g}, zero point {zero_point}"))  # fmt: skip
            checks.append(Check("size <= 80 kB", len(data) <= INT8_MAX_BYTES, f"{len(data):,} bytes"))
    elif fmt == "onnx":
        import onnx

        model = onnx.load(str(path))
        try:
            onnx.checker.check_model(model, full_check=True)
            checks.append(Check("onnx checker (full)", True))
        except Exception as err:  # onnx raises ValidationError and others
            checks.append(Check("onnx checker (full)", False, str(err).splitlines()[0]))
        domains = sorted({node.domain for node in model.graph.node if node.domain not in ("", "ai.onnx")})
        checks.append(Check("default domain only", not domains, ", ".join(domains)))
        from export.onnx import full_convolutions

        ops = {node.op_type for node in model.graph.node}
        checks.append(_convolution_check(full_convolutions(model), {"Split", "Concat"} & ops))
    return checks


def _convolution_check(count, splits):
    detail = f"{count} full convolutions" + (f", {', '.join(sorted(splits))}" if splits else "")
    return Check("C3 one convolution", count == CONVOLUTIONS and not splits, detail)


def accuracy_checks(row, keras_error):
    """Bars on what an artifact computes, by its quantization."""
    if row.quantization == "none":
        return [
            Check("agreement 100%", row.agreement >= FLOAT_AGREEMENT, f"{100 * row.agreement:.2f}%"),
            Check("max |diff| <= 1e-4", row.max_abs_diff <= FLOAT_MAX_ABS_DIFF, f"{row.max_abs_diff:.2g}"),
        ]
    if row.quantization in ("float16", "dynamic"):
        return [Check("agreement >= 99.9%", row.agreement >= REDUCED_AGREEMENT, f"{100 * row.agreement:.2f}%")]
    excess = row.test_error - keras_error
    return [Check("error <= Keras + 0.1 point", excess <= INT8_ERROR_MARGIN + 1e-12, f"{100 * excess:+.2f} points")]


def _progress(target, label, enabled):
    """A Keras progress bar on stderr (stdout carries the table or JSON), or None."""
    if not enabled:
        return None
    import keras

    print(label, file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # Progbar checks whether its stream is a terminal
        return keras.utils.Progbar(target, unit_name="image")


def _advance(bar, count):
    if bar is not None:
        with contextlib.redirect_stdout(sys.stderr):
            bar.add(count)


def run_all(runtime, images, chunk, bar, warmup=None):
    """Probabilities of all `images` in chunks, and the images per second of that pass.

    A first call on `warmup` images (default: one chunk) absorbs tracing, allocation and
    delegate set-up, which a deployed model pays once.
    """
    import numpy as np

    runtime.predict(images[: warmup or chunk])
    parts = []
    start = time.perf_counter()
    for i in range(0, len(images), chunk):
        parts.append(runtime.predict(images[i : i + chunk]))
        _advance(bar, len(parts[-1]))
    seconds = time.perf_counter() - start
    return np.concatenate(parts), len(images) / seconds


def batch1_latency_ms(runtime, images, runs, warmup=10):
    """Median milliseconds of `runs` single-image calls, after `warmup` calls."""
    for i in range(warmup):
        runtime.predict(images[i % len(images)][None])
    times = []
    for i in range(runs):
        image = images[i % len(images)][None]
        start = time.perf_counter()
        runtime.predict(image)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(runtime, images, labels, reference, options, bar=None, chunk=None, warmup=None):
    """Test error, agreement, max |diff|, latency and throughput of one runtime.

    Returns:
        `(row_fields, probabilities)`.
    """
    import numpy as np

    probabilities, throughput = run_all(runtime, images, chunk or options.batch_size, bar, warmup)
    predictions = probabilities.argmax(axis=-1)
    fields = {
        "test_error": float((predictions != labels).mean()),
        "agreement": float((predictions == reference.argmax(axis=-1)).mean()),
        "max_abs_diff": float(np.abs(probabilities - reference).max()),
        "throughput": throughput,
        "latency_ms": batch1_latency_ms(runtime, images, options.latency_runs),
    }
    return fields, probabilities


def verify_artifact(path, images, labels, reference, keras_error, options):
    """All rows for one artifact: its own runtime, plus TFLite Micro for an int8 `.tflite`."""
    from export import common
    from export.runtimes import load_runtime

    fmt, quantization = artifact_format(path)
    runtime = load_runtime(path, batch_size=options.batch_size, num_threads=options.threads)
    size = common.file_size(path)
    structure = structure_checks(path, fmt, quantization)
    bar = _progress(len(images), f"{path} ({runtime.backend})", options.progress)
    fields, probabilities = measure(runtime, images, labels, reference, options, bar)
    row = Row(str(path), runtime.backend, fmt, quantization, size, **fields)
    row.checks = accuracy_checks(row, keras_error) + structure
    rows = [row]
    if fmt == "tflite" and quantization == "int8" and options.tflm:
        rows.append(verify_on_micro(path, images, labels, reference, size, options))
    return rows


def verify_on_micro(path, images, labels, reference, size, options):
    """Runs an int8 `.tflite` on TFLite Micro and compares its digits with LiteRT's builtin kernels."""
    from export.runtimes import load_runtime

    count = min(options.tflm_images or len(images), len(images))
    subset = count < len(images)
    images, labels, reference = images[:count], labels[:count], reference[:count]
    micro = load_runtime(path, backend="tflm")
    bar = _progress(count, f"{path} (tflm)", options.progress)
    fields, probabilities = measure(micro, images, labels, reference, options, bar, chunk=250, warmup=10)
    row = Row(str(path), "tflm", "tflite", "int8", size, arena_bytes=micro.arena_bytes(), **fields)
    litert = load_runtime(path, num_threads=options.threads, xnnpack=False).predict(images)
    differ = int((litert.argmax(axis=-1) != probabilities.argmax(axis=-1)).sum())
    row.checks = [Check("same digits as LiteRT", differ == 0, f"{differ} of {count} differ")]
    rows_differ = int((litert != probabilities).any(axis=-1).sum())
    row.notes = [f"arena {row.arena_bytes:,} B", f"int8 outputs = LiteRT builtin on {count - rows_differ:,}/{count:,}"]
    if subset:
        row.notes.append(f"first {count:,} images only")
    return row


def _size(count):
    if count >= 1_000_000:
        return f"{count / 1e6:.2f} MB"
    return f"{count / 1e3:.1f} kB"


def _percent(value):
    text = f"{100 * value:.2f}%"
    return "99.99%" if text == "100.00%" and value < 1 else text


_PRECISION = {"none": "float32"}


def markdown_table(rows, keras_row):
    """The rows as a Markdown table, the Keras reference first."""
    lines = [
        "| artifact | runtime | precision | size | test error | agreement | max abs diff "
        "| batch-1 latency | throughput | bars |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
        f"| {pathlib.Path(keras_row.artifact).name} | keras | float32 | {_size(keras_row.bytes)} "
        f"| {100 * keras_row.test_error:.2f}% | reference | | | | |",
    ]
    for row in rows:
        failed = [f"FAIL {check.name} ({check.detail})" for check in row.checks if not check.passed]
        notes = "; ".join((failed or ["pass"]) + row.notes)
        lines.append(
            f"| {pathlib.Path(row.artifact).name} | {row.runtime} "
            f"| {_PRECISION.get(row.quantization, row.quantization)} | {_size(row.bytes)} "
            f"| {100 * row.test_error:.2f}% | {_percent(row.agreement)} | {row.max_abs_diff:.1e} "
            f"| {row.latency_ms:.3f} ms | {row.throughput:,.0f} img/s | {notes} |"
        )
    return "\n".join(lines)


def build_parser():
    parser = cli.ArgumentParser(
        prog="python -m export.verify",
        description="Run exported LeNet-5 artifacts on the MNIST test set and check them against "
        "the Keras model: agreement, probability difference, test error, size, latency, "
        "throughput. Exit status 1 when an artifact misses its bar.",
        epilog="Bars: float32 100% agreement and max |diff| <= 1e-4; float16/dynamic agreement "
        ">= 99.9%; int8 test error <= Keras + 0.1 point, <= 80 kB, TFLM digits = LiteRT's; "
        "TFLite builtin operators only; three convolutions (C3 unsplit).",
    )
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT",
                        help="SavedModel folders, .tflite and .onnx files")  # fmt: skip
    parser.add_argument("--model", required=True, metavar="PATH", help="the .keras file the artifacts came from")
    parser.add_argument(
        "--data-dir", metavar="DIR",
        help="folder with the MNIST IDX files (default: $LENET_MNIST_DIR, else tensorflow-datasets)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    parser.add_argument("--limit", type=cli.positive_int, metavar="N",
                        help="use the first N test images only (quick checks; bars still apply)")  # fmt: skip
    parser.add_argument("--threads", type=cli.positive_int, default=os.cpu_count(), metavar="N",
                        help="CPU threads for TensorFlow, LiteRT and onnxruntime (default: all cores)")  # fmt: skip
    parser.add_argument("--batch-size", type=cli.positive_int, default=1024, metavar="N",
                        help="images per call for the throughput pass (default: 1024)")  # fmt: skip
    parser.add_argument("--latency-runs", type=cli.positive_int, default=200, metavar="N",
                        help="single-image calls whose median is the latency (default: 200)")  # fmt: skip
    parser.add_argument("--tflm-images", type=cli.positive_int, metavar="N",
                        help="test images for TFLite Micro, which is slow (default: all)")  # fmt: skip
    parser.add_argument("--no-tflm", dest="tflm", action="store_false",
                        help="skip the TensorFlow Lite Micro run of int8 models")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser



def main(argv):
    options = build_parser().parse_args(argv)
    options.progress = not (options.json or options.quiet)
    cli.quiet_tensorflow()
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(options.threads)
    except RuntimeError:  # TensorFlow already started (when called in-process)
        pass
    from export import common
    from export.runtimes import load_runtime
    from lenet_tf.data import load_mnist
    from lenet_tf.model import probability_model
    from lenet_tf.saving import load_lenet5

    for path in options.artifacts:  # every artifact must open before minutes of measuring
        load_runtime(path, num_threads=1)
    model = load_lenet5(options.model)
    _, (images, labels) = load_mnist(options.data_dir)
    if options.limit:
        images, labels = images[: options.limit], labels[: options.limit]
    reference = probability_model(model).predict(images, batch_size=options.batch_size, verbose=0)
    keras_error = float((reference.argmax(axis=-1) != labels).mean())
    keras_row = Row(str(options.model), "keras", "keras", "none", common.file_size(options.model), keras_error)
    rows = []
    for path in options.artifacts:
        rows.extend(verify_artifact(path, images, labels, reference, keras_error, options))
    if options.json:
        print(json.dumps([keras_row.as_dict()] + [row.as_dict() for row in rows], indent=2))
    else:
        print(f"{len(images):,} MNIST test images; reference {options.model}, test error {100 * keras_error:.2f}%\n")
        print(markdown_table(rows, keras_row))
    failed = [row for row in rows if not row.passed]
    for row in failed:
        reasons = "; ".join(f"{c.name}: {c.detail}" for c in row.checks if not c.passed)
        print(f"FAILED {row.artifact} ({row.runtime}): {reasons}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
