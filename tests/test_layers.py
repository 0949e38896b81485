"""The custom layers against NumPy references, and their Keras contracts."""

import keras
import numpy as np
import pytest

from lenet_tf import (
    EuclideanRBF,
    FanInUniform,
    MNISTPreprocessing,
    SparseConv2D,
    TrainableSubsampling,
    lenet5_connection_table,
    scaled_tanh,
)
from lenet_tf.layers import LENET5_C3_INPUTS


def _config_round_trip(layer, inputs):
    """Serializes `layer`, rebuilds it, copies the weights, and checks outputs agree."""
    expected = keras.ops.convert_to_numpy(layer(inputs))
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert clone.built  # the serialized build config rebuilds it
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(inputs)), expected, rtol=1e-6, atol=1e-6)
    return clone


def test_scaled_tanh_maps_plus_minus_one_to_themselves():
    x = np.array([-1.0, 0.0, 1.0, 100.0], dtype="float32")
    y = keras.ops.convert_to_numpy(scaled_tanh(x))
    np.testing.assert_allclose(y, [-1.0, 0.0, 1.0, 1.7159], atol=2e-4)
    np.testing.assert_allclose(y, 1.7159 * np.tanh(2 / 3 * x), rtol=1e-6)


def test_fan_in_uniform_bound_is_2_4_over_fan_in():
    w = keras.ops.convert_to_numpy(FanInUniform(seed=3)((5, 5, 6, 16)))
    limit = 2.4 / 150
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.9 * limit  # spread over the whole range, not a narrower one


def test_fan_in_uniform_per_unit_fan_in_broadcasts_over_last_axis():
    w = keras.ops.convert_to_numpy(FanInUniform(seed=3, fan_in=[10, 1000])((400, 2)))
    assert 0.2 < np.abs(w[:, 0]).max() <= 0.24
    assert np.abs(w[:, 1]).max() <= 0.0024


def test_preprocessing_pads_to_32_and_maps_to_paper_range():
    pixels = np.zeros((2, 28, 28), dtype="float32")
    pixels[:, 10, 10] = 255.0
    out = keras.ops.convert_to_numpy(MNISTPreprocessing()(pixels))
    assert out.shape == (2, 32, 32, 1)
    np.testing.assert_allclose(out[0, 12, 12, 0], 1.175, rtol=1e-6)
    np.testing.assert_allclose(out[0, 0, 0, 0], -0.1, rtol=1e-6)  # padding is background
    np.testing.assert_allclose(out[0, 2, 2, 0], -0.1, rtol=1e-6)  # so is a 0 pixel


@pytest.mark.parametrize("onednn_on", [True, False])  # a depthwise convolution, an average pool
def test_subsampling_matches_numpy_block_sum(onednn, onednn_on):
    onednn(onednn_on)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 8, 4)).astype("float32")
    layer = TrainableSubsampling(2)
    layer.build(x.shape)
    coefficient = rng.normal(size=4).astype("float32")
    bias = rng.normal(size=4).astype("float32")
    layer.set_weights([coefficient, bias])
    block_sum = x.reshape(3, 3, 2, 4, 2, 4).sum(axis=(2, 4))
    expected = 1.7159 * np.tanh(2 / 3 * (block_sum * coefficient + bias))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-5)
    assert layer.count_params() == 8
    _config_round_trip(layer, x)


def test_subsampling_coefficient_starts_within_2_4_over_4():
    layer = TrainableSubsampling(2)
    layer.build((None, 28, 28, 200))
    coefficient = keras.ops.convert_to_numpy(layer.coefficient)
    assert np.abs(coefficient).max() <= 0.6
    assert np.abs(coefficient).max() > 0.5


def test_connection_table_is_table_1_of_the_paper():
    table = lenet5_connection_table()
    assert table.shape == (6, 16)
    assert table.sum(axis=0).tolist() == [3] * 6 + [4] * 9 + [6]
    # Row 0 of Table 1 as printed: X . . . X X X . . X X X X . X X
    assert table[0].tolist() == [bool(c == "X") for c in "X...XXX..XXXX.XX"]
    assert table.sum() == 60


def test_sparse_conv_has_exactly_the_paper_parameter_count():
    c3 = SparseConv2D(5)
    c3.build((None, 14, 14, 6))
    assert c3.count_params() == 1516
    assert [tuple(w.shape) for w in c3.trainable_weights] == [(5, 5, 60), (16,)]


def test_sparse_conv_matches_naive_per_map_loop():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 14, 14, 6)).astype("float32")
    c3 = SparseConv2D(5)
    c3.build(x.shape)
    dense = keras.ops.convert_to_numpy(c3.dense_kernel())
    bias = rng.normal(size=16).astype("float32")
    c3.bias.assign(bias)
    expected = np.zeros((2, 10, 10, 16), dtype="float64")
    for k, inputs in enumerate(LENET5_C3_INPUTS):
        for i in inputs:
            for r in range(10):
                for c in range(10):
                    patch = x[:, r : r + 5, c : c + 5, i]
                    expected[:, r, c, k] += (patch * dense[:, :, i, k]).sum(axis=(1, 2))
        expected[..., k] += bias[k]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(c3(x)), expected, rtol=1e-4, atol=1e-4)


def test_sparse_conv_dense_kernel_is_zero_exactly_where_not_connected():
    c3 = SparseConv2D(5)
    c3.build((None, 14, 14, 6))
    dense = keras.ops.convert_to_numpy(c3.dense_kernel())
    table = lenet5_connection_table()
    assert np.all(dense[:, :, ~table] == 0.0)
    assert np.all(dense[:, :, table] != 0.0)


def test_sparse_conv_disconnected_input_has_no_influence_and_no_gradient():
    import tensorflow as tf

    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(1, 14, 14, 6)).astype("float32"))
    c3 = SparseConv2D(5)
    c3.build(x.shape)
    # C3 map 0 reads S2 maps 0, 1, 2: changing S2 map 5 must leave it untouched.
    changed = tf.concat([x[..., :5], x[..., 5:] + 10.0], axis=-1)
    np.testing.assert_array_equal(c3(x)[..., 0].numpy(), c3(changed)[..., 0].numpy())
    with tf.GradientTape() as tape:
        tape.watch(x)
        map0 = tf.reduce_sum(c3(x)[..., 0])
    grad = tape.gradient(map0, x).numpy()
    assert np.all(grad[..., 3:] == 0.0)
    assert np.all(np.abs(grad[..., :3]).sum(axis=(0, 1, 2)) > 0)


def test_sparse_conv_initialises_each_map_with_its_own_fan_in():
    c3 = SparseConv2D(5)
    c3.build((None, 14, 14, 6))
    dense = keras.ops.convert_to_numpy(c3.dense_kernel())
    assert np.abs(dense[..., 0]).max() <= 2.4 / 75  # reads 3 maps
    assert np.abs(dense[..., 15]).max() <= 2.4 / 150  # reads all 6
    assert np.abs(dense[..., 0]).max() > 2.4 / 150


def test_sparse_conv_config_round_trip_keeps_custom_table():
    table = np.eye(3, dtype=bool)
    layer = SparseConv2D(3, connection_table=table, padding="same")
    x = np.random.default_rng(3).normal(size=(1, 6, 6, 3)).astype("float32")
    clone = _config_round_trip(layer, x)
    np.testing.assert_array_equal(clone.connection_table, table)
    assert clone.count_params() == 3 * 9 + 3


@pytest.fixture
def onednn(monkeypatch):
    """Sets whether the layers see TensorFlow's oneDNN kernels on: `onednn(True)` or `(False)`."""
    from lenet_tf.layers import block_conv

    return lambda enabled: monkeypatch.setattr(block_conv, "onednn_enabled", lambda: enabled)


def _graph_ops(layer, inputs):
    """The operation types of `layer`'s forward pass on inputs shaped like `inputs`, as traced."""
    import tensorflow as tf

    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(inputs.shape, "float32")).graph
    return {op.type for op in graph.get_operations()}


def _outputs_and_gradients(layer, inputs):
    """`layer(inputs)`, and the gradients of a loss on it for the inputs and each trainable weight."""
    import tensorflow as tf

    inputs = tf.constant(inputs)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = layer(inputs)
        loss = keras.ops.sum(outputs * outputs)
    gradients = tape.gradient(loss, [inputs, *layer.trainable_weights])
    return outputs.numpy(), [gradient.numpy() for gradient in gradients]


def _plain_twin(layer, input_shape, shift=0.0):
    """A `keras.layers.Conv2D` with the configuration and weights of `layer` (a `Conv2D` subclass).

    Both are built for `input_shape`; `shift` is added to every weight first (a bias not 0).
    """
    layer.build(input_shape)
    layer.set_weights([weight + shift for weight in layer.get_weights()])
    plain = keras.layers.Conv2D.from_config(layer.get_config())
    plain.build(input_shape)
    plain.set_weights(layer.get_weights())
    return plain


def _assert_same_outputs_and_gradients(layer, twin, inputs):
    """`layer` and `twin`, built on `inputs` with the same weights, agree in outputs and gradients."""
    layer.build(inputs.shape), twin.build(inputs.shape)
    layer.set_weights([weight + 0.1 for weight in layer.get_weights()])  # a bias that is not 0
    twin.set_weights(layer.get_weights())
    expected, expected_gradients = _outputs_and_gradients(twin, inputs)
    outputs, gradients = _outputs_and_gradients(layer, inputs)
    for value, expected_value in zip([outputs, *gradients], [expected, *expected_gradients]):
        np.testing.assert_allclose(value, expected_value, rtol=1e-4, atol=1e-4)


def test_sparse_conv_on_blocks_gives_the_plain_convolutions_outputs_and_gradients(onednn):
    onednn(False)  # blocks, wherever the test runs
    inputs = np.random.default_rng(8).normal(size=(3, 14, 14, 6)).astype("float32")
    plain = SparseConv2D(5, activation=scaled_tanh, use_blocks=False)
    _assert_same_outputs_and_gradients(SparseConv2D(5, activation=scaled_tanh), plain, inputs)
    assert _config_round_trip(plain, inputs).use_blocks is False


@pytest.mark.parametrize("onednn_on", [True, False])
def test_block_convolutions_run_plain_where_onednn_is_on(onednn, onednn_on):
    from lenet_tf.layers import BlockConv2D

    onednn(onednn_on)
    c1_inputs, c3_inputs = np.zeros((1, 32, 32, 1), "float32"), np.zeros((1, 14, 14, 6), "float32")
    for layer, inputs in ((BlockConv2D(6, 5), c1_inputs), (SparseConv2D(5), c3_inputs)):
        ops = _graph_ops(layer, inputs)
        assert "Conv2D" in ops
        # The rearrangement into blocks and back is what a plain convolution does without.
        assert ("Transpose" in ops) is not onednn_on, (type(layer).__name__, sorted(ops))


def test_subsampling_as_a_depthwise_convolution_gives_the_average_pools_outputs_and_gradients(onednn):
    onednn(True)
    inputs = np.random.default_rng(9).normal(size=(3, 28, 28, 6)).astype("float32")
    pooled = TrainableSubsampling(2, use_depthwise=False)
    _assert_same_outputs_and_gradients(TrainableSubsampling(2), pooled, inputs)
    assert _config_round_trip(pooled, inputs).use_depthwise is False


@pytest.mark.parametrize("onednn_on", [True, False])
def test_subsampling_is_a_depthwise_convolution_only_where_onednn_is_on(onednn, onednn_on):
    onednn(onednn_on)
    ops = _graph_ops(TrainableSubsampling(2), np.zeros((1, 28, 28, 6), "float32"))
    assert ("DepthwiseConv2dNative" in ops) is onednn_on and ("AvgPool" in ops) is not onednn_on, sorted(ops)


def test_sparse_conv_rejects_an_output_map_without_inputs():
    with pytest.raises(ValueError, match=r"output maps \[1\] with no input"):
        SparseConv2D(3, connection_table=[[True, False], [True, False]])


def test_sparse_conv_rejects_input_with_wrong_number_of_maps():
    with pytest.raises(ValueError, match="has 6 rows but the input has 4 maps"):
        SparseConv2D(5)(np.zeros((1, 14, 14, 4), dtype="float32"))


def test_rbf_matches_numpy_squared_distance():
    rng = np.random.default_rng(4)
    x = rng.uniform(-1.7, 1.7, size=(5, 84)).astype("float32")
    rbf = EuclideanRBF(10)
    out = keras.ops.convert_to_numpy(rbf(x))
    centres = keras.ops.convert_to_numpy(rbf.centers)
    expected = ((x[:, None, :] - centres[None]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_rbf_centres_are_fixed_paper_bitmaps_unless_asked():
    from lenet_tf.prototypes import rbf_prototypes

    rbf = EuclideanRBF(10)
    rbf.build((None, 84))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(rbf.centers), rbf_prototypes())
    assert rbf.trainable_weights == [] and rbf.count_params() == 840
    trainable = EuclideanRBF(10, trainable_centers=True)
    trainable.build((None, 84))
    assert len(trainable.trainable_weights) == 1


def test_rbf_of_a_centre_is_zero_for_its_own_digit():
    from lenet_tf.prototypes import rbf_prototypes

    out = keras.ops.convert_to_numpy(EuclideanRBF(10)(rbf_prototypes()))
    np.testing.assert_allclose(np.diag(out), 0.0, atol=1e-5)
    assert (out.argmin(axis=1) == np.arange(10)).all()


def test_prototype_bitmaps_are_transcribed_from_figure_3():
    from lenet_tf.prototypes import digit_bitmaps

    bitmaps = digit_bitmaps()
    assert bitmaps.shape == (10, 12, 7)
    assert set(np.unique(bitmaps)) == {-1.0, 1.0}
    # Ink pixel counts of the ten bitmaps in ../shared/docs/lenet5-paper.md.
    assert (bitmaps == 1).sum(axis=(1, 2)).tolist() == [35, 27, 33, 32, 41, 35, 39, 25, 43, 39]


def test_rbf_config_round_trip():
    x = np.random.default_rng(5).normal(size=(2, 84)).astype("float32")
    _config_round_trip(EuclideanRBF(10, trainable_centers=True), x)


@pytest.mark.parametrize(
    "input_shape, filters, kernel_size",
    [((3, 32, 32, 1), 6, 5), ((2, 14, 14, 6), 16, 5), ((2, 8, 12, 2), 3, 3), ((1, 10, 10, 1), 2, (3, 5))],
)
def test_block_conv_gives_conv2d_outputs_and_gradients(onednn, input_shape, filters, kernel_size):
    from lenet_tf.layers import BlockConv2D

    onednn(False)  # blocks, wherever the test runs
    inputs = np.random.default_rng(6).normal(size=input_shape).astype("float32")
    blocks = BlockConv2D(filters, kernel_size, activation=scaled_tanh)
    plain = _plain_twin(blocks, input_shape, shift=0.1)
    assert blocks._blocks_apply(input_shape)
    expected, expected_gradients = _outputs_and_gradients(plain, inputs)
    outputs, gradients = _outputs_and_gradients(blocks, inputs)
    np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)
    for gradient, expected_gradient in zip(gradients, expected_gradients):
        np.testing.assert_allclose(gradient, expected_gradient, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("input_shape, options", [
    ((1, 9, 9, 1), {}),
    ((1, 8, 8, 1), {"strides": 2}),
    ((1, 8, 8, 1), {"padding": "same"}),
    ((1, 8, 8, 1), {"kernel_size": 4}),
])
def test_block_conv_falls_back_to_conv2d_where_blocks_do_not_fit(input_shape, options):
    from lenet_tf.layers import BlockConv2D

    blocks = BlockConv2D(2, **{"kernel_size": 3, **options})
    plain = _plain_twin(blocks, input_shape)
    inputs = np.random.default_rng(7).normal(size=input_shape).astype("float32")
    assert not blocks._blocks_apply(input_shape)
    np.testing.assert_allclose(blocks(inputs), plain(inputs), rtol=1e-6, atol=1e-6)


def test_block_conv_config_round_trip_is_a_conv2d():
    from lenet_tf.layers import BlockConv2D

    clone = _config_round_trip(BlockConv2D(6, 5, activation=scaled_tanh), np.ones((1, 32, 32, 1), "float32"))
    assert isinstance(clone, BlockConv2D) and isinstance(clone, keras.layers.Conv2D)


@pytest.mark.parametrize("input_shape, filters, kernel_size", [((3, 5, 5, 16), 120, 5), ((2, 3, 5, 2), 4, (3, 5))])
def test_matmul_conv_gives_conv2d_outputs_and_gradients_by_one_matrix_product(input_shape, filters, kernel_size):
    from lenet_tf.layers import MatmulConv2D

    inputs = np.random.default_rng(9).normal(size=input_shape).astype("float32")
    product = MatmulConv2D(filters, kernel_size, activation=scaled_tanh)
    plain = _plain_twin(product, input_shape, shift=0.1)
    ops = _graph_ops(product, inputs)
    assert "MatMul" in ops and "Conv2D" not in ops, sorted(ops)
    expected, expected_gradients = _outputs_and_gradients(plain, inputs)
    outputs, gradients = _outputs_and_gradients(product, inputs)
    for value, expected_value in zip([outputs, *gradients], [expected, *expected_gradients]):
        np.testing.assert_allclose(value, expected_value, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("input_shape, options", [((1, 7, 7, 2), {}), ((1, 5, 5, 2), {"padding": "same"}),
                                                  ((1, 5, 5, 2), {"kernel_size": 3, "dilation_rate": 2})])  # fmt: skip
def test_matmul_conv_falls_back_to_conv2d_where_the_kernel_does_not_cover_the_input(input_shape, options):
    from lenet_tf.layers import MatmulConv2D

    product = MatmulConv2D(3, **{"kernel_size": 5, **options})
    plain = _plain_twin(product, input_shape)
    inputs = np.random.default_rng(10).normal(size=input_shape).astype("float32")
    assert "Conv2D" in _graph_ops(product, inputs)
    np.testing.assert_allclose(product(inputs), plain(inputs), rtol=1e-6, atol=1e-6)


def test_matmul_conv_config_round_trip_is_a_conv2d():
    from lenet_tf.layers import MatmulConv2D

    clone = _config_round_trip(MatmulConv2D(120, 5, activation=scaled_tanh), np.ones((1, 5, 5, 16), "float32"))
    assert isinstance(clone, MatmulConv2D) and isinstance(clone, keras.layers.Conv2D)
