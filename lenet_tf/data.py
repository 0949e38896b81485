"""MNIST for LeNet-5: the original IDX files or tensorflow-datasets, as a `tf.data` stream.

Images stay raw (uint8 0-255 in memory, float32 0-255 in the stream): the model pads and
normalises them itself, so training, evaluation and every exported artifact share one input
contract. Reading the IDX files needs only NumPy (TensorFlow is imported by the stream), so
`load_mnist` also serves training on Keras's other backends (JAX: `docs/training.md#gpu`).
"""

import functools
import gzip
import math
import os
import pathlib
import shutil
import socket
import urllib.parse
import zlib

import numpy as np

from lenet_tf.errors import MNISTDataError, first_line


class IDXFormatError(MNISTDataError):
    """An IDX file is malformed. `str(err)` is `'<path>: <what is wrong>'`."""


# IDX element-type codes (byte 2 of the magic number) and their big-endian dtypes.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# Both spellings occur in the wild: LeCun's site uses dashes, many mirrors a dot.
MNIST_FILES = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}

# Ranges of the random affine distortions (`distort=True`). The paper names the kinds
# (translation, scaling, squeezing, horizontal shearing) but not the ranges; these keep a
# distorted digit recognisable and inside the 28x28 field.
MAX_SHIFT_PIXELS = 2.0
SCALE_RANGE = (0.9, 1.1)
SQUEEZE_RANGE = (0.85, 1.15)
MAX_SHEAR = 0.15


def _read_bytes(path):
    """The bytes of an IDX file, gunzipped when they are gzip (told by content, not suffix).

    Raises:
        IDXFormatError: The file is missing, a folder, unreadable, or a corrupt gzip stream.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise IDXFormatError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IDXFormatError(f"{path}: is a folder, expected an IDX file") from None
    except PermissionError:
        raise IDXFormatError(f"{path}: permission denied") from None
    except OSError as err:
        raise IDXFormatError(f"{path}: cannot be read ({err.strerror or err})") from None
    # Decide by content, not suffix: a renamed or already-gunzipped file should still read.
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise IDXFormatError(f"{path}: corrupt gzip stream ({err})") from None
    return raw


def read_idx(path):
    """Reads an IDX file (raw or gzip-compressed) into a NumPy array.

    Args:
        path: File path.

    Returns:
        The array, in native byte order, with the shape the header gives.

    Raises:
        IDXFormatError: The file is missing, unreadable or malformed; the message names the
            file and the fault.
    """
    path = pathlib.Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXFormatError(f"{path}: truncated header: {len(data)} bytes, need at least 4")
    if data[0] != 0 or data[1] != 0:
        raise IDXFormatError(
            f"{path}: bad magic number 0x{data[:4].hex()} (an IDX file starts with two zero bytes)"
        )
    type_code, ndim = data[2], data[3]
    if type_code not in IDX_DTYPES:
        raise IDXFormatError(f"{path}: unknown element type 0x{type_code:02x}")
    if ndim == 0:
        raise IDXFormatError(f"{path}: header declares 0 dimensions")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IDXFormatError(
            f"{path}: truncated header: {len(data)} bytes, need {header_size} for {ndim} dimensions"
        )
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header_size
    if found < expected:
        raise IDXFormatError(f"{path}: truncated: expected {expected} bytes of data, found {found}")
    if found > expected:
        raise IDXFormatError(f"{path}: {found - expected} unexpected trailing bytes after the data")
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def find_mnist_files(data_dir):
    """Finds the four MNIST IDX files in `data_dir`, in either spelling, raw or `.gz`.

    Args:
        data_dir: Folder holding the files.

    Returns:
        A dict with keys `train_images`, `train_labels`, `test_images`, `test_labels`.

    Raises:
        MNISTDataError: The folder or a file is missing.
    """
    data_dir = pathlib.Path(data_dir)
    if not data_dir.is_dir():
        what = "is not a folder" if data_dir.exists() else "no such folder"
        raise MNISTDataError(f"{data_dir}: {what} (expected the MNIST IDX files there)")
    found = {}
    for key, names in MNIST_FILES.items():
        candidates = [data_dir / (name + suffix) for name in names for suffix in ("", ".gz")]
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            raise MNISTDataError(
                f"{data_dir}: missing {names[0]}[.gz] (or {names[1]}[.gz]) "
                f"for the {key.replace('_', ' ')}"
            )
        found[key] = existing[0]
    return found


def _check_split(images, labels, images_path, labels_path):
    """Checks one split against the MNIST contract.

    Raises:
        IDXFormatError: Naming the offending file: images not `(N, 28, 28)` uint8, labels not
            `(N,)` uint8, counts that differ, or a label outside 0-9.
    """
    if images.dtype != np.uint8 or images.ndim != 3:
        raise IDXFormatError(
            f"{images_path}: expected 3-D uint8 images, found {images.ndim}-D {images.dtype}"
        )
    if images.shape[1:] != (28, 28):
        raise IDXFormatError(
            f"{images_path}: expected 28x28 images, found {images.shape[1]}x{images.shape[2]}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IDXFormatError(
            f"{labels_path}: expected 1-D uint8 labels, found {labels.ndim}-D {labels.dtype}"
        )
    if len(labels) != len(images):
        raise IDXFormatError(
            f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path}"
        )
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise IDXFormatError(
            f"{labels_path}: label {labels[bad[0]]} at index {bad[0]} is outside 0-9"
        )


def _read_only(*arrays):
    # The arrays are cached and shared by every caller in the process: freeze them so that
    # no caller can change another's data.
    for array in arrays:
        array.flags.writeable = False
    return arrays


@functools.lru_cache(maxsize=4)
def _load_idx_folder(data_dir):
    """Decodes and checks the MNIST IDX files of `data_dir`, once per resolved folder."""
    files = find_mnist_files(data_dir)
    splits = []
    for split in ("train", "test"):
        images_path, labels_path = files[f"{split}_images"], files[f"{split}_labels"]
        images, labels = read_idx(images_path), read_idx(labels_path)
        _check_split(images, labels, images_path, labels_path)
        splits.append(_read_only(images, labels))
    return tuple(splits)


# How long to wait for the MNIST download host before concluding there is no connection.
DOWNLOAD_PROBE_SECONDS = 5.0


def _check_reachable(url):
    """Raises `MNISTDataError` at once when `url`'s host cannot be reached.

    Without this, TFDS retries for minutes (urllib3 warnings, a progress bar) before failing.
    """
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=DOWNLOAD_PROBE_SECONDS).close()
    except OSError as err:
        raise MNISTDataError(
            f"tensorflow-datasets cannot download MNIST: {parts.hostname} is unreachable "
            f"({err.strerror or err}); set LENET_MNIST_DIR to a folder with the four MNIST IDX files"
        ) from None


def _prepare_tfds(builder, url):
    """Downloads and prepares MNIST into TFDS's folder; on any failure removes what it made."""
    _check_reachable(url)
    root = pathlib.Path(builder.data_dir).parents[1]  # <data_dir>/mnist/<version>
    existed = {path for path in (root, root / "mnist", root / "downloads") if path.exists()}
    try:
        builder.download_and_prepare()
    except BaseException as err:  # Ctrl-C too: a half-made dataset would be read as prepared.
        for path in (root / "mnist", root / "downloads", root):
            if path not in existed:
                shutil.rmtree(path, ignore_errors=True)
        if isinstance(err, Exception):
            raise MNISTDataError(f"tensorflow-datasets could not prepare MNIST ({first_line(err)})") from None
        raise


@functools.lru_cache(maxsize=1)
def _load_tfds():
    """MNIST from tensorflow-datasets, which downloads and prepares it on first use."""
    # Imported here: only this fallback needs TFDS.
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist

    builder = tfds.builder("mnist")
    if not builder.is_prepared():
        _prepare_tfds(builder, mnist._MNIST_URL)
    splits = builder.as_dataset(split=["train", "test"], batch_size=-1, as_supervised=True)
    return tuple(
        _read_only(np.asarray(images)[..., 0].astype(np.uint8), np.asarray(labels).astype(np.uint8))
        for images, labels in tfds.as_numpy(splits)
    )


def load_mnist(data_dir=None):
    """Loads MNIST, decoding it once per process.

    Args:
        data_dir: Folder with the IDX files. Defaults to `$LENET_MNIST_DIR`, and without it
            to tensorflow-datasets (which downloads MNIST on first use).

    Returns:
        `((x_train, y_train), (x_test, y_test))`: read-only uint8 arrays, images
        `(N, 28, 28)` with bright ink on a 0 background, labels `(N,)`.

    Raises:
        MNISTDataError: The files are missing or malformed, or TFDS cannot provide MNIST.
    """
    data_dir = data_dir or os.environ.get("LENET_MNIST_DIR")
    if data_dir:
        return _load_idx_folder(pathlib.Path(data_dir).resolve())
    return _load_tfds()


def steps_per_epoch(num_examples, batch_size, drop_remainder=False):
    """Batches in one pass over `num_examples`.

    Args:
        num_examples: Examples in the pass.
        batch_size: Examples per batch, at least 1.
        drop_remainder: Whether the last partial batch is dropped.

    Returns:
        The number of batches, counting a last partial batch unless it is dropped.

    Raises:
        ValueError: `batch_size` is less than 1.
    """
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be at least 1. Received: batch_size={batch_size}")
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def _affine_distort(images, seed):
    """Applies one random planar affine map per image, about the image centre.

    Args:
        images: float32 `(B, H, W)`.
        seed: A stateless seed, shape `(2,)`.

    Returns:
        The distorted images, same shape, clipped to 0-255.
    """
    import tensorflow as tf

    batch = tf.shape(images)[0]

    def uniform(index, low, high):
        return tf.random.stateless_uniform(
            [batch], seed=tf.random.experimental.stateless_fold_in(seed, index),
            minval=low, maxval=high,
        )  # fmt: skip

    scale = uniform(0, *SCALE_RANGE)
    squeeze = uniform(1, *SQUEEZE_RANGE)
    shear = uniform(2, -MAX_SHEAR, MAX_SHEAR)
    shift_x = uniform(3, -MAX_SHIFT_PIXELS, MAX_SHIFT_PIXELS)
    shift_y = uniform(4, -MAX_SHIFT_PIXELS, MAX_SHIFT_PIXELS)
    # The forward map is p -> A (p - c) + c + t with A = diag(sx, sy) @ [[1, shear], [0, 1]]:
    # squeezing scales x by s and y by 1/s, shearing moves x in proportion to y. The op wants
    # the inverse (output pixel -> input point): p -> A^-1 (p - c - t) + c. Pixel centres sit
    # at integer coordinates, so c is ((W - 1) / 2, (H - 1) / 2).
    sx, sy = scale * squeeze, scale / squeeze
    inv_a00, inv_a01, inv_a11 = 1.0 / sx, -shear / sy, 1.0 / sy
    size = tf.shape(images)[1:3]
    centre_y, centre_x = tf.unstack((tf.cast(size, tf.float32) - 1.0) / 2.0)
    tx = centre_x - inv_a00 * (centre_x + shift_x) - inv_a01 * (centre_y + shift_y)
    ty = centre_y - inv_a11 * (centre_y + shift_y)
    zeros = tf.zeros_like(scale)
    transforms = tf.stack([inv_a00, inv_a01, tx, zeros, inv_a11, ty, zeros, zeros], axis=1)
    distorted = tf.raw_ops.ImageProjectiveTransformV3(
        images=images[..., None], transforms=transforms, output_shape=size,
        fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
    )[..., 0]  # fmt: skip
    return tf.clip_by_value(distorted, 0.0, 255.0)


def make_dataset(
    images, labels, *, batch_size, shuffle=False, seed=0, distort=False, first_epoch=0,
    drop_remainder=False,
):  # fmt: skip
    """MNIST as a `tf.data.Dataset` of `(pixels float32 (B, 28, 28), labels int32 (B,))`.

    Pixels stay raw (0-255): the model normalises them. The whole array is one in-memory
    tensor and each batch is a gather of an index batch, so there is no per-image work in
    Python or in `map`.

    With `shuffle=True` the dataset is infinite: epoch `first_epoch`, then the next, and so on
    (use `model.fit(..., steps_per_epoch=steps_per_epoch(N, B, drop_remainder))`). Epoch `e`'s
    order and distortions are stateless functions of `(seed, e)`, so two runs with one seed
    see the same batches, and a run resumed at epoch `k` sees exactly what an uninterrupted
    run sees from epoch `k` on.

    Args:
        images: `(N, H, W)` raw pixels (MNIST: `(N, 28, 28)` uint8).
        labels: Integer `(N,)` digits.
        batch_size: Images per batch.
        shuffle: Shuffle per epoch and repeat forever (training), or one pass in order.
        seed: Seed of the order and the distortions.
        distort: Random affine distortions of each training image; needs `shuffle=True`.
        first_epoch: Index of the first epoch the stream produces.
        drop_remainder: Drop the last partial batch of each epoch.

    Returns:
        The `tf.data.Dataset`.

    Raises:
        ValueError: Images and labels differ in number, `batch_size` is less than 1,
            `distort=True` without `shuffle=True`, or a training epoch would hold no batch
            (the infinite stream would then never yield).
    """
    import tensorflow as tf  # here, not at the top: `load_mnist` works without TensorFlow

    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    count = len(labels)
    batches_per_epoch = steps_per_epoch(count, batch_size, drop_remainder)
    if distort and not shuffle:
        raise ValueError("`distort=True` needs `shuffle=True`: only training data is distorted")
    if shuffle and batches_per_epoch == 0:
        raise ValueError(
            f"{count} examples make no batch of {batch_size} per epoch"
            f"{' with drop_remainder=True' if drop_remainder else ''}"
        )
    # uint8 stays uint8 in memory, a quarter of float32; each batch is cast after its gather.
    pixels = tf.constant(images if images.dtype == np.uint8 else images.astype(np.float32))
    targets = tf.constant(labels.astype(np.int32))

    def gather(index):
        return tf.cast(tf.gather(pixels, index), tf.float32), tf.gather(targets, index)

    if not shuffle:
        index_batches = tf.data.Dataset.range(count).batch(batch_size, drop_remainder=drop_remainder)
        return index_batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

    def training_batch(batch_seed, index):
        batch_images, batch_labels = gather(index)
        if distort:
            batch_images = _affine_distort(batch_images, batch_seed)
        return batch_images, batch_labels

    # Every batch is a pure function of its seed and indices, so a parallel map with
    # deterministic ordering yields the same stream as a sequential one.
    return (
        _seeded_index_batches(count, batch_size, seed, first_epoch, drop_remainder)
        .map(training_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .prefetch(tf.data.AUTOTUNE)
    )


def _seeded_index_batches(count, batch_size, seed, first_epoch, drop_remainder):
    """Endless `(batch seed, example indices)` pairs: epoch `first_epoch` shuffled, then the next.

    Epoch `e`'s order is a stateless shuffle seeded by `(seed, e)`, and each batch carries its
    own seed, `(seed, e, batch index)` folded together, so its distortions do not depend on
    what ran before it.
    """
    import tensorflow as tf

    def epoch_index_batches(epoch):
        epoch_seed = tf.stack([tf.constant(seed, tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(count, dtype=tf.int64), seed=epoch_seed)
        index_batches = tf.data.Dataset.from_tensor_slices(order).batch(batch_size, drop_remainder=drop_remainder)
        return index_batches.enumerate().map(
            lambda step, index: (tf.random.experimental.stateless_fold_in(epoch_seed, step), index)
        )

    return tf.data.Dataset.counter(start=first_epoch, dtype=tf.int64).flat_map(epoch_index_batches)
