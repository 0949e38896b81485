"""The run folder: what a training writes, who may write it, and how a run resumes from it.

    RUN/model.keras          the trained model (or, after SIGINT, the weights at the stop)
    RUN/metrics.json         test error, timings, the config, library versions
    RUN/training_log.csv     one row per epoch (loss, accuracy, val_*, rss_mb)
    RUN/logs/                TensorBoard
    RUN/backup/              while training: the last two completed epochs (see `read_backup`)
    RUN/.lock                held by the training that uses the folder
    RUN/.worker-N/           a non-chief worker's own backup, logs and model (multiworker)

Every file is written to a temporary name in the same folder and renamed, so a reader sees the
old file or the new one; `remove_stale_temporaries` sweeps what a killed run left.
"""

import contextlib
import json
import os
import pathlib
import shutil

from lenet_tf.errors import RunFolderError, SettingError
from lenet_tf.files import atomic_path

# Prefixes of the temporaries `atomic_path` makes for the files a training writes.
_OUR_TEMPORARIES = tuple(
    "." + name for name in ("model.keras", "metrics.json", "training_log.csv", "training_metadata.json", "epoch-")
)
# What a run writes in its work folder, deleted to replace a finished run (`overwrite`).
_RUN_FILES = ("model.keras", "metrics.json", "training_log.csv", "logs", "backup")


class RunFinished(RunFolderError):
    """The run folder holds a finished run; training again there needs `overwrite=True`.

    Attributes:
        folder: The run folder.
        summary: What it holds, e.g. `"20 epochs, test error 0.81%"`.
    """

    def __init__(self, folder, summary):
        super().__init__(f"{folder}: holds a finished run ({summary}); use another run folder, or overwrite it")
        self.folder, self.summary = folder, summary


class RunFolder:
    """The files of one training run, as one task of it (the chief, or a worker) sees them.

    Only the chief writes the run folder itself; any other worker keeps its state (backup,
    logs, model) in a private folder inside it, `.<task>/`, deleted when training completes.

    Args:
        out: The run folder.
        task: `"chief"` (or None) for the task that writes the results, else e.g. `"worker-1"`.
    """

    def __init__(self, out, task=None):
        self.out = pathlib.Path(out)
        self.chief = task in (None, "chief")
        self.work = self.out if self.chief else self.out / f".{task}"
        self.backup = self.work / "backup"
        self.model = self.work / "model.keras"
        self.training_log = self.work / "training_log.csv"
        self.tensorboard = self.work / "logs"
        self.metrics = self.out / "metrics.json"

    @contextlib.contextmanager
    def claim(self, overwrite=False):
        """Makes the work folder and holds its lock inside the block, ready for training.

        Sweeps the temporaries of a killed run. A finished run there is refused, unless
        `overwrite` deletes it first (with its logs and any backup left beside it). An
        interrupted run is left as it is, to be resumed, whatever `overwrite` says: rerunning
        the same command after a kill must resume, not start over.

        Raises:
            SettingError: For `out`, if it is a file or not writable.
            RunFolderError: Another training holds the lock.
            RunFinished: The folder holds a finished run and `overwrite` is False.
        """
        _make_writable_folder(self.work)
        with _locked(self.work):
            remove_stale_temporaries(self.work, self.backup)
            finished = self._finished_run()
            if finished is not None and not overwrite:
                raise RunFinished(self.out, finished)
            if finished is not None:
                self._clear()
            yield self

    def _finished_run(self):
        """What the finished run in the folder is (`"4 epochs, test error 5.36%"`), or None."""
        if not (self.out / "model.keras").is_file() or not self.metrics.is_file():
            return None
        try:
            metrics = json.loads(self.metrics.read_text())
        except (OSError, ValueError):
            metrics = None
        if not isinstance(metrics, dict):  # taken as finished: better than training over its model
            return "metrics.json unreadable"
        if metrics.get("interrupted"):
            return None
        summary = f"{metrics.get('completed_epochs', '?')} epochs"
        if "test_error" in metrics:
            summary += f", test error {100 * metrics['test_error']:.2f}%"
        return summary

    def _clear(self):
        for name in _RUN_FILES:
            path = self.work / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def save_model(self, model):
        """Saves `model` to `model.keras` atomically."""
        save_atomically(self.model, model.save)

    def write_metrics(self, metrics):
        """Writes `metrics.json` atomically (the chief only)."""
        text = json.dumps(metrics, indent=2, sort_keys=True) + "\n"
        save_atomically(self.metrics, lambda tmp: tmp.write_text(text))

    def finish(self):
        """Deletes what a completed run no longer needs: the backup, or a worker's whole folder.

        Only call it after `model.keras` and `metrics.json` are written: a kill before then
        resumes from the backup and writes the same again.
        """
        shutil.rmtree(self.backup if self.chief else self.work, ignore_errors=True)


def read_backup(backup_dir, fingerprint):
    """The epochs a run's backup holds: `(last completed epoch, {epoch: weights file})`.

    The backup (written by `callbacks.EpochBackup`) keeps the last two epochs. Without one,
    returns `(0, {})`.

    Args:
        backup_dir: The backup folder.
        fingerprint: `TrainConfig.fingerprint()` of the run that wants to resume.

    Raises:
        RunFolderError: If the backup is unreadable, incomplete, or belongs to a run with other
            settings.
    """
    backup_dir = pathlib.Path(backup_dir)
    metadata_path = backup_dir / "training_metadata.json"
    if not metadata_path.exists():
        return 0, {}
    restart = f"delete {backup_dir} to start over"
    try:
        metadata = json.loads(metadata_path.read_text())
        epoch, weights = int(metadata["epoch"]), backup_dir / metadata["weights"]
    except (ValueError, KeyError, TypeError) as err:
        raise RunFolderError(f"{metadata_path}: unreadable backup ({err}); {restart}") from err
    saved = metadata.get("config", {})
    changed = sorted(key for key in set(saved) | set(fingerprint) if saved.get(key) != fingerprint.get(key))
    if changed:
        differences = ", ".join(f"{key} {saved.get(key)!r} there, {fingerprint.get(key)!r} now" for key in changed)
        raise RunFolderError(
            f"{backup_dir}: holds an interrupted run with other settings ({differences}); "
            f"rerun with the same settings to resume it, or {restart}"
        )
    if not weights.is_file():
        raise RunFolderError(f"{weights}: missing from the backup; {restart}")
    available = {epoch: weights}
    previous = metadata.get("previous")
    if previous and (backup_dir / previous).is_file():
        available[epoch - 1] = backup_dir / previous
    return epoch, available


def remove_stale_temporaries(*folders):
    """Removes the temporary folders `atomic_path` left behind when a run was killed."""
    for folder in folders:
        if folder.is_dir():
            for path in folder.iterdir():
                if path.is_dir() and path.name.startswith(_OUR_TEMPORARIES):
                    shutil.rmtree(path, ignore_errors=True)


def save_atomically(path, write):
    """Calls `write(tmp)` and renames `tmp` onto `path`; an `OSError` names `path`, not `tmp`."""
    try:
        with atomic_path(path) as tmp:
            write(tmp)
    except OSError as err:
        raise OSError(err.errno, err.strerror or str(err), str(path)) from err


def _make_writable_folder(folder):
    if folder.exists() and not folder.is_dir():
        raise SettingError("out", f"{folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SettingError("out", f"{folder}: folder is not writable")


@contextlib.contextmanager
def _locked(folder):
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
            raise RunFolderError(
                f"{folder}: another training is running in this folder ({owner}); wait for it or "
                "use another run folder"
            ) from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}\n")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
