"""The model against the paper's architecture table, and its save/load contract."""

import keras
import numpy as np
import pytest

from lenet_tf import build_lenet5, parameter_table, probability_model
from lenet_tf.model import PAPER_TABLE


def test_paper_variant_has_the_paper_parameters_and_connections_per_layer():
    rows = {row["layer"]: row for row in parameter_table(build_lenet5("paper"))}
    for name, (trainable, connections) in PAPER_TABLE.items():
        assert rows[name]["trainable"] == trainable, name
        assert rows[name]["connections"] == connections, name
    assert rows["OUTPUT"]["fixed"] == 840
    assert rows["total"] == {"layer": "total", "trainable": 60_000, "fixed": 840, "connections": 340_908}


def test_layers_are_named_as_in_the_paper():
    for variant in ("paper", "modern"):
        names = [layer.name for layer in build_lenet5(variant).layers]
        assert [n for n in names if n in PAPER_TABLE] == list(PAPER_TABLE)


def test_both_variants_take_raw_28x28_pixels_and_give_10_scores():
    pixels = np.random.default_rng(0).integers(0, 256, size=(3, 28, 28)).astype("float32")
    for variant in ("paper", "modern"):
        out = build_lenet5(variant)(pixels)
        assert tuple(out.shape) == (3, 10)


def test_paper_variant_uses_scaled_tanh_after_every_hidden_layer():
    from lenet_tf import scaled_tanh

    model = build_lenet5("paper")
    for name in ("C1", "S2", "C3", "S4", "C5", "F6"):
        assert model.get_layer(name).activation is scaled_tanh, name


def test_probability_model_gives_softmax_of_negative_distances():
    model = build_lenet5("paper")
    pixels = np.random.default_rng(1).integers(0, 256, size=(4, 28, 28)).astype("float32")
    distances = keras.ops.convert_to_numpy(model(pixels))
    probabilities = keras.ops.convert_to_numpy(probability_model(model)(pixels))
    expected = np.exp(-distances) / np.exp(-distances).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="'lenet'"):
        build_lenet5("lenet")


def test_trained_model_round_trips_through_keras_file_with_identical_outputs(trained_run, mnist, tmp_path):
    from lenet_tf.saving import load_lenet5

    run_dir, _ = trained_run
    model = load_lenet5(run_dir / "model.keras")
    copy = tmp_path / "copy.keras"
    model.save(copy)
    reloaded = load_lenet5(copy)
    x = mnist[1][0][:256].astype("float32")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(reloaded(x))
    )
    assert [w.shape for w in reloaded.weights] == [w.shape for w in model.weights]
