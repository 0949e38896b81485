"""Bad input everywhere, safe loading, atomic writes and resource bounds.

Every command answers bad input with one line, `error: <file or flag>: <fault>`, and exit
status 2: never a traceback, never a hang. The commands run in this process (`main(argv)`,
the code `python -m` runs) so that forty cases cost no TensorFlow start-ups; one case runs as a
real subprocess. The IDX reader and the image preprocessing have their property-based tests in
test_data.py and test_predict.py; the flags' one-line errors are in test_cli.py.
"""

import fcntl
import gzip
import json
import os
import pathlib
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import REPO, assert_one_line_error, command_env, run_cli


# --- model files ---------------------------------------------------------------------------


def _save(model, path):
    model.save(path)
    return path


def _good_model(folder):
    from lenet_tf.model import build_lenet5

    return _save(build_lenet5("paper"), folder / "lenet5.keras")


def _lambda_model(folder):
    import keras

    inputs = keras.Input((28, 28))
    x = keras.layers.Lambda(lambda t: t / 255.0)(inputs)
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(x))
    return _save(keras.Model(inputs, outputs), folder / "lambda.keras")


def _unknown_class_model(folder):
    import keras

    class Mystery(keras.layers.Layer):  # not registered: Keras cannot know what it is
        def call(self, x):
            return x

    inputs = keras.Input((28, 28))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(Mystery(name="mystery")(inputs)))
    return _save(keras.Model(inputs, outputs), folder / "unknown.keras")


def _other_functional_model(folder):
    import keras

    inputs = keras.Input((28, 28))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    return _save(keras.Model(inputs, outputs), folder / "other.keras")


def _sequential_model(folder):
    import keras

    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(10)])
    return _save(model, folder / "sequential.keras")


def _nan_weights_model(folder):
    from lenet_tf.model import build_lenet5

    model = build_lenet5("paper")
    kernel = model.get_layer("F6").kernel
    kernel.assign(np.full(kernel.shape, np.nan, dtype="float32"))
    return _save(model, folder / "nan.keras")


def _zip(path, members):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    good = _good_model(folder)
    (folder / "folder.keras").mkdir()
    (folder / "empty.keras").write_bytes(b"")
    (folder / "text.keras").write_text("this is not a model\n")
    (folder / "truncated.keras").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (folder / "lenet5.h5").write_bytes(good.read_bytes())
    return {
        "good": good,
        "missing": folder / "missing.keras",
        "folder": folder / "folder.keras",
        "empty": folder / "empty.keras",
        "text": folder / "text.keras",
        "truncated": folder / "truncated.keras",
        "suffix": folder / "lenet5.h5",
        "no_config": _zip(folder / "noconfig.keras", {"hello.txt": "hi"}),
        "bad_config": _zip(folder / "badconfig.keras", {"config.json": "{not json", "model.weights.h5": b""}),
        "bomb": _zip(folder / "bomb.keras", {"config.json": "{}", "model.weights.h5": bytes(80 * 2**20)}),
        "lambda": _lambda_model(folder),
        "unknown": _unknown_class_model(folder),
        "other": _other_functional_model(folder),
        "sequential": _sequential_model(folder),
        "nan": _nan_weights_model(folder),
    }


MODEL_CASES = [
    ("missing", ["no such file"]),
    ("folder", ["is a folder, expected a .keras model file"]),
    ("empty", ["not a Keras model file, or truncated"]),
    ("text", ["not a Keras model file, or truncated"]),
    ("truncated", ["not a Keras model file, or truncated"]),
    ("suffix", ["expected a .keras model file"]),
    ("no_config", ["not a Keras model file (no config.json or model.weights.h5 inside)"]),
    ("bad_config", ["corrupt Keras model file"]),
    ("bomb", ["refused: unpacks to 80 MB, more than the 64 MB any LeNet-5 needs"]),
    ("lambda", ["refused: layer 'lambda' is a Lambda layer, which can run arbitrary Python code"]),
    ("unknown", ["refused: layer 'mystery' has class 'Mystery', which is not part of a lenet-tf LeNet-5"]),
    ("other", ["not a lenet-tf LeNet-5 (expected layers C1, S2, C3, S4, C5, F6, OUTPUT"]),
    ("sequential", ["not a lenet-tf LeNet-5 (the file holds a Sequential"]),
    ("nan", ["weight F6/kernel contains NaN or infinity"]),
]


@pytest.mark.parametrize("name, fragments", MODEL_CASES, ids=[case[0] for case in MODEL_CASES])
def test_evaluate_refuses_a_bad_model_file_in_one_line(models, name, fragments, mnist_dir, capsys):
    from lenet_tf.commands import evaluate

    status, _, err = run_cli(evaluate.main, ["--model", models[name], "--data-dir", mnist_dir], capsys)
    assert_one_line_error(status, err, str(models[name]), *fragments)


def test_good_untrained_model_loads(models):
    from lenet_tf.saving import load_lenet5

    assert load_lenet5(models["good"]).name == "lenet5_paper"


def test_a_compiled_model_loads_with_its_loss_metric_and_schedule_in_a_fresh_process(tmp_path):
    from lenet_tf.model import build_lenet5
    from lenet_tf.training import TrainConfig
    from lenet_tf.training.recipes import compile_lenet5

    model = build_lenet5("paper")
    compile_lenet5(model, TrainConfig(recipe="fast"), steps_per_epoch=100)
    model.save(tmp_path / "compiled.keras")
    # A fresh process: only what importing `lenet_tf.saving` registers is known there.
    script = (
        "import sys; from lenet_tf.saving import load_lenet5; "
        "m = load_lenet5(sys.argv[1], compile=True); "
        "print(type(m.loss).__name__, type(m.optimizer._learning_rate).__name__, m.optimizer._learning_rate.get_config())"
    )
    result = subprocess.run([sys.executable, "-c", script, tmp_path / "compiled.keras"],
                            env=command_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    schedule = {"peak": 8e-3, "warmup_steps": 120, "decay_steps": 480, "start_factor": 0.04}
    assert result.stdout.strip() == f"MAPLoss WarmupCosineDecay {schedule}"


def test_the_config_check_refuses_before_keras_reads_anything(models):
    """The JSON check stands on its own, whatever Keras's safe mode would do."""
    from lenet_tf.saving import _read_config, _refusal

    assert "Lambda layer" in _refusal(_read_config(models["lambda"]))
    assert "'Mystery'" in _refusal(_read_config(models["unknown"]))
    assert _refusal(_read_config(models["good"])) is None
    # An object from a module outside Keras and lenet-tf, nested anywhere, is refused too.
    config = _read_config(models["good"])
    config["config"]["layers"][1]["config"]["dtype"] = {"module": "os", "class_name": "system", "config": {}}
    assert "unknown class 'system' from module 'os'" in _refusal(config)


@pytest.mark.parametrize("entry", [
    {"module": "builtins", "class_name": "function", "config": "eval"},
    {"module": "builtins", "class_name": "function", "config": "exec"},
    {"module": "builtins", "class_name": "getattr", "config": {}},
])  # fmt: skip
def test_the_config_check_refuses_python_builtins(models, entry):
    from lenet_tf.saving import _read_config, _refusal

    config = _read_config(models["good"])
    config["config"]["layers"][2]["config"]["activation"] = entry
    assert "refused: names Python's built-in" in _refusal(config)


def test_bad_model_through_a_real_subprocess_has_no_traceback(models, mnist_dir):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "lenet_tf.evaluate", "--model", str(models["lambda"]), "--data-dir", str(mnist_dir)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_one_line_error(result.returncode, result.stderr, "Lambda layer")
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")


# --- MNIST files ---------------------------------------------------------------------------


def _idx(type_code, shape, data):
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + data


@pytest.fixture(scope="module")
def real_train_labels(mnist_dir):
    return gzip.decompress((mnist_dir / "train-labels-idx1-ubyte.gz").read_bytes())


def _mnist_folder(tmp_path, mnist_dir, train_labels=None, leave_out=None):
    """A copy of the MNIST folder (links) with `train-labels-idx1-ubyte` replaced by raw bytes."""
    folder = tmp_path / "mnist"
    folder.mkdir()
    for source in mnist_dir.glob("*-ubyte.gz"):
        if source.name.startswith(leave_out or "\0") or (train_labels is not None and "train-labels" in source.name):
            continue
        (folder / source.name).symlink_to(source)
    if train_labels is not None:
        (folder / "train-labels-idx1-ubyte").write_bytes(train_labels)
    return folder


def _labels(real, **change):
    labels = np.frombuffer(real, np.uint8, offset=8).copy()
    if "count" in change:
        labels = labels[: change["count"]]
    if "bad" in change:
        labels[123] = change["bad"]
    return _idx(0x08, labels.shape, labels.tobytes())


DATA_CASES = {
    "wrong magic number": (lambda real: b"\x08\x03" + real[2:], ["train-labels-idx1-ubyte: bad magic number 0x0803"]),
    "unknown element type": (lambda real: real[:2] + b"\x07" + real[3:], ["unknown element type 0x07"]),
    "wrong element type": (
        lambda real: _idx(0x0D, (60000,), np.zeros(60000, ">f4").tobytes()),
        ["expected 1-D uint8 labels, found 1-D float32"],
    ),
    "truncated data": (lambda real: real[:1000], ["truncated: expected 60000 bytes of data, found 992"]),
    "truncated header": (lambda real: real[:6], ["truncated header"]),
    "image/label count mismatch": (
        lambda real: _labels(real, count=59_999), ["59999 labels for 60000 images"]
    ),
    "label outside 0-9": (lambda real: _labels(real, bad=10), ["label 10 at index 123 is outside 0-9"]),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_train_refuses_bad_mnist_files_in_one_line(case, real_train_labels, mnist_dir, tmp_path, capsys):
    from lenet_tf.commands import train

    make, fragments = DATA_CASES[case]
    folder = _mnist_folder(tmp_path, mnist_dir, train_labels=make(real_train_labels))
    argv = ["--data-dir", folder, "--out", tmp_path / "run", "--epochs", "1"]
    status, _, err = run_cli(train.main, argv, capsys)
    assert_one_line_error(status, err, str(folder / "train-labels-idx1-ubyte"), *fragments)
    assert not (tmp_path / "run").exists()  # a run that cannot start leaves no folder


@pytest.mark.parametrize(
    "setup, fragments",
    [
        ("missing", ["no such folder"]),
        ("file", ["is not a folder"]),
        ("incomplete", ["missing t10k-images-idx3-ubyte[.gz]"]),
    ],
)
def test_train_refuses_a_missing_mnist_folder_or_file(setup, fragments, mnist_dir, tmp_path, capsys):
    from lenet_tf.commands import train

    folder = tmp_path / "mnist"
    if setup == "file":
        folder.write_text("not a folder")
    elif setup == "incomplete":
        folder = _mnist_folder(tmp_path, mnist_dir, leave_out="t10k-images")
    status, _, err = run_cli(train.main, ["--data-dir", folder, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(status, err, str(folder), *fragments)
    assert not (tmp_path / "run").exists()


def test_offline_without_a_data_folder_train_fails_in_one_line_and_leaves_nothing(tmp_path):
    import socket

    try:
        socket.create_connection(("storage.googleapis.com", 443), timeout=5).close()
        pytest.skip("this machine reaches the MNIST download host: TFDS would download")
    except OSError:
        pass
    env = {key: value for key, value in os.environ.items() if key not in ("LENET_MNIST_DIR", "TFDS_DATA_DIR")}
    env.update(HOME=str(tmp_path / "home"), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "lenet_tf.train", "--out", str(tmp_path / "run")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: tensorflow-datasets cannot download MNIST: storage.googleapis.com is unreachable")
    assert not (tmp_path / "run").exists() and not (tmp_path / "home" / "tensorflow_datasets").exists()


def test_evaluate_refuses_bad_mnist_files(models, mnist_dir, tmp_path, capsys):
    from lenet_tf import evaluate

    argv = ["--model", models["good"], "--data-dir", tmp_path / "nowhere"]
    status, _, err = run_cli(evaluate.main, argv, capsys)
    assert_one_line_error(status, err, "nowhere: no such folder")


# --- the run folder --------------------------------------------------------------------------


def test_train_refuses_an_out_path_that_is_a_file(tmp_path, mnist_dir, capsys):
    from lenet_tf.commands import train

    (tmp_path / "run").write_text("a file")
    status, _, err = run_cli(train.main, ["--data-dir", mnist_dir, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(status, err, f"--out: {tmp_path / 'run'}: exists and is not a folder")


def test_two_trainings_never_share_a_run_folder(tmp_path, mnist_dir, capsys):
    from lenet_tf.commands import train

    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("pid 4242\n")
        lock.flush()
        status, _, err = run_cli(train.main, ["--data-dir", mnist_dir, "--out", run], capsys)
    assert_one_line_error(status, err, f"{run}: another training is running in this folder (pid 4242)")


def test_a_backup_of_other_settings_is_not_resumed(tmp_path, mnist_dir, capsys):
    from lenet_tf.commands import train
    from lenet_tf.training import TrainConfig

    backup = tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    (backup / "epoch-3.weights.h5").write_bytes(b"")
    fingerprint = TrainConfig(batch_size=64).fingerprint()
    (backup / "training_metadata.json").write_text(
        json.dumps({"epoch": 3, "weights": "epoch-3.weights.h5", "config": fingerprint})
    )
    argv = ["--data-dir", mnist_dir, "--out", tmp_path / "run", "--batch-size", "32"]
    status, _, err = run_cli(train.main, argv, capsys)
    line = assert_one_line_error(status, err, str(backup), "holds an interrupted run with other settings")
    assert "batch_size 64 there, 32 now" in line and "delete" in line


@pytest.mark.parametrize(
    "env, argv, fragment",
    [
        ({}, ["--strategy", "multiworker"], "--strategy: multiworker: TF_CONFIG is not set"),
        ({"TF_CONFIG": "{oops"}, ["--strategy", "multiworker"], "--strategy: multiworker: TF_CONFIG is not valid"),
        ({}, ["--cpu-devices", "2"], "--cpu-devices: needs strategy 'mirrored' or 'multiworker'"),
    ],
)
def test_train_refuses_an_impossible_distribution_setup(env, argv, fragment, monkeypatch, tmp_path, mnist_dir, capsys):
    from lenet_tf.commands import train

    monkeypatch.delenv("TF_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    status, _, err = run_cli(train.main, [*argv, "--data-dir", mnist_dir, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(status, err, fragment)


# --- artifacts and images, through predict and export ------------------------------------------


def _onnx_with_input(path, dims, outputs=1):
    """An ONNX graph passing its input `dims` through to `outputs` outputs."""
    import onnx
    from onnx import TensorProto, helper

    names = [f"probabilities{i or ''}" for i in range(outputs)]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], [name]) for name in names], "wrong",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims) for name in names],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _tflite_with_input(path, shape):
    import tensorflow as tf

    function = tf.function(lambda image: tf.reshape(image, (-1, shape[1] * shape[2]))[:, :10])
    concrete = function.get_concrete_function(tf.TensorSpec(shape, tf.float32, name="image"))
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([concrete], function).convert())
    return path


def _png(path, width, height, pixels=None):
    """A grayscale PNG; with `pixels=None`, only its header is real (no decodable data)."""
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = b"" if pixels is None else b"".join(b"\0" + bytes(row) for row in pixels)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("artifacts")
    (folder / "random.onnx").write_bytes(os.urandom(4096))
    (folder / "random.tflite").write_bytes(os.urandom(4096))
    (folder / "model.pt").write_bytes(b"\x80\x04")
    return {
        "corrupt onnx": folder / "random.onnx",
        "corrupt tflite": folder / "random.tflite",
        "onnx of wrong input shape": _onnx_with_input(folder / "wrong.onnx", ["N", 32, 32]),
        "onnx with two outputs": _onnx_with_input(folder / "two.onnx", ["N", 28, 28], outputs=2),
        "tflite of wrong input shape": _tflite_with_input(folder / "wrong.tflite", (1, 32, 32)),
        "unknown artifact type": folder / "model.pt",
    }


ARTIFACT_CASES = {
    "corrupt onnx": "not a valid ONNX model",
    "corrupt tflite": "not a valid TFLite model",
    "onnx of wrong input shape": "input shape (batch, 32, 32) is not the (batch, 28, 28) image contract",
    "onnx with two outputs": "has 1 inputs and 2 outputs, expected 1 and 1",
    "tflite of wrong input shape": "input shape (1, 32, 32) is not the (batch, 28, 28) image contract",
    "unknown artifact type": "unknown artifact type",
}


@pytest.mark.parametrize("case", list(ARTIFACT_CASES))
def test_predict_refuses_a_bad_artifact_in_one_line(case, artifacts, tmp_path, capsys):
    from lenet_tf import predict

    image = _png(tmp_path / "digit.png", 28, 28, [[255 * (9 < c < 18) for c in range(28)] for _ in range(28)])
    status, _, err = run_cli(predict.main, ["--model", artifacts[case], image], capsys)
    assert_one_line_error(status, err, str(artifacts[case]), ARTIFACT_CASES[case])


def test_predict_reports_each_bad_image_in_one_line_and_reads_the_rest(models, tmp_path, capsys):
    from lenet_tf import predict

    digit = _png(tmp_path / "digit.png", 28, 28, [[255 * (9 < c < 18) for c in range(28)] for _ in range(28)])
    bad = {
        tmp_path / "missing.png": "no such file",
        tmp_path / "empty.png": "not an image file PIL can read",
        tmp_path / "notes.png": "not an image file PIL can read",
        _png(tmp_path / "huge.png", 10_000, 5_000): "10000x5000 pixels is above the limit of 40,000,000",
        _png(tmp_path / "blank.png", 28, 28, [[200] * 28] * 28): "no ink found (the image is all one colour)",
        _png(tmp_path / "cut.png", 28, 28): "cannot decode image",
    }
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("shopping list")
    status, out, err = run_cli(predict.main, ["--model", models["good"], digit, *bad], capsys)
    assert status == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    for path, fragment in bad.items():
        assert any(line.startswith(f"error: {path}: ") and fragment in line for line in lines), (path, lines)
    assert f"{digit}: " in out  # the good image is still read


def test_failed_export_leaves_the_existing_artifact_alone(models, mnist_dir, tmp_path, capsys):
    from export import onnx as export_onnx

    existing = tmp_path / "lenet5.onnx"
    existing.write_bytes(b"the good artifact of yesterday")
    argv = ["--model", models["lambda"], "--out", existing, "--data-dir", mnist_dir]
    status, _, err = run_cli(export_onnx.main, argv, capsys)
    assert_one_line_error(status, err, "Lambda layer")
    assert existing.read_bytes() == b"the good artifact of yesterday"
    assert [p.name for p in tmp_path.iterdir()] == ["lenet5.onnx"]


@pytest.mark.parametrize("module", ["savedmodel", "tflite", "onnx"])
def test_every_export_refuses_a_model_that_is_not_a_lenet5(module, models, mnist_dir, tmp_path, capsys):
    import importlib

    main = importlib.import_module(f"export.{module}").main
    out = tmp_path / {"savedmodel": "saved", "tflite": "m.tflite", "onnx": "m.onnx"}[module]
    status, _, err = run_cli(main, ["--model", models["other"], "--out", out, "--data-dir", mnist_dir], capsys)
    assert_one_line_error(status, err, str(models["other"]), "not a lenet-tf LeNet-5")
    assert not out.exists()


def test_verify_refuses_a_corrupt_artifact_before_measuring(models, artifacts, mnist_dir, capsys):
    from export import verify

    argv = ["--model", models["good"], artifacts["corrupt onnx"], "--data-dir", mnist_dir, "--quiet"]
    status, _, err = run_cli(verify.main, argv, capsys)
    assert_one_line_error(status, err, "not a valid ONNX model")


# --- arrays passed to the Python API ------------------------------------------------------------


@pytest.mark.parametrize(
    "images, labels, message",
    [
        (np.full((2, 28, 28), np.nan, "float32"), [1, 2], "`images` contains 1568 NaN or infinite value(s)"),
        (np.where(np.eye(28)[None] > 0, np.inf, 0.0).repeat(2, 0), [1, 2], "NaN or infinite"),
        (np.zeros((2, 32, 32)), [1, 2], "`images` must have shape (N, 28, 28). Received: shape=(2, 32, 32)"),
        (np.zeros((0, 28, 28)), [], "`images` is empty"),
        (np.full((2, 28, 28), 300.0), [1, 2], "raw pixels in [0, 255]"),
        (np.full((2, 28, 28), "x"), [1, 2], "must hold numbers"),
        (np.zeros((2, 28, 28)), [1], "`labels` must have shape (2,)"),
        (np.zeros((2, 28, 28)), [1, 10], "`labels` must be digits 0-9. Received: values in [1, 10]"),
        (np.zeros((2, 28, 28)), [1.5, 2], "`labels` must be integer digits 0-9"),
        (np.zeros((2, 28, 28)), [np.nan, 2], "`labels` must be integer digits 0-9"),
    ],
)
def test_evaluate_model_refuses_bad_arrays(images, labels, message):
    from lenet_tf.evaluation import evaluate_model

    with pytest.raises(ValueError) as error:
        evaluate_model(None, images, labels)  # checked before the model is used
    assert message in str(error.value)


# --- atomic writes and resource bounds ----------------------------------------------------------


def test_an_output_replaces_only_an_earlier_output_of_its_kind(tmp_path):
    from lenet_tf.files import atomic_path, check_replaceable

    (tmp_path / "old.json").write_text("{}")
    saved_model, empty, documents = tmp_path / "saved_model", tmp_path / "empty", tmp_path / "documents"
    for folder in (saved_model, empty, documents):
        folder.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"graph")
    (documents / "notes.txt").write_text("a user's file")
    for path in (tmp_path / "old.json", tmp_path / "new.json"):
        check_replaceable(path)
    for folder in (saved_model, empty, tmp_path / "new_folder"):
        check_replaceable(folder, folder_marker="saved_model.pb")
    with pytest.raises(IsADirectoryError, match="is a folder, not replaced by a file"):
        check_replaceable(saved_model)
    with pytest.raises(FileExistsError, match="is a file, not replaced by a folder"):
        check_replaceable(tmp_path / "old.json", folder_marker="saved_model.pb")
    with pytest.raises(FileExistsError, match="is a folder without saved_model.pb, not replaced"):
        with atomic_path(documents, folder_marker="saved_model.pb") as tmp:
            tmp.mkdir()
    assert [path.name for path in documents.iterdir()] == ["notes.txt"]


def test_disk_full_while_saving_keeps_the_old_model_and_decodes_mnist_once(
    tmp_path, mnist_dir, monkeypatch, capsys
):
    """One short in-process training checks three things at once: MNIST is decoded once, a
    failed save of `model.keras` leaves the previous one intact with no temporary left, and the
    command answers the failure in one line."""
    import errno

    import keras

    from lenet_tf import data
    from lenet_tf.commands import train

    decoded = []
    monkeypatch.setattr(data, "read_idx", lambda path, _read=data.read_idx: decoded.append(path) or _read(path))
    data._load_idx_folder.cache_clear()

    def disk_full(self, path, *args, **kwargs):
        pathlib.Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(keras.Model, "save", disk_full)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"yesterday's good model")
    argv = ["--data-dir", mnist_dir, "--out", run, "--epochs", "2", "--train-limit", "256",
            "--batch-size", "64", "--no-ema"]  # fmt: skip
    status, _, err = run_cli(train.main, argv, capsys)

    assert_one_line_error(status, err, "model.keras: No space left on device")
    assert (run / "model.keras").read_bytes() == b"yesterday's good model"
    assert not [p for p in run.iterdir() if p.name.startswith(".model.keras")]
    assert json.loads((run / "backup" / "training_metadata.json").read_text())["epoch"] == 2  # kept to resume
    assert sorted(pathlib.Path(p).name.split("-")[0] for p in decoded) == ["t10k", "t10k", "train", "train"]


def test_a_diverged_training_stops_before_its_backup_saves_it(tmp_path):
    from lenet_tf.training import TrainConfig, loop
    from lenet_tf.training.callbacks import EpochBackup, MemoryLog, StopOnNaN, TrainingDiverged, TrainingLog
    from lenet_tf.training.run_folder import RunFolder

    with pytest.raises(TrainingDiverged, match="loss is nan after epoch 2") as error:
        StopOnNaN().on_epoch_end(1, {"loss": float("nan")})
    assert error.value.setting == "learning_rate"  # the command names it --lr
    StopOnNaN().on_epoch_end(0, {"loss": 12.5})
    logs = {"loss": 12.5}
    MemoryLog().on_epoch_end(0, logs)
    assert logs["rss_mb"] > 0  # memory is logged each epoch
    backup, memory = EpochBackup(tmp_path / "backup", {}, 1), MemoryLog()
    callbacks = loop._callbacks(TrainConfig(), RunFolder(tmp_path), backup, memory, None)
    kinds = [type(callback) for callback in callbacks]
    assert kinds.index(StopOnNaN) < kinds.index(EpochBackup), "a NaN epoch must stop before it is backed up"
    assert kinds.index(MemoryLog) < kinds.index(TrainingLog), "rss_mb must reach the log"
    assert kinds.index(TrainingLog) < kinds.index(EpochBackup), "a backed-up epoch must have its log row"


def test_stale_temporaries_of_a_killed_run_are_swept_and_nothing_else(tmp_path):
    from lenet_tf.training.run_folder import remove_stale_temporaries

    for name in (".model.keras.x1y2", ".metrics.json.abc", ".epoch-3.weights.h5.q", ".my.notes", "keep.d"):
        (tmp_path / name).mkdir()
    (tmp_path / ".lock").write_text("")
    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", ".my.notes", "keep.d"]
