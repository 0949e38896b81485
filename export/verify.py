"""Checks exported LeNet-5 artifacts against their Keras model on the 10,000 MNIST test images.

Usage:

    python -m export.verify --model runs/paper/model.keras [--data-dir DIR] [--json] \
        artifacts/lenet5_savedmodel artifacts/lenet5.tflite artifacts/lenet5_int8.tflite \
        artifacts/lenet5.onnx

Each artifact runs on every test image through the runtime a deployment would use
(`lenet_tf.inference`): a SavedModel through TensorFlow, a `.tflite` through LiteRT, an `.onnx`
through onnxruntime. An int8 `.tflite` also runs on TensorFlow Lite Micro's kernels, and its
predicted digits are compared image for image with LiteRT's reference kernels (`BUILTIN_REF`).
One Markdown table row per run: precision, size, test error, top-1 agreement with the Keras
model, max |probability difference| and the bars; `--json` prints the rows as JSON instead.

The bars are the table `BARS` below, the one place they are defined: the checks apply it,
`--help` prints it and `bars_markdown` writes it for docs/export.md. The exit status is 1 when
an artifact misses a bar, 2 for bad input. Nothing is timed here: `benchmarks.inference` times
artifacts.
"""

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import sys
from typing import Callable

from lenet_tf.commands import base

FLOAT_MAX_ABS_DIFF = 1e-4
FLOAT_AGREEMENT = 1.0
REDUCED_AGREEMENT = 0.999
INT8_ERROR_MARGIN = 0.001
INT8_MAX_BYTES = 80_000
CONVOLUTIONS = 3
# The artifact format each `lenet_tf.inference` backend runs.
FORMATS = {"keras": "keras", "tensorflow": "savedmodel", "litert": "tflite", "onnxruntime": "onnx"}


@dataclasses.dataclass
class Check:
    """One bar applied to one row: its name, whether it passed, and the measured value."""

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


@dataclasses.dataclass(frozen=True)
class Bar:
    """A pass/fail bar.

    Attributes:
        name: What it demands, as the table and the failure lines show it.
        scope: The rows it applies to, in words.
        why: Why the bar is where it is.
        applies: Predicate on a `Row`.
        check: `(row, facts) -> (passed, detail)`; `facts` are the artifact's structure
            (`artifact_facts`) plus `keras_error` and, for TFLM, `tflm_differ` and `images`.
    """

    name: str
    scope: str
    why: str
    applies: Callable
    check: Callable


def _percent(value):
    text = f"{100 * value:.2f}%"
    return "99.99%" if text == "100.00%" and value < 1 else text


def _float32(row):
    return row.quantization == "none"


def _int8_litert(row):
    return row.quantization == "int8" and row.runtime == "litert"


def _error_excess(row, facts):
    excess = row.test_error - facts["keras_error"]
    return excess <= INT8_ERROR_MARGIN + 1e-12, f"{100 * excess:+.2f} points"


def _input_quantization(row, facts):
    from export.tflite import EXACT_INPUT_QUANTIZATION

    scale, zero_point = facts["input_quantization"]
    return (scale, zero_point) == EXACT_INPUT_QUANTIZATION, f"scale {scale:g}, zero point {zero_point}"


def _tflm_kernels(row, facts):
    from export.tflite import TFLM_INT8_OPERATORS

    missing = sorted(set(facts["operators"]) - TFLM_INT8_OPERATORS)
    return not missing, ", ".join(missing) or "all"


def _builtin_only(row, facts):
    custom = sorted({op for op in facts["operators"] if op.startswith("CUSTOM")})
    return not custom, ", ".join(custom) or f"{len(set(facts['operators']))} kinds"


def _one_c3(row, facts):
    count, splits = facts["full_convolutions"], facts["splits"]
    detail = f"{count} full convolutions" + (f", {', '.join(sorted(splits))}" if splits else "")
    return count == CONVOLUTIONS and not splits, detail


BARS = (
    Bar(f"agreement {FLOAT_AGREEMENT:.0%}", "float32 artifacts (SavedModel, TFLite, ONNX)",
        "the same function as the Keras model: the same digit on every test image", _float32,
        lambda row, facts: (row.agreement >= FLOAT_AGREEMENT, _percent(row.agreement))),
    Bar(f"max |diff| <= {FLOAT_MAX_ABS_DIFF:.0e}".replace("e-0", "e-"),
        "float32 artifacts (SavedModel, TFLite, ONNX)",
        "float32 rounding in another operator order stays near 1e-5", _float32,
        lambda row, facts: (row.max_abs_diff <= FLOAT_MAX_ABS_DIFF, f"{row.max_abs_diff:.2g}")),
    Bar(f"agreement >= {REDUCED_AGREEMENT:.1%}", "float16 and dynamic-range TFLite",
        "reduced-precision weights may flip a near tie, 1 in 1,000 at most",
        lambda row: row.quantization in ("float16", "dynamic"),
        lambda row, facts: (row.agreement >= REDUCED_AGREEMENT, _percent(row.agreement))),
    Bar(f"error <= Keras + {100 * INT8_ERROR_MARGIN:g} point", "int8 TFLite",
        "int8 activations may cost accuracy, at most 10 of the 10,000 test images", _int8_litert,
        _error_excess),
    Bar(f"size <= {INT8_MAX_BYTES // 1000} kB", "int8 TFLite",
        "fits the flash of a small microcontroller with room for the program", _int8_litert,
        lambda row, facts: (row.bytes <= INT8_MAX_BYTES, f"{row.bytes:,} bytes")),
    Bar("input int8 = pixel - 128", "int8 TFLite",
        "scale 1 and zero point -128 make the input quantization exact", _int8_litert, _input_quantization),
    Bar("int8 kernels TFLM has", "int8 TFLite",
        "every operator must have an int8 kernel in TensorFlow Lite Micro", _int8_litert, _tflm_kernels),
    Bar("builtin operators only", "every TFLite model",
        "no pip interpreter runs Flex ops; custom ops need their own kernels",
        lambda row: row.format == "tflite" and row.runtime == "litert", _builtin_only),
    Bar("C3 one convolution", "TFLite and ONNX",
        f"C1, C3 and C5 are exactly {CONVOLUTIONS} full convolutions: C3 is not split into 16",
        lambda row: row.format in ("tflite", "onnx") and row.runtime != "tflm", _one_c3),
    Bar("onnx checker (full)", "ONNX", "onnx.checker.check_model with full_check (shape inference too)",
        lambda row: row.format == "onnx",
        lambda row, facts: (facts["checker_error"] is None, facts["checker_error"] or "")),
    Bar("default domain only", "ONNX", "custom or contrib operators would tie the model to one runtime",
        lambda row: row.format == "onnx",
        lambda row, facts: (not facts["custom_domains"], ", ".join(facts["custom_domains"]))),
    Bar("TFLM digits = LiteRT reference kernels", "int8 TFLite on TensorFlow Lite Micro",
        "the same predicted digit as LiteRT's reference kernels on every image, zero differences",
        lambda row: row.runtime == "tflm",
        lambda row, facts: (facts["tflm_differ"] == 0, f"{facts['tflm_differ']} of {facts['images']:,} images differ")),
)  # fmt: skip


def _cell(text):
    """`text` for a Markdown table cell: a bar name such as `max |diff|` must not split it."""
    return text.replace("|", "\\|")


def bars_markdown():
    """`BARS` as a Markdown table, for docs/export.md."""
    lines = ["| applies to | bar | why |", "|---|---|---|"]
    lines += [f"| {bar.scope} | {_cell(bar.name)} | {bar.why} |" for bar in BARS]
    return "\n".join(lines)


def apply_bars(row, facts):
    """The `Check` of every bar in `BARS` that applies to `row`."""
    return [Check(bar.name, *bar.check(row, facts)) for bar in BARS if bar.applies(row)]


def artifact_facts(path, fmt):
    """What the structure bars read: operators, input quantization, ONNX checker and domains."""
    path = pathlib.Path(path)
    if fmt == "tflite":
        from export import flatbuffer

        data = path.read_bytes()
        ops = flatbuffer.operators(data)
        return {
            "operators": ops,
            "input_quantization": flatbuffer.io_quantization(data)["input"],
            "full_convolutions": ops.count("CONV_2D"),
            "splits": {"SPLIT", "SPLIT_V", "CONCATENATION"} & set(ops),
        }
    if fmt == "onnx":
        import onnx

        from export.onnx import STANDARD_DOMAINS, full_convolutions
        from lenet_tf.errors import first_line

        model = onnx.load(str(path))
        try:
            onnx.checker.check_model(model, full_check=True)
            checker_error = None
        except Exception as err:  # onnx raises ValidationError, InferenceError and others
            checker_error = first_line(err)
        return {
            "checker_error": checker_error,
            "custom_domains": sorted({node.domain for node in model.graph.node} - set(STANDARD_DOMAINS)),
            "full_convolutions": full_convolutions(model),
            "splits": {"Split", "Concat"} & {node.op_type for node in model.graph.node},
        }
    return {}


def _predict_all(runtime, images, chunk, label, progress):
    """`runtime`'s probabilities of `images`, in chunks, with a progress bar on stderr."""
    import keras
    import numpy as np

    bar = None
    if progress:
        print(label, file=sys.stderr)
        with contextlib.redirect_stdout(sys.stderr):  # Progbar checks whether its stream is a terminal
            bar = keras.utils.Progbar(len(images), unit_name="image")
    parts = []
    for i in range(0, len(images), chunk):
        parts.append(runtime.predict(images[i : i + chunk]))
        if bar is not None:
            with contextlib.redirect_stdout(sys.stderr):
                bar.add(len(parts[-1]))
    return np.concatenate(parts)


def _figures(probabilities, labels, reference):
    """Test error, top-1 agreement with `reference` and max |difference| from it."""
    import numpy as np

    predictions = probabilities.argmax(axis=-1)
    return {
        "test_error": float((predictions != labels).mean()),
        "agreement": float((predictions == reference.argmax(axis=-1)).mean()),
        "max_abs_diff": float(np.abs(probabilities - reference).max()),
    }


@dataclasses.dataclass
class Reference:
    """The test images and what the Keras model makes of them."""

    images: object
    labels: object
    probabilities: object
    error: float


def verify_artifact(path, reference, options):
    """All rows for one artifact: its own runtime, plus TFLite Micro for an int8 `.tflite`."""
    from export.cli import artifact_bytes
    from lenet_tf.inference import load_runtime

    runtime = load_runtime(path, batch_size=options.batch_size, num_threads=options.threads)
    fmt = FORMATS[runtime.backend]
    quantization = "none"
    if fmt == "tflite":
        from export.flatbuffer import quantization_mode

        quantization = quantization_mode(pathlib.Path(path).read_bytes())
    label = f"{path} ({runtime.backend})"
    probabilities = _predict_all(runtime, reference.images, options.batch_size, label, options.progress)
    figures = _figures(probabilities, reference.labels, reference.probabilities)
    row = Row(str(path), runtime.backend, fmt, quantization, artifact_bytes(path), **figures)
    row.checks = apply_bars(row, dict(artifact_facts(path, fmt), keras_error=reference.error))
    rows = [row]
    if quantization == "int8" and options.tflm:
        rows.append(verify_on_micro(path, reference, row.bytes, options))
    return rows


def verify_on_micro(path, reference, size, options):
    """Runs an int8 `.tflite` on TFLite Micro and compares it with LiteRT's reference kernels."""
    from lenet_tf.inference import load_runtime

    count = min(options.tflm_images or len(reference.images), len(reference.images))
    images = reference.images[:count]
    micro = load_runtime(path, backend="tflm")
    on_micro = _predict_all(micro, images, 250, f"{path} (tflm)", options.progress)
    litert = load_runtime(path, num_threads=options.threads, kernels="reference")
    label = f"{path} (litert, reference kernels)"
    on_litert = _predict_all(litert, images, options.batch_size, label, options.progress)
    figures = _figures(on_micro, reference.labels[:count], reference.probabilities[:count])
    row = Row(str(path), "tflm", "tflite", "int8", size, arena_bytes=micro.arena_bytes(), **figures)
    # The digits must agree everywhere. The int8 outputs agree on nearly every image, but TFLM's
    # kernels are not LiteRT's reference kernels bit for bit: on a near tie of two logits the
    # probabilities can come out differently (seen on 1 image in 10,000), so that is a figure.
    differ = int((on_micro.argmax(axis=-1) != on_litert.argmax(axis=-1)).sum())
    same_outputs = int((on_micro == on_litert).all(axis=-1).sum())
    row.checks = apply_bars(row, {"tflm_differ": differ, "images": count})
    row.notes = [f"arena {row.arena_bytes:,} B", f"int8 outputs = LiteRT reference on {same_outputs:,}/{count:,}"]
    if count < len(reference.images):
        row.notes.append(f"first {count:,} images only")
    return row


def _size(count):
    if count >= 1_000_000:
        return f"{count / 1e6:.2f} MB"
    return f"{count / 1e3:.1f} kB"


def markdown_table(rows, keras_row):
    """The rows as a Markdown table, the Keras reference first."""
    from export.contract import PRECISION

    lines = [
        "| artifact | runtime | precision | size | test error | agreement | max abs diff | bars |",
        "|---|---|---|---:|---:|---:|---:|---|",
        f"| {pathlib.Path(keras_row.artifact).name} | keras | float32 | {_size(keras_row.bytes)} "
        f"| {100 * keras_row.test_error:.2f}% | reference | | |",
    ]
    for row in rows:
        failed = [f"FAIL {check.name} ({check.detail})" for check in row.checks if not check.passed]
        notes = "; ".join((failed or ["pass"]) + row.notes)
        lines.append(
            f"| {pathlib.Path(row.artifact).name} | {row.runtime} | {PRECISION[row.quantization]} "
            f"| {_size(row.bytes)} | {100 * row.test_error:.2f}% | {_percent(row.agreement)} "
            f"| {row.max_abs_diff:.1e} | {_cell(notes)} |"
        )
    return "\n".join(lines)


def _bars_epilog():
    lines = [f"  {bar.scope}: {bar.name}" for bar in BARS]
    return "bars (exit status 1 when an artifact misses one, 2 for bad input):\n" + "\n".join(lines)


def build_parser(prog=None):
    """The parser of `python -m export.verify`; its epilog lists `BARS`."""
    parser = base.ArgumentParser(
        prog=prog or "python -m export.verify",
        description="Run exported LeNet-5 artifacts on the MNIST test set and check them against\n"
        "the Keras model: agreement, probability difference, test error, size, structure;\n"
        "an int8 model also on TensorFlow Lite Micro, against LiteRT's reference kernels.",
        epilog=_bars_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("artifacts", nargs="+", metavar="ARTIFACT", help="SavedModel folders, .tflite and .onnx files")
    parser.add_argument("--model", required=True, metavar="PATH", help="the .keras file the artifacts came from")
    base.add_data_dir_argument(parser, ", whose test set verify reads")
    parser.add_argument("--json", action="store_true", help="print the rows as a JSON list instead of a table")
    parser.add_argument("--limit", type=base.positive_int, metavar="N",
                        help="use the first N test images only (quick checks; bars still apply)")  # fmt: skip
    parser.add_argument("--threads", type=base.positive_int, default=os.cpu_count(), metavar="N",
                        help="CPU threads for TensorFlow, LiteRT and onnxruntime (default: all cores)")  # fmt: skip
    parser.add_argument("--batch-size", type=base.positive_int, default=1024, metavar="N",
                        help="images per call into a runtime (default: 1024)")  # fmt: skip
    parser.add_argument("--tflm-images", type=base.positive_int, metavar="N",
                        help="test images for TFLite Micro, which is slow (default: all)")  # fmt: skip
    parser.add_argument("--no-tflm", dest="tflm", action="store_false",
                        help="skip the TensorFlow Lite Micro run of int8 models")  # fmt: skip
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (there are none when stderr is not a terminal)")  # fmt: skip
    base.add_verbose_argument(parser)
    return parser


def _reference(options):
    """Loads `--model` and the MNIST test set, and runs the Keras model on it."""
    import tensorflow as tf

    from lenet_tf.data import load_mnist
    from lenet_tf.model import probability_model
    from lenet_tf.saving import load_lenet5

    try:
        tf.config.threading.set_intra_op_parallelism_threads(options.threads)
    except RuntimeError:  # TensorFlow already started (when called in-process)
        pass
    model = load_lenet5(options.model)
    _, (images, labels) = load_mnist(options.data_dir)
    images, labels = images[: options.limit], labels[: options.limit]
    probabilities = probability_model(model).predict(images, batch_size=options.batch_size, verbose=0)
    return Reference(images, labels, probabilities, float((probabilities.argmax(axis=-1) != labels).mean()))


def execute(options):
    """Verifies every artifact, prints the table (or JSON); returns 1 if any misses a bar."""
    from export.cli import artifact_bytes
    from lenet_tf.inference import load_runtime

    options.progress = not (options.json or options.quiet) and sys.stderr.isatty()
    for path in options.artifacts:  # every artifact must open before minutes of measuring
        load_runtime(path, num_threads=1)
    reference = _reference(options)
    keras_row = Row(str(options.model), "keras", "keras", "none", artifact_bytes(options.model), reference.error)
    rows = [row for path in options.artifacts for row in verify_artifact(path, reference, options)]
    if options.json:
        print(json.dumps([keras_row.as_dict()] + [row.as_dict() for row in rows], indent=2))
    else:
        print(f"{len(reference.images):,} MNIST test images; reference {options.model}, "
              f"test error {100 * reference.error:.2f}%\n")  # fmt: skip
        print(markdown_table(rows, keras_row))
    failed = [row for row in rows if not row.passed]
    for row in failed:
        reasons = "; ".join(f"{check.name}: {check.detail}" for check in row.checks if not check.passed)
        print(f"FAILED {row.artifact} ({row.runtime}): {reasons}", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
