"""The IDX reader on real and broken files, MNIST loading, and the tf.data stream."""

import gzip
import hashlib
import pathlib
import sys
import types

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import TYPE_CODES, idx_bytes, write_idx
from lenet_tf import data
from lenet_tf.data import (
    IDXFormatError,
    MNISTDataError,
    find_mnist_files,
    load_mnist,
    make_dataset,
    read_idx,
    steps_per_epoch,
)


def write_mnist_folder(folder, train_labels=None, test_images=None, dotted=False, gz=True):
    """Writes a small MNIST folder (12 train, 5 test images), valid unless overridden."""
    rng = np.random.default_rng(0)
    if train_labels is None:
        train_labels = np.arange(12, dtype=np.uint8) % 10
    if test_images is None:
        test_images = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": train_labels,
        "t10k-images-idx3-ubyte": test_images,
        "t10k-labels-idx1-ubyte": np.arange(5, dtype=np.uint8),
    }
    folder.mkdir(exist_ok=True)
    for name, array in arrays.items():
        name = name.replace("-idx", ".idx") if dotted else name
        write_idx(folder / (name + ".gz" if gz else name), array, gz=gz)
    return folder


def assert_one_line_error_about(err, path):
    message = str(err.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message


# --- the real MNIST files --------------------------------------------------------------------


def test_real_mnist_has_the_published_shapes_labels_and_class_counts(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28) and y_train.shape == (60000,)
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    train_counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(y_train).tolist() == train_counts
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_real_mnist_decodes_to_the_published_bytes(mnist):
    """Re-encoded, the decoded arrays match the MD5s of the original files (data README)."""
    (x_train, y_train), (x_test, _) = mnist
    published = {
        "6bbc9ace898e44ae57da46a324031adb": x_train,
        "a25bea736e30d166cdddb491f175f624": y_train,
        "2646ac647ad5339dbf082846283269ea": x_test,
    }
    for md5, array in published.items():
        assert hashlib.md5(idx_bytes(array)).hexdigest() == md5


def test_loaded_arrays_are_read_only_and_decoded_once(mnist_dir, mnist):
    assert load_mnist(mnist_dir)[0][0] is mnist[0][0]
    with pytest.raises(ValueError, match="read-only"):
        mnist[0][0][0, 0, 0] = 1


def test_real_file_truncated_by_one_byte_is_refused(mnist_dir, tmp_path):
    raw = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(raw[:-1])
    with pytest.raises(IDXFormatError, match="expected 10000 bytes of data, found 9999") as err:
        read_idx(path)
    assert_one_line_error_about(err, path)


# --- reading IDX files -----------------------------------------------------------------------


def test_read_idx_decodes_big_endian_elements_to_native_order(tmp_path):
    path = tmp_path / "a.idx"
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))
    array = read_idx(path)
    assert array.tolist() == [258, -2]
    assert array.dtype == np.int16 and array.dtype.isnative


def test_read_idx_detects_gzip_by_content_not_suffix(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    gzipped_without_suffix = write_idx(tmp_path / "images-idx3-ubyte", array, gz=True)
    raw_with_suffix = write_idx(tmp_path / "images-idx3-ubyte.gz", array, gz=False)
    np.testing.assert_array_equal(read_idx(gzipped_without_suffix), array)
    np.testing.assert_array_equal(read_idx(raw_with_suffix), array)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic number 0x01000801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown element type 0x07"),
        (b"\x00\x00\x08\x00", "header declares 0 dimensions"),
        (
            idx_bytes(np.zeros((4, 3), np.uint8))[:-2],
            "truncated: expected 12 bytes of data, found 10$",
        ),
        (idx_bytes(np.zeros((2,), np.int32))[:-1], "truncated: expected 8 bytes of data, found 7"),
        (idx_bytes(np.zeros((2,), np.uint8)) + b"xyz", "3 unexpected trailing bytes"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated header: 6 bytes, need 16 for 3 dimensions"),
        (b"\x00\x00", "truncated header: 2 bytes, need at least 4"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip stream"),
        (gzip.compress(idx_bytes(np.zeros((9,), np.uint8)))[:-6], "corrupt gzip stream"),
    ],
    ids=[
        "bad-magic", "unknown-type", "no-dimensions", "truncated-data", "truncated-element",
        "trailing-bytes", "truncated-sizes", "truncated-magic", "gzip-garbage", "gzip-cut-short",
    ],
)  # fmt: skip
def test_read_idx_names_the_file_and_the_fault(tmp_path, content, message):
    path = tmp_path / "file.idx"
    path.write_bytes(content)
    with pytest.raises(IDXFormatError, match=message) as err:
        read_idx(path)
    assert_one_line_error_about(err, path)


def test_read_idx_reports_missing_and_unreadable_files_as_format_errors(tmp_path, monkeypatch):
    with pytest.raises(IDXFormatError, match="no such file") as err:
        read_idx(tmp_path / "absent")
    assert_one_line_error_about(err, tmp_path / "absent")
    with pytest.raises(IDXFormatError, match="is a folder") as err:
        read_idx(tmp_path)
    assert_one_line_error_about(err, tmp_path)

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    # Simulated: the tests may run as root, for whom file modes deny nothing.
    monkeypatch.setattr(pathlib.Path, "read_bytes", denied)
    with pytest.raises(IDXFormatError, match="permission denied") as err:
        read_idx(tmp_path / "locked")
    assert_one_line_error_about(err, tmp_path / "locked")


_supported_arrays = hnp.arrays(
    dtype=st.sampled_from(sorted(TYPE_CODES, key=str)),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
)


@settings(max_examples=100, deadline=None)
@given(array=_supported_arrays, gz=st.booleans())
def test_any_supported_array_round_trips_through_idx(tmp_path_factory, array, gz):
    back = read_idx(write_idx(tmp_path_factory.mktemp("idx") / "a.idx", array, gz=gz))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


# Random bytes rarely get past the magic number, so half the inputs start with a plausible
# header (known or unknown type code, a few dimensions); each is also tried gzipped, and
# gzipped then cut short.
_plausible_idx = st.builds(
    lambda code, ndim, rest: bytes([0, 0, code, ndim]) + rest,
    st.sampled_from([0x07, *TYPE_CODES.values()]),
    st.integers(0, 4),
    st.binary(max_size=48),
)
_any_file = st.tuples(
    st.one_of(st.binary(max_size=64), _plausible_idx),
    st.sampled_from(["raw", "gzip", "gzip cut short"]),
).map(
    lambda case: {
        "raw": case[0],
        "gzip": gzip.compress(case[0]),
        "gzip cut short": gzip.compress(case[0])[:-5],
    }[case[1]]
)


@settings(max_examples=300, deadline=None)
@given(content=_any_file)
def test_any_bytes_parse_or_raise_idx_format_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("idx") / "b.idx"
    path.write_bytes(content)
    try:
        array = read_idx(path)
    except IDXFormatError as err:
        assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
    else:
        assert isinstance(array, np.ndarray) and array.dtype.isnative


# --- finding and loading MNIST ---------------------------------------------------------------


@pytest.mark.parametrize("dotted", [False, True], ids=["dashed", "dotted"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_both_spellings_raw_or_gzip_are_found_and_loaded(tmp_path, dotted, gz):
    folder = write_mnist_folder(tmp_path / "m", dotted=dotted, gz=gz)
    files = find_mnist_files(folder)
    assert sorted(files) == ["test_images", "test_labels", "train_images", "train_labels"]
    name = "t10k-labels.idx1-ubyte" if dotted else "t10k-labels-idx1-ubyte"
    assert files["test_labels"] == folder / (name + ".gz" if gz else name)
    (x_train, y_train), (x_test, y_test) = load_mnist(folder)
    assert x_train.shape == (12, 28, 28) and x_test.shape == (5, 28, 28)
    assert y_test.tolist() == [0, 1, 2, 3, 4]


def test_a_folder_is_decoded_once_however_it_is_spelled(tmp_path, monkeypatch):
    folder = write_mnist_folder(tmp_path / "m")
    decoded = []
    read = data.read_idx
    monkeypatch.setattr(data, "read_idx", lambda path: decoded.append(path) or read(path))
    monkeypatch.chdir(tmp_path)
    first = load_mnist(folder)
    assert load_mnist("m") is first and load_mnist(str(folder / ".." / "m")) is first
    assert len(decoded) == 4
    with pytest.raises(ValueError, match="read-only"):
        first[1][1][0] = 3


def test_label_out_of_range_is_named_with_its_index(tmp_path):
    labels = np.arange(12, dtype=np.uint8) % 10
    labels[5] = 11
    folder = write_mnist_folder(tmp_path / "m", train_labels=labels)
    with pytest.raises(IDXFormatError, match="label 11 at index 5 is outside 0-9") as err:
        load_mnist(folder)
    assert_one_line_error_about(err, folder / "train-labels-idx1-ubyte.gz")


def test_image_label_count_mismatch_names_both_files(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", train_labels=np.zeros(11, dtype=np.uint8))
    with pytest.raises(IDXFormatError) as err:
        load_mnist(folder)
    assert str(err.value) == (
        f"{folder / 'train-labels-idx1-ubyte.gz'}: 11 labels for 12 images in "
        f"{folder / 'train-images-idx3-ubyte.gz'}"
    )


def test_wrong_image_size_is_refused(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", test_images=np.zeros((5, 27, 28), dtype=np.uint8))
    with pytest.raises(IDXFormatError, match="expected 28x28 images, found 27x28") as err:
        load_mnist(folder)
    assert_one_line_error_about(err, folder / "t10k-images-idx3-ubyte.gz")


def test_labels_of_the_wrong_element_type_are_refused(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", train_labels=np.zeros(12, dtype=np.float32))
    with pytest.raises(IDXFormatError, match="expected 1-D uint8 labels, found 1-D float32") as err:
        load_mnist(folder)
    assert_one_line_error_about(err, folder / "train-labels-idx1-ubyte.gz")


def test_missing_file_names_the_folder_and_the_accepted_spellings(tmp_path):
    folder = write_mnist_folder(tmp_path / "m")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MNISTDataError) as err:
        load_mnist(folder)
    assert str(err.value) == (
        f"{folder}: missing t10k-labels-idx1-ubyte[.gz] (or t10k-labels.idx1-ubyte[.gz]) "
        "for the test labels"
    )


def test_missing_folder_or_a_file_instead_of_a_folder_is_named(tmp_path):
    with pytest.raises(MNISTDataError, match="no such folder") as err:
        load_mnist(tmp_path / "nowhere")
    assert_one_line_error_about(err, tmp_path / "nowhere")
    not_a_folder = tmp_path / "file"
    not_a_folder.write_bytes(b"")
    with pytest.raises(MNISTDataError, match="is not a folder") as err:
        find_mnist_files(not_a_folder)
    assert_one_line_error_about(err, not_a_folder)


def test_idx_format_error_is_an_mnist_data_error_and_a_value_error():
    assert issubclass(IDXFormatError, MNISTDataError) and issubclass(MNISTDataError, ValueError)


def test_lenet_mnist_dir_is_the_default_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_MNIST_DIR", str(write_mnist_folder(tmp_path / "m")))
    (x_train, _), _ = load_mnist()
    assert x_train.shape == (12, 28, 28)


class FakeBuilder:
    """Stands in for `tfds.builder("mnist")`: prepared or not, and what preparing does."""

    def __init__(self, root, prepared, prepare=None):
        self.data_dir = str(root / "mnist" / "3.0.1")
        self.prepared, self.prepare, self.splits = prepared, prepare, None

    def is_prepared(self):
        return self.prepared

    def download_and_prepare(self):
        self.prepare(pathlib.Path(self.data_dir))

    def as_dataset(self, split, batch_size, as_supervised):
        assert (split, batch_size, as_supervised) == (["train", "test"], -1, True)
        return self.splits


@pytest.fixture
def fake_tfds(monkeypatch, tmp_path):
    """Routes `load_mnist()` to a stand-in `tensorflow_datasets`; yields a function that
    installs a `FakeBuilder` (keyword arguments as its) and returns it."""
    monkeypatch.delenv("LENET_MNIST_DIR", raising=False)
    module, mnist_module = types.ModuleType("tensorflow_datasets"), types.ModuleType("mnist")
    mnist_module._MNIST_URL = "https://storage.example/mnist/"
    module.as_numpy = lambda splits: [(images.numpy(), labels.numpy()) for images, labels in splits]
    module.image_classification = types.SimpleNamespace(mnist=mnist_module)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", module)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets.image_classification", module.image_classification)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets.image_classification.mnist", mnist_module)
    data._load_tfds.cache_clear()

    def install(**kwargs):
        builder = FakeBuilder(tmp_path / "tfds", **kwargs)
        module.builder = lambda name: builder if name == "mnist" else None
        return builder

    yield install
    data._load_tfds.cache_clear()


def unreachable(monkeypatch):
    """Makes every outgoing connection fail as it does on a machine without internet."""

    def refuse(address, timeout=None):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(data.socket, "create_connection", refuse)


def test_without_a_folder_mnist_comes_from_tfds_without_its_channel_axis(fake_tfds, monkeypatch):
    unreachable(monkeypatch)  # a prepared dataset needs no connection
    builder = fake_tfds(prepared=True)
    builder.splits = [
        (tf.fill([3, 28, 28, 1], tf.constant(7, tf.uint8)), tf.constant([1, 2, 3], tf.int64)),
        (tf.zeros([2, 28, 28, 1], tf.uint8), tf.constant([4, 9], tf.int64)),
    ]
    (x_train, y_train), (x_test, y_test) = load_mnist()
    assert x_train.shape == (3, 28, 28) and x_test.shape == (2, 28, 28)
    assert x_train.dtype == y_train.dtype == np.uint8 and x_train[0, 0, 0] == 7
    assert y_test.tolist() == [4, 9] and not y_test.flags.writeable


def test_offline_tfds_fails_at_once_in_one_line_without_touching_disk(fake_tfds, monkeypatch, tmp_path):
    unreachable(monkeypatch)
    fake_tfds(prepared=False, prepare=lambda folder: pytest.fail("tried to download while offline"))
    with pytest.raises(MNISTDataError) as err:
        load_mnist()
    message = str(err.value)
    assert "storage.example is unreachable" in message and "\n" not in message
    assert "LENET_MNIST_DIR" in message
    assert not (tmp_path / "tfds").exists()


@pytest.mark.parametrize("failure", [ConnectionError("reset by peer\nretries exhausted"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_tfds_download_leaves_nothing_behind(failure, fake_tfds, monkeypatch, tmp_path):
    monkeypatch.setattr(data, "_check_reachable", lambda url: None)

    def half_prepare(folder):
        (folder.parents[1] / "downloads").mkdir(parents=True)
        folder.mkdir(parents=True)
        (folder / "mnist-train.tfrecord-00000-of-00001").write_bytes(b"partial")
        raise failure

    fake_tfds(prepared=False, prepare=half_prepare)
    with pytest.raises(type(failure) if isinstance(failure, KeyboardInterrupt) else MNISTDataError) as err:
        load_mnist()
    assert not (tmp_path / "tfds").exists()
    if not isinstance(failure, KeyboardInterrupt):
        assert str(err.value) == "tensorflow-datasets could not prepare MNIST (reset by peer)"


def test_tfds_dataset_preparation_has_every_module_it_imports():
    # TFDS imports `importlib_resources` lazily, only when it prepares a dataset (the download
    # path, which needs internet), and does not declare it; lenet-tf does. Touching the lazy
    # import is what that path does first.
    from tensorflow_datasets.core import dataset_builder

    assert dataset_builder.importlib_resources.abc.Traversable is not None


# --- the tf.data stream ----------------------------------------------------------------------


def numbered_images(count):
    """`count` images whose every pixel is the image's index, so a batch shows its indices."""
    return np.broadcast_to(np.arange(count, dtype=np.uint8)[:, None, None], (count, 28, 28))


def stream_arrays(dataset, batches):
    return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(batches)]


def test_evaluation_stream_is_every_example_in_order_as_raw_float_pixels(mnist):
    _, (x_test, y_test) = mnist
    batches = stream_arrays(make_dataset(x_test[:250], y_test[:250], batch_size=100), 10)
    assert [len(labels) for _, labels in batches] == [100, 100, 50]
    pixels = np.concatenate([images for images, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    assert pixels.dtype == np.float32 and labels.dtype == np.int32
    np.testing.assert_array_equal(pixels, x_test[:250])  # raw 0-255, not normalised
    np.testing.assert_array_equal(labels, y_test[:250])


def test_evaluation_stream_can_drop_the_partial_batch():
    dataset = make_dataset(numbered_images(25), np.zeros(25), batch_size=10, drop_remainder=True)
    assert [len(labels) for _, labels in stream_arrays(dataset, 10)] == [10, 10]


def test_training_stream_is_a_fresh_permutation_each_epoch():
    labels = np.arange(100) % 10
    stream = make_dataset(numbered_images(100), labels, batch_size=10, shuffle=True, seed=7)
    ids = [images[:, 0, 0].astype(int) for images, _ in stream_arrays(stream, 30)]
    epochs = [np.concatenate(ids[i : i + 10]) for i in (0, 10, 20)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(100))
    assert not np.array_equal(epochs[0], np.arange(100))
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_training_stream_keeps_images_with_their_labels():
    labels = np.arange(50) % 10
    stream = make_dataset(numbered_images(50), labels, batch_size=8, shuffle=True, seed=2)
    for images, labels in stream_arrays(stream, 14):
        np.testing.assert_array_equal(images[:, 5, 9] % 10, labels)


def test_training_stream_keeps_each_epochs_partial_batch_unless_dropped():
    images, labels = numbered_images(25), np.zeros(25)
    kept = make_dataset(images, labels, batch_size=10, shuffle=True)
    dropped = make_dataset(images, labels, batch_size=10, shuffle=True, drop_remainder=True)
    assert [len(y) for _, y in stream_arrays(kept, 6)] == [10, 10, 5] * 2
    assert [len(y) for _, y in stream_arrays(dropped, 4)] == [10, 10] * 2


def test_same_seed_gives_the_same_stream_and_another_seed_another(mnist):
    (x, y), _ = mnist
    x, y = x[:100], y[:100]
    first = stream_arrays(make_dataset(x, y, batch_size=10, shuffle=True, seed=3, distort=True), 12)
    again = stream_arrays(make_dataset(x, y, batch_size=10, shuffle=True, seed=3, distort=True), 12)
    other = stream_arrays(make_dataset(x, y, batch_size=10, shuffle=True, seed=4, distort=True), 12)
    for (xa, ya), (xb, yb) in zip(first, again):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not all(np.array_equal(ya, yo) for (_, ya), (_, yo) in zip(first, other))


def test_resumed_epoch_sees_exactly_the_batches_of_an_uninterrupted_run(mnist):
    (x, y), _ = mnist
    x, y = x[:100], y[:100]
    uninterrupted = make_dataset(x, y, batch_size=10, shuffle=True, seed=3, distort=True)
    resumed = make_dataset(x, y, batch_size=10, shuffle=True, seed=3, distort=True, first_epoch=2)
    epochs_2_and_3 = stream_arrays(uninterrupted.skip(20), 15)
    for (xa, ya), (xb, yb) in zip(epochs_2_and_3, stream_arrays(resumed, 15)):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_distortion_moves_ink_but_keeps_range_and_roughly_its_mass(mnist):
    (x, y), _ = mnist

    def first_batch(distort, epoch=0):
        dataset = make_dataset(
            x[:64], y[:64], batch_size=64, shuffle=True, seed=1, distort=distort, first_epoch=epoch
        )
        return stream_arrays(dataset, 1)[0][0]

    plain, bent = first_batch(False), first_batch(True)
    assert bent.shape == plain.shape == (64, 28, 28)
    assert bent.min() >= 0 and bent.max() <= 255
    assert np.abs(bent - plain).max(axis=(1, 2)).min() > 0  # every image moved
    ratio = bent.sum(axis=(1, 2)) / plain.sum(axis=(1, 2))
    assert np.all((ratio > 0.65) & (ratio < 1.35))
    np.testing.assert_array_equal(first_batch(True), bent)
    # Epoch 1 shuffles differently; re-sort its batch to compare the same images.
    again_plain, again_bent = first_batch(False, epoch=1), first_batch(True, epoch=1)
    order = [np.flatnonzero((again_plain == image).all(axis=(1, 2)))[0] for image in plain]
    assert not np.allclose(again_bent[order], bent)


def test_each_batch_of_each_epoch_gets_its_own_distortions(mnist):
    """Copies of one image, so the shuffled order cannot hide a repeated distortion."""
    (x, _), _ = mnist
    copies = np.repeat(x[:1], 8, axis=0)
    stream = make_dataset(copies, np.zeros(8), batch_size=4, shuffle=True, distort=True)
    batches = [images for images, _ in stream_arrays(stream, 4)]  # two epochs of two batches
    for i, first in enumerate(batches):
        for second in batches[i + 1 :]:
            assert not np.allclose(first, second)


def centred_square():
    """A batch of one image: a bright 8x8 square centred on the 28x28 field (rows 10-17)."""
    image = np.zeros((1, 28, 28), np.uint8)
    image[0, 10:18, 10:18] = 200
    return image


def distorted(images, count=32, seed=0):
    """The first batch of `count` copies of `images[0]`, each distorted differently."""
    copies = np.repeat(images, count, axis=0)
    stream = make_dataset(
        copies, np.zeros(count), batch_size=count, shuffle=True, seed=seed, distort=True
    )
    return stream_arrays(stream, 1)[0][0]


def ink_centroid(images):
    rows, cols = np.arange(28)[None, :, None], np.arange(28)[None, None, :]
    mass = images.sum(axis=(1, 2))
    return (images * rows).sum(axis=(1, 2)) / mass, (images * cols).sum(axis=(1, 2)) / mass


@pytest.fixture
def distortion_ranges(monkeypatch):
    """Sets the distortion ranges for one test: identity unless given."""

    def set_ranges(shift=0.0, scale=(1.0, 1.0), squeeze=(1.0, 1.0), shear=0.0):
        monkeypatch.setattr(data, "MAX_SHIFT_PIXELS", shift)
        monkeypatch.setattr(data, "SCALE_RANGE", scale)
        monkeypatch.setattr(data, "SQUEEZE_RANGE", squeeze)
        monkeypatch.setattr(data, "MAX_SHEAR", shear)

    return set_ranges


def test_identity_distortion_leaves_pixels_exactly_unchanged(mnist, distortion_ranges):
    (x, _), _ = mnist
    distortion_ranges()
    np.testing.assert_array_equal(distorted(x[:1], count=4), np.repeat(x[:1], 4, axis=0))


def test_scaling_squeezing_and_shearing_are_about_the_image_centre(distortion_ranges):
    distortion_ranges(scale=data.SCALE_RANGE, squeeze=data.SQUEEZE_RANGE, shear=data.MAX_SHEAR)
    images = distorted(centred_square())
    row, col = ink_centroid(images)
    np.testing.assert_allclose(row, 13.5, atol=0.01)
    np.testing.assert_allclose(col, 13.5, atol=0.01)
    assert np.ptp(images.sum(axis=(1, 2))) > 0  # the squares were resized


def test_translation_moves_ink_at_most_the_maximum_shift(distortion_ranges):
    distortion_ranges(shift=data.MAX_SHIFT_PIXELS)
    images = distorted(centred_square())
    row, col = ink_centroid(images)
    assert np.abs(row - 13.5).max() <= data.MAX_SHIFT_PIXELS + 1e-3
    assert np.abs(col - 13.5).max() <= data.MAX_SHIFT_PIXELS + 1e-3
    assert np.abs(col - 13.5).mean() > 0.5 and np.abs(row - 13.5).mean() > 0.5
    np.testing.assert_allclose(images.sum(axis=(1, 2)), 64 * 200, rtol=1e-4)


def test_shearing_is_horizontal(mnist, distortion_ranges):
    """A horizontal shear slides each row sideways, so every row keeps its ink."""
    (x, _), _ = mnist
    distortion_ranges(shear=data.MAX_SHEAR)
    images = distorted(x[:1])
    assert not np.allclose(images, x[:1])
    row_ink = np.repeat(x[:1].sum(axis=2), 32, axis=0)
    np.testing.assert_allclose(images.sum(axis=2), row_ink, rtol=1e-4)


def test_make_dataset_refuses_inconsistent_arguments():
    images, labels = numbered_images(5), np.zeros(5)
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        make_dataset(images, labels[:4], batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(images, labels, batch_size=0)
    with pytest.raises(ValueError, match="needs `shuffle=True`"):
        make_dataset(images, labels, batch_size=2, distort=True)


def test_training_stream_refuses_epochs_without_a_batch_instead_of_hanging():
    images, labels = numbered_images(5), np.zeros(5)
    with pytest.raises(ValueError, match="no batch of 8 per epoch with drop_remainder=True"):
        make_dataset(images, labels, batch_size=8, shuffle=True, drop_remainder=True)
    with pytest.raises(ValueError, match="0 examples make no batch"):
        make_dataset(images[:0], labels[:0], batch_size=8, shuffle=True)


def test_steps_per_epoch_counts_the_partial_batch_unless_dropped():
    assert steps_per_epoch(60000, 32) == 1875
    assert steps_per_epoch(100, 32) == 4
    assert steps_per_epoch(100, 32, drop_remainder=True) == 3
    assert steps_per_epoch(96, 32) == steps_per_epoch(96, 32, drop_remainder=True) == 3
