"""Writing files so that a reader never sees a half-written one."""

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`, renamed onto `path` only if the block succeeds.

    The temporary file or folder lives in the target folder, so the final `os.replace` is a
    rename within one filesystem: readers see the old file or the complete new one, never a
    partial write, and a failed or interrupted write leaves the old file as it was.

    Args:
        path: Final file or folder path. Its parent folder is created if missing.

    Yields:
        A `pathlib.Path` with the same suffix as `path`, not yet existing, to write to.

    Example:

    >>> import pathlib, tempfile
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "metrics.json"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("{}")
    >>> target.read_text()
    '{}'

    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkdtemp reserves a unique name; the writer creates its own file or folder inside.
    workdir = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    tmp = workdir / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            # A folder cannot be replaced by rename while it has contents: move the old one
            # aside first, so that at every moment one complete version exists.
            old = workdir / ".old"
            os.replace(path, old)
            os.replace(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def write_json(path, data):
    """Writes `data` as indented JSON to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def file_sha256(path):
    """Hex SHA-256 of a file: what ties a figure or an artifact to the exact model file."""
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
