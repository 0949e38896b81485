"""The IDX reader on the real MNIST files and on broken ones, and the tf.data stream."""

import gzip

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lenet_tf.data import (
    IDX_DTYPES,
    IDXFormatError,
    MNISTDataError,
    find_mnist_files,
    load_mnist,
    make_dataset,
    read_idx,
    steps_per_epoch,
)

_TYPE_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}


def idx_bytes(array):
    """The IDX encoding of `array`: the reference writer the reader is tested against."""
    array = np.asarray(array)
    code = _TYPE_CODES[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(IDX_DTYPES[code]).tobytes()


def write_mnist_folder(folder, train_labels=None, test_images=None, spelling=0, gz=True):
    """Writes a small, valid (unless overridden) MNIST folder and returns it."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": train_labels if train_labels is not None else np.arange(12, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": test_images if test_images is not None else rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(5, dtype=np.uint8),
    }  # fmt: skip
    folder.mkdir(exist_ok=True)
    for name, array in arrays.items():
        if spelling:
            name = name.replace("-idx", ".idx")
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def test_real_mnist_has_the_published_shapes_and_first_labels(mnist):
    (x_train, y_train), (x_test, y_test) = mnist
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert y_test[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(y_test).tolist()[1] == 1135  # the test set's count of ones


def test_loaded_arrays_are_read_only_and_decoded_once(mnist_dir):
    first = load_mnist(mnist_dir)
    assert load_mnist(mnist_dir)[0][0] is first[0][0]
    with pytest.raises(ValueError):
        first[0][0][0, 0, 0] = 1


def test_both_spellings_raw_or_gzip_are_found(tmp_path):
    for spelling in (0, 1):
        for gz in (False, True):
            folder = write_mnist_folder(tmp_path / f"s{spelling}{gz}", spelling=spelling, gz=gz)
            (x_train, y_train), (x_test, _) = load_mnist(folder)
            assert x_train.shape == (12, 28, 28) and x_test.shape == (5, 28, 28)
            assert find_mnist_files(folder)["train_images"].parent == folder


def _corrupt(tmp_path, data, name="file.idx"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "bad magic number 0x01000801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "unknown element type 0x07"),
        (idx_bytes(np.zeros((4, 3), np.uint8))[:-2], "truncated: expected 12 bytes of data, found 10"),
        (idx_bytes(np.zeros((2,), np.uint8)) + b"xyz", "3 unexpected trailing bytes"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated header"),
        (b"\x00\x00", "truncated header"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip stream"),
    ],
)
def test_read_idx_names_the_file_and_the_fault(tmp_path, data, message):
    path = _corrupt(tmp_path, data)
    with pytest.raises(IDXFormatError, match=message) as err:
        read_idx(path)
    assert str(err.value).startswith(f"{path}: ")
    assert "\n" not in str(err.value)


def test_read_idx_missing_file_and_folder(tmp_path):
    with pytest.raises(IDXFormatError, match="no such file"):
        read_idx(tmp_path / "absent")
    with pytest.raises(IDXFormatError, match="is a folder"):
        read_idx(tmp_path)


def test_label_out_of_range_is_named_with_its_index(tmp_path):
    labels = np.arange(12, dtype=np.uint8) % 10
    labels[5] = 11
    folder = write_mnist_folder(tmp_path / "m", train_labels=labels)
    with pytest.raises(IDXFormatError, match=r"train-labels-idx1-ubyte.gz: label 11 at index 5 is outside 0-9"):
        load_mnist(folder)


def test_image_label_count_mismatch(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", train_labels=np.zeros(11, dtype=np.uint8))
    with pytest.raises(IDXFormatError, match="11 labels for 12 images"):
        load_mnist(folder)


def test_wrong_image_size(tmp_path):
    folder = write_mnist_folder(tmp_path / "m", test_images=np.zeros((5, 27, 28), dtype=np.uint8))
    with pytest.raises(IDXFormatError, match="expected 28x28 images, found 27x28"):
        load_mnist(folder)


def test_missing_file_and_folder_are_named(tmp_path):
    folder = write_mnist_folder(tmp_path / "m")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MNISTDataError, match="missing t10k-labels-idx1-ubyte"):
        load_mnist(folder)
    with pytest.raises(MNISTDataError, match="no such folder"):
        load_mnist(tmp_path / "nowhere")


def test_real_file_truncated_by_one_byte_is_refused(mnist_dir, tmp_path):
    raw = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    path = _corrupt(tmp_path, raw[:-1], "t10k-labels-idx1-ubyte")
    with pytest.raises(IDXFormatError, match="expected 10000 bytes of data, found 9999"):
        read_idx(path)


_arrays = st.sampled_from(sorted(_TYPE_CODES, key=str)).flatmap(
    lambda dtype: st.lists(st.integers(1, 5), min_size=1, max_size=3).flatmap(
        lambda shape: st.builds(
            lambda seed: np.random.default_rng(seed).integers(-100, 100, size=shape).astype(dtype),
            st.integers(0, 2**32 - 1),
        )
    )
)


@settings(max_examples=60, deadline=None)
@given(array=_arrays)
def test_idx_round_trips_any_supported_array(tmp_path_factory, array):
    path = tmp_path_factory.mktemp("idx") / "a.idx"
    path.write_bytes(idx_bytes(array))
    back = read_idx(path)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=64))
def test_any_bytes_parse_or_raise_idx_format_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("idx") / "b.idx"
    path.write_bytes(data)
    try:
        read_idx(path)
    except IDXFormatError as err:
        assert str(err).startswith(f"{path}: ")


def _labels_of(dataset, batches):
    return [labels.numpy() for _, labels in dataset.take(batches)]


def test_evaluation_stream_is_every_example_in_order_as_raw_float_pixels(mnist):
    (_, _), (x_test, y_test) = mnist
    batches = list(make_dataset(x_test[:250], y_test[:250], batch_size=100))
    assert [len(labels) for _, labels in batches] == [100, 100, 50]
    pixels = np.concatenate([images.numpy() for images, _ in batches])
    assert pixels.dtype == np.float32
    np.testing.assert_array_equal(pixels, x_test[:250])


def test_training_stream_is_a_fresh_permutation_each_epoch():
    labels = np.arange(100) % 10
    images = np.repeat(np.arange(100, dtype=np.uint8)[:, None, None], 28, axis=1).repeat(28, axis=2)
    stream = make_dataset(images, labels, batch_size=10, shuffle=True, seed=7)
    ids = [batch[0].numpy()[:, 0, 0] for batch in stream.take(20)]
    epoch0, epoch1 = np.concatenate(ids[:10]), np.concatenate(ids[10:])
    assert sorted(epoch0) == list(range(100)) and sorted(epoch1) == list(range(100))
    assert not np.array_equal(epoch0, epoch1)
    assert not np.array_equal(epoch0, np.arange(100))


def test_same_seed_same_stream_and_resumed_epoch_matches_uninterrupted(mnist):
    (x, y), _ = mnist
    x, y = x[:100], y[:100]
    full = _labels_of(make_dataset(x, y, batch_size=10, shuffle=True, seed=3, distort=True), 30)
    again = _labels_of(make_dataset(x, y, batch_size=10, shuffle=True, seed=3, distort=True), 30)
    resumed = make_dataset(x, y, batch_size=10, shuffle=True, seed=3, distort=True, first_epoch=2)
    assert all(np.array_equal(a, b) for a, b in zip(full, again))
    resumed_batches = list(resumed.take(10))
    uninterrupted = list(make_dataset(x, y, batch_size=10, shuffle=True, seed=3, distort=True).skip(20).take(10))
    for (xa, ya), (xb, yb) in zip(resumed_batches, uninterrupted):
        np.testing.assert_array_equal(ya.numpy(), yb.numpy())
        np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    other_seed = _labels_of(make_dataset(x, y, batch_size=10, shuffle=True, seed=4), 10)
    assert not all(np.array_equal(a, b) for a, b in zip(full[:10], other_seed))


def test_distortion_moves_ink_but_keeps_range_and_roughly_its_mass(mnist):
    (x, y), _ = mnist
    plain = next(iter(make_dataset(x[:64], y[:64], batch_size=64, shuffle=True, seed=1)))[0].numpy()
    bent = next(iter(make_dataset(x[:64], y[:64], batch_size=64, shuffle=True, seed=1, distort=True)))[0].numpy()
    assert bent.shape == plain.shape and bent.min() >= 0 and bent.max() <= 255
    assert not np.allclose(bent, plain)
    ratio = bent.sum(axis=(1, 2)) / plain.sum(axis=(1, 2))
    assert np.all((ratio > 0.65) & (ratio < 1.35))


def test_steps_per_epoch_counts_the_partial_batch_unless_dropped():
    assert steps_per_epoch(60000, 32) == 1875
    assert steps_per_epoch(100, 32) == 4
    assert steps_per_epoch(100, 32, drop_remainder=True) == 3
