"""Training on more than one device with `tf.distribute`.

- `"default"`: one device (the first GPU, else the CPU).
- `"mirrored"`: `tf.distribute.MirroredStrategy`, synchronous data parallelism over the local
  GPUs (or over `cpu_devices` logical CPUs, for testing on a machine without GPUs).
- `"multiworker"`: `tf.distribute.MultiWorkerMirroredStrategy` across processes or machines,
  each described by the `TF_CONFIG` environment variable (see the README's "Scaling out").

The dataset's batch is the global batch: each of R replicas computes the gradient of
`batch_size / R` images and the gradients are summed, so a run's learning dynamics do not
depend on how many devices it uses.
"""

import json
import os
import sys

from lenet_tf.cli import UsageError

STRATEGIES = ("default", "mirrored", "multiworker")


def configure_cpu_devices(count):
    """Splits the CPU into `count` logical devices, so that `"mirrored"` has replicas to mirror.

    Must run before TensorFlow initialises its devices (before the first op).

    Args:
        count: Number of logical CPU devices, at least 1.
    """
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    except RuntimeError as err:  # Devices already initialised in this process.
        raise UsageError(f"--cpu-devices {count}: {err}") from err


def read_tf_config():
    """Returns the parsed `TF_CONFIG` for `"multiworker"`, after checking its shape.

    Raises:
        UsageError: If `TF_CONFIG` is unset, not JSON, or does not name this task in its cluster.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise UsageError(
            "--strategy multiworker: TF_CONFIG is not set; it must describe the cluster and this "
            'worker, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UsageError(
            f"--strategy multiworker: TF_CONFIG is not valid ({type(err).__name__}: {err}); "
            "expected cluster.worker (a list of host:port) and task.type / task.index"
        ) from err
    if task_type not in ("worker", "chief") or not isinstance(workers, list) or not workers:
        raise UsageError(
            "--strategy multiworker: TF_CONFIG needs a non-empty cluster.worker list and "
            "task.type worker or chief"
        )
    members = config["cluster"].get(task_type, [])
    if not 0 <= index < len(members):
        raise UsageError(
            f"--strategy multiworker: TF_CONFIG task {task_type}:{index} is not in its cluster "
            f"({len(members)} {task_type} address(es))"
        )
    return config


def is_chief(tf_config):
    """Whether this task writes the run's results: the chief, else worker 0 when there is none."""
    if tf_config is None:
        return True
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def task_name(tf_config):
    """`"chief"` or `"worker-<index>"`, used for the private folders of non-chief workers."""
    if tf_config is None or is_chief(tf_config):
        return "chief"
    return f"{tf_config['task']['type']}-{int(tf_config['task']['index'])}"


# The watchdog's own process: waits on its stdin; EOF (cancel, or the parent died) ends it
# quietly, the timeout prints the message and kills the parent.
_WATCHDOG = """
import os, select, signal, sys
parent, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], seconds)
if not ready:
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    os.kill(parent, signal.SIGKILL)
"""


class Watchdog:
    """Ends this process with a one-line error unless `cancel()` is called within `seconds`.

    TensorFlow waits for every worker of a `MultiWorkerMirroredStrategy` cluster to register
    before the first step, for up to an hour, inside C++ calls that hold the GIL: no Python
    signal handler or thread runs meanwhile, and TensorFlow swallows SIGTERM. So a mistyped
    address or a worker that never starts would hang the run. A tiny separate process watches
    the clock instead, and kills this one (SIGKILL, exit status 137) after printing `message`.
    Nothing is half-written when it fires: every file is written by temporary file + rename.

    Args:
        seconds: Time allowed.
        message: The error line (without `error: `).
    """

    def __init__(self, seconds, message):
        import subprocess

        self._process = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), f"error: {message}"],
            stdin=subprocess.PIPE,
        )

    def cancel(self):
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait()


def make_strategy(name, timeout_seconds=None):
    """Returns the `tf.distribute.Strategy` that `name` (one of `STRATEGIES`) asks for.

    Args:
        name: `"default"`, `"mirrored"` or `"multiworker"`.
        timeout_seconds: For `"multiworker"`: how long a collective operation (a gradient
            all-reduce) may wait for the other workers before the run fails instead of hanging.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        read_tf_config()
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.AUTO,
            timeout_seconds=timeout_seconds,
        )
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    raise ValueError(f"`name` must be one of {STRATEGIES}. Received: name={name!r}")



def smallest_across_workers(strategy, value):
    """The smallest of the integers `value` that every worker passes (a collective operation)."""
    import tensorflow as tf

    values = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant([value], dtype=tf.int64)
    )
    return int(tf.reduce_min(strategy.gather(values, axis=0)))


def patch_keras_for_multiworker(model, strategy, sample_batch):
    """Works around two Keras 3 bugs that stop `fit` under `MultiWorkerMirroredStrategy`.

    Both are keras-team/keras#20585 (open; checked with Keras 3.15), and both touch private
    Keras code, so this runs for `"multiworker"` only:

    1. `fit` first averages an input batch across replicas with `strategy.reduce` to build the
       model's state, which fails ("Attempt to convert a value (PerReplica...) to a Tensor").
       Building needs only shapes and dtypes: build from a local sample and skip the reduction.
    2. Each step averages its scalar logs (loss, accuracy) across workers with
       `strategy.reduce("MEAN", v, axis=0)`, which fails on a scalar ("Invalid reduction
       dimension 0 for input with 0 dimensions"). Average them with `axis=None` instead: the
       mean over replicas, what single-machine strategies compute.

    Args:
        model: A compiled model, created in `strategy.scope()`.
        strategy: The `MultiWorkerMirroredStrategy`.
        sample_batch: `(images, labels)` with the dtypes and per-image shapes of the training
            batches.
    """
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer as tf_trainer

    with strategy.scope():
        model._symbolic_build(data_batch=sample_batch)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    original = tf_trainer.reduce_per_replica
    if getattr(original, "lenet_tf_patch", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    reduce_per_replica.lenet_tf_patch = True
    tf_trainer.reduce_per_replica = reduce_per_replica
