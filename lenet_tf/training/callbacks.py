"""The callbacks of a training run: the per-epoch backup, the NaN guard, signals, memory, the log.

Why not `keras.callbacks.BackupAndRestore`: its guarantees are weaker than the ones this
project tests (a SIGKILL at any moment, then the same command, ends with bit-identical
weights). It overwrites `latest.weights.h5` in place, so a kill during the write leaves a
truncated file; it writes the metadata after the weights as a second, separate step, so a kill
between the two pairs epoch N's weights with epoch N-1's number; its `double_checkpoint` copies
files non-atomically too; it restores inside `fit` (`on_train_begin`, through the private
`model._initial_epoch`), while a run must know its first epoch before `fit` to build the data
stream, trim the training log, check the optimizer's step count and, across workers, agree on
an epoch every worker holds; and it deletes the backup when `fit` returns, before `model.keras`
is written. A subclass that fixed all of that would override every method it has.
"""

import contextlib
import csv
import math
import os
import pathlib
import shutil
import signal
import sys
import threading

import keras

from lenet_tf.errors import SettingError
from lenet_tf.files import atomic_path, write_json

# The backup's metadata file, and the name of each epoch's weights in it.
BACKUP_METADATA = "training_metadata.json"


def backup_weights_name(epoch):
    """The file name of the weights and optimizer state after `epoch` completed epochs."""
    return f"epoch-{epoch}.weights.h5"


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; training stopped at the end of a step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class TrainingDiverged(SettingError):
    """The training loss became NaN or infinite; the usual cure is a smaller learning rate."""

    def __init__(self, loss, epoch):
        super().__init__(
            "learning_rate",
            f"training diverged (loss is {loss} after epoch {epoch}); model.keras was not written; "
            "try a smaller value",
        )


class EpochBackup(keras.callbacks.Callback):
    """Saves the weights and optimizer state after every completed epoch, atomically.

    A kill at any moment leaves a consistent backup: the weights of epoch N go to a new file
    by temporary file + rename, then the metadata naming it and epoch N-1's file (written the
    same way), then older files are removed. Two epochs are kept so that the workers of a
    multi-worker run, which save one after the other, can always agree on an epoch they all
    hold. `lenet_tf.training.run_folder.read_backup` reads it back.

    Args:
        folder: The backup folder.
        fingerprint: The settings a resumed run must share (`TrainConfig.fingerprint()`).
        steps_per_epoch: Training steps per epoch, recorded to check a restored optimizer.
    """

    def __init__(self, folder, fingerprint, steps_per_epoch):
        super().__init__()
        self.folder = pathlib.Path(folder)
        self.fingerprint = fingerprint
        self.steps_per_epoch = steps_per_epoch
        self.last_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        completed = epoch + 1
        name, previous = backup_weights_name(completed), backup_weights_name(completed - 1)
        with atomic_path(self.folder / name) as tmp:
            self.model.save_weights(tmp)
        metadata = {
            "epoch": completed,
            "batch": 0,
            "weights": name,
            "previous": previous if (self.folder / previous).is_file() else None,
            "steps": completed * self.steps_per_epoch,
            "config": self.fingerprint,
        }
        write_json(self.folder / BACKUP_METADATA, metadata)
        for old in self.folder.glob(backup_weights_name("*")):
            if old.name not in (name, previous):
                old.unlink(missing_ok=True)
        self.last_epoch = completed

    def discard(self):
        """Deletes the backup (of a diverged run, which must not be resumed)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class StopOnNaN(keras.callbacks.Callback):
    """Raises `TrainingDiverged` at the end of an epoch whose loss is NaN or infinite.

    Unlike `keras.callbacks.TerminateOnNaN`, which lets the epoch end normally, it raises, so
    it must come before `EpochBackup` in the callback list: diverged weights are never backed up.
    """

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise TrainingDiverged(float(loss), epoch + 1)


class StopOnSignal(keras.callbacks.Callback):
    """Stops training at the end of the current step on SIGINT or SIGTERM.

    Inside `handling_signals()`, the first signal prints one line and makes the next step end
    raise `TrainingInterrupted`; a second signal raises `KeyboardInterrupt` at once.
    """

    def __init__(self):
        super().__init__()
        self.signum = None

    def handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after the current step (send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def on_train_batch_end(self, batch, logs=None):
        if self.signum is not None:
            raise TrainingInterrupted(self.signum)

    @contextlib.contextmanager
    def handling_signals(self):
        """Routes SIGINT and SIGTERM to this callback inside the block (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.signal(signum, self.handle) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class MemoryLog(keras.callbacks.Callback):
    """Adds `rss_mb`, this process's resident memory in MiB, to each epoch's logs.

    Put it before `TrainingLog` so that the training log has the column.
    `rss_mb` also keeps the figures, one per epoch.
    """

    def __init__(self):
        super().__init__()
        self.rss_mb = []

    def on_epoch_end(self, epoch, logs=None):
        self.rss_mb.append(round(resident_memory_mb(), 1))
        if logs is not None:
            logs["rss_mb"] = self.rss_mb[-1]


class TrainingLog(keras.callbacks.Callback):
    """Writes the training log: a CSV file, one row per epoch, `epoch` then the logs by name.

    Why not `keras.callbacks.CSVLogger`: without validation it adds `val_` columns holding
    "NA", which no number reader takes; and resuming in append mode, it writes its own columns
    under the file's header, so a run interrupted with validation and resumed without it (or
    the reverse) gets rows that do not line up with the header. Here each epoch rewrites the
    file, atomically, with every column any row has (a row leaves the others empty), and drops
    rows of that epoch or later, which a resumed run computes again.

    Args:
        path: The CSV file. Rows of earlier epochs already in it (a resumed run) are kept.

    Example:

    >>> import tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "training_log.csv"
    >>> TrainingLog(path).on_epoch_end(0, {"loss": 2.5, "val_loss": 2.0})
    >>> TrainingLog(path).on_epoch_end(1, {"loss": 1.5})  # resumed without validation
    >>> print(path.read_text())
    epoch,loss,val_loss
    0,2.5,2.0
    1,1.5,
    <BLANKLINE>
    """

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)

    def on_epoch_end(self, epoch, logs=None):
        rows = []
        if self.path.exists():
            with open(self.path, newline="") as file:
                rows = list(csv.DictReader(file))
            rows = [row for row in rows if row["epoch"].isdigit() and int(row["epoch"]) < epoch]
        rows.append({"epoch": epoch, **{key: float(value) for key, value in sorted((logs or {}).items())}})
        columns = list(dict.fromkeys(column for row in rows for column in row))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=columns, restval="")
            writer.writeheader()
            writer.writerows(rows)


def resident_memory_mb():
    """This process's resident memory in MiB (Linux `/proc`, else the peak from `resource`)."""
    try:
        pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def progress_verbosity(verbose, stream=None):
    """Keras' `verbose` for `fit`: `"auto"` is a bar on a terminal, one line per epoch otherwise.

    Keras' own `"auto"` always draws the bar; redirected to a file it leaves tens of kilobytes
    of carriage returns and escape codes per epoch.

    Args:
        verbose: `"auto"`, 0, 1 or 2.
        stream: Where Keras prints; defaults to `sys.stdout`.

    Returns:
        0, 1 or 2.

    >>> import io
    >>> progress_verbosity("auto", io.StringIO()), progress_verbosity(1, io.StringIO())
    (2, 1)
    """
    if verbose != "auto":
        return verbose
    stream = sys.stdout if stream is None else stream
    return 1 if hasattr(stream, "isatty") and stream.isatty() else 2
