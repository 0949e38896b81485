"""Where a training step of the paper model goes: each layer alone, then the whole step.

Usage:

    python -m benchmarks.step_profile [--batch-sizes 64 128] [--calls 200] [--repeats 5] \
        [--jit-compile off|on|both] [--models paper stock] [--json FILE]

Runs on TensorFlow's oneDNN kernels unless `TF_ENABLE_ONEDNN_OPTS` says otherwise, as
`lenet-tf train` does (with `TF_ENABLE_ONEDNN_OPTS=0`, C1 and C3 run on 2x2 blocks: the profile of
a host without oneDNN). At each batch size, on random pixels (a step's time does not depend on
the values), each a median of `--repeats` x `--calls` calls:

- an empty `tf.function`: what every call costs, and so is in every row below;
- each layer alone in its own `tf.function`: forward, then forward and backward (the gradients
  of its weights, and of its input where a layer before it has weights: C1's input needs none);
- the whole model and its loss, forward and backward, in one `tf.function`;
- the whole training step (`model.train_step`: the `fast` recipe's optimizer and weight average),
  20 steps per call.

`--models paper stock` profiles the stock-Keras LeNet (`benchmarks.stock_lenet`, cross-entropy,
the same recipe) too, layer by layer beside the paper model: its layers have the same names.

With `--jit-compile on` every one of these functions is compiled by XLA (`both`: each batch size
without, then with): where XLA wins, layer by layer, and what it does to the whole step
(`lenet-tf train --jit-compile on`).

Not part of the test suite: `docs/performance.md#where-a-training-step-goes` has the figures
with the machine they ran on.
"""

import functools
import statistics
import time

from benchmarks.output import add_json_argument, report
from lenet_tf.commands import base

STEPS_PER_CALL = 20
JIT_COMPILE = {"off": (False,), "on": (True,), "both": (False, True)}  # --jit-compile: the profiles of a batch size
MODELS = ("paper", "stock")


def median_milliseconds(function, calls, repeats):
    """Median over `repeats` of the mean milliseconds of one of `calls` calls of `function`.

    The first call, which traces, is not timed.
    """
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def layer_functions(layer, inputs, input_gradient, jit_compile=False):
    """`(forward, forward_backward)`: `layer` on `inputs` as two `tf.function`s without arguments.

    `forward_backward` returns the gradients of a scalar of the outputs with respect to the
    layer's weights and, with `input_gradient`, its input; it is None when there are neither.
    With `jit_compile`, XLA compiles both.
    """
    import tensorflow as tf

    forward = tf.function(lambda: layer(inputs, training=True), jit_compile=jit_compile)
    if not (layer.trainable_weights or input_gradient):
        return forward, None

    @functools.partial(tf.function, jit_compile=jit_compile)
    def forward_backward():
        with tf.GradientTape() as tape:
            if input_gradient:
                tape.watch(inputs)
            outputs = layer(inputs, training=True)
            scalar = tf.reduce_sum(outputs * outputs)
        sources = layer.trainable_weights + ([inputs] if input_gradient else [])
        return tape.gradient(scalar, sources)

    return forward, forward_backward


def profile_layers(model, images, calls, repeats, jit_compile=False):
    """`[{"layer", "forward_ms", "forward_backward_ms"}]` for each layer of `model` after its input.

    `forward_backward_ms` is None for a layer with nothing to differentiate (the preprocessing).
    """
    rows, inputs, weights_before = [], images, False
    for layer in model.layers[1:]:
        forward, forward_backward = layer_functions(layer, inputs, weights_before, jit_compile)
        backward_ms = None if forward_backward is None else median_milliseconds(forward_backward, calls, repeats)
        rows.append({"layer": layer.name, "forward_ms": median_milliseconds(forward, calls, repeats),
                     "forward_backward_ms": backward_ms})  # fmt: skip
        inputs = forward()
        weights_before = weights_before or bool(layer.trainable_weights)
    return rows


def model_and_step_functions(model, images, labels, jit_compile=False):
    """`(model_and_loss, steps)`: the model and its compiled loss forward and backward; `STEPS_PER_CALL` steps.

    With `jit_compile`, XLA compiles both.
    """
    import tensorflow as tf

    compiled = functools.partial(tf.function, jit_compile=jit_compile)

    @compiled
    def model_and_loss():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(images, labels, model(images, training=True))
        return tape.gradient(loss, model.trainable_weights)

    @compiled
    def steps():
        for _ in tf.range(STEPS_PER_CALL):
            model.train_step((images, labels))

    return model_and_loss, steps


def profile(batch_size, calls=200, repeats=5, seed=0, jit_compile=False, model_name="paper"):
    """Milliseconds of a call, of each layer, of the model and loss and of a training step.

    Args:
        batch_size: Images per call.
        calls: Calls per measurement.
        repeats: Measurements; the median is reported.
        seed: Seed of the weights and the random pixels.
        jit_compile: Compile every timed function with XLA, the empty call included.
        model_name: `"paper"`, or `"stock"` for the stock-Keras LeNet.

    Returns:
        `{"model", "trainable_parameters", "batch_size", "jit_compile", "call_ms", "layers",
        "model_and_loss_ms", "train_step_ms", "images_per_second"}`, `layers` as `profile_layers` gives them.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks.trainers import compiled_keras_contender
    from lenet_tf.training.config import TrainConfig

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    images = tf.constant(rng.integers(0, 256, (batch_size, 28, 28)), dtype="float32")
    labels = tf.constant(rng.integers(0, 10, batch_size), dtype="int32")
    config = TrainConfig(recipe="fast", batch_size=batch_size)
    # `train_step` is called directly below, so `fit`'s steps per call play no part.
    model = compiled_keras_contender(model_name, config, 60_000 // batch_size, steps_per_execution=1)
    model_and_loss, steps = model_and_step_functions(model, images, labels, jit_compile)
    step_ms = median_milliseconds(steps, max(1, calls // STEPS_PER_CALL), repeats) / STEPS_PER_CALL
    empty_call = tf.function(lambda: tf.constant(0.0), jit_compile=jit_compile)
    return {
        "model": model_name,
        "trainable_parameters": int(sum(np.prod(weight.shape) for weight in model.trainable_weights)),
        "batch_size": batch_size,
        "jit_compile": jit_compile,
        "call_ms": median_milliseconds(empty_call, calls, repeats),
        "layers": profile_layers(model, images, calls, repeats, jit_compile),
        "model_and_loss_ms": median_milliseconds(model_and_loss, calls, repeats),
        "train_step_ms": step_ms,
        "images_per_second": batch_size / step_ms * 1e3,
    }


def markdown(result):
    """The profiles as one Markdown table: a forward and a forward-and-backward column per profile."""
    profiles = result["profiles"]
    header = "".join(
        f" {p['model']}, batch {p['batch_size']}{', XLA' if p['jit_compile'] else ''}: forward | forward + backward |"
        for p in profiles
    )
    lines = [f"oneDNN {'on' if result['onednn'] else 'off'}; milliseconds, median of the repeats", "",
             f"| layer |{header}", "|---|" + "---:|---:|" * len(profiles)]  # fmt: skip

    def cell(ms):
        return "" if ms is None else f"{ms:.2f}"

    lines.append("| an empty `tf.function` call |" + "".join(f" {cell(p['call_ms'])} | |" for p in profiles))
    layers = [{row["layer"]: row for row in p["layers"]} for p in profiles]
    for name in layers[0]:  # the stock LeNet's layers have the paper model's names
        cells = [rows.get(name, {"forward_ms": None, "forward_backward_ms": None}) for rows in layers]
        lines.append(f"| {name} |" + "".join(
            f" {cell(c['forward_ms'])} | {cell(c['forward_backward_ms'])} |" for c in cells))  # fmt: skip
    lines.append("| whole model + its loss |" + "".join(f" | {cell(p['model_and_loss_ms'])} |" for p in profiles))
    lines.append("| whole training step |" + "".join(
        f" | {cell(p['train_step_ms'])} ({p['images_per_second']:,.0f} img/s) |" for p in profiles))  # fmt: skip
    return "\n".join(lines)


def build_parser(prog=None):
    """The parser of `python -m benchmarks.step_profile`."""
    parser = base.ArgumentParser(
        prog=prog or "python -m benchmarks.step_profile",
        description="Milliseconds of each layer and of a whole training step of the paper LeNet-5 "
        "(and of the stock-Keras LeNet).",
    )
    parser.add_argument("--batch-sizes", type=base.positive_int, nargs="+", default=(64, 128), metavar="N",
                        help="batch sizes to profile (default: 64 128)")  # fmt: skip
    parser.add_argument("--calls", type=base.positive_int, default=200, metavar="N",
                        help="calls per measurement (default: 200)")  # fmt: skip
    parser.add_argument("--repeats", type=base.positive_int, default=5, metavar="N",
                        help="measurements; the median is reported (default: 5)")  # fmt: skip
    parser.add_argument("--jit-compile", choices=tuple(JIT_COMPILE), default="off",
                        help="compile every timed function with XLA: off, on, or both (each batch size "
                             "without, then with; default: off)")  # fmt: skip
    parser.add_argument("--models", choices=MODELS, nargs="+", default=("paper",),
                        help="the paper model and/or the stock-Keras LeNet, side by side (default: paper)")  # fmt: skip
    add_json_argument(parser)
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    """Profiles each batch size; prints the table (and writes `--json`)."""
    base.prefer_onednn()  # as `lenet-tf train` runs
    from lenet_tf.layers.block_conv import onednn_enabled

    profiles = [
        profile(batch_size, args.calls, args.repeats, jit_compile=jit_compile, model_name=model_name)
        for batch_size in args.batch_sizes
        for model_name in args.models
        for jit_compile in JIT_COMPILE[args.jit_compile]
    ]
    result = {"onednn": onednn_enabled(), "profiles": profiles}
    report(markdown(result), result, args.json)


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
