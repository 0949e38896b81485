"""LeNet-5 models trained by this project, shipped inside the package.

`"paper"` is the paper's network trained with the paper's affine distortions (20 passes, seeded
and deterministic): its Keras model (without optimizer state), its ONNX export and its
full-integer int8 TFLite export. `MODEL_CARD.md` beside the files says how they were made, what
each scores on the MNIST test set, their SHA-256, and what they are not for.

>>> from lenet_tf import pretrained
>>> pretrained.path("paper", format="onnx").name
'lenet5.onnx'
>>> pretrained.model_card("paper")["artifacts"]["onnx"]["file"]
'lenet5.onnx'

    model = pretrained.load("paper")               # a keras.Model, as from build_lenet5
    runtime = lenet_tf.inference.load_runtime(pretrained.path("paper", "onnx"))

`python -m export.pretrained` regenerates them (see docs/pretrained.md).
"""

import json
import pathlib

FOLDER = pathlib.Path(__file__).resolve().parent
NAMES = ("paper",)
# Format name -> file name inside the model's folder.
FORMATS = {"keras": "lenet5.keras", "onnx": "lenet5.onnx", "tflite-int8": "lenet5_int8.tflite"}
CARD_JSON = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"


def _folder(name):
    if name not in NAMES:
        raise ValueError(f"`name` must be one of {NAMES}. Received: name={name!r}")
    return FOLDER / name


def path(name="paper", format="onnx"):
    """The file of a shipped model.

    Args:
        name: Which model: `"paper"`.
        format: `"onnx"`, `"tflite-int8"` or `"keras"`.

    Returns:
        A `pathlib.Path` inside the installed package.

    Raises:
        ValueError: An unknown name or format.
        ModelFileError: The file is missing (a package built without its data files).
    """
    from lenet_tf.errors import ModelFileError

    if format not in FORMATS:
        raise ValueError(f"`format` must be one of {tuple(FORMATS)}. Received: format={format!r}")
    file = _folder(name) / FORMATS[format]
    if not file.is_file():
        raise ModelFileError(f"{file}: the pretrained {name!r} model is missing from this installation")
    return file


def model_card(name="paper"):
    """The model card of a shipped model as a dict (`model_card.json`): how it was made, the
    test error, size and SHA-256 of each artifact, the input/output contract, its limits."""
    return json.loads((_folder(name) / CARD_JSON).read_text())


def load(name="paper"):
    """Loads a shipped model as a Keras model (safely, through `lenet_tf.saving.load_lenet5`).

    Args:
        name: Which model: `"paper"`.

    Returns:
        The `keras.Model`, from raw `(batch, 28, 28)` pixels to the 10 RBF distances (use
        `lenet_tf.probability_model` for probabilities).
    """
    from lenet_tf.saving import load_lenet5

    return load_lenet5(path(name, "keras"))
