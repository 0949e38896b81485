"""The three contenders behind one interface, each in its own worker process.

A trainer has `batch_size`, `train(steps, every=None, callback=None)` and
`accuracy(images, labels)`; `images_per_second` times any of them:

- `"paper"`: lenet_tf's paper LeNet-5, compiled as `lenet-tf train --recipe fast` compiles it
  (Muon for the kernels, AdamW for the vectors, one-cycle schedule, weight average, MAP loss),
  trained with `model.fit`.
- `"stock"`: the stock-Keras LeNet (`benchmarks.stock_lenet`) with the same optimizer and
  cross-entropy, through the same `model.fit`, in-memory stream and `steps_per_execution`.
- `"torch"`: the same stock LeNet in PyTorch (`benchmarks.torch_lenet`), the same recipe in
  PyTorch's tools, when PyTorch is installed.

Any of them can swap the recipe's Muon for AdamW (`make_trainer`'s `optimizer`, the benchmarks'
`--optimizer`), each in its own library.

`TrainerProcess` runs one trainer in a process of its own. TensorFlow's and PyTorch's thread
pools both size themselves to every core and spin briefly when idle; in one process, each
library's idle threads would slow the other's measurement. A worker waits on a pipe between
requests, so the benchmarks can alternate between contenders and each runs alone. The Keras
workers turn TensorFlow's oneDNN kernels on unless `TF_ENABLE_ONEDNN_OPTS` says otherwise, as
`lenet-tf train` does.
"""

import multiprocessing
import time

from lenet_tf.training.config import RECIPES

CONTENDERS = ("paper", "stock", "torch")
# Every contender trains with the `fast` recipe, at its batch size unless a benchmark says otherwise.
FAST_BATCH_SIZE = RECIPES["fast"]["batch_size"]
# The optimizers every contender has in its own library; the recipe's first. PyTorch's Muon
# orthogonalises in bfloat16, which CPUs without native bfloat16 (AVX2 alone) emulate 7x slower
# than float32 (docs/performance.md): `adamw` compares the tools there without that.
OPTIMIZERS = (RECIPES["fast"]["optimizer"], "adamw")


class KerasTrainer:
    """`model.fit` on the infinite in-memory MNIST stream of `lenet_tf.data`.

    Args:
        model: A compiled Keras model.
        dataset: The `lenet_tf.data.make_dataset` training stream.
        batch_size: Images per step (the stream's batch size).
    """

    def __init__(self, model, dataset, batch_size):
        self.model, self.dataset, self.batch_size = model, dataset, batch_size
        self._epoch = 0

    def train(self, steps, every=None, callback=None):
        """Runs `steps` training steps in one `fit`.

        Args:
            steps: Training steps.
            every: With `callback`: call it after every `every` steps (`steps` must be a
                multiple).
            callback: `callback(steps_done) -> bool`; True stops training there.
        """
        import keras

        every = every or steps
        first_epoch = self._epoch
        callbacks = []
        if callback is not None:
            callbacks.append(
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda epoch, logs: setattr(
                        self.model, "stop_training", callback((epoch + 1 - first_epoch) * every)
                    )
                )
            )
        # Each chunk is a Keras "epoch", numbered on across calls, so the learning-rate
        # schedule keeps counting steps from where the last call stopped.
        history = self.model.fit(
            self.dataset, initial_epoch=first_epoch, epochs=first_epoch + steps // every,
            steps_per_epoch=every, callbacks=callbacks, shuffle=False, verbose=0,
        )  # fmt: skip
        self._epoch = first_epoch + len(history.epoch)

    def accuracy(self, images, labels):
        """Fraction of `images` (raw `(N, 28, 28)`) classified as `labels`.

        With a weight average (the paper recipe), the averaged weights are what training would
        end with if it stopped here, so they are the ones measured; training then goes on from
        the raw weights.
        """
        from lenet_tf.evaluation import evaluate_model

        optimizer, variables = self.model.optimizer, self.model.trainable_variables
        if not optimizer.use_ema:
            return evaluate_model(self.model, images, labels)["test_accuracy"]
        raw = [variable.numpy() for variable in variables]
        optimizer.finalize_variable_values(variables)  # the averages, into the variables
        try:
            return evaluate_model(self.model, images, labels)["test_accuracy"]
        finally:
            for variable, value in zip(variables, raw):
                variable.assign(value)

    def save(self, path):
        """Saves the model as a `.keras` file."""
        self.model.save(path)


def images_per_second(trainer, steps):
    """Training images/s of `trainer` over `steps` steps, timed inside one `train` call.

    The call runs `2 * steps` steps and times the second half: every `model.fit` call costs
    Keras about 2 s before its first step (it traces its multi-step training function again),
    which timing a whole call would count as training time.
    """
    marks = []

    def mark(steps_done):
        marks.append(time.perf_counter())
        return False

    trainer.train(2 * steps, every=steps, callback=mark)
    return steps * trainer.batch_size / (marks[1] - marks[0])


def add_contender_arguments(parser, batch_size=True):
    """Adds the flags of a benchmark that trains the contenders: --data-dir, --optimizer and, with
    `batch_size`, --batch-size (one for every contender)."""
    from lenet_tf.commands import base

    parser.add_argument("--data-dir", metavar="DIR", help="MNIST IDX folder (default: $LENET_MNIST_DIR, else TFDS)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=OPTIMIZERS[0],
                        help="every contender's optimizer, each library's own, at the fast recipe's peak rate: "
                             "muon (the recipe's; PyTorch's orthogonalises in bfloat16, slow on CPUs without it) "
                             "or adamw (default: %(default)s)")  # fmt: skip
    if batch_size:
        parser.add_argument("--batch-size", type=base.positive_int, default=FAST_BATCH_SIZE, metavar="N",
                            help=f"training images per step for every contender (default: {FAST_BATCH_SIZE}, "
                                 "the fast recipe's)")  # fmt: skip


def available_contenders():
    """The contenders this environment can run: PyTorch's only when it is installed."""
    from benchmarks import torch_lenet

    return tuple(name for name in CONTENDERS if name != "torch" or torch_lenet.available())


def make_trainer(name, x_train, y_train, batch_size, total_steps, steps_per_call, seed=0, optimizer=OPTIMIZERS[0]):
    """One freshly initialised contender, set up with the `fast` recipe over `total_steps`.

    Every contender gets the recipe of `lenet-tf train --recipe fast` (its optimizer, the one-cycle
    learning-rate schedule, its peak and weight decay, a weight average) spanning `total_steps`,
    each through its own library: the comparison is about the tools, not the recipe.

    Args:
        name: `"paper"`, `"stock"` or `"torch"`.
        x_train: uint8 `(N, 28, 28)` training pixels.
        y_train: `(N,)` digits.
        batch_size: Images per step.
        total_steps: Steps the trainer will run in all (the schedule and the average span them).
        steps_per_call: Steps each `train` call will run: the Keras models' `steps_per_execution`
            is the largest divisor of it up to the `TrainConfig` default, as in `lenet_tf.training`.
        seed: Seed of the weights and the data order.
        optimizer: One of `OPTIMIZERS` (the recipe's by default), at the recipe's peak learning rate.
    """
    from lenet_tf.training.config import TrainConfig
    from lenet_tf.training.recipes import ema_momentum

    if name not in CONTENDERS:
        raise ValueError(f"`name` must be one of {CONTENDERS}. Received: name={name!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}. Received: optimizer={optimizer!r}")
    # One "epoch" of `total_steps` steps: the recipe's schedule spans exactly the benchmark's steps.
    config = TrainConfig(recipe="fast", epochs=1, batch_size=batch_size, seed=seed, optimizer=optimizer,
                         learning_rate=RECIPES["fast"]["learning_rate"])  # fmt: skip
    if name == "torch":
        from benchmarks.torch_lenet import TorchTrainer

        return TorchTrainer(
            x_train, y_train, batch_size, total_steps, config.initial_learning_rate(),
            config.weight_decay, ema_momentum(total_steps), seed=seed, optimizer=config.optimizer,
        )  # fmt: skip
    import keras

    from lenet_tf.data import make_dataset
    from lenet_tf.training.recipes import effective_steps_per_execution

    keras.utils.set_random_seed(seed)
    steps_per_execution = effective_steps_per_execution(steps_per_call, config.steps_per_execution)
    model = compiled_keras_contender(name, config, total_steps, steps_per_execution)
    dataset = make_dataset(x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed)
    return KerasTrainer(model, dataset, batch_size)


def compiled_keras_contender(name, config, steps_per_epoch, steps_per_execution):
    """A freshly initialised `"paper"` or `"stock"` Keras model, compiled with `config`'s recipe.

    Args:
        name: `"paper"` or `"stock"`.
        config: A `TrainConfig`; its schedule and weight average span `config.epochs` epochs.
        steps_per_epoch: Training steps per epoch.
        steps_per_execution: Training steps per compiled call of `fit`.
    """
    from benchmarks.stock_lenet import build_stock_lenet, compile_stock_lenet
    from lenet_tf.model import build_lenet5
    from lenet_tf.training.recipes import compile_lenet5, make_optimizer

    if name == "paper":
        model = build_lenet5("paper")
        compile_lenet5(model, config, steps_per_epoch, jit_compile=False, steps_per_execution=steps_per_execution)
    elif name == "stock":
        model = build_stock_lenet()
        compile_stock_lenet(model, make_optimizer(config, steps_per_epoch), steps_per_execution)
    else:
        raise ValueError(f"`name` must be \"paper\" or \"stock\". Received: name={name!r}")
    return model


def _serve(connection, name, data_dir, trainer_args):
    """Worker body: builds the trainer, then answers `(method, args)` requests until None."""
    import os

    from lenet_tf.commands import base

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if name != "torch":
        base.prefer_onednn()  # both Keras models train as `lenet-tf train` would
    from benchmarks.time_to_accuracy import time_to_accuracy
    from lenet_tf.data import load_mnist

    (x_train, y_train), (x_test, y_test) = load_mnist(data_dir)
    trainer = make_trainer(name, x_train, y_train, **trainer_args)
    methods = {
        "images_per_second": lambda steps: images_per_second(trainer, steps),
        "train": trainer.train,
        "time_to_accuracy": lambda *args: time_to_accuracy(trainer, x_test, y_test, *args),
        "save": getattr(trainer, "save", None),
    }
    connection.send(("ready", None))
    while (request := connection.recv()) is not None:
        method, args = request
        try:
            connection.send(("ok", methods[method](*args)))
        except Exception as err:  # sent back and raised in the parent, with the worker's message
            connection.send(("error", f"{name} worker: {type(err).__name__}: {err}"))


class TrainerProcess:
    """A contender in a worker process; its methods block until the worker answers.

    Args:
        name: `"paper"`, `"stock"` or `"torch"`.
        data_dir: MNIST folder for `lenet_tf.data.load_mnist` (None: its default).
        **trainer_args: `make_trainer`'s `batch_size`, `total_steps`, `steps_per_call`, `seed`,
            `optimizer`.
    """

    def __init__(self, name, data_dir=None, **trainer_args):
        self.name = name
        context = multiprocessing.get_context("spawn")  # no TensorFlow state forked into it
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, name, data_dir, trainer_args), daemon=True)
        self._process.start()
        child.close()  # the worker holds it now; if the worker dies, recv() sees EOF
        self._receive()

    def _receive(self):
        try:
            status, value = self._connection.recv()
        except EOFError:
            self._process.join(timeout=5)
            raise RuntimeError(f"{self.name} worker exited with status {self._process.exitcode}") from None
        if status == "error":
            raise RuntimeError(value)
        return value

    def _call(self, method, *args):
        self._connection.send((method, args))
        return self._receive()

    def images_per_second(self, steps):
        return self._call("images_per_second", steps)

    def train(self, steps):
        return self._call("train", steps)

    def time_to_accuracy(self, target, checks, steps_per_check):
        return self._call("time_to_accuracy", target, checks, steps_per_check)

    def save(self, path):
        return self._call("save", str(path))

    def close(self):
        """Stops the worker."""
        if self._process.is_alive():
            self._connection.send(None)
            self._process.join(timeout=30)
        self._process.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
