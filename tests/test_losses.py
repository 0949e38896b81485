"""The MAP criterion and the distance accuracy against NumPy formulas."""

import keras
import numpy as np
import pytest

from lenet_tf import MAPLoss, NearestPrototypeAccuracy


def _numpy_map_loss(labels, distances, j):
    correct = distances[np.arange(len(labels)), labels]
    return np.mean(correct + np.log(np.exp(-j) + np.exp(-distances).sum(axis=1)))


@pytest.mark.parametrize("j", [0.1, 1.0, 3.0])
def test_map_loss_matches_equation_9(j):
    rng = np.random.default_rng(0)
    distances = rng.uniform(0, 20, size=(16, 10)).astype("float32")
    labels = rng.integers(0, 10, size=16)
    loss = float(MAPLoss(j=j)(labels, distances))
    np.testing.assert_allclose(loss, _numpy_map_loss(labels, distances.astype("float64"), j), rtol=1e-5)


def test_map_loss_is_finite_when_every_distance_is_huge():
    distances = np.full((2, 10), 5000.0, dtype="float32")
    loss = float(MAPLoss(j=1.0)(np.array([3, 4]), distances))
    # log(e^-1 + 10 e^-5000) is -1 to float precision.
    np.testing.assert_allclose(loss, 5000.0 - 1.0, rtol=1e-6)


def test_map_loss_pushes_wrong_distances_up():
    import tensorflow as tf

    distances = tf.constant(np.full((1, 10), 2.0, dtype="float32"))
    with tf.GradientTape() as tape:
        tape.watch(distances)
        loss = MAPLoss(j=1.0)(np.array([7]), distances)
    grad = tape.gradient(loss, distances).numpy()[0]
    assert grad[7] > 0  # descent lowers the correct distance
    assert np.all(np.delete(grad, 7) < 0)  # and raises the others


def test_map_loss_rejects_non_positive_j():
    with pytest.raises(ValueError, match="j"):
        MAPLoss(j=0.0)


def test_map_loss_config_round_trip():
    loss = keras.losses.deserialize(keras.losses.serialize(MAPLoss(j=0.5)))
    assert isinstance(loss, MAPLoss) and loss.j == 0.5


def test_nearest_prototype_accuracy_takes_the_smallest_distance():
    metric = NearestPrototypeAccuracy()
    metric.update_state(np.array([0, 1, 2]), np.array([[0.1, 5, 5], [0.1, 5, 5], [9, 9, 0.2]]))
    np.testing.assert_allclose(float(metric.result()), 2 / 3, rtol=1e-6)
