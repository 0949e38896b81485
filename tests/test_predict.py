"""Reading digits from image files: MNIST-style preprocessing and the predict CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from lenet_tf.images import MAX_PIXELS, ImageError, load_digit, to_mnist

# Strokes of hand-drawn digits in a unit box (x right, y down), as a person would draw them.
STROKES = {
    0: [("ellipse", (0.2, 0.05, 0.8, 0.95))],
    1: [("line", [(0.35, 0.2), (0.55, 0.05), (0.55, 0.95)])],
    2: [("line", [(0.2, 0.25), (0.35, 0.08), (0.65, 0.08), (0.78, 0.28), (0.7, 0.5), (0.2, 0.92), (0.82, 0.92)])],
    3: [("line", [(0.2, 0.1), (0.75, 0.1), (0.45, 0.45), (0.75, 0.6), (0.72, 0.85), (0.5, 0.95), (0.2, 0.88)])],
    4: [("line", [(0.6, 0.95), (0.6, 0.05), (0.15, 0.65), (0.85, 0.65)])],
    7: [("line", [(0.15, 0.08), (0.85, 0.08), (0.4, 0.95)])],
}  # fmt: skip

# (size, ink, paper, format, mode): small dark-on-light PNG, light-on-dark JPEG, a large
# colour BMP, and a tall light-on-dark colour PNG.
VARIANTS = [
    ((64, 64), 0, 255, "png", "L"),
    ((300, 200), 255, 0, "jpg", "L"),
    ((1000, 1000), 20, 230, "bmp", "RGB"),
    ((120, 260), 240, 30, "png", "RGB"),
]


def draw_digit(digit, size, ink, paper, mode):
    """An image of `digit` drawn with a thick pen, centred with a margin."""
    width, height = size
    image = Image.new(mode, size, paper if mode == "L" else (paper,) * 3)
    pen = ImageDraw.Draw(image)
    side = min(width, height) * 0.7
    left, top = (width - side) / 2, (height - side) / 2

    def point(p):
        return (left + p[0] * side, top + p[1] * side)

    colour = ink if mode == "L" else (ink,) * 3
    stroke = max(2, int(side * 0.09))
    for kind, spec in STROKES[digit]:
        if kind == "ellipse":
            pen.ellipse([*point(spec[:2]), *point(spec[2:])], outline=colour, width=stroke)
        else:
            pen.line([point(p) for p in spec], fill=colour, width=stroke, joint="curve")
    return image


@pytest.fixture(scope="module")
def drawn_digits(tmp_path_factory):
    """Hand-drawn-style digit files in every variant: [(path, digit)]."""
    folder = tmp_path_factory.mktemp("digits")
    cases = []
    for digit in STROKES:
        for size, ink, paper, fmt, mode in VARIANTS:
            path = folder / f"{digit}_{size[0]}x{size[1]}_{ink}.{fmt}"
            draw_digit(digit, size, ink, paper, mode).save(path)
            cases.append((path, digit))
    return cases


def test_drawn_digits_are_read_correctly_by_a_trained_model(trained_run, drawn_digits):
    from export.runtimes import load_runtime
    from lenet_tf.predict import predict_files

    run_dir, _ = trained_run
    results = predict_files(load_runtime(run_dir / "model.keras"), [p for p, _ in drawn_digits])
    wrong = [(r["file"], r.get("digit")) for r, (_, digit) in zip(results, drawn_digits) if r.get("digit") != digit]
    assert wrong == []
    assert all(0.0 <= r["probability"] <= 1.0 for r in results)


def test_inverted_and_resized_copies_give_the_same_mnist_image():
    dark_on_light = to_mnist(np.asarray(draw_digit(3, (200, 200), 0, 255, "L"), np.float32))
    light_on_dark = to_mnist(np.asarray(draw_digit(3, (400, 400), 255, 0, "L"), np.float32))
    assert dark_on_light.shape == (28, 28)
    assert np.abs(dark_on_light - light_on_dark).mean() < 8.0  # grey levels, out of 255
    assert dark_on_light[0].max() == 0 and dark_on_light[:, 0].max() == 0  # background black


def test_mnist_image_ink_fits_20x20_and_is_centred_by_mass():
    image = to_mnist(np.asarray(draw_digit(7, (300, 200), 0, 255, "L"), np.float32))
    rows, cols = np.nonzero(image)
    assert rows.max() - rows.min() < 21 and cols.max() - cols.min() < 21
    mass = image.sum()
    centre = ((image.sum(axis=1) * np.arange(28)).sum() / mass, (image.sum(axis=0) * np.arange(28)).sum() / mass)
    assert abs(centre[0] - 13.5) <= 1.0 and abs(centre[1] - 13.5) <= 1.0


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(8, 120), width=st.integers(8, 120),
    box=st.tuples(st.floats(0, 0.8), st.floats(0, 0.8), st.floats(0.1, 1.0), st.floats(0.1, 1.0)),
    light_paper=st.booleans(),
)  # fmt: skip
def test_any_ink_blob_becomes_a_centred_28x28_image(height, width, box, light_paper):
    top, left = int(box[0] * height), int(box[1] * width)
    bottom = min(height, top + max(1, int(box[2] * height)))
    right = min(width, left + max(1, int(box[3] * width)))
    gray = np.full((height, width), 255.0 if light_paper else 0.0, np.float32)
    gray[top:bottom, left:right] = 0.0 if light_paper else 255.0
    # The blob must leave some border visible as paper.
    if bottom - top >= height - 1 and right - left >= width - 1:
        return
    image = to_mnist(gray)
    assert image.shape == (28, 28) and image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 255.0 and image.max() > 0
    rows, cols = np.nonzero(image)
    assert rows.max() - rows.min() <= 20 and cols.max() - cols.min() <= 20
    mass = image.sum()
    row_centre = (image.sum(axis=1) * np.arange(28)).sum() / mass
    col_centre = (image.sum(axis=0) * np.arange(28)).sum() / mass
    assert abs(row_centre - 13.5) <= 1.0 and abs(col_centre - 13.5) <= 1.0


def test_blank_image_has_no_ink(tmp_path):
    path = tmp_path / "blank.png"
    Image.new("L", (50, 50), 200).save(path)
    with pytest.raises(ImageError, match=r"blank.png: no ink found"):
        load_digit(path)


def test_non_finite_pixels_are_refused():
    gray = np.zeros((10, 10), np.float32)
    gray[3, 3] = np.nan
    with pytest.raises(ImageError, match="NaN or infinity"):
        to_mnist(gray)


def test_image_above_the_pixel_limit_is_refused_before_decoding(tmp_path):
    side = int(MAX_PIXELS**0.5) + 1
    path = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(path)  # 1-bit: a small file for a huge image
    with pytest.raises(ImageError, match=r"huge.png: .* pixels is above the limit"):
        load_digit(path)


def test_predict_cli_prints_json_and_reports_bad_files_without_stopping(trained_run, drawn_digits, tmp_path):
    run_dir, _ = trained_run
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is text")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    good = [str(p) for p, _ in drawn_digits[:2]]
    proc = subprocess.run(
        [sys.executable, "-m", "lenet_tf.predict", "--model", str(run_dir / "model.keras"), "--json",
         good[0], str(not_an_image), str(empty), str(tmp_path / "missing.png"), good[1]],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    results = json.loads(proc.stdout)
    assert [r["file"] for r in results] == [good[0], str(not_an_image), str(empty), str(tmp_path / "missing.png"), good[1]]
    assert [r.get("digit") for r in results] == [drawn_digits[0][1], None, None, None, drawn_digits[1][1]]
    assert "not an image file" in results[1]["error"] and "error" in results[2]
    assert "no such file" in results[3]["error"]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and "Traceback" not in proc.stderr


def test_predict_cli_refuses_a_model_file_that_is_not_a_model(tmp_path, drawn_digits):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00not onnx")
    proc = subprocess.run(
        [sys.executable, "-m", "lenet_tf.predict", "--model", str(bogus), str(drawn_digits[0][0])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {bogus}: ")
    assert "Traceback" not in proc.stderr


def test_runtimes_refuse_non_finite_pixels(trained_run):
    from export.runtimes import load_runtime

    runtime = load_runtime(trained_run[0] / "model.keras")
    pixels = np.zeros((2, 28, 28), np.float32)
    pixels[1, 5, 5] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        runtime.predict(pixels)
