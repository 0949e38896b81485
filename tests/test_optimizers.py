"""`KernelMuon`: Muon's step for convolution kernels too, AdamW's for vectors."""

import numpy as np
import pytest

LEARNING_RATE = 0.01


def _first_step(optimizer, variable_shape, gradient):
    import keras

    variable = keras.Variable(np.zeros(variable_shape, "float32"), name="kernel")
    optimizer.apply([gradient], [variable])
    return np.asarray(variable)


def _singular_values_over_muon_scale(step):
    matrix = step.reshape(-1, step.shape[-1])
    return np.linalg.svd(matrix, compute_uv=False) / (LEARNING_RATE * 0.2 * max(matrix.shape) ** 0.5)


def test_kernel_muon_steps_a_convolution_kernel_by_an_orthogonalised_matrix():
    import keras

    from lenet_tf.optimizers import KernelMuon

    # C3's dense kernel shape; a gradient with singular values far apart.
    gradient = np.random.default_rng(0).normal(size=(5, 5, 6, 16)).astype("float32")
    ours = _singular_values_over_muon_scale(_first_step(KernelMuon(LEARNING_RATE, weight_decay=0.0), gradient.shape, gradient))
    assert np.all(np.abs(ours - 1) < 0.35), ours
    # Keras's own Muon leaves every kernel that is not 2-D to AdamW: no such step there.
    keras_muon = keras.optimizers.Muon(LEARNING_RATE, weight_decay=0.0)
    theirs = _singular_values_over_muon_scale(_first_step(keras_muon, gradient.shape, gradient))
    assert not np.all(np.abs(theirs - 1) < 0.35), theirs


# C1's kernel (25 x 6: Keras's scale 1.0, Muon's original 1) and a wide one (18 x 40: Keras's
# 1.26, the original sqrt(40 / 18)).
@pytest.mark.parametrize("shape, original_scale", [((5, 5, 1, 6), 1.0), ((3, 3, 2, 40), (40 / 18) ** 0.5)])
def test_kernel_muon_with_a_muon_lr_ratio_steps_by_muons_original_scale(shape, original_scale):
    from lenet_tf.optimizers import KernelMuon

    gradient = np.random.default_rng(1).normal(size=shape).astype("float32")
    step = _first_step(KernelMuon(LEARNING_RATE, muon_lr_ratio=2.5, weight_decay=0.0), shape, gradient)
    singular_values = np.linalg.svd(step.reshape(-1, shape[-1]), compute_uv=False)
    assert np.all(np.abs(singular_values / (LEARNING_RATE * 2.5 * original_scale) - 1) < 0.35), singular_values


# LeNet-5's kernel matrices, tall and wide (C1, C3 packed, C5, F6), and one in float64.
@pytest.mark.parametrize(
    "shape, dtype, atol",
    [((25, 6), "float32", 1e-5), ((25, 60), "float32", 1e-5), ((400, 120), "float32", 1e-5),
     ((120, 84), "float32", 1e-5), ((400, 120), "float64", 1e-10)],
)  # fmt: skip
def test_kernel_muon_newton_schulz_on_the_gram_matrix_equals_keras_iteration(shape, dtype, atol):
    import keras

    from lenet_tf.optimizers import KernelMuon

    momentum = np.random.default_rng(3).normal(size=shape).astype(dtype)
    ours = KernelMuon(LEARNING_RATE).zeropower_via_newtonschulz5(momentum, 5)
    keras_iteration = keras.optimizers.Muon(LEARNING_RATE).zeropower_via_newtonschulz5(momentum, 5)
    assert keras.backend.standardize_dtype(ours.dtype) == dtype
    np.testing.assert_allclose(np.asarray(ours), np.asarray(keras_iteration), atol=atol)


def test_kernel_muon_steps_a_sparse_kernel_by_its_dense_matrix_orthogonalised():
    import keras

    from lenet_tf.layers import SparseConv2D
    from lenet_tf.optimizers import KernelMuon

    c3 = SparseConv2D(5, name="C3")
    c3.build((None, 14, 14, 6))
    c3.kernel.assign(np.zeros(c3.kernel.shape, "float32"))
    gradient = np.random.default_rng(4).normal(size=c3.kernel.shape).astype("float32")
    KernelMuon(LEARNING_RATE, sparse_kernels={c3.kernel.path: c3.dense_index}, weight_decay=0.0).apply([gradient], [c3.kernel])
    # By hand: the dense 150 x 16 gradient (zeros where Table 1 has no connection), Keras's
    # Newton-Schulz iteration and scale, and back at the connected entries.
    connected = c3.dense_index > 0
    dense = np.zeros((25, 6, 16), "float32")
    dense[:, connected] = gradient.reshape(25, 60)[:, c3.dense_index[connected] - 1]
    keras_muon = keras.optimizers.Muon(LEARNING_RATE)
    orthogonal = np.asarray(keras_muon.zeropower_via_newtonschulz5(dense.reshape(150, 16), 5)).reshape(25, 6, 16)
    expected = np.zeros((25, 60), "float32")
    expected[:, c3.dense_index[connected] - 1] = -LEARNING_RATE * 0.2 * 150**0.5 * orthogonal[:, connected]
    np.testing.assert_allclose(np.asarray(c3.kernel).reshape(25, 60), expected, atol=1e-6)


@pytest.mark.parametrize(
    "paths, index, message",
    [(["C3/bias"], None, "none of the variables"), (["C3/kernel"], np.eye(6, 16, dtype="int32"), "does not fit")],
)
def test_kernel_muon_rejects_a_sparse_kernel_it_cannot_find_or_fit(paths, index, message):
    from lenet_tf.layers import SparseConv2D
    from lenet_tf.optimizers import KernelMuon

    c3 = SparseConv2D(5, name="C3")
    c3.build((None, 14, 14, 6))
    sparse_kernels = {path: c3.dense_index if index is None else index for path in paths}
    with pytest.raises(ValueError, match=message):
        KernelMuon(LEARNING_RATE, sparse_kernels=sparse_kernels).build([c3.kernel])


@pytest.mark.parametrize("shape, exclude_layers", [((16,), None), ((4, 3), ["kernel"])])
def test_kernel_muon_steps_vectors_and_excluded_layers_with_adamw(shape, exclude_layers):
    from lenet_tf.optimizers import KernelMuon

    gradient = np.random.default_rng(1).normal(size=shape).astype("float32")
    optimizer = KernelMuon(LEARNING_RATE, adam_weight_decay=0.0, exclude_layers=exclude_layers)
    # Adam's first step is the learning rate times the gradient's sign (up to its epsilon).
    np.testing.assert_allclose(_first_step(optimizer, shape, gradient), -LEARNING_RATE * np.sign(gradient), rtol=1e-3)


def test_a_model_trained_with_muon_saves_and_loads_with_its_optimizer_state(tmp_path):
    from lenet_tf.model import build_lenet5
    from lenet_tf.optimizers import KernelMuon
    from lenet_tf.saving import load_lenet5
    from lenet_tf.training import TrainConfig
    from lenet_tf.training.recipes import compile_lenet5

    rng = np.random.default_rng(2)
    images, labels = rng.integers(0, 256, (256, 28, 28), dtype="uint8"), rng.integers(0, 10, 256)
    model = build_lenet5("paper")
    compile_lenet5(model, TrainConfig(recipe="fast"), steps_per_epoch=4)
    model.fit(images, labels, batch_size=64, epochs=1, verbose=0)
    model.save(tmp_path / "muon.keras")
    loaded = load_lenet5(tmp_path / "muon.keras", compile=True)
    assert type(loaded.optimizer) is KernelMuon
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert loaded.optimizer.sparse_kernels == {"C3/kernel": model.get_layer("C3").dense_index.tolist()}
    saved = {variable.path: np.asarray(variable) for variable in model.optimizer.variables}
    restored = {variable.path: np.asarray(variable) for variable in loaded.optimizer.variables}
    assert saved.keys() == restored.keys() and len(saved) == 33
    assert all(np.array_equal(saved[path], restored[path]) for path in saved)
    assert int(loaded.optimizer.iterations) == 4
