"""The whole benchmark suite in one process: training speed, time to 99%, inference.

Usage:

    pip install -e '.[dev,bench]'          # PyTorch for its column (CPU wheel)
    python -m benchmarks.run --data-dir ../shared/data/mnist [--out benchmarks/results] \
        [--optimizer muon|adamw]

Runs, in this order and side by side within each part:

1. `benchmarks.train_throughput`: training images/s of the paper model, the stock-Keras LeNet
   and the PyTorch LeNet at batch 32, 128 and 512 (alternating, median of the repeats), and
   the ratios.
2. `benchmarks.time_to_accuracy`: training seconds from scratch to 99.0% test accuracy and to
   the paper's 0.95% test error, each contender with the `fast` recipe.
3. `benchmarks.export_compare`: the paper and the stock-Keras model as trained in part 2,
   saved and exported (TFLite float32, full int8, ONNX), each run by Keras, LiteRT and
   onnxruntime: batch-1 latency and throughput at batch 1024.

Every contender trains with `--optimizer`, each through its own library: Muon (the recipe's), or
AdamW, which compares the tools on a CPU without bfloat16 instructions, where PyTorch's Muon
orthogonalises in emulated bfloat16 and so measures that (docs/performance.md).

Writes `results.md` (the tables, with the machine they ran on) and `results.json` (every figure)
into `--out`, atomically, and prints the Markdown; one line on stderr as each part ends. Not
part of the test suite: figures on a shared machine vary by tens of percent, so only the ratios
measured in one run are compared.
"""

import os
import platform
import sys
import tempfile
import time

from benchmarks import train_throughput
from benchmarks.trainers import add_contender_arguments
from lenet_tf.commands import base

PARTS = ("training throughput", "time to accuracy", "inference")


# The vector instructions that decide which kernels run: TensorFlow turns oneDNN on by default
# only with AVX-512 VNNI, BF16 or AMX; int8 and bfloat16 have fast kernels only with them.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_description(cpuinfo):
    r"""The CPU model and its `CPU_FEATURES`, from the text of `/proc/cpuinfo` ("" if there is none).

    >>> cpu_description("model name\t: AMD EPYC\nflags\t\t: fpu avx2 fma avx512f\n")
    'AMD EPYC (avx2 fma avx512f)'
    """
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    model = fields.get("model name") or platform.processor() or platform.machine()
    if "flags" not in fields:  # no /proc/cpuinfo, or a CPU that lists no x86 flags
        return model
    flags = set(fields["flags"].split())
    features = " ".join(name for name in CPU_FEATURES if name in flags) or "no AVX2"
    return f"{model} ({features})"


def machine():
    """What the figures ran on: CPU model, features and count, Python and the library versions."""
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        with open("/proc/cpuinfo") as info:
            cpuinfo = info.read()
    except OSError:
        cpuinfo = ""
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
                "numpy": np.__version__}  # fmt: skip
    for name, module in (("torch", "torch"), ("onnxruntime", "onnxruntime"), ("ai-edge-litert", "ai_edge_litert")):
        try:
            versions[name] = __import__(module).__version__
        except (ImportError, AttributeError):
            continue
    gpus = [device.name for device in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu_description(cpuinfo), "cores": os.cpu_count(), "gpus": gpus, "versions": versions}


def machine_markdown(info):
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    gpus = ", ".join(info["gpus"]) or "no GPU"
    return f"Machine: {info['cpu']}, {info['cores']} cores, {gpus}; {versions}."


class PartProgress:
    """One line on stderr as each part ends, on a terminal and in a log file alike.

    >>> progress = PartProgress(stream=sys.stdout)
    >>> progress.done()  # doctest: +ELLIPSIS
    part 1/3 (training throughput) done after ... s
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.parts_done = 0

    def done(self):
        """Prints that the next part of `PARTS` has ended, with the seconds since the start."""
        part, self.parts_done = PARTS[self.parts_done], self.parts_done + 1
        seconds = time.perf_counter() - self.start
        print(f"part {self.parts_done}/{len(PARTS)} ({part}) done after {seconds:.0f} s", file=self.stream, flush=True)


def build_parser(prog=None):
    """The parser of `python -m benchmarks.run`."""
    parser = base.ArgumentParser(
        prog=prog or "python -m benchmarks.run",
        description="Runs the benchmark suite (training throughput, time to 99% test accuracy and "
        "to 0.95% test error, "
        "inference latency and throughput) and writes results.md and results.json.",
    )
    parser.add_argument("--out", default="benchmarks/results", metavar="DIR",
                        help="folder for results.md and results.json (default: benchmarks/results)")  # fmt: skip
    train_throughput.add_throughput_arguments(parser)
    parser.add_argument("--repeats", type=base.positive_int, default=3, metavar="N",
                        help="alternating measurements per model and figure (default: 3)")  # fmt: skip
    parser.add_argument("--epochs", type=base.positive_int, default=6, metavar="N",
                        help="most epochs per model in the time-to-accuracy part (default: 6)")  # fmt: skip
    parser.add_argument("--threads", type=base.positive_int, default=os.cpu_count(), metavar="N",
                        help="CPU threads per inference runtime (default: all cores)")  # fmt: skip
    add_contender_arguments(parser)
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    """Runs the three parts; writes and prints the report."""
    import pathlib

    from benchmarks import export_compare, time_to_accuracy
    from lenet_tf.data import load_mnist
    from lenet_tf.files import atomic_path, write_json
    from benchmarks.stock_lenet import STOCK_LAYER_CLASSES
    from lenet_tf.saving import load_lenet5

    out = pathlib.Path(args.out)
    for name in ("results.md", "results.json"):  # checked before the measuring, not after it
        base.check_writable(out / name)
    # Decoded here first: a bad folder is reported in one line before any worker starts.
    (x_train, _), (x_test, y_test) = load_mnist(args.data_dir)
    progress = PartProgress()
    results = {"machine": machine()}
    results["throughput"] = train_throughput.measure_batch_sizes(
        args.data_dir, args.batch_sizes, args.images, args.repeats, args.optimizer
    )
    progress.done()
    with tempfile.TemporaryDirectory(prefix="benchmarks_") as scratch:
        scratch = pathlib.Path(scratch)
        results["time_to_accuracy"] = time_to_accuracy.measure(
            args.data_dir, batch_size=args.batch_size, epochs=args.epochs, save_dir=scratch, optimizer=args.optimizer
        )
        progress.done()
        paper = load_lenet5(scratch / "paper.keras")
        stock = load_lenet5(scratch / "stock.keras", also_allow=STOCK_LAYER_CLASSES)
        results["inference"] = export_compare.compare(
            paper, stock, x_train, x_test, y_test, scratch / "exports", repeats=args.repeats, threads=args.threads
        )
    progress.done()

    report = "\n\n".join([
        machine_markdown(results["machine"]),
        "Training throughput:\n\n" + train_throughput.markdown(results["throughput"]),
        "Time to 99.0% test accuracy and to the paper's 0.95% test error, from scratch:\n\n"
        + time_to_accuracy.markdown(results["time_to_accuracy"]),
        "Inference (the models as trained in the time-to-accuracy part):\n\n"
        + export_compare.markdown(results["inference"], "as trained in part 2"),
    ])  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.md") as path:
        path.write_text(report + "\n")
    write_json(out / "results.json", results)
    print("\n" + report)
    print(f"\nwrote {out / 'results.md'} and {out / 'results.json'}")


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
