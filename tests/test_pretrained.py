"""The pretrained models shipped in the package: the files match their model card, each scores
the card's figure on the full MNIST test set, `predict` uses them by default without loading
TensorFlow, and a built wheel carries them."""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from lenet_tf import pretrained

REPO = pretrained.FOLDER.parents[1]
CARD = pretrained.model_card("paper")


@pytest.mark.parametrize("fmt", list(pretrained.FORMATS))
def test_each_file_has_the_size_and_sha256_its_card_gives(fmt):
    from lenet_tf.files import file_sha256

    path = pretrained.path("paper", format=fmt)
    assert path.stat().st_size == CARD["artifacts"][fmt]["bytes"]
    assert file_sha256(path) == CARD["artifacts"][fmt]["sha256"]


@pytest.mark.parametrize("fmt", list(pretrained.FORMATS))
def test_each_file_scores_its_cards_test_error_on_the_full_test_set(fmt, mnist):
    from lenet_tf.inference import load_runtime

    _, (x_test, y_test) = mnist
    predictions = load_runtime(pretrained.path("paper", format=fmt)).predict(x_test).argmax(axis=-1)
    assert int((predictions != y_test).sum()) == CARD["artifacts"][fmt]["test_errors"]


def test_the_card_says_how_it_was_made_and_what_it_is_not_for():
    assert "--distort --deterministic --seed 0" in CARD["training"]["command"]
    assert CARD["input"]["name"] == "image" and CARD["output"]["name"] == "probabilities"
    assert any("printed" in item for item in CARD["not_for"])
    markdown = (pretrained.FOLDER / "paper" / pretrained.CARD_MARKDOWN).read_text()
    for figures in CARD["artifacts"].values():
        assert figures["sha256"] in markdown


def test_load_gives_the_keras_model_and_unknown_names_are_refused():
    import h5py

    assert pretrained.load("paper").output_shape == (None, 10)
    with zipfile.ZipFile(pretrained.path("paper", format="keras")) as archive:
        with archive.open("model.weights.h5") as weights, h5py.File(weights) as groups:
            assert "optimizer" not in groups  # weights only: no optimizer state shipped
    with pytest.raises(ValueError, match="`format` must be one of"):
        pretrained.path("paper", format="tflite")
    with pytest.raises(ValueError, match="`name` must be one of"):
        pretrained.path("lenet4")


def draw_seven(path):
    from PIL import Image, ImageDraw

    image = Image.new("L", (300, 200), 255)
    ImageDraw.Draw(image).line([(110, 40), (200, 40), (140, 170)], fill=0, width=14, joint="curve")
    image.save(path)
    return path


# Runs `lenet-tf predict ARGS`, then prints which heavy modules it loaded and where lenet_tf is.
PREDICT_AND_REPORT_MODULES = """
import json, sys
import lenet_tf
from lenet_tf.commands.predict import main
try:
    main(sys.argv[1:])
finally:
    loaded = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
    print(json.dumps({"loaded": loaded, "package": lenet_tf.__file__}))
"""


def test_predict_without_a_model_reads_with_the_pretrained_onnx_and_no_tensorflow(tmp_path):
    seven = draw_seven(tmp_path / "seven.png")
    result = subprocess.run(
        [sys.executable, "-c", PREDICT_AND_REPORT_MODULES, "--json", str(seven)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer, report = result.stdout.strip().splitlines()
    assert json.loads(answer)[0]["digit"] == 7 and json.loads(report)["loaded"] == []
    assert result.stderr == ""


def test_a_built_wheel_carries_the_models_and_predicts_outside_the_repository(tmp_path):
    source, wheel_dir, unpacked = tmp_path / "source", tmp_path / "wheel", tmp_path / "site"
    # A copy, because setuptools writes its build/ folder into the tree it builds.
    source.mkdir()
    for name in ("pyproject.toml", "setup.cfg", "README.md"):
        shutil.copy(REPO / name, source / name)
    for name in ("lenet_tf", "export"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheel_dir), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = wheel_dir.glob("lenet_tf-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(unpacked)
    for file in [*pretrained.FORMATS.values(), pretrained.CARD_JSON, pretrained.CARD_MARKDOWN]:
        assert f"lenet_tf/pretrained/paper/{file}" in names
    seven = draw_seven(tmp_path / "seven.png")
    env = dict(os.environ, PYTHONPATH=str(unpacked))
    result = subprocess.run(
        [sys.executable, "-c", PREDICT_AND_REPORT_MODULES, str(seven)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer, report = result.stdout.strip().splitlines()
    assert answer.startswith(f"{seven}: 7 (probability")
    assert json.loads(report)["package"].startswith(str(unpacked))
