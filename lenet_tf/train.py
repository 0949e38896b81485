"""Trains LeNet-5 on MNIST with `model.fit`.

Usage:

    python -m lenet_tf.train --out runs/paper              # the paper's network, 20 epochs
    python -m lenet_tf.train --out runs/paper-distort --distort
    python -m lenet_tf.train --variant modern --out runs/modern

Writes into the run folder: `model.keras`, `metrics.json`, `training_log.csv` and, when the
`tensorboard` package is installed, TensorBoard logs under `logs/`. While training, `backup/`
holds the last completed epoch; rerunning the same command after an interruption (a kill,
Ctrl-C, a crash) resumes from there. More devices: `--strategy mirrored` (local GPUs) or
`--strategy multiworker` (machines listed in `$TF_CONFIG`); see `lenet_tf.distribute`.
"""

import argparse
import contextlib
import csv
import dataclasses
import importlib.util
import json
import math
import os
import pathlib
import platform
import shutil
import signal
import sys
import threading
import time

from lenet_tf import cli
from lenet_tf.distribute import STRATEGIES

SCHEDULES = ("paper", "cosine", "constant")
OPTIMIZERS = ("adam", "adamw", "sgd")

# The paper's global learning rate per pass (section III.B), as multiples of its first value
# 0.0005: passes 1-2, 3-5, 6-8, 9-12, then 13 on.
PAPER_SCHEDULE_BOUNDARIES = (2, 5, 8, 12)
PAPER_SCHEDULE_FACTORS = (1.0, 0.4, 0.2, 0.1, 0.02)


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run. The defaults reproduce the README's results.

    Args:
        variant: `"paper"` or `"modern"`.
        epochs: Passes over the training set. The paper made 20.
        batch_size: Images per update.
        optimizer: `"adam"`, `"adamw"` or `"sgd"` (with Nesterov momentum 0.9).
        learning_rate: Initial learning rate.
        schedule: `"paper"` (steps down after epochs 2, 5, 8, 12 by the paper's ratios),
            `"cosine"` or `"constant"`.
        weight_decay: Decoupled weight decay for `"adamw"`.
        ema: Keep an exponential moving average of the weights (momentum `ema_momentum`)
            and end training with it, a cheap ensemble over the last thousand steps.
        map_j: The constant `j` of the MAP loss (paper variant).
        distort: Random affine distortions of the training images, as the paper's 0.8% run.
        seed: Seed of the initial weights, the data order and the distortions.
        deterministic: Make TensorFlow's ops deterministic, so two runs give identical weights.
        data_dir: Folder with the MNIST IDX files; None uses `$LENET_MNIST_DIR` or TFDS.
        out: Run folder.
        train_limit: Use only the first N training images (for quick checks).
        steps_per_execution: Training steps per call into the compiled function.
        jit_compile: `"auto"` (XLA on a GPU only), `"on"` or `"off"`.
        mixed_precision: Compute in float16 with float32 weights (for GPUs with tensor cores).
        trainable_centers: Train the RBF centres too (the paper keeps them fixed).
        verbose: Keras progress bar setting for `fit`.
        strategy: `"default"` (one device), `"mirrored"` (all local GPUs) or `"multiworker"`
            (the cluster in `$TF_CONFIG`); see `lenet_tf.distribute`.
        cpu_devices: Split the CPU into this many logical devices (for `"mirrored"` without
            GPUs, as the tests do). Must be set before TensorFlow initialises its devices.
        worker_timeout: For `"multiworker"`: seconds to wait for every worker to start
            training before failing, instead of waiting (TensorFlow's default) an hour.
        validation: Measure the test error after every epoch (logged as `val_*`). The final
            test error in `metrics.json` is measured either way.
    """

    variant: str = "paper"
    epochs: int = 20
    batch_size: int = 32
    optimizer: str = "adamw"
    learning_rate: float = 2e-3
    schedule: str = "cosine"
    weight_decay: float = 0.05
    ema: bool = True
    map_j: float = 1.0
    distort: bool = False
    seed: int = 0
    deterministic: bool = False
    data_dir: str | None = None
    out: str = "runs/lenet5"
    train_limit: int | None = None
    steps_per_execution: int = 8
    jit_compile: str = "auto"
    mixed_precision: bool = False
    trainable_centers: bool = False
    verbose: str | int = "auto"
    strategy: str = "default"
    cpu_devices: int | None = None
    worker_timeout: float = 300.0
    validation: bool = True


def learning_rate_schedule(config, steps_per_epoch):
    """Returns the learning rate, or a Keras schedule over training steps, for `config`."""
    import keras

    if config.schedule == "constant":
        return config.learning_rate
    if config.schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * steps_per_epoch
        )
    return keras.optimizers.schedules.PiecewiseConstantDecay(
        [b * steps_per_epoch for b in PAPER_SCHEDULE_BOUNDARIES],
        [config.learning_rate * f for f in PAPER_SCHEDULE_FACTORS],
    )


def ema_momentum(total_steps):
    """Momentum of the weight average: 0.999, shortened so it spans at most ~5% of the run.

    Keras starts the average at the first step's weights; with a fixed 0.999 a run of a few
    hundred steps would end on weights still mostly at their initial values.
    """
    return min(0.999, max(0.0, 1.0 - 20.0 / total_steps))


def make_optimizer(config, steps_per_epoch):
    """Returns the Keras optimizer `config` asks for."""
    import keras

    learning_rate = learning_rate_schedule(config, steps_per_epoch)
    ema = {"use_ema": config.ema, "ema_momentum": ema_momentum(config.epochs * steps_per_epoch)}
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, **ema)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay, **ema)
    return keras.optimizers.Adam(learning_rate, **ema)


def compile_lenet5(model, config, steps_per_epoch, jit_compile, steps_per_execution=None):
    """Compiles `model` with the loss and accuracy its variant needs.

    Args:
        model: A model from `build_lenet5`.
        config: A `TrainConfig`.
        steps_per_epoch: Training steps per epoch, for the learning-rate schedule.
        jit_compile: Whether to compile the training step with XLA.
        steps_per_execution: Overrides `config.steps_per_execution` (see
            `effective_steps_per_execution`).
    """
    import keras

    from lenet_tf.losses import MAPLoss
    from lenet_tf.metrics import NearestPrototypeAccuracy
    from lenet_tf.model import model_variant

    if model_variant(model) == "paper":
        loss, accuracy = MAPLoss(j=config.map_j), NearestPrototypeAccuracy()
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        loss=loss,
        metrics=[accuracy],
        steps_per_execution=steps_per_execution or config.steps_per_execution,
        jit_compile=jit_compile,
    )


def effective_steps_per_execution(steps_per_epoch, requested):
    """The largest divisor of `steps_per_epoch` that is at most `requested`.

    Keras runs whole executions of `steps_per_execution` steps, so with a count that does not
    divide the epoch, each epoch would take a few batches of the next one's data: the learning
    rate schedule would drift and a resumed run would see other batches than an uninterrupted one.
    """
    return max(d for d in range(1, min(requested, steps_per_epoch) + 1) if steps_per_epoch % d == 0)


# What a backup must agree on with the run resuming from it: everything that changes the
# trajectory of the weights. Paths and display settings may differ.
_NOT_IN_FINGERPRINT = (
    "out", "data_dir", "verbose", "steps_per_execution", "jit_compile", "validation", "worker_timeout",
)  # fmt: skip


def config_fingerprint(config):
    """The settings of `config` that a resumed run must share with its backup."""
    settings = dataclasses.asdict(config)
    return {key: value for key, value in settings.items() if key not in _NOT_IN_FINGERPRINT}


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; training stopped at the end of a step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TrainingDiverged(Exception):
    """The training loss became NaN or infinite."""


def read_backup(backup_dir, fingerprint):
    """The epochs a run's backup holds: `(last completed epoch, {epoch: weights file})`.

    The backup keeps the last two epochs, so that the workers of a multi-worker run, which
    save one after the other, can always agree on an epoch they all hold. Without a backup,
    returns `(0, {})`.

    Raises:
        UsageError: If the backup is unreadable or belongs to a run with other settings.
    """
    metadata_path = backup_dir / "training_metadata.json"
    if not metadata_path.exists():
        return 0, {}
    restart = f"delete {backup_dir} to start over"
    try:
        metadata = json.loads(metadata_path.read_text())
        epoch, weights = int(metadata["epoch"]), backup_dir / metadata["weights"]
    except (ValueError, KeyError, TypeError) as err:
        raise cli.UsageError(f"{metadata_path}: unreadable backup ({err}); {restart}") from err
    saved = metadata.get("config", {})
    changed = sorted(key for key in set(saved) | set(fingerprint) if saved.get(key) != fingerprint.get(key))
    if changed:
        differences = ", ".join(f"{key} {saved.get(key)!r} there, {fingerprint.get(key)!r} now" for key in changed)
        raise cli.UsageError(
            f"{backup_dir}: holds an interrupted run with other settings ({differences}); "
            f"rerun with the same options to resume it, or {restart}"
        )
    if not weights.is_file():
        raise cli.UsageError(f"{weights}: missing from the backup; {restart}")
    available = {epoch: weights}
    previous = metadata.get("previous")
    if previous and (backup_dir / previous).is_file():
        available[epoch - 1] = backup_dir / previous
    return epoch, available


def _backup_callback_class():
    import keras

    from lenet_tf.files import atomic_path, write_json

    class EpochBackup(keras.callbacks.Callback):
        """Saves the weights and optimizer state after every completed epoch, atomically.

        Unlike `keras.callbacks.BackupAndRestore`, a kill at any moment leaves a consistent
        backup: the weights of epoch N go to a new file by temporary file + rename, then the
        metadata naming it and epoch N-1's file (written the same way), then older files are
        removed. A backup is deleted only after `model.keras` and `metrics.json` are written.
        """

        def __init__(self, folder, fingerprint, steps_per_epoch):
            super().__init__()
            self.folder = folder
            self.fingerprint = fingerprint
            self.steps_per_epoch = steps_per_epoch
            self.last_epoch = None

        def on_epoch_end(self, epoch, logs=None):
            completed = epoch + 1
            name = f"epoch-{completed}.weights.h5"
            with atomic_path(self.folder / name) as tmp:
                self.model.save_weights(tmp)
            previous = f"epoch-{completed - 1}.weights.h5"
            write_json(
                self.folder / "training_metadata.json",
                {"epoch": completed, "batch": 0, "weights": name, "config": self.fingerprint,
                 "previous": previous if (self.folder / previous).is_file() else None,
                 "steps": completed * self.steps_per_epoch},
            )  # fmt: skip
            for old in self.folder.glob("epoch-*.weights.h5"):
                if old.name not in (name, previous):
                    old.unlink(missing_ok=True)
            self.last_epoch = completed

    return EpochBackup


def _guard_callback_class():
    import keras

    class Guard(keras.callbacks.Callback):
        """Stops at the end of a step on SIGINT/SIGTERM, stops on a NaN loss, records memory.

        A second signal stops at once (KeyboardInterrupt). Adds `rss_mb`, the process's
        resident memory, to each epoch's logs (so to `training_log.csv`).
        """

        def __init__(self, on_first_step=None):
            super().__init__()
            self.signum = None
            self.rss_mb = []
            self.on_first_step = on_first_step

        def handle(self, signum, frame):
            if self.signum is not None:
                raise KeyboardInterrupt
            self.signum = signum
            print(
                f"\n{signal.Signals(signum).name}: stopping after the current step "
                "(send it again to stop at once)",
                file=sys.stderr,
                flush=True,
            )

        def on_train_batch_end(self, batch, logs=None):
            if self.on_first_step is not None:
                self.on_first_step()
                self.on_first_step = None
            if self.signum is not None:
                raise TrainingInterrupted(self.signum)

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(float(loss)):
                raise TrainingDiverged(f"loss is {float(loss)} after epoch {epoch + 1}")
            self.rss_mb.append(round(resident_memory_mb(), 1))
            if logs is not None:
                logs["rss_mb"] = self.rss_mb[-1]

    return Guard


def resident_memory_mb():
    """This process's resident memory in MiB (Linux `/proc`, else the peak from `resource`)."""
    try:
        pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextlib.contextmanager
def _signals_to(handler):
    """Routes SIGINT and SIGTERM to `handler` inside the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@contextlib.contextmanager
def _run_folder_lock(folder):
    """Holds an exclusive lock on `folder` so that two trainings never share a run folder.

    The lock is an `fcntl.flock` on `folder/.lock`; the system releases it when the process
    ends, even by SIGKILL, so a killed run never leaves a stale lock.
    """
    try:
        import fcntl
    except ImportError:  # Not POSIX: no lock.
        yield
        return
    with open(folder / ".lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            raise cli.UsageError(
                f"--out {folder}: another training is running in this folder ({owner}); "
                "wait for it or choose another --out"
            ) from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remove_stale_temporaries(*folders):
    """Removes the temporary folders `atomic_path` left behind when a run was killed."""
    ours = ("model.keras", "metrics.json", "training_log.csv", "training_metadata.json", "epoch-")
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_dir() and path.name.startswith(tuple("." + name for name in ours)):
                    shutil.rmtree(path, ignore_errors=True)


def _trim_training_log(path, epochs):
    """Keeps the header and the rows of epochs before `epochs` in `training_log.csv`."""
    from lenet_tf.files import atomic_path

    if not path.exists():
        return
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and row[0].isdigit() and int(row[0]) < epochs]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as file:
            csv.writer(file).writerows(kept)


def _save_atomically(path, write):
    """Calls `write(tmp)` and renames `tmp` onto `path`; an `OSError` names `path`, not `tmp`."""
    from lenet_tf.files import atomic_path

    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def _write_metrics(path, metrics):
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")


def library_versions():
    """Versions of what produced a result, for metrics.json."""
    import keras
    import numpy as np
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def _check_out_folder(out):
    if out.exists() and not out.is_dir():
        raise cli.UsageError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK | os.X_OK):
        raise cli.UsageError(f"--out {out}: folder is not writable")


def train(config):
    """Trains a LeNet-5 as `config` says and writes the run folder.

    The run folder gets `model.keras`, `metrics.json`, `training_log.csv` and TensorBoard logs
    in `logs/`, each written by temporary file + rename. While training, `backup/` holds the
    weights and optimizer state of the last completed epoch; calling `train` again with the
    same config resumes from there, on the same data stream, so it ends with the same weights
    as an uninterrupted run. SIGINT or SIGTERM stops at the end of the current step, keeps the
    backup and saves the current weights to `model.keras` (see `metrics["interrupted"]`).

    Args:
        config: A `TrainConfig`.

    Returns:
        The metrics written to `metrics.json`, as a dict.

    Raises:
        UsageError: Bad settings or files, a backup of a run with other settings, another run
            in the same folder, or a diverged training (NaN loss).
        MNISTDataError: Missing or malformed MNIST files.
    """
    out = pathlib.Path(config.out)
    if config.cpu_devices and config.strategy == "default":
        raise cli.UsageError("--cpu-devices: needs --strategy mirrored or multiworker")
    from lenet_tf.distribute import configure_cpu_devices, is_chief, read_tf_config, task_name

    tf_config = read_tf_config() if config.strategy == "multiworker" else None
    chief = is_chief(tf_config)
    # Only the chief writes the run folder; other workers keep their state (backup, logs) in a
    # private folder inside it, deleted when training completes.
    work = out if chief else out / f".{task_name(tf_config)}"
    _check_out_folder(work)
    with _run_folder_lock(work):
        _remove_stale_temporaries(work, work / "backup")
        if config.cpu_devices:
            configure_cpu_devices(config.cpu_devices)
        return _train_locked(config, out, work, chief, tf_config)


def _train_locked(config, out, work, chief, tf_config):
    import keras
    import numpy as np
    import tensorflow as tf

    from lenet_tf.data import load_mnist, make_dataset, steps_per_epoch
    from lenet_tf.distribute import make_strategy
    from lenet_tf.evaluate import evaluate_model
    from lenet_tf.model import build_lenet5

    backup_dir = work / "backup"
    fingerprint = config_fingerprint(config)
    first_epoch, backups = read_backup(backup_dir, fingerprint)
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    watchdog = None
    if config.strategy == "multiworker":
        from lenet_tf.distribute import Watchdog

        workers = sum(len(tf_config["cluster"].get(job, [])) for job in ("chief", "worker"))
        watchdog = Watchdog(
            config.worker_timeout,
            f"--strategy multiworker: the {workers} workers in TF_CONFIG did not all start "
            f"training within --worker-timeout {config.worker_timeout:g} s; check that each one "
            "runs with the same cluster list and its own task index, and that the addresses are reachable",
        )  # fmt: skip
    strategy = make_strategy(config.strategy)
    if config.strategy == "multiworker":
        from lenet_tf.distribute import smallest_across_workers

        # Workers save their backups one after the other: resume from an epoch all of them hold.
        first_epoch = smallest_across_workers(strategy, first_epoch)
    backup_weights = backups.get(first_epoch)
    if first_epoch and backup_weights is None:
        raise cli.UsageError(
            f"{backup_dir}: holds epochs {sorted(backups)}, but the workers can only agree on "
            f"epoch {first_epoch}; delete the backups of every worker to start over"
        )
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    jit_compile = {"auto": on_gpu, "on": True, "off": False}[config.jit_compile]
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")

    (x_train, y_train), (x_test, y_test) = load_mnist(config.data_dir)
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    steps = steps_per_epoch(len(x_train), config.batch_size)
    first_epoch = min(first_epoch, config.epochs)

    with strategy.scope():
        model = build_lenet5(config.variant, trainable_centers=config.trainable_centers)
        compile_lenet5(
            model, config, steps, jit_compile,
            # Keras 3 fails to run several steps per execution under a tf.distribute strategy
            # ("You must feed a value for placeholder tensor", keras-team/keras#19246).
            steps_per_execution=1 if config.strategy != "default"
            else effective_steps_per_execution(steps, config.steps_per_execution),
        )  # fmt: skip
        if backup_weights:
            model.optimizer.build(model.trainable_variables)
            model.load_weights(backup_weights)
    if backup_weights:
        restored_steps = int(np.asarray(model.optimizer.iterations.numpy()))
        if restored_steps != first_epoch * steps:
            raise cli.UsageError(
                f"{backup_weights}: inconsistent backup ({restored_steps} steps for {first_epoch} "
                f"epochs of {steps}); delete {backup_dir} to start over"
            )
        print(f"Resuming from the backup of epoch {first_epoch} in {backup_dir}", flush=True)
    # The data stream is a function of (seed, epoch), so a resumed run sees the same batches
    # as an uninterrupted one from its first resumed epoch on.
    train_data = make_dataset(
        x_train, y_train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
        distort=config.distort, first_epoch=first_epoch,
    )  # fmt: skip
    test_data = make_dataset(x_test, y_test, batch_size=1024)
    if config.strategy == "multiworker":
        from lenet_tf.distribute import patch_keras_for_multiworker

        sample = x_train[: config.batch_size].astype("float32"), y_train[: config.batch_size].astype("int32")
        patch_keras_for_multiworker(model, strategy, sample)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train_data, test_data = train_data.with_options(options), test_data.with_options(options)

    if first_epoch > 0:
        _trim_training_log(work / "training_log.csv", first_epoch)
    guard = _guard_callback_class()(on_first_step=watchdog.cancel if watchdog else None)
    backup = _backup_callback_class()(backup_dir, fingerprint, steps)
    callbacks = [
        guard,  # first: a NaN loss must stop before the backup saves it
        backup,
        keras.callbacks.CSVLogger(work / "training_log.csv", append=first_epoch > 0),
    ]
    if importlib.util.find_spec("tensorboard") is not None:  # TensorFlow 2.21 does not require it
        callbacks.append(keras.callbacks.TensorBoard(work / "logs"))
    start = time.perf_counter()
    interrupted = None
    try:
        with _signals_to(guard.handle):
            if first_epoch < config.epochs:
                model.fit(
                    train_data,
                    epochs=config.epochs,
                    initial_epoch=first_epoch,
                    steps_per_epoch=steps,
                    validation_data=test_data if config.validation else None,
                    callbacks=callbacks,
                    shuffle=False,  # the stream is already shuffled, per (seed, epoch)
                    verbose=config.verbose,
                )
        if first_epoch >= config.epochs and config.ema:
            # Killed after the last epoch's backup: finish as `fit` would have.
            model.optimizer.finalize_variable_values(model.trainable_weights)
    except TrainingInterrupted as err:
        interrupted = err.signum
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.DeadlineExceededError) as err:
        if config.strategy != "multiworker":
            raise
        reason = next((line.strip() for line in str(err).splitlines() if "aborted" in line.lower()), type(err).__name__)
        raise cli.RunError(
            f"--strategy multiworker: lost a worker ({reason}); the backup of epoch "
            f"{backup.last_epoch or first_epoch} is kept: restart every worker with the same command to resume"
        ) from None
    except TrainingDiverged as err:
        shutil.rmtree(backup_dir, ignore_errors=True)
        raise cli.UsageError(
            f"training diverged ({err}); model.keras was not written; try a smaller --lr"
        ) from None
    finally:
        if watchdog:
            watchdog.cancel()
    seconds = time.perf_counter() - start
    completed = backup.last_epoch if backup.last_epoch is not None else first_epoch

    # Every worker saves (the TensorFlow guide's rule for multi-worker training); only the
    # chief's copy is kept.
    _save_atomically(work / "model.keras", model.save)
    metrics = {
        "epochs": config.epochs,
        "completed_epochs": completed,
        "interrupted": interrupted is not None,
        "resumed_from_epoch": first_epoch,
        "seconds": round(seconds, 1),
        "images_per_second": round((completed - first_epoch) * steps * config.batch_size / max(seconds, 1e-9)),
        "rss_mb_per_epoch": guard.rss_mb,
        "variant": config.variant,
        "seed": config.seed,
        "device": "GPU" if on_gpu else "CPU",
        "strategy": config.strategy,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": len(tf_config["cluster"].get("worker", [])) + len(tf_config["cluster"].get("chief", []))
        if tf_config else 1,
        "config": dataclasses.asdict(config),
        "versions": library_versions(),
    }
    if interrupted is not None:
        metrics["signal"] = signal.Signals(interrupted).name
        if chief:
            _save_atomically(out / "metrics.json", lambda tmp: _write_metrics(tmp, metrics))
        return metrics
    if not chief:
        shutil.rmtree(work, ignore_errors=True)
        return metrics

    if config.strategy != "default":
        # Evaluate on one device, outside the strategy: a plain copy of the trained weights.
        evaluated = build_lenet5(config.variant, trainable_centers=config.trainable_centers)
        evaluated.set_weights(model.get_weights())
    else:
        evaluated = model
    result = evaluate_model(evaluated, x_test, y_test)
    metrics.update(
        test_error=result["test_error"], test_accuracy=result["test_accuracy"], test_errors=result["errors"]
    )
    _save_atomically(out / "metrics.json", lambda tmp: _write_metrics(tmp, metrics))
    # Only now is the backup redundant: a kill before this line resumes and rewrites the same.
    shutil.rmtree(backup_dir, ignore_errors=True)
    return metrics


def build_parser():
    defaults = TrainConfig()
    parser = cli.ArgumentParser(
        prog="python -m lenet_tf.train",
        description="Train LeNet-5 on MNIST. Defaults reproduce the README's paper-variant result.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--variant", choices=("paper", "modern"), default=defaults.variant,
                        help="paper: LeCun et al. 1998 as published; modern: ReLU, max-pool, softmax")
    parser.add_argument("--epochs", type=cli.positive_int, default=defaults.epochs, help="passes over the training set")
    parser.add_argument("--batch-size", type=cli.positive_int, default=defaults.batch_size,
                        help="images per update (the global batch, split across --strategy replicas)")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.optimizer)
    parser.add_argument("--lr", type=cli.positive_float, default=defaults.learning_rate, dest="learning_rate",
                        help="initial learning rate")
    parser.add_argument("--schedule", choices=SCHEDULES, default=defaults.schedule,
                        help="learning-rate schedule; 'paper' steps down after epochs 2, 5, 8 and 12")
    parser.add_argument("--weight-decay", type=cli.non_negative_float, default=defaults.weight_decay,
                        help="for --optimizer adamw")
    parser.add_argument("--ema", action=argparse.BooleanOptionalAction, default=defaults.ema,
                        help="end with an exponential moving average of the weights")
    parser.add_argument("--map-j", type=cli.positive_float, default=defaults.map_j,
                        help="constant j of the paper's MAP loss (paper variant)")
    parser.add_argument("--distort", action=argparse.BooleanOptionalAction, default=defaults.distort,
                        help="random affine distortions of training images")
    parser.add_argument("--seed", type=cli.seed, default=defaults.seed, help="seed for weights, data order, distortions")
    parser.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=defaults.deterministic,
                        help="deterministic TensorFlow ops: same seed, bit-identical weights (slower)")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="folder with the MNIST IDX files (default: $LENET_MNIST_DIR, else tensorflow-datasets)")
    parser.add_argument("--out", metavar="RUN_DIR", default=defaults.out,
                        help="run folder; rerunning the same command there resumes an interrupted run")
    parser.add_argument("--train-limit", type=cli.positive_int, metavar="N", help="train on the first N images only")
    parser.add_argument("--steps-per-execution", type=cli.positive_int, default=defaults.steps_per_execution,
                        help="training steps per compiled call (fewer Python round trips); "
                             "lowered to a divisor of the steps per epoch")
    parser.add_argument("--jit-compile", choices=("auto", "on", "off"), default=defaults.jit_compile,
                        help="XLA compilation; auto uses it on a GPU only (it is slower on CPU)")
    parser.add_argument("--mixed-precision", action=argparse.BooleanOptionalAction, default=defaults.mixed_precision,
                        help="float16 compute with float32 weights (GPUs with tensor cores)")
    parser.add_argument("--trainable-centers", action=argparse.BooleanOptionalAction,
                        default=defaults.trainable_centers,
                        help="train the RBF centres too (the paper keeps them fixed)")
    parser.add_argument("--strategy", choices=STRATEGIES, default=defaults.strategy,
                        help="default: one device; mirrored: all local GPUs; multiworker: the "
                             "machines listed in $TF_CONFIG (see README, Scaling out)")
    parser.add_argument("--cpu-devices", type=cli.positive_int, metavar="N", default=defaults.cpu_devices,
                        help="split the CPU into N logical devices for --strategy mirrored "
                             "(to try data parallelism without GPUs)")
    parser.add_argument("--worker-timeout", type=cli.positive_float, metavar="SECONDS", default=defaults.worker_timeout,
                        help="--strategy multiworker: fail if not every worker has started training by then")
    parser.add_argument("--verbose", choices=("auto", "0", "1", "2"), default=str(defaults.verbose),
                        help="0: silent; 1: progress bar; 2: one line per epoch (for log files)")
    parser.add_argument("--validation", action=argparse.BooleanOptionalAction, default=defaults.validation,
                        help="test-set evaluation after every epoch (the final test error is measured either way)")
    return parser


def main(argv):
    args = build_parser().parse_args(argv)
    cli.quiet_tensorflow()
    if args.verbose != "auto":
        args.verbose = int(args.verbose)
    metrics = train(TrainConfig(**vars(args)))
    model_path = pathlib.Path(args.out) / "model.keras"
    if metrics["interrupted"]:
        print(
            f"interrupted by {metrics['signal']} after {metrics['completed_epochs']} of "
            f"{metrics['epochs']} epochs; current weights in {model_path}; rerun the same "
            f"command to resume from epoch {metrics['completed_epochs']}",
            file=sys.stderr,
        )
        return 128 + signal.Signals[metrics["signal"]].value
    if "test_error" not in metrics:  # a non-chief worker: the chief reports
        print(f"worker finished {metrics['epochs']} epochs in {metrics['seconds']:.0f} s")
        return 0
    print(
        f"test error {100 * metrics['test_error']:.2f}% ({metrics['test_errors']} errors) "
        f"after {metrics['epochs']} epochs in {metrics['seconds']:.0f} s; model in {model_path}"
    )
    return 0


if __name__ == "__main__":
    cli.run(main)
