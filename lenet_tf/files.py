"""Writing files so that a reader never sees a half-written one."""

import contextlib
import errno
import hashlib
import json
import os
import pathlib
import shutil
import tempfile


def check_replaceable(path, folder_marker=None):
    """Raises unless writing at `path` would replace nothing but an earlier output of its kind.

    A file output may replace a file, never a folder; a folder output (a SavedModel) may replace
    an empty folder or one holding `folder_marker`, never a file or a folder of other things. A
    mistyped `--out` then fails before any work instead of deleting what was there.

    Args:
        path: The file or folder about to be written.
        folder_marker: For a writer of a folder, the name of the file that marks an existing
            folder as one it wrote (`saved_model.pb`); None for a writer of one file.

    Raises:
        IsADirectoryError: A file is to be written and `path` is a folder.
        FileExistsError: A folder is to be written and `path` is a file, or a folder holding
            files but no `folder_marker`.

    Example:

    >>> import tempfile
    >>> try:
    ...     check_replaceable(tempfile.mkdtemp())
    ... except IsADirectoryError as err:
    ...     print(err.strerror)
    is a folder, not replaced by a file

    """
    path = pathlib.Path(path)
    if folder_marker is None:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder, not replaced by a file", str(path))
        return
    if path.exists() and not path.is_dir():
        raise FileExistsError(errno.EEXIST, "is a file, not replaced by a folder", str(path))
    if path.is_dir() and any(path.iterdir()) and not (path / folder_marker).is_file():
        message = f"is a folder without {folder_marker}, not replaced"
        raise FileExistsError(errno.EEXIST, message, str(path))


@contextlib.contextmanager
def atomic_path(path, folder_marker=None):
    """Yields a temporary path beside `path`, renamed onto `path` only if the block succeeds.

    The temporary file or folder lives in the target folder, so the final `os.replace` is a
    rename within one filesystem: readers see the old file or the complete new one, never a
    partial write, and a failed or interrupted write leaves the old file as it was. What is at
    `path` is checked first (`check_replaceable`): nothing but an earlier output is replaced.

    Args:
        path: Final file or folder path. Its parent folder is created if missing.
        folder_marker: For a block that writes a folder, the file marking an existing folder
            at `path` as replaceable (see `check_replaceable`); None when it writes a file.

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
    check_replaceable(path, folder_marker)
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
