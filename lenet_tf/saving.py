"""Loading LeNet-5 models from `.keras` files, safely.

What is trusted: the Python packages installed (Keras, TensorFlow, h5py, lenet-tf). What is not:
the `.keras` file. Its `config.json` is read as JSON data and checked before Keras sees it: only
the layer classes a lenet-tf LeNet-5 is made of may appear, every other object it names must
come from Keras or lenet-tf, and a `Lambda` layer (which can carry Python bytecode) is refused
whatever it holds. Keras then loads it with `safe_mode=True`, a second, independent refusal of
Python bytecode. The weights are numbers read by h5py; they are checked for NaN and infinity.
Nothing in the file is unpickled or executed.
"""

import json
import os
import pathlib
import zipfile

import keras
import numpy as np

from lenet_tf.errors import ModelFileError
from lenet_tf.losses import MAPLoss
from lenet_tf.metrics import NearestPrototypeAccuracy
from lenet_tf.model import PAPER_LAYERS
from lenet_tf.optimizers import KernelMuon
from lenet_tf.schedules import WarmupCosineDecay

# A LeNet-5 .keras file is about 0.3 MB; refuse anything whose members would unpack to more.
MAX_UNCOMPRESSED_BYTES = 64 * 2**20
MAX_CONFIG_BYTES = 4 * 2**20

# The layer classes `build_lenet5` uses, in either variant. All are code-free standard or
# lenet-tf layers.
LENET5_LAYER_CLASSES = frozenset(
    {
        "InputLayer",
        "MNISTPreprocessing",
        "Conv2D",
        "BlockConv2D",
        "MatmulConv2D",
        "TrainableSubsampling",
        "SparseConv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "EuclideanRBF",
    }
)
# What a saved training configuration (`compile_lenet5`'s) names besides Keras's own classes.
COMPILE_OBJECTS = {cls.__name__: cls for cls in (MAPLoss, NearestPrototypeAccuracy, WarmupCosineDecay, KernelMuon)}
_MODEL_CLASSES = frozenset({"Functional", "Model"})
# Markers Keras writes for tensors and plain values; `__lambda__` (bytecode) is not among them.
_VALUE_MARKERS = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__tuple__", "__bytes__", "__typespec__",
     "__slice__", "__ellipsis__"}
)  # fmt: skip


def _trusted_module(module):
    return module is not None and module.split(".")[0] in ("keras", "lenet_tf")


def _builtins_refusal(kind, function):
    """Why a `builtins` entry must not be loaded, or None.

    Keras writes a registered function (the scaled tanh) as `{"module": "builtins",
    "class_name": "function", "config": "lenet_tf>scaled_tanh"}`. Any other `builtins` name,
    such as `eval` or `exec`, would hand Python's built-ins to Keras: refused here.
    """
    if kind == "function" and isinstance(function, str) and function.startswith("lenet_tf>"):
        return None
    name = function if kind == "function" else kind
    return f"refused: names Python's built-in {name!r} (only lenet-tf functions may come from builtins)"


def _refusal(config, layer_classes=LENET5_LAYER_CLASSES):
    """Why the model config `config` must not be loaded, or None if nothing is wrong.

    Walks every object the config names. This reads JSON only: nothing is imported or built.
    """
    if not isinstance(config, dict) or config.get("class_name") not in _MODEL_CLASSES:
        kind = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        return f"not a lenet-tf LeNet-5 (the file holds a {kind}, expected a functional Model)"
    for layer in config.get("config", {}).get("layers", []):
        name, kind = layer.get("name") or layer.get("config", {}).get("name"), layer.get("class_name")
        if kind == "Lambda":
            return (
                f"refused: layer {name!r} is a Lambda layer, which can run arbitrary Python code; "
                "lenet-tf models never contain one"
            )
        if kind not in layer_classes:
            return f"refused: layer {name!r} has class {kind!r}, which is not part of a lenet-tf LeNet-5"
    stack = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
            kind = item.get("class_name")
            if not isinstance(kind, str):
                continue
            if kind == "__lambda__":
                return "refused: contains Python bytecode (a serialized lambda)"
            if kind in _VALUE_MARKERS:
                continue
            registered = item.get("registered_name") or ""
            if item.get("module") == "builtins":
                refusal = _builtins_refusal(kind, item.get("config"))
                if refusal:
                    return refusal
                continue
            if _trusted_module(item.get("module")) or str(registered).startswith("lenet_tf>"):
                continue
            return (
                f"refused: unknown class {kind!r} from module {item.get('module')!r} "
                "(only Keras and lenet-tf classes load)"
            )
    return None


def _read_config(path):
    """Checks the archive `path` and returns its parsed `config.json`."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            size = sum(member.file_size for member in members)
            if size > MAX_UNCOMPRESSED_BYTES:
                raise ModelFileError(
                    f"{path}: refused: unpacks to {size / 2**20:.0f} MB, more than the "
                    f"{MAX_UNCOMPRESSED_BYTES // 2**20} MB any LeNet-5 needs"
                )
            names = {member.filename: member for member in members}
            if "config.json" not in names or "model.weights.h5" not in names:
                raise ModelFileError(f"{path}: not a Keras model file (no config.json or model.weights.h5 inside)")
            if names["config.json"].file_size > MAX_CONFIG_BYTES:
                raise ModelFileError(f"{path}: refused: config.json is too large for a LeNet-5")
            return json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{path}: corrupt Keras model file ({err})") from err


def load_lenet5(path, compile=False, also_allow=()):
    """Loads a LeNet-5 saved by lenet-tf, refusing anything else.

    Importing this module registers the package's layers (through `lenet_tf.model`); its loss,
    metric and learning-rate schedule, which a training configuration names, are passed to
    Keras for `compile=True`. Before Keras reads the file, its configuration is checked as plain
    JSON (see the module docstring): a `Lambda` layer, a class that is neither Keras's nor
    lenet-tf's, or a layer a LeNet-5 does not have is refused. Keras then loads it with
    `safe_mode=True`.

    Args:
        path: A `.keras` file.
        compile: Whether to restore the training configuration (loss, metrics, optimizer).
        also_allow: Names of further code-free Keras layer classes the file may hold, for a
            LeNet-5 built from other standard layers (the benchmarks' stock-layer LeNet:
            `{"AveragePooling2D"}`).

    Returns:
        The `keras.Model`.

    Raises:
        ModelFileError: One line naming the file and why it cannot be used.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, expected a .keras model file")
    if not os.access(path, os.R_OK):
        raise ModelFileError(f"{path}: not readable (permission denied)")
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: expected a .keras model file (the name must end in .keras)")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path}: not a Keras model file, or truncated (a .keras file is a zip archive)")
    refusal = _refusal(_read_config(path), LENET5_LAYER_CLASSES | frozenset(also_allow))
    if refusal:
        raise ModelFileError(f"{path}: {refusal}")
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True, custom_objects=COMPILE_OBJECTS)
    except Exception as err:  # Keras raises many types for a bad archive; all mean the same.
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelFileError(f"{path}: cannot be loaded as a Keras model: {reason}") from err
    missing = [name for name in PAPER_LAYERS if name not in {layer.name for layer in model.layers}]
    if missing or tuple(model.input_shape[1:3]) != (28, 28) or tuple(model.output_shape) != (None, 10):
        raise ModelFileError(
            f"{path}: not a lenet-tf LeNet-5 (expected layers {', '.join(PAPER_LAYERS)}, "
            "28x28 input and 10 outputs)"
        )
    for weight in model.weights:
        if not np.isfinite(keras.ops.convert_to_numpy(weight)).all():
            raise ModelFileError(
                f"{path}: weight {weight.path} contains NaN or infinity (did its training diverge?)"
            )
    return model
