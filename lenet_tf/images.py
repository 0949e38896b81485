"""Turns a photo or drawing of a digit into an MNIST-style 28x28 image.

MNIST was made by fitting each digit's ink into a 20x20 box (keeping its aspect ratio, with
anti-aliasing) and placing that box so the ink's centre of mass sits at the centre of a 28x28
field, bright ink on a black background. A model trained on MNIST reads a new image well only
after the same treatment.

    from lenet_tf.images import load_digit
    pixels = load_digit("my_digit.jpg")   # float32 (28, 28), 0-255, ink bright

In the MNIST test set the centre of mass lies at pixel (14.0, 14.0) on average (row and
column indices, standard deviation 0.3), so that is where it goes here too, not at 13.5.
"""

import pathlib

import numpy as np
from PIL import Image, UnidentifiedImageError

from lenet_tf.errors import ImageError

# Larger images are refused before decoding: a digit never needs more, and a decompression
# bomb of a few kilobytes can otherwise ask for gigabytes.
MAX_PIXELS = 40_000_000
MNIST_SIZE = 28
INK_BOX = 20
# A pixel is ink when it is this far (as a fraction of the image's contrast) from the background.
INK_THRESHOLD = 0.25
# Below this contrast (grey levels) there is nothing to read.
MIN_CONTRAST = 16


def load_grayscale(path):
    """Reads an image file of any format PIL knows as grayscale float32 (0 black, 255 white).

    Transparent pixels count as white paper.

    Raises:
        ImageError: The file is missing, not an image, truncated, or above `MAX_PIXELS`.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: {'is a folder' if path.is_dir() else 'no such file'}")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"{path}: {width}x{height} pixels is above the limit of {MAX_PIXELS:,}"
                )
            if width == 0 or height == 0:
                raise ImageError(f"{path}: image is empty ({width}x{height})")
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                image = Image.alpha_composite(paper, rgba)
            return np.asarray(image.convert("L"), dtype=np.float32)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file PIL can read") from None
    except Image.DecompressionBombError as err:
        raise ImageError(f"{path}: refused as a decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode image ({err})") from None


def to_mnist(gray, name="image"):
    """MNIST-style 28x28 image of the digit in `gray`.

    Steps: make the ink bright on a zero background (inverting dark-on-light images, decided
    by the border's median), stretch contrast to 0-255, crop to the ink, fit it into 20x20
    keeping aspect ratio (the strokes brightened to peak at 255 again, as MNIST's do), then
    place it with its centre of mass at (14, 14) in 28x28.

    Args:
        gray: 2-D array of grey levels, 0-255.
        name: How error messages name the image.

    Returns:
        float32 `(28, 28)`, 0-255, ink bright.

    Raises:
        ImageError: The image is not 2-D, has non-finite values, or has no ink.
    """
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2 or min(gray.shape) == 0:
        raise ImageError(f"{name}: expected a non-empty 2-D grayscale image, got shape {gray.shape}")
    if not np.isfinite(gray).all():
        raise ImageError(f"{name}: pixel values contain NaN or infinity")
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    ink = np.abs(gray - background)
    contrast = float(ink.max())
    if contrast < MIN_CONTRAST:
        raise ImageError(f"{name}: no ink found (the image is all one colour)")
    ink = np.clip(ink * (255.0 / contrast), 0.0, 255.0)
    rows, cols = np.nonzero(ink >= INK_THRESHOLD * 255.0)
    ink = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    ink = np.where(ink >= INK_THRESHOLD * 255.0 * 0.5, ink, 0.0)  # drop faint background noise

    height, width = ink.shape
    scale = INK_BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    boxed = np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    peak = float(boxed.max())
    if peak <= 0:
        raise ImageError(f"{name}: no ink found after scaling")
    # Thin strokes shrunk from a large image come out grey; MNIST strokes peak at 254-255.
    boxed = np.clip(boxed * (255.0 / peak), 0.0, 255.0)

    total = boxed.sum()
    row_centre = (boxed.sum(axis=1) * np.arange(boxed.shape[0])).sum() / total
    col_centre = (boxed.sum(axis=0) * np.arange(boxed.shape[1])).sum() / total
    centre = MNIST_SIZE / 2.0  # where MNIST puts it; see the module docstring
    top = int(round(centre - row_centre))
    left = int(round(centre - col_centre))
    # A very lopsided digit could be pushed past the edge: keep the box inside the field.
    top = min(max(top, 0), MNIST_SIZE - boxed.shape[0])
    left = min(max(left, 0), MNIST_SIZE - boxed.shape[1])
    field = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.float32)
    field[top : top + boxed.shape[0], left : left + boxed.shape[1]] = boxed
    return field


def as_pixel_batch(images, name="images"):
    """Checks that `images` keeps the input contract: a batch of raw 28x28 pixels.

    The one check every entry point uses (evaluation, the runtimes of exported models).

    Args:
        images: Array-like, `(N, 28, 28)`, `(N, 28, 28, 1)` or a single `(28, 28)` image;
            any integer or float dtype; values 0-255 (0 background, 255 full ink).
        name: The argument's name, for the message.

    Returns:
        The images as a NumPy array `(N, 28, 28)`, dtype unchanged.

    Raises:
        ValueError: Naming the argument and the fault: wrong shape, empty, not numbers,
            NaN or infinity, or values outside [0, 255].

    Example:

    >>> as_pixel_batch(np.zeros((28, 28), np.uint8)).shape
    (1, 28, 28)
    """
    array = np.asarray(images)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != (MNIST_SIZE, MNIST_SIZE):
        raise ValueError(f"`{name}` must have shape (N, 28, 28). Received: shape={array.shape}")
    if len(array) == 0:
        raise ValueError(f"`{name}` is empty (0 images)")
    if array.dtype.kind not in "uif":
        raise ValueError(f"`{name}` must hold numbers. Received: dtype={array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise ValueError(f"`{name}` contains {bad} NaN or infinite value(s)")
    if array.min() < 0 or array.max() > 255:
        raise ValueError(
            f"`{name}` must be raw pixels in [0, 255]. Received: values in [{array.min()}, {array.max()}]"
        )
    return array


def load_digit(path):
    """Reads an image file and returns it as an MNIST-style `(28, 28)` float32 image."""
    return to_mnist(load_grayscale(path), name=str(path))
