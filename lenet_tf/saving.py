"""Loading LeNet-5 models from `.keras` files, safely."""

import pathlib
import zipfile

import keras

from lenet_tf.cli import UsageError
from lenet_tf.model import PAPER_LAYERS


def load_lenet5(path, compile=False):
    """Loads a LeNet-5 saved by lenet-tf, refusing anything else.

    Importing `lenet_tf` (which importing this module does) registers the package's layers,
    loss and metric. Loading uses Keras `safe_mode=True`, so a file that would run arbitrary Python (a `Lambda`
    layer's bytecode) is refused, and only classes that Keras or lenet-tf register can be
    built.

    Args:
        path: A `.keras` file.
        compile: Whether to restore the training configuration (loss, metrics, optimizer).

    Returns:
        The `keras.Model`.

    Raises:
        UsageError: One line naming the file and why it cannot be used.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        raise UsageError(f"{path}: is a folder, expected a .keras model file")
    if not zipfile.is_zipfile(path):
        raise UsageError(f"{path}: not a Keras model file (.keras files are zip archives)")
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as err:  # Keras raises many types for a bad archive; all mean the same.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UsageError(f"{path}: cannot be loaded as a Keras model: {reason}") from err
    missing = [name for name in PAPER_LAYERS if name not in {layer.name for layer in model.layers}]
    if missing or tuple(model.input_shape[1:3]) != (28, 28):
        raise UsageError(
            f"{path}: not a lenet-tf LeNet-5 (expected layers {', '.join(PAPER_LAYERS)} "
            "and 28x28 input)"
        )
    return model
