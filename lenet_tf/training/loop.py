"""`train(config)`: LeNet-5 trained on MNIST into a run folder, resumable after every epoch.

    from lenet_tf.training import TrainConfig, train

    metrics = train(TrainConfig(epochs=2, train_limit=20_000, out="runs/quick"))
    print(f"test error {100 * metrics['test_error']:.2f}%")
"""

import dataclasses
import platform
import signal
import time

import keras
import numpy as np
import tensorflow as tf

from lenet_tf.data import load_mnist, make_dataset, steps_per_epoch
from lenet_tf.errors import RunFailed, RunFolderError, SettingError
from lenet_tf.evaluation import evaluate_model
from lenet_tf.files import file_sha256
from lenet_tf.layers.block_conv import onednn_enabled
from lenet_tf.model import build_lenet5
from lenet_tf.training import distribute, sdlm
from lenet_tf.training.callbacks import (
    EpochBackup, MemoryLog, StopOnNaN, StopOnSignal, TrainingDiverged, TrainingInterrupted, TrainingLog,
    progress_verbosity,
)  # fmt: skip
from lenet_tf.training.recipes import compile_lenet5, effective_steps_per_execution
from lenet_tf.training.run_folder import RunFolder, read_backup


def train(config):
    """Trains a LeNet-5 as `config` says and writes the run folder `config.out`.

    The run folder gets `model.keras`, `metrics.json`, `training_log.csv` and TensorBoard logs
    in `logs/`, each written by temporary file + rename. While training, `backup/` holds the
    weights and optimizer state of the last completed epochs; calling `train` again with the
    same config resumes from there, on the same data stream, so it ends with the same weights
    as an uninterrupted run. SIGINT or SIGTERM stops at the end of the current step, keeps the
    backup and saves the current weights to `model.keras` (`metrics["interrupted"]` is True).
    A folder that holds a finished run is refused, unless `config.overwrite` replaces it.

    Args:
        config: A `TrainConfig`.

    Returns:
        The metrics written to `metrics.json`, as a dict: `test_error`, `test_accuracy` and
        `test_errors` (absent after an interruption, and on a non-chief worker), `epochs`,
        `completed_epochs`, `interrupted`, `resumed_from_epoch`, `seconds`, ...

    Raises:
        SettingError: A setting that cannot work, or a diverged training (`TrainingDiverged`,
            for `learning_rate`: the loss became NaN).
        RunFolderError: Another training in the same folder, a backup of other settings, or a
            finished run (`RunFinished`) without `overwrite`.
        MNISTDataError: Missing or malformed MNIST files.
        RunFailed: A multi-worker run lost a worker (its backup is kept).
    """
    config.validate()
    tf_config = distribute.read_tf_config() if config.strategy == "multiworker" else None
    # MNIST before the run folder: a run that cannot get its data leaves no folder behind.
    # (`load_mnist` decodes once per process; `_train` gets the same arrays again.)
    load_mnist(config.data_dir)
    folder = RunFolder(config.out, distribute.task_name(tf_config))
    with folder.claim(overwrite=config.overwrite):
        if config.cpu_devices:
            distribute.configure_cpu_devices(config.cpu_devices)
        with distribute.worker_watchdog(config, tf_config) as watchdog:
            return _train(config, folder, tf_config, watchdog)


def _train(config, folder, tf_config, watchdog):
    epoch, backups = read_backup(folder.backup, config.fingerprint())  # refuses other settings first
    on_gpu = _set_up_tensorflow(config)
    strategy = distribute.make_strategy(config.strategy)
    if config.strategy == "multiworker":
        epoch = distribute.smallest_across_workers(strategy, epoch)
    if epoch and epoch not in backups:
        raise RunFolderError(
            f"{folder.backup}: holds epochs {sorted(backups)}, but the workers can only agree on epoch {epoch}; "
            "delete the backups of every worker to start over"
        )
    (x_train, y_train), (x_test, y_test) = _load_data(config)
    steps = steps_per_epoch(len(x_train), config.batch_size)
    with strategy.scope():
        model = _build_model(config, steps, on_gpu)
        if epoch:
            _restore(model, backups[epoch], epoch, steps, folder)
    # The data stream is a function of (seed, epoch), so a resumed run sees the same batches
    # as an uninterrupted one from its first resumed epoch on.
    train_data = make_dataset(x_train, y_train, batch_size=config.batch_size, shuffle=True, seed=config.seed,
                              distort=config.distort, first_epoch=epoch)  # fmt: skip
    test_data = make_dataset(x_test, y_test, batch_size=1024) if config.validation else None
    if config.strategy == "multiworker":
        train_data, test_data = distribute.shard_by_data(train_data), distribute.shard_by_data(test_data)
    backup, memory = EpochBackup(folder.backup, config.fingerprint(), steps), MemoryLog()
    callbacks = _callbacks(config, folder, backup, memory, watchdog) + _optimizer_callbacks(config, x_train)
    sample = (x_train[: config.batch_size].astype("float32"), y_train[: config.batch_size].astype("int32"))
    with distribute.keras_fixes(config.strategy, model, strategy, sample):
        start = time.perf_counter()
        interrupted = _fit(model, config, train_data, test_data, callbacks, epoch, steps, backup)
        seconds = time.perf_counter() - start
    completed = backup.last_epoch if backup.last_epoch is not None else epoch
    metrics = {
        "epochs": config.epochs,
        "completed_epochs": completed,
        "interrupted": interrupted is not None,
        "resumed_from_epoch": epoch,
        "seconds": round(seconds, 1),
        "images_per_second": round((completed - epoch) * steps * config.batch_size / max(seconds, 1e-9)),
        "rss_mb_per_epoch": memory.rss_mb,
        "variant": config.variant,
        "seed": config.seed,
        "device": "GPU" if on_gpu else "CPU",
        "onednn": onednn_enabled(),
        "strategy": config.strategy,
        "replicas": int(strategy.num_replicas_in_sync),
        "workers": distribute.worker_count(tf_config),
        "config": dataclasses.asdict(config),
        "versions": library_versions(),
    }
    if interrupted is not None:
        metrics["signal"] = signal.Signals(interrupted).name
    return _finish(config, folder, model, metrics, x_test, y_test)


def _set_up_tensorflow(config):
    """Seeds, op determinism and precision for `config`; returns whether a GPU is present."""
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    if config.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return bool(tf.config.list_physical_devices("GPU"))


def _load_data(config):
    (x_train, y_train), test = load_mnist(config.data_dir)
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    return (x_train, y_train), test


def _build_model(config, steps, on_gpu):
    """A fresh LeNet-5, compiled with `config`'s recipe (inside the strategy's scope)."""
    model = build_lenet5(config.variant, trainable_centers=config.trainable_centers)
    requested = effective_steps_per_execution(steps, config.steps_per_execution)
    if config.hessian_refresh and config.hessian_refresh % requested:
        # Keras calls batch hooks once per execution: the refresh could not happen on time.
        raise SettingError(
            "hessian_refresh",
            f"must be a multiple of the {requested} steps per execution, got {config.hessian_refresh}",
        )
    compile_lenet5(
        model, config, steps,
        jit_compile={"auto": on_gpu, "on": True, "off": False}[config.jit_compile],
        steps_per_execution=distribute.steps_per_execution(config.strategy, requested),
    )  # fmt: skip
    return model


def _restore(model, weights, epoch, steps, folder):
    """Loads a backup's weights and optimizer state; checks it holds `epoch` epochs of steps."""
    model.load_weights(weights)  # into the optimizer variables `compile_lenet5` built
    restored_steps = int(np.asarray(model.optimizer.iterations.numpy()))
    if restored_steps != epoch * steps:
        raise RunFolderError(
            f"{weights}: inconsistent backup ({restored_steps} steps for {epoch} epochs of {steps}); "
            f"delete {folder.backup} to start over"
        )
    print(f"Resuming from the backup of epoch {epoch} in {folder.backup}", flush=True)


def _callbacks(config, folder, backup, memory, watchdog):
    """The callbacks of `fit` (after `StopOnSignal`), in the order they must run."""
    callbacks = [
        StopOnNaN(),  # before the backup: diverged weights are never saved
        memory,  # before the training log, which then logs `rss_mb`
        TrainingLog(folder.training_log),  # before the backup: every backed-up epoch has its row
        backup,
        keras.callbacks.TensorBoard(folder.tensorboard),
    ]
    if watchdog is not None:  # every worker has joined once the first step is done
        callbacks.append(keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: watchdog.cancel()))
    return callbacks


def _optimizer_callbacks(config, x_train):
    """SDLM's Hessian diagonal, estimated on undistorted training images before each pass."""
    if config.optimizer != "sdlm":
        return []
    return [sdlm.HessianRefresh(x_train, every_steps=config.hessian_refresh, seed=config.seed)]


def _fit(model, config, train_data, test_data, callbacks, first_epoch, steps, backup):
    """Runs `fit` from `first_epoch`; returns the signal that stopped it, or None.

    Raises:
        TrainingDiverged: The loss became NaN (the backup is deleted: it must not be resumed).
        RunFailed: A multi-worker run lost a worker.
    """
    stop = StopOnSignal()
    try:
        with stop.handling_signals():
            if first_epoch < config.epochs:
                model.fit(
                    train_data, epochs=config.epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
                    validation_data=test_data, callbacks=[stop, *callbacks],
                    shuffle=False,  # the stream is already shuffled, per (seed, epoch)
                    verbose=progress_verbosity(config.verbose),
                )  # fmt: skip
            elif config.ema:  # killed after the last epoch's backup: finish as `fit` would have
                model.optimizer.finalize_variable_values(model.trainable_weights)
    except TrainingInterrupted as err:
        return err.signum
    except TrainingDiverged:
        backup.discard()
        raise
    except distribute.LOST_WORKER_ERRORS as err:
        if config.strategy != "multiworker":
            raise
        epoch = backup.last_epoch or first_epoch
        raise RunFailed(distribute.lost_worker_message(err, epoch)) from None
    return None


def _finish(config, folder, model, metrics, x_test, y_test):
    """Saves the model and, on the chief, the test error and `metrics.json`; returns the metrics."""
    # Every worker saves (the TensorFlow guide's rule for multi-worker training); only the
    # chief's copy is kept.
    folder.save_model(model)
    if metrics["interrupted"]:
        if folder.chief:
            folder.write_metrics(metrics)
        return metrics
    if folder.chief:
        metrics.update(_test_error(config, model, x_test, y_test), model_sha256=file_sha256(folder.model))
        folder.write_metrics(metrics)
    folder.finish()  # only now is the backup redundant
    return metrics


def _test_error(config, model, x_test, y_test):
    if config.strategy != "default":
        # Evaluate on one device, outside the strategy: a plain copy of the trained weights.
        trained = model
        model = build_lenet5(config.variant, trainable_centers=config.trainable_centers)
        model.set_weights(trained.get_weights())
    result = evaluate_model(model, x_test, y_test)
    return {
        "test_error": result["test_error"],
        "test_accuracy": result["test_accuracy"],
        "test_errors": result["errors"],
    }


def library_versions():
    """Versions of what produced a result, for `metrics.json`."""
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }
