"""Exports of the trained LeNet-5: SavedModel, TFLite (four quantizations, C array), ONNX.

The artifacts are written once per session by the README's command lines (the `exported`
fixture of conftest.py) and checked end to end by `python -m export.verify`,
then one by one against the Keras model on real MNIST test images: the operators, the
metadata, the C array compiled by a C++ compiler, TensorFlow Lite Micro, atomic writing, the
command lines' exit statuses and output, and what the commands import.
"""

import json
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import (
    EXPORT_COMMANDS, REPO, SUBPROCESS_EXPORTS, assert_one_line_error, command_env, run_cli, run_module,
)  # fmt: skip

from export import c_array, cli, contract, flatbuffer, folding, savedmodel, tflite, verify
from export import onnx as onnx_export
from lenet_tf import inference
from lenet_tf.files import file_sha256

PARITY_IMAGES = 2000
TFLM_IMAGES = 500
# Images on TFLite Micro in the end-to-end verify run (all 10,000 take half a minute).
VERIFY_TFLM_IMAGES = 1000


@pytest.fixture(scope="module")
def model(exported):
    from lenet_tf.saving import load_lenet5

    return load_lenet5(exported.model_path)


@pytest.fixture(scope="module")
def test_images(mnist):
    _, (x_test, y_test) = mnist
    return x_test, y_test


@pytest.fixture(scope="module")
def reference(model, test_images):
    """Keras probabilities of all 10,000 test images."""
    from lenet_tf.model import probability_model

    return probability_model(model).predict(test_images[0], batch_size=1024, verbose=0)


@pytest.fixture(scope="module")
def verify_run(exported, mnist_dir):
    """`python -m export.verify` over every artifact, as the README runs it."""
    paths = [exported.paths[name] for name in EXPORT_COMMANDS]
    return run_module(
        "export.verify", "--model", exported.model_path, "--data-dir", mnist_dir,
        "--tflm-images", VERIFY_TFLM_IMAGES, *paths,
    )  # fmt: skip


# --- End to end through the command lines --------------------------------------------------------


def test_readme_export_commands_then_verify_pass_end_to_end(exported, verify_run):
    for name, result in exported.results.items():
        assert result.returncode == 0, (name, result.stderr)
    out = {name: result.stdout for name, result in exported.results.items()}
    assert re.fullmatch(r"\S+lenet5_savedmodel: SavedModel, [\d,]+ bytes\n", out["savedmodel"])
    for name, precision in [("none", "float32"), ("float16", "float16"), ("dynamic", "dynamic"), ("int8", "int8")]:
        assert f"lenet5_{name}.tflite: TFLite {precision}, " in out[name], out[name]
    assert "TFLM arena" in out["int8"] and "C array g_lenet5_int8_model_data" in out["int8"]
    assert (exported.folder / "lenet5_int8_model_data.h").exists()
    assert "ONNX opset 17" in out["onnx"] and "(3 full convolutions)" in out["onnx"]

    assert verify_run.returncode == 0, verify_run.stdout + verify_run.stderr
    rows = [line.split("|") for line in verify_run.stdout.splitlines() if line.startswith("| lenet5")]
    assert sorted((row[1].strip(), row[2].strip()) for row in rows) == sorted([
        ("lenet5_savedmodel", "tensorflow"), ("lenet5_none.tflite", "litert"),
        ("lenet5_float16.tflite", "litert"), ("lenet5_dynamic.tflite", "litert"),
        ("lenet5_int8.tflite", "litert"), ("lenet5_int8.tflite", "tflm"), ("lenet5.onnx", "onnxruntime"),
    ])  # fmt: skip
    assert all(row[-2].strip().startswith("pass") for row in rows), verify_run.stdout
    (tflm,) = [row for row in rows if row[2].strip() == "tflm"]
    assert "arena" in tflm[-2] and f"LiteRT reference on {VERIFY_TFLM_IMAGES:,}/{VERIFY_TFLM_IMAGES:,}" in tflm[-2]


@pytest.mark.parametrize("name", [*SUBPROCESS_EXPORTS, "verify"])
def test_commands_print_nothing_on_stderr_at_default_verbosity(name, exported, verify_run):
    result = verify_run if name == "verify" else exported.results[name]
    assert result.returncode == 0 and result.stderr == "", result.stderr


def _python(script):
    return subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=command_env(), capture_output=True, text=True, timeout=120
    )


def test_help_and_refused_flags_do_not_import_tensorflow():
    """`--help`, a bad flag and a refused `--c-array` answer before any heavy import."""
    script = textwrap.dedent("""
        import json, sys
        from lenet_tf.commands import dispatch
        from export import onnx, savedmodel, tflite, verify
        calls = [(module.main, ["--help"]) for module in (savedmodel, tflite, onnx, verify)]
        calls += [(dispatch.main, ["export", "tflite", "--help"]),
                  (tflite.main, ["--model", "m.keras", "--out", "m.tflite", "--quantize", "int4"]),
                  (tflite.main, ["--model", "m.keras", "--out", "m.tflite", "--c-array", "m.cc"])]
        statuses = []
        for main, argv in calls:
            try:
                main(argv)
            except SystemExit as exit:
                statuses.append(exit.code)
        heavy = ("tensorflow", "keras", "onnx", "tf2onnx", "onnxruntime", "ai_edge_litert", "tflite_micro")
        print(json.dumps([statuses, sorted({name.split(".")[0] for name in sys.modules} & set(heavy))]))
    """)  # fmt: skip
    result = _python(script)
    statuses, imported = json.loads(result.stdout.splitlines()[-1])
    assert statuses == [0, 0, 0, 0, 0, 2, 2], result.stderr
    assert "error: --c-array: needs the full-integer int8 model" in result.stderr
    assert imported == []


def test_running_tflite_and_onnx_artifacts_does_not_import_tensorflow(exported):
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        from lenet_tf.inference import load_runtime
        images = np.zeros((2, 28, 28), np.uint8)
        for path, backend in [({str(exported.paths['onnx'])!r}, None), ({str(exported.paths['int8'])!r}, None),
                              ({str(exported.paths['int8'])!r}, "tflm")]:
            assert load_runtime(path, backend=backend).predict(images).shape == (2, 10)
        print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & {{"tensorflow", "keras"}})))
    """)  # fmt: skip
    result = _python(script)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


# --- What the artifacts compute -------------------------------------------------------------


@pytest.mark.parametrize("trainable_centers", [False, True])
def test_folded_graph_computes_the_paper_posterior(trainable_centers, test_images):
    import keras

    from lenet_tf.model import build_lenet5, probability_model

    keras.utils.set_random_seed(3)
    model = build_lenet5("paper", trainable_centers=trainable_centers)
    if trainable_centers:  # centres of unequal norms exercise the folded bias
        rbf = model.get_layer("OUTPUT")
        rbf.centers.assign(rbf.centers * np.random.default_rng(0).uniform(0.5, 1.5, (10, 1)).astype("float32"))
    images = test_images[0][:500]
    folded = folding.inference_model(model)
    kinds = {type(layer).__name__ for layer in folded.layers}
    assert not {"TrainableSubsampling", "SparseConv2D", "EuclideanRBF"} & kinds
    expected = probability_model(model).predict(images, verbose=0)
    np.testing.assert_allclose(folded.predict(images, verbose=0), expected, atol=1e-5)


def test_modern_variant_and_literal_graph_are_the_probability_model():
    from lenet_tf.model import build_lenet5

    modern = folding.inference_model(build_lenet5("modern"))
    assert modern.layers[-1].name == "probabilities" and "Identity" in type(modern.layers[-1]).__name__
    literal = folding.inference_model(build_lenet5("paper"), graph="literal")
    assert "EuclideanRBF" in {type(layer).__name__ for layer in literal.layers}
    with pytest.raises(ValueError, match="'flat'"):
        folding.inference_model(build_lenet5("paper"), graph="flat")


def test_literal_graph_exports_with_tflite_micro_int8_operators(model, test_images, reference, tmp_path, monkeypatch):
    from lenet_tf.layers import block_conv

    monkeypatch.setattr(block_conv, "onednn_enabled", lambda: True)  # where training takes other forms
    images = test_images[0][:PARITY_IMAGES]
    path = tmp_path / "literal.tflite"
    tflite.export_tflite(model, path, "none", graph="literal")
    operators = flatbuffer.operators(path.read_bytes())
    ops = set(operators)
    assert {"SUM", "MUL", "SUB"} <= ops and not {"SQUARE", "EXP", "NEG"} & ops
    # C1, C3 and C5 (on 2x2 blocks and a matrix product in training) export as plain CONV_2D,
    # S2 and S4 (depthwise convolutions in training on oneDNN) as average pools: on every host.
    assert "TRANSPOSE" not in ops and operators.count("CONV_2D") == 3
    assert operators.count("AVERAGE_POOL_2D") == 2 and "DEPTHWISE_CONV_2D" not in ops
    difference = inference.load_runtime(path).predict(images) - reference[:PARITY_IMAGES]
    assert np.abs(difference).max() <= verify.FLOAT_MAX_ABS_DIFF
    calibration = tflite.representative_images(test_images[0], count=100)  # operators only
    tflite.export_tflite(model, path, "int8", calibration_images=calibration, graph="literal")
    assert set(flatbuffer.operators(path.read_bytes())) <= tflite.TFLM_INT8_OPERATORS
    assert flatbuffer.read_metadata(path.read_bytes())["graph"] == "literal"


@pytest.mark.parametrize("name", ["savedmodel", "none", "onnx"])
def test_float32_artifacts_match_keras_exactly_in_digits_and_within_1e4(name, exported, test_images, reference):
    probabilities = inference.load_runtime(exported.paths[name]).predict(test_images[0][:PARITY_IMAGES])
    expected = reference[:PARITY_IMAGES]
    assert probabilities.dtype == np.float32 and probabilities.shape == (PARITY_IMAGES, 10)
    np.testing.assert_array_equal(probabilities.argmax(-1), expected.argmax(-1))
    assert np.abs(probabilities - expected).max() <= verify.FLOAT_MAX_ABS_DIFF
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["float16", "dynamic"])
def test_reduced_precision_tflite_agrees_on_at_least_99_9_percent_of_10000(name, exported, test_images, reference):
    probabilities = inference.load_runtime(exported.paths[name]).predict(test_images[0])
    assert (probabilities.argmax(-1) == reference.argmax(-1)).mean() >= verify.REDUCED_AGREEMENT


def test_int8_test_error_is_within_0_1_point_of_keras_on_all_10000_images(exported, test_images):
    x_test, y_test = test_images
    probabilities = inference.load_runtime(exported.paths["int8"]).predict(x_test)
    error = (probabilities.argmax(-1) != y_test).mean()
    assert error <= exported.metrics["test_error"] + verify.INT8_ERROR_MARGIN
    # The largest int8 output means 255/256, so a sure digit's probabilities sum to ~0.996
    # (docs/export.md); an unsure one's within a few steps of 1/256 of 1.
    assert probabilities.max() == pytest.approx(255 / 256)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=8 / 256)
    assert 0.99 < probabilities.sum(-1).mean() < 1.0


def test_int8_input_quantization_makes_pixel_minus_128_exact(exported):
    data = exported.paths["int8"].read_bytes()
    quant = flatbuffer.io_quantization(data)
    assert quant["input"] == tflite.EXACT_INPUT_QUANTIZATION == (1.0, -128)
    assert quant["output"] == (1 / 256, -128)
    meta = flatbuffer.read_metadata(data)
    assert meta["input"]["dtype"] == "int8"
    assert meta["input"]["quantization"]["scale"] == 1.0
    assert meta["input"]["quantization"]["zero_point"] == -128
    assert meta["output"]["quantization"]["scale"] == 1 / 256
    assert meta["output"]["quantization"]["zero_point"] == -128
    runtime = inference.load_runtime(exported.paths["int8"])
    assert runtime.input_dtype == np.int8
    pixels = np.arange(256, dtype=np.float32)
    np.testing.assert_array_equal(inference.quantize(pixels, 1.0, -128, np.int8), (pixels - 128).astype(np.int8))


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_quantized_runtimes_convert_pixels_and_outputs_exactly_as_quantize_and_dequantize(dtype):
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    outputs = np.arange(256, dtype=np.uint8).view(dtype)  # every value of the output dtype
    for scale, zero_point in ((1.0, -128), (0.37, 5), (1 / 255, 0)):
        for integer_pixels in (pixels, pixels.astype(np.int64)):
            converted = inference._to_input(integer_pixels, np.dtype(dtype), (scale, zero_point))
            np.testing.assert_array_equal(converted, inference.quantize(pixels, scale, zero_point, dtype))
        probabilities = inference._from_output(outputs, (scale, zero_point))
        assert probabilities.dtype == np.float32
        np.testing.assert_array_equal(probabilities, inference.dequantize(outputs, scale, zero_point))


def test_runtimes_take_uint8_float_and_single_images_alike(exported, test_images):
    images = test_images[0][:8]
    for name in ("none", "int8", "onnx"):
        runtime = inference.load_runtime(exported.paths[name])
        from_uint8 = runtime.predict(images)
        np.testing.assert_array_equal(runtime.predict(images.astype(np.float32)), from_uint8)
        np.testing.assert_array_equal(runtime.predict(images[..., None]), from_uint8)
        np.testing.assert_allclose(runtime.predict(images[3]), from_uint8[3:4], atol=1e-6)
        with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
            runtime.predict(np.zeros((2, 32, 32)))
        with pytest.raises(ValueError, match="NaN or infinite"):
            runtime.predict(np.full((1, 28, 28), np.nan))


# --- How the TFLite models are built ------------------------------------------------------------


@pytest.mark.parametrize("quantization", contract.QUANTIZATIONS)
def test_tflite_uses_builtin_operators_only_and_c3_is_one_convolution(quantization, exported):
    ops = flatbuffer.operators(exported.paths[quantization].read_bytes())
    assert not [op for op in ops if op.startswith("CUSTOM")]
    assert ops.count("CONV_2D") == 3
    assert not {"SPLIT", "SPLIT_V", "CONCATENATION", "GATHER"} & set(ops)
    assert "SOFTMAX" in ops and "FULLY_CONNECTED" in ops
    # Both reshapes by a constant shape: no batch size computed at run time (XNNPACK takes all).
    assert ops.count("RESHAPE") == 2 and not {"SHAPE", "STRIDED_SLICE", "PACK"} & set(ops)


def test_int8_operators_all_have_int8_kernels_in_tflite_micro(exported):
    ops = set(flatbuffer.operators(exported.paths["int8"].read_bytes()))
    assert ops <= tflite.TFLM_INT8_OPERATORS, ops - tflite.TFLM_INT8_OPERATORS
    assert not {"SQUARE", "EXP", "NEG", "RSQRT"} & ops  # float-only in TFLite Micro
    assert flatbuffer.tensor_types(exported.paths["int8"].read_bytes()) <= {"INT8", "INT32"}


def test_tflite_sizes_fit_their_quantization(exported):
    size = {q: exported.paths[q].stat().st_size for q in contract.QUANTIZATIONS}
    assert size["int8"] <= verify.INT8_MAX_BYTES
    assert size["none"] < 300_000
    assert size["float16"] < 0.6 * size["none"]
    assert size["dynamic"] < 0.35 * size["none"]


@pytest.mark.parametrize("quantization", contract.QUANTIZATIONS)
def test_tflite_metadata_reads_back_and_io_keeps_the_contract(quantization, exported):
    data = exported.paths[quantization].read_bytes()
    meta = flatbuffer.read_metadata(data)
    assert meta["labels"] == [str(d) for d in range(10)]
    assert meta["format"] == "tflite" and meta["quantization"] == quantization and meta["graph"] == "folded"
    assert meta["test_error"] == exported.metrics["test_error"] and meta["test_error_source"] == "metrics.json"
    assert meta["source_sha256"] == file_sha256(exported.model_path)
    assert meta["input"]["name"] == "image" and meta["input"]["shape"] == ["batch", 28, 28]
    assert meta["output"]["name"] == "probabilities"
    assert flatbuffer.quantization_mode(data) == quantization
    assert all(offset % 16 == 0 for offset in flatbuffer.buffer_offsets(data))

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    (signature,) = interpreter.get_signature_list().values()
    assert signature == {"inputs": ["image"], "outputs": ["probabilities"]}
    details = interpreter.get_input_details()[0]
    assert details["name"] == "image" and list(details["shape_signature"]) == [-1, 28, 28]
    assert interpreter.get_output_details()[0]["name"] == "probabilities"


# --- TensorFlow Lite Micro and the C array -------------------------------------------------------


def test_int8_model_gives_litert_reference_outputs_on_tflite_micro_kernels(exported, test_images):
    images = test_images[0][:TFLM_IMAGES]
    micro = inference.load_runtime(exported.paths["int8"], backend="tflm")
    on_micro = micro.predict(images)
    on_reference = inference.load_runtime(exported.paths["int8"], kernels="reference").predict(images)
    # The same digit, image for image; the int8 outputs too, but for a rare rounding of a near
    # tie (1 image in 10,000 on the README's 20-epoch model).
    np.testing.assert_array_equal(on_micro.argmax(axis=-1), on_reference.argmax(axis=-1))
    assert (on_micro == on_reference).all(axis=-1).mean() >= 0.999
    assert 5_000 < micro.arena_bytes() < 64_000
    assert micro.arena_bytes() == flatbuffer.read_metadata(exported.paths["int8"].read_bytes())["tflm_arena_bytes"]


def test_c_array_compiles_and_holds_the_int8_model_16_byte_aligned(exported, tmp_path):
    """Compiles the generated `.cc` with a program that includes only its header, links them
    and runs it: the array it prints back is the model, aligned, with the header's length and arena."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed: the C array cannot be compiled")
    name = c_array.c_identifier("lenet5_int8_model_data.cc")
    (tmp_path / "check.cc").write_text(textwrap.dedent(f"""
        #include <cstdint>
        #include <cstdio>
        #include "lenet5_int8_model_data.h"
        int main() {{
          std::printf("%u %u %u\\n", {name}_len, {name}_arena_bytes,
                      static_cast<unsigned>(reinterpret_cast<std::uintptr_t>({name}) % 16));
          std::fwrite({name}, 1, {name}_len, stdout);
          return 0;
        }}
    """))  # fmt: skip
    for source in ("lenet5_int8_model_data.cc", "lenet5_int8_model_data.h"):
        shutil.copy(exported.folder / source, tmp_path)
    build = subprocess.run(
        [compiler, "-std=c++17", "-Wall", "-Werror", "-o", "check", "check.cc", "lenet5_int8_model_data.cc"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    output = subprocess.run([str(tmp_path / "check")], capture_output=True, timeout=30).stdout
    first_line, model_bytes = output.split(b"\n", 1)
    length, arena, misalignment = map(int, first_line.split())
    data = exported.paths["int8"].read_bytes()
    assert model_bytes == data and length == len(data) and misalignment == 0
    assert arena == flatbuffer.read_metadata(data)["tflm_arena_bytes"]
    header = (exported.folder / "lenet5_int8_model_data.h").read_text()
    assert "int8 = pixel - 128" in header and "Source model test error" in header


# --- ONNX and SavedModel ------------------------------------------------------------------------


def test_onnx_passes_full_check_with_standard_operators_and_one_c3_conv(exported):
    import onnx

    model = onnx.load(str(exported.paths["onnx"]))
    onnx.checker.check_model(model, full_check=True)
    assert {entry.domain for entry in model.opset_import} <= {"", "ai.onnx"}
    ops = [node.op_type for node in model.graph.node]
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    # C1, C3, C5; the folded S2 and S4 are depthwise (group = channels).
    assert onnx_export.full_convolutions(model) == 3 and ops.count("Conv") == 5
    assert not {"Split", "Concat", "Gather"} & set(ops)
    (image,) = model.graph.input
    assert image.name == "image"
    assert [d.dim_param or d.dim_value for d in image.type.tensor_type.shape.dim] == ["batch", 28, 28]
    assert [output.name for output in model.graph.output] == ["probabilities"]


def test_onnx_metadata_reads_back_through_onnxruntime(exported):
    meta = inference.load_runtime(exported.paths["onnx"]).metadata()
    assert json.loads(meta["labels"]) == [str(d) for d in range(10)]
    assert float(meta["test_error"]) == pytest.approx(exported.metrics["test_error"])
    assert meta["test_error_source"] == "metrics.json"
    assert json.loads(meta["input"])["name"] == "image"
    assert "softmax of the negative" in json.loads(meta["output"])["meaning"]
    assert meta["format"] == "onnx" and meta["variant"] == "paper" and meta["opset"] == "17"


def test_saved_model_serves_the_contract_and_its_metadata(exported):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported.paths["savedmodel"]))
    serving = loaded.signatures["serving_default"]
    (spec,) = serving.structured_input_signature[1].values()
    assert spec.name == "image" and spec.shape.as_list() == [None, 28, 28] and spec.dtype == tf.float32
    assert list(serving.structured_outputs) == ["probabilities"]
    meta = savedmodel.read_saved_model_metadata(exported.paths["savedmodel"])
    assert meta["format"] == "savedmodel" and meta["test_error"] == exported.metrics["test_error"]


# --- Metadata without a run folder; exports that need no MNIST ----------------------------------


def test_test_error_comes_from_the_runs_metrics_json_or_is_left_out(exported, tmp_path):
    from lenet_tf.errors import SettingError

    copy = tmp_path / "model.keras"
    shutil.copy(exported.model_path, copy)
    assert contract.recorded_test_error(copy) == (None, None)
    args = cli.export_parser("x", "x", "FILE", "x").parse_args(["--model", str(copy), "--out", str(tmp_path / "m")])
    _, metadata = cli.load_source(args, "onnx")
    assert metadata["test_error"] is None and metadata["test_error_source"] is None
    for text in ["{not json", '{"epochs": 1}', '{"test_error": "low"}', '{"test_error": 0.02, "variant": "modern"}']:
        (tmp_path / "metrics.json").write_text(text)
        assert contract.recorded_test_error(copy, "paper") == (None, None), text
    (tmp_path / "metrics.json").write_text('{"test_error": 0.0123, "variant": "paper"}')
    assert contract.recorded_test_error(copy, "paper") == (0.0123, "metrics.json")
    recorded = {"test_error": 0.0123, "variant": "paper", "model_sha256": file_sha256(copy)}
    (tmp_path / "metrics.json").write_text(json.dumps(recorded))
    assert contract.recorded_test_error(copy, "paper") == (0.0123, "metrics.json")
    (tmp_path / "metrics.json").write_text(json.dumps({**recorded, "model_sha256": "0" * 64}))  # model replaced
    assert contract.recorded_test_error(copy, "paper") == (None, None)
    with pytest.raises(SettingError, match="c_array"):
        tflite.export_tflite(None, tmp_path / "m.tflite", "float16", c_array=tmp_path / "m.cc")


def test_onnx_export_at_another_opset_reads_no_mnist(exported, tmp_path, monkeypatch, capsys):
    import sys

    from lenet_tf import data

    def no_mnist(*args, **kwargs):
        raise AssertionError("a float export read MNIST")

    monkeypatch.setattr(data, "load_mnist", no_mnist)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # importing it fails
    monkeypatch.delenv("LENET_MNIST_DIR", raising=False)
    argv = ["--model", exported.model_path, "--out", tmp_path / "m.onnx", "--opset", "13"]
    status, out, err = run_cli(onnx_export.main, argv, capsys)
    assert status == 0 and "ONNX opset 13" in out and "3 full convolutions" in out, err
    assert inference.load_runtime(tmp_path / "m.onnx").metadata()["opset"] == "13"


# --- Bad artifacts and atomic writing ------------------------------------------------------------


def _one_line_error(path, match):
    from lenet_tf.errors import ArtifactError

    with pytest.raises(ArtifactError) as info:
        inference.load_runtime(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert re.search(match, message), message


def test_load_runtime_refuses_bad_artifacts_in_one_line(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    _one_line_error(tmp_path / "missing.tflite", "no such file")
    (tmp_path / "corrupt.tflite").write_bytes(b"not a flatbuffer at all" * 10)
    _one_line_error(tmp_path / "corrupt.tflite", "not a valid TFLite model")
    (tmp_path / "corrupt.onnx").write_bytes(b"\x08\x07garbage" * 10)
    _one_line_error(tmp_path / "corrupt.onnx", "not a valid ONNX model")
    (tmp_path / "model.pt").write_bytes(b"x")
    _one_line_error(tmp_path / "model.pt", "unknown artifact type")
    (tmp_path / "folder").mkdir()
    _one_line_error(tmp_path / "folder", "not a SavedModel")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["image"], ["probabilities"])], "wrong",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 32, 32])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 32, 32])],
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "wrong.onnx")
    _one_line_error(tmp_path / "wrong.onnx", r"input shape \(batch, 32, 32\) is not the \(batch, 28, 28\)")


def test_failed_export_leaves_the_old_artifact_and_no_temporary_file(exported, model, tmp_path, monkeypatch):
    import onnx

    target, cc = tmp_path / "model.tflite", tmp_path / "model.cc"
    target.write_bytes(b"old model")
    cc.write_text("old source")

    def broken_convert(*args, **kwargs):
        raise RuntimeError("converter crashed")

    with monkeypatch.context() as patch:
        patch.setattr(tflite, "convert", broken_convert)
        with pytest.raises(RuntimeError, match="converter crashed"):
            tflite.export_tflite(model, target, "int8", c_array=cc)
    assert target.read_bytes() == b"old model" and cc.read_text() == "old source"

    # A write that dies half-way (disk full) leaves the old file too. The converters are
    # replaced by the artifacts already converted: only the writing is under test.
    real_write = type(target).write_bytes

    def half_write(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device", str(self))

    converted = exported.paths["none"].read_bytes()
    with monkeypatch.context() as patch:
        patch.setattr(tflite, "convert", lambda *args, **kwargs: converted)
        patch.setattr(onnx_export, "convert", lambda *args, **kwargs: onnx.load(str(exported.paths["onnx"])))
        patch.setattr(type(target), "write_bytes", half_write)
        with pytest.raises(OSError, match="No space left"):
            onnx_export.export_onnx(model, tmp_path / "model.onnx")
        with pytest.raises(OSError, match="No space left"):
            tflite.export_tflite(model, target, "none")
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.cc", "model.tflite"]


# --- Command lines -----------------------------------------------------------------------------


def test_verify_passes_good_artifacts_and_prints_json(exported, mnist_dir, capsys):
    argv = [
        "--model", exported.model_path, "--data-dir", mnist_dir, "--limit", "1000", "--json",
        exported.paths["savedmodel"], exported.paths["none"], exported.paths["onnx"],
    ]  # fmt: skip
    status, out, _ = run_cli(verify.main, argv, capsys)
    rows = json.loads(out)
    assert status == 0, out
    assert [row["runtime"] for row in rows] == ["keras", "tensorflow", "litert", "onnxruntime"]
    assert all(row["passed"] for row in rows)
    assert all(row["agreement"] == 1.0 and row["max_abs_diff"] <= verify.FLOAT_MAX_ABS_DIFF for row in rows[1:])
    assert {check["name"] for check in rows[2]["checks"]} == {
        bar.name for bar in verify.BARS if bar.scope.startswith(("float32", "every TFLite", "TFLite and ONNX"))
    }


def test_verify_exits_1_when_the_artifact_comes_from_another_model(exported, mnist_dir, tmp_path, capsys):
    import keras

    from lenet_tf.model import build_lenet5

    keras.utils.set_random_seed(1)
    impostor = tmp_path / "impostor.keras"
    build_lenet5().save(impostor)
    argv = ["--model", impostor, "--data-dir", mnist_dir, "--limit", "500", exported.paths["none"]]
    status, out, err = run_cli(verify.main, argv, capsys)
    assert status == 1
    assert "FAIL agreement 100%" in out
    assert f"FAILED {exported.paths['none']}" in err


def test_verify_exits_2_with_one_line_for_a_corrupt_artifact(exported, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00" * 100)
    status, _, err = run_cli(verify.main, ["--model", exported.model_path, corrupt], capsys)
    assert err.startswith(f"error: {corrupt}: not a valid ONNX model") and err.count("\n") == 1
    assert_one_line_error(status, err)


def test_verify_bars_are_one_table_shown_in_help_and_docs(capsys):
    docs = (REPO / "docs" / "export.md").read_text()
    assert verify.bars_markdown() in docs
    with pytest.raises(SystemExit):
        verify.build_parser().parse_args(["--help"])
    help_text = capsys.readouterr().out
    assert all(f"{bar.scope}: {bar.name}" in help_text for bar in verify.BARS)


def test_export_commands_refuse_bad_input_in_one_line(exported, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    model = exported.model_path
    cases = [
        (savedmodel.main, ["--model", tmp_path / "missing.keras", "--out", "sm"], ["no such file"]),
        (onnx_export.main, ["--model", blocker, "--out", "m.onnx"], [".keras"]),
        (tflite.main, ["--model", model, "--out", blocker / "m.tflite"],
         [f"--out: {blocker}/m.tflite", "is not a folder"]),
        (tflite.main, ["--model", model, "--out", "m.tflite", "--quantize", "int4"], ["invalid choice"]),
        (onnx_export.main, ["--model", model, "--out", "m.onnx", "--opset", "21"], ["invalid choice"]),
        (tflite.main, ["--model", model, "--out", "m.tflite", "--c-array", "m.cc"],
         ["--c-array: needs the full-integer"]),
        (tflite.main, ["--model", model, "--out", "m.tflite", "--quantize", "int8", "--c-array", "m.c"],
         ["--c-array: m.c: expected a .cc file name"]),
        (tflite.main, ["--model", model, "--out", "m.tflite", "--calibration-images", "0"], ["positive integer"]),
    ]  # fmt: skip
    for main, argv, fragments in cases:
        status, _, err = run_cli(main, argv, capsys)
        assert err.count("\n") == 1, err
        assert_one_line_error(status, err, *fragments)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.txt"]


def test_exports_never_replace_a_folder_they_did_not_write(exported, tmp_path, capsys):
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "notes.txt").write_text("a user's file")
    cases = [
        (savedmodel.main, "is a folder without saved_model.pb, not replaced"),
        (onnx_export.main, "is a folder, not replaced by a file"),
        (tflite.main, "is a folder, not replaced by a file"),
    ]
    for main, problem in cases:
        status, _, err = run_cli(main, ["--model", exported.model_path, "--out", documents], capsys)
        assert_one_line_error(status, err, f"{documents}: {problem}")
    assert [path.name for path in documents.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("module", [savedmodel, tflite, onnx_export, verify])
def test_help_describes_each_command_and_whether_it_reads_mnist(module, capsys):
    with pytest.raises(SystemExit) as info:
        module.build_parser().parse_args(["--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--model" in text and "--data-dir" in text
    reads = {savedmodel: "not read by this export", onnx_export: "not read by this export",
             tflite: "read only for --quantize int8", verify: "whose test set verify reads"}  # fmt: skip
    assert reads[module] in text


# --- Timing lives in benchmarks/ ------------------------------------------------------------------


def test_inference_benchmark_times_an_artifact(exported, test_images, mnist_dir, capsys):
    from benchmarks import inference as benchmark

    runtime = inference.load_runtime(exported.paths["none"])
    figures = benchmark.measure(runtime, test_images[0][:256], latency_runs=5, batch_size=64)
    assert figures["latency_ms"] > 0 and figures["throughput"] > 0
    argv = ["--data-dir", mnist_dir, "--latency-runs", "3", exported.paths["onnx"]]
    status, out, _ = run_cli(benchmark.main, argv, capsys)
    assert status == 0 and re.search(r"\| lenet5\.onnx \| onnxruntime \| [\d.]+ ms \| [\d,]+ img/s \|", out), out
