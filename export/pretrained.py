"""Regenerates the pretrained models shipped in `lenet_tf/pretrained/` and their model card.

Usage:

    python -m export.pretrained --data-dir ../shared/data/mnist
    python -m export.pretrained --data-dir ../shared/data/mnist --run runs/pretrained-paper

Trains the paper network with the paper's distortions, seeded and deterministic (so the same
command on the same library versions gives the same weights), or takes a finished run of that
exact recipe with `--run`, then writes into `lenet_tf/pretrained/paper/`: `lenet5.keras`
(weights, no optimizer state), `lenet5.onnx`, `lenet5_int8.tflite`, `model_card.json` and
`MODEL_CARD.md`. Each artifact is measured on the 10,000 MNIST test images in the runtime a user
runs it in, and the card records those figures with the files' sizes and SHA-256. The tests
check the shipped files against the card; they never run this command, so a changed artifact
is a reviewed change.
"""

import importlib.metadata
import json
import pathlib
import platform

from lenet_tf.commands import base

NAME = "paper"
# The recipe of the shipped model: the paper variant, the paper's distortions, 20 passes.
RECIPE = {"variant": "paper", "distort": True, "deterministic": True, "seed": 0, "epochs": 20}
TRAIN_COMMAND = "lenet-tf train --distort --deterministic --seed 0 --out runs/pretrained-paper"
REGENERATE_COMMAND = "python -m export.pretrained --data-dir DIR"
RUNTIMES = {"keras": "keras", "onnx": "onnxruntime", "tflite-int8": "litert"}
PACKAGES = ("tensorflow", "keras", "numpy", "tf2onnx", "onnx", "onnxruntime", "ai-edge-litert")
NOT_FOR = (
    "printed or typed digits (a font's 1 with flag and foot reads as a 7)",
    "several digits in one image (crop to one digit first)",
    "letters or other symbols: every image is read as one of the ten digits",
    "digits that are not dark-on-light or light-on-dark strokes (photos with shadows, ruled paper)",
)


def _finished_run(run_dir):
    """The `metrics.json` of `run_dir` if it is a finished run of `RECIPE`, else raises."""
    from lenet_tf.errors import RunFolderError

    try:
        metrics = json.loads((pathlib.Path(run_dir) / "metrics.json").read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(f"{run_dir}: no finished run (metrics.json: {err})") from None
    config = metrics.get("config", {})
    different = {key: config.get(key) for key, value in RECIPE.items() if config.get(key) != value}
    if "test_error" not in metrics or different:
        raise RunFolderError(f"{run_dir}: not a finished run of the shipped recipe {RECIPE} (differs: {different})")
    return metrics


def train_recipe(data_dir, run_dir):
    """Trains the shipped recipe into `run_dir` (resuming an interrupted run); returns metrics."""
    from lenet_tf.training import TrainConfig, train

    return train(TrainConfig(**RECIPE, data_dir=data_dir, out=str(run_dir), verbose=2))


def write_artifacts(model_path, folder, x_train):
    """Writes the three shipped files into `folder`; returns `{format: path}`."""
    from export.contract import build_metadata, recorded_test_error
    from export.onnx import export_onnx
    from export.tflite import export_tflite, representative_images
    from lenet_tf.files import atomic_path
    from lenet_tf.pretrained import FORMATS
    from lenet_tf.saving import load_lenet5

    model = load_lenet5(model_path)  # compile=False: no optimizer state is saved with it
    paths = {fmt: pathlib.Path(folder) / file for fmt, file in FORMATS.items()}
    with atomic_path(paths["keras"]) as tmp:
        model.save(tmp)
    error, source = recorded_test_error(model_path, "paper")
    metadata = {"source": paths["keras"], "test_error": error, "test_error_source": source}
    export_onnx(model, paths["onnx"], metadata=build_metadata(model, "onnx", **metadata))
    calibration = representative_images(x_train)
    int8 = build_metadata(model, "tflite", "int8", **metadata)
    export_tflite(model, paths["tflite-int8"], "int8", int8, calibration)
    return paths


def measure(paths, x_test, y_test):
    """Each artifact's figures on the test set, in the runtime a user would run it in."""
    from lenet_tf.files import file_sha256
    from lenet_tf.inference import load_runtime

    figures = {}
    for fmt, path in paths.items():
        predictions = load_runtime(path).predict(x_test).argmax(axis=-1)
        errors = int((predictions != y_test).sum())
        figures[fmt] = {
            "file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path),
            "runtime": RUNTIMES[fmt], "test_errors": errors, "test_error": errors / len(y_test),
        }  # fmt: skip
    return figures


def model_card(metrics, figures):
    """The model card as a dict: how the model was made, what it scores, what it is not for."""
    from export.contract import INPUT_CONTRACT, OUTPUT_CONTRACT

    versions = {"python": platform.python_version()}
    versions.update({package: importlib.metadata.version(package) for package in PACKAGES})
    return {
        "name": NAME,
        "model": "LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998), the paper's network, trained "
        "with the paper's random affine distortions",
        "training": {
            "command": TRAIN_COMMAND, "regenerate": REGENERATE_COMMAND, "recipe": RECIPE,
            "epochs": metrics["epochs"], "seconds": metrics["seconds"], "device": metrics.get("device"),
        },  # fmt: skip
        "versions": versions,
        "data": "MNIST: trained on the 60,000 training images, measured on the 10,000 test images",
        "input": INPUT_CONTRACT,
        "output": OUTPUT_CONTRACT,
        "artifacts": figures,
        "not_for": list(NOT_FOR),
    }


def card_markdown(card):
    """`MODEL_CARD.md`: the model card for people, rendered from `model_card.json`."""
    rows = "\n".join(
        f"| `{a['file']}` | {fmt} | {a['runtime']} | {100 * a['test_error']:.2f}% ({a['test_errors']}) "
        f"| {a['bytes']:,} | `{a['sha256']}` |"
        for fmt, a in card["artifacts"].items()
    )
    versions = ", ".join(f"{name} {version}" for name, version in card["versions"].items())
    limits = "\n".join(f"- {item}" for item in card["not_for"])
    training = card["training"]
    return f"""# Model card: lenet-tf pretrained `{card['name']}`

{card['model']}.

## Files and what they score on the MNIST test set (10,000 images)

| file | format | runtime | test error (errors) | bytes | SHA-256 |
|---|---|---|---:|---:|---|
{rows}

## How it was made

`{training['command']}` ({training['epochs']} passes, {training['seconds']:.0f} s on the {training['device']}),
then `{training['regenerate']}` exported and measured the files. Versions: {versions}.

## Input and output

- input `{card['input']['name']}`: {card['input']['description']}; shape {card['input']['shape']}, {card['input']['dtype']}.
- output `{card['output']['name']}`: {card['output']['description']}; shape {card['output']['shape']}.
- The int8 TFLite model takes int8 `pixel - 128` and gives int8 probabilities (scale 1/256); its
  runtimes in `lenet_tf.inference` convert both, and its probabilities sum to about 0.996.

## What it is not for

{limits}

Data: {card['data']}.
"""


def build_parser(prog=None):
    parser = base.ArgumentParser(
        prog=prog or "python -m export.pretrained",
        description="Regenerate the pretrained models shipped in lenet_tf/pretrained/ (train the "
        "shipped recipe, export ONNX and int8 TFLite, measure each on the MNIST test set, write "
        "the model card).",
    )
    base.add_data_dir_argument(parser, ", for training, calibration and the test-set figures")
    parser.add_argument("--run", metavar="RUN_DIR", default="runs/pretrained-paper",
                        help="run folder of the recipe: trained there unless it holds a finished run "
                             "(default: runs/pretrained-paper)")  # fmt: skip
    parser.add_argument("--out", metavar="DIR", help="folder for the files (default: the package's own)")
    base.add_verbose_argument(parser)
    return parser


def execute(args):
    from lenet_tf import pretrained
    from lenet_tf.data import load_mnist
    from lenet_tf.files import atomic_path, write_json

    run_dir = pathlib.Path(args.run)
    if not (run_dir / "metrics.json").exists():
        train_recipe(args.data_dir, run_dir)
    metrics = _finished_run(run_dir)
    (x_train, _), (x_test, y_test) = load_mnist(args.data_dir)
    folder = pathlib.Path(args.out) if args.out else pretrained.FOLDER / NAME
    paths = write_artifacts(run_dir / "model.keras", folder, x_train)
    card = model_card(metrics, measure(paths, x_test, y_test))
    write_json(folder / pretrained.CARD_JSON, card)
    with atomic_path(folder / pretrained.CARD_MARKDOWN) as tmp:
        tmp.write_text(card_markdown(card))
    for fmt, figures in card["artifacts"].items():
        print(f"{folder / figures['file']}: {fmt}, {figures['bytes']:,} bytes, test error {100 * figures['test_error']:.2f}%")
    return 0


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
