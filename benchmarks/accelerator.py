"""The recipes on an accelerator, on any Keras backend: wall time, images/s and test error.

Usage:

    python -m benchmarks.accelerator --data-dir ../shared/data/mnist \
        [--recipes paper-schedule fast] [--precisions float32 mixed_float16] [--json results.json]
    KERAS_BACKEND=jax python -m benchmarks.accelerator ...   # JAX's XLA-compiled step

`python -m lenet_tf.train` trains through `tf.data`, with backups, logs and resumption, so it
needs TensorFlow. This benchmark trains the same network, loss and recipe (`TrainConfig` and
`compile_lenet5`) with `model.fit` over arrays in memory, so that it runs wherever Keras runs:
on a GPU with TensorFlow's GPU build, or with `KERAS_BACKEND=jax` where only JAX has one. The
step is XLA-compiled (`jit_compile=True`, what `--jit-compile auto` picks on a GPU); a mixed
policy computes in float16 or bfloat16 with float32 weights (`--mixed-precision` is float16).

Per run it reports the wall time of `fit` (model compilation and tracing included), images/s
over the epochs after the first (the steady state), and the test error of the final weights;
Keras prints one line per epoch.
"""

import time

from benchmarks.output import add_json_argument, report
from lenet_tf.commands import base

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LOOPS = ("fit", "scan")
# Divides the 10,000 test images: a jitted backend compiles one evaluation program per batch
# shape, and with 1024 the last batch (784) was a second one, seconds on a GPU.
EVALUATION_BATCH = 1000


def train_recipe(recipe, data, precision="float32", epochs=None, seed=0, loop="fit", **settings):
    """Trains a paper LeNet-5 with `recipe` on `data` and measures it.

    Args:
        recipe: A name in `lenet_tf.training.config.RECIPES`.
        data: `((x_train, y_train), (x_test, y_test))` as from `lenet_tf.data.load_mnist`.
        precision: A Keras dtype policy: `"float32"`, `"mixed_float16"` or `"mixed_bfloat16"`.
        epochs: Passes over the training images; defaults to the recipe's.
        seed: Seed of the weights and of the batch order.
        loop: `"fit"` (`model.fit`) or `"scan"` (JAX only: each epoch one compiled program,
            see `_fit_with_scan`).
        **settings: Other `TrainConfig` settings, over the recipe's (`learning_rate=5e-3`).

    Returns:
        A dict: `recipe`, `settings`, `precision`, `loop`, `seed`, `epochs`, `batch_size`, `fit_seconds`,
        `epoch_seconds` (each epoch's), `images_per_second` (epochs after the first, or the
        only one), `test_error`.
    """
    import keras

    from lenet_tf.data import steps_per_epoch
    from lenet_tf.model import build_lenet5
    from lenet_tf.training.config import TrainConfig
    from lenet_tf.training.recipes import compile_lenet5

    (x_train, y_train), (x_test, y_test) = data
    config = TrainConfig(recipe=recipe, epochs=epochs, seed=seed, **settings)
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    keras.config.set_dtype_policy(precision)
    try:
        model = build_lenet5("paper")
        compile_lenet5(model, config, steps_per_epoch(len(x_train), config.batch_size), jit_compile=True)
        fit = {"fit": _fit_with_keras, "scan": _fit_with_scan}[loop]
        start = time.perf_counter()
        ends, images_per_epoch = fit(model, x_train.astype("float32"), y_train.astype("int32"), config, seed)
        fit_seconds = time.perf_counter() - start
        test = model.evaluate(
            x_test.astype("float32"), y_test.astype("int32"), batch_size=EVALUATION_BATCH, verbose=0, return_dict=True
        )
    finally:
        keras.config.set_dtype_policy("float32")
    epoch_seconds = [end - begin for begin, end in zip([start, *ends], ends)]
    steady = epoch_seconds[1:] or epoch_seconds
    return {
        "recipe": recipe, "settings": settings, "precision": precision, "loop": loop, "seed": seed,
        "epochs": config.epochs, "batch_size": config.batch_size, "fit_seconds": round(fit_seconds, 2),
        "epoch_seconds": [round(seconds, 3) for seconds in epoch_seconds],
        "images_per_second": round(images_per_epoch * len(steady) / sum(steady)),
        "test_error": round(1.0 - float(test["accuracy"]), 5),
    }  # fmt: skip


def _fit_with_keras(model, x, y, config, seed):
    """`model.fit`, one line per epoch; returns the clock at each epoch's end, and images per epoch."""
    import keras

    ends = []
    timer = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: ends.append(time.perf_counter()))
    model.fit(x, y, batch_size=config.batch_size, epochs=config.epochs, verbose=2, callbacks=[timer])
    return ends, len(x)


def _fit_with_scan(model, x, y, config, seed):
    """Keras's own JAX training step, `jax.lax.scan`ned over each epoch's batches on the device.

    `model.fit` on JAX calls the compiled step from Python once per batch: about 1 ms of host
    work per step, more than the step itself on a GPU. Here each epoch is one compiled call over
    the training set held on the device; the step (`model.train_step`: loss, loss scaling,
    optimizer, weight average, metrics) is the one `fit` runs. The last partial batch of an
    epoch is dropped. Returns the clock at each epoch's end, and images per epoch.
    """
    import jax
    import keras
    import numpy as np

    if keras.backend.backend() != "jax":
        raise ValueError(f"`loop='scan'` needs the JAX backend, not {keras.backend.backend()}")
    batch_size = config.batch_size
    optimizer = model.optimizer
    # Builds the loss and the metrics, with the program the final evaluation runs again.
    model.evaluate(x[:EVALUATION_BATCH], y[:EVALUATION_BATCH], batch_size=EVALUATION_BATCH, verbose=0)
    owners = (model.trainable_variables, model.non_trainable_variables, optimizer.variables, model.metrics_variables)
    state = tuple([variable.value for variable in variables] for variables in owners)

    def one_step(state, batch):
        return model.train_step(state, batch)[1], None

    def run_epoch(state, xs, ys):
        return jax.lax.scan(one_step, state, (xs, ys))[0]

    run_epoch = jax.jit(run_epoch, donate_argnums=0)
    images, labels = jax.device_put(x), jax.device_put(y)
    steps, order, ends = len(x) // batch_size, np.random.default_rng(seed), []
    for _ in range(config.epochs):
        batches = order.permutation(len(x))[: steps * batch_size].reshape(steps, batch_size)
        state = jax.block_until_ready(run_epoch(state, images[batches], labels[batches]))
        ends.append(time.perf_counter())
    for variables, values in zip(owners, state):
        for variable, value in zip(variables, values):
            variable.assign(value)
    optimizer.finalize_variable_values(model.trainable_variables)  # the weight average
    return ends, steps * batch_size


def device_description():
    """The backend and the device Keras computes on: `"keras 3.15.1, jax 0.11.2 on gpu:0 (NVIDIA H200)"`."""
    import keras

    backend = keras.backend.backend()
    device = keras.distribution.list_devices()[0]
    version = __import__(backend).__version__  # "tensorflow", "jax" or "torch"
    name = ""
    if backend == "jax":
        import jax

        name = f" ({jax.devices()[0].device_kind})"
    elif backend == "tensorflow" and device.startswith("gpu"):
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[0])
        name = f" ({details.get('device_name', 'GPU')})"
    return f"keras {keras.__version__}, {backend} {version} on {device}{name}"


def markdown(device, results):
    lines = [
        f"Device: {device}", "",
        "| recipe | precision | loop | epochs | batch | fit wall (s) | images/s | test error |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for run in results:
        lines.append(
            f"| {run['recipe']} | {run['precision']} | {run['loop']} | {run['epochs']} | {run['batch_size']} "
            f"| {run['fit_seconds']:.1f} | {run['images_per_second']:,} | {100 * run['test_error']:.2f}% |"
        )
    return "\n".join(lines)


def build_parser(prog=None):
    from lenet_tf.training.config import RECIPES

    parser = base.ArgumentParser(
        prog=prog, description="Trains the recipes on the device Keras computes on: wall time, images/s, test error."
    )
    base.add_data_dir_argument(parser)
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["paper-schedule", "fast"])
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=["float32", "mixed_float16"])
    parser.add_argument("--loops", nargs="+", choices=LOOPS, default=["fit"],
                        help="fit: model.fit; scan: each epoch one compiled call (JAX only)")  # fmt: skip
    parser.add_argument("--epochs", type=base.positive_int, help="passes per run (default: each recipe's)")
    parser.add_argument("--train-limit", type=base.positive_int, help="train on the first N training images only")
    parser.add_argument("--seed", type=base.seed, default=0,
                        help="seed of the weights and the batch order (default: 0)")  # fmt: skip
    add_json_argument(parser)
    base.add_verbose_argument(parser)
    return parser


def check_loops_backend(loops, setting):
    """Raises `SettingError(setting)` if `loops` holds `"scan"` and Keras's backend is not JAX.

    A command calls it before loading anything, so that the error comes at once, in one line.
    """
    import keras

    from lenet_tf.errors import SettingError

    if "scan" in loops and keras.backend.backend() != "jax":
        raise SettingError(setting, f"scan needs the JAX backend (KERAS_BACKEND=jax), not {keras.backend.backend()}")


def execute(args):
    from lenet_tf.data import load_mnist

    check_loops_backend(args.loops, "loops")

    (x_train, y_train), test = load_mnist(args.data_dir)
    data = ((x_train[: args.train_limit], y_train[: args.train_limit]), test)
    device, results = device_description(), []
    for recipe in args.recipes:
        for precision in args.precisions:
            for loop in args.loops:
                results.append(train_recipe(recipe, data, precision, args.epochs, args.seed, loop))
                print(markdown(device, results[-1:]).splitlines()[-1], flush=True)
    report(markdown(device, results), {"device": device, "runs": results}, args.json)


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
