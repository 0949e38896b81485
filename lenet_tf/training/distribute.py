"""Training on more than one device with `tf.distribute`, and what that needs around Keras.

- `"default"`: one device (the first GPU, else the CPU).
- `"mirrored"`: `tf.distribute.MirroredStrategy`, synchronous data parallelism over the local
  GPUs (or over `cpu_devices` logical CPUs, for testing on a machine without GPUs).
- `"multiworker"`: `tf.distribute.MultiWorkerMirroredStrategy` across processes or machines,
  each described by the `TF_CONFIG` environment variable (see `docs/training.md`).

The dataset's batch is the global batch: each of R replicas computes the gradient of
`batch_size / R` images and the gradients are summed, so a run's learning dynamics do not
depend on how many devices it uses.

The Keras 3.15 work-arounds live here, each applied only for the strategy that needs it and,
where it touches Keras itself, undone when training ends.

>>> tf_config = {"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}
>>> is_chief(tf_config), task_name(tf_config), worker_count(tf_config)
(False, 'worker-1', 2)
"""

import contextlib
import json
import os
import subprocess
import sys

import tensorflow as tf

from lenet_tf.errors import SettingError, first_line

# What TensorFlow raises in a multi-worker run when another worker dies or cannot be reached.
LOST_WORKER_ERRORS = (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError)
TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
)


def configure_cpu_devices(count):
    """Splits the CPU into `count` logical devices, so that `"mirrored"` has replicas to mirror.

    Must run before TensorFlow initialises its devices (before the first op).

    Args:
        count: Number of logical CPU devices, at least 1.

    Raises:
        SettingError: For `cpu_devices`, if this process already initialised its devices.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        devices = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        tf.config.set_logical_device_configuration(cpu, devices)
    except RuntimeError as err:
        raise SettingError("cpu_devices", f"{count}: {first_line(err)}") from err


def read_tf_config():
    """The parsed `TF_CONFIG` of a `"multiworker"` run, after checking its shape.

    Returns:
        A dict with `cluster` (job name -> list of `host:port`) and `task` (`type`, `index`).

    Raises:
        SettingError: For `strategy`, if `TF_CONFIG` is unset, not JSON, or does not name this
            task in its cluster.
    """
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise _tf_config_error(f"is not set; it must describe the cluster and this worker, e.g. {TF_CONFIG_EXAMPLE}")
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise _tf_config_error(
            f"is not valid ({type(err).__name__}: {err}); expected cluster.worker (a list of host:port) "
            "and task.type / task.index"
        ) from err
    if task_type not in ("worker", "chief") or not isinstance(workers, list) or not workers:
        raise _tf_config_error("needs a non-empty cluster.worker list and task.type worker or chief")
    members = config["cluster"].get(task_type, [])
    if not 0 <= index < len(members):
        raise _tf_config_error(
            f"task {task_type}:{index} is not in its cluster ({len(members)} {task_type} address(es))"
        )
    return config


def _tf_config_error(problem):
    return SettingError("strategy", f"multiworker: TF_CONFIG {problem}")


def is_chief(tf_config):
    """Whether this task writes the run's results: the chief, else worker 0 when there is none.

    Args:
        tf_config: From `read_tf_config`, or None for a single-process run.
    """
    if tf_config is None:
        return True
    task = tf_config["task"]
    if "chief" in tf_config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def task_name(tf_config):
    """`"chief"` or `"<type>-<index>"`, the name of a non-chief worker's private folder."""
    if is_chief(tf_config):
        return "chief"
    return f"{tf_config['task']['type']}-{int(tf_config['task']['index'])}"


def worker_count(tf_config):
    """The processes that train: the cluster's chief and workers (1 without a cluster)."""
    if tf_config is None:
        return 1
    return sum(len(tf_config["cluster"].get(job, [])) for job in ("chief", "worker"))


def make_strategy(name):
    """The `tf.distribute.Strategy` that `name` (one of `STRATEGIES`) asks for.

    Args:
        name: `"default"`, `"mirrored"` or `"multiworker"` (which reads `TF_CONFIG`).
    """
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        read_tf_config()
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def steps_per_execution(strategy_name, requested):
    """`requested`, or 1 under a `tf.distribute` strategy.

    Keras 3.15 fails to run several steps per execution under any `tf.distribute` strategy
    ("You must feed a value for placeholder tensor", keras-team/keras#19246).
    """
    return requested if strategy_name == "default" else 1


def smallest_across_workers(strategy, value):
    """The smallest of the integers `value` that every worker passes (a collective operation).

    Workers save their backups one after the other, so a worker killed between two saves may
    hold one more epoch than the others: they resume from an epoch all of them hold.
    """
    values = strategy.experimental_distribute_values_from_function(lambda context: tf.constant([value], tf.int64))
    return int(tf.reduce_min(strategy.gather(values, axis=0)))


def shard_by_data(dataset):
    """`dataset` split between the workers batch by batch, not file by file (it is in memory).

    None stays None.
    """
    if dataset is None:
        return None
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def lost_worker_message(err, epoch):
    """The one line for a multi-worker run that lost a worker (`err`, one of `LOST_WORKER_ERRORS`)."""
    reason = next((line.strip() for line in str(err).splitlines() if "aborted" in line.lower()), type(err).__name__)
    return (
        f"strategy multiworker: lost a worker ({reason}); the backup of epoch {epoch} is kept: restart "
        "every worker with the same command to resume"
    )


def keras_fixes(strategy_name, model, strategy, sample_batch):
    """The work-arounds `fit` needs under `strategy_name`, as a context manager.

    `keras_multiworker_fixes` for `"multiworker"`; nothing for the others (their one fix,
    `steps_per_execution`, is applied when compiling).
    """
    if strategy_name == "multiworker":
        return keras_multiworker_fixes(model, strategy, sample_batch)
    return contextlib.nullcontext()


@contextlib.contextmanager
def keras_multiworker_fixes(model, strategy, sample_batch):
    """Works around two Keras 3.15 bugs that stop `fit` under `MultiWorkerMirroredStrategy`.

    Both are keras-team/keras#20585 (open), and both touch private Keras code, so they apply to
    `"multiworker"` runs only and are undone when the block ends:

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

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and tf_trainer._collective_all_reduce_multi_worker(strategy):
            return tree.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
        return original(values, strategy, reduction)

    tf_trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        tf_trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


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

    Use it as a context manager: leaving the block cancels it.

    Args:
        seconds: Time allowed.
        message: The error line (without `error: `).
    """

    def __init__(self, seconds, message):
        self._process = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(seconds), f"error: {message}"],
            stdin=subprocess.PIPE,
            # Where our own messages go: a command holds back file descriptor 2 (dependency logs).
            stderr=_stderr_descriptor(),
        )

    def cancel(self):
        """Stops the watchdog (again: no effect)."""
        if self._process.stdin and not self._process.stdin.closed:
            self._process.stdin.close()
            self._process.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.cancel()


def _stderr_descriptor():
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a stream without a descriptor
        return None


def worker_watchdog(config, tf_config):
    """A `Watchdog` for a `"multiworker"` run's start (`config.worker_timeout`), else a no-op."""
    if config.strategy != "multiworker":
        return contextlib.nullcontext()
    return Watchdog(
        config.worker_timeout,
        f"strategy multiworker: the {worker_count(tf_config)} workers in TF_CONFIG did not all start training "
        f"within {config.worker_timeout:g} s (worker_timeout); check that each one runs with the same cluster "
        "list and its own task index, and that the addresses are reachable",
    )
