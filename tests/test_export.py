"""Exports of the trained LeNet-5: SavedModel, TFLite (four quantizations, C array), ONNX.

Each format is exported once per module from the `trained_run` model, then checked against
the Keras model on real MNIST test images: the bars of `export.verify`, the operators, the
metadata, the C array, TFLite Micro, atomic writing and the command lines' exit statuses.
"""

import json
import re
import types

import numpy as np
import pytest

from export import common, folding, onnx as onnx_export, runtimes, savedmodel, tflite, verify
from lenet_tf import cli

PARITY_IMAGES = 2000
TFLM_IMAGES = 500


@pytest.fixture(scope="module")
def exported(trained_run, mnist, tmp_path_factory):
    """Every artifact of the trained model, written once into one folder."""
    from lenet_tf.saving import load_lenet5

    run_dir, metrics = trained_run
    source = run_dir / "model.keras"
    model = load_lenet5(source)
    out = tmp_path_factory.mktemp("artifacts")
    calibration = common.representative_images(mnist[0][0])

    def metadata(fmt, quantization="none"):
        return common.build_metadata(model, fmt, quantization, test_error=metrics["test_error"], source=source)

    paths = {"savedmodel": savedmodel.export_saved_model(model, out / "lenet5_savedmodel", metadata("savedmodel"))}
    results = {}
    for quantization in tflite.QUANTIZATIONS:
        path = out / f"lenet5_{quantization}.tflite"
        results[quantization] = tflite.export_tflite(
            model, path, quantization, metadata("tflite", quantization),
            calibration if quantization == "int8" else None,
            c_array=out / "lenet5_int8_model_data.cc" if quantization == "int8" else None,
        )  # fmt: skip
        paths[quantization] = path
    paths["onnx"] = out / "lenet5.onnx"
    onnx_export.export_onnx(model, paths["onnx"], metadata=metadata("onnx"))
    return types.SimpleNamespace(
        model=model, source=source, metrics=metrics, folder=out, paths=paths, tflite=results
    )


@pytest.fixture(scope="module")
def test_images(mnist):
    _, (x_test, y_test) = mnist
    return x_test, y_test


@pytest.fixture(scope="module")
def reference(exported, test_images):
    """Keras probabilities of the first PARITY_IMAGES test images."""
    from lenet_tf.model import probability_model

    return probability_model(exported.model).predict(test_images[0][:PARITY_IMAGES], batch_size=1024, verbose=0)


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


def test_literal_graph_exports_with_tflite_micro_int8_operators(exported, test_images, tmp_path):
    images = test_images[0][:PARITY_IMAGES]
    from lenet_tf.model import probability_model

    path = tmp_path / "literal.tflite"
    tflite.export_tflite(exported.model, path, "none", graph="literal")
    ops = set(tflite.operators(path.read_bytes()))
    assert {"SUM", "MUL", "SUB"} <= ops and not {"SQUARE", "EXP", "NEG"} & ops
    expected = probability_model(exported.model).predict(images, verbose=0)
    assert np.abs(runtimes.load_runtime(path).predict(images) - expected).max() <= verify.FLOAT_MAX_ABS_DIFF
    calibration = common.representative_images(test_images[0], count=100)  # operators only
    tflite.export_tflite(exported.model, path, "int8", calibration_images=calibration, graph="literal")
    assert set(tflite.operators(path.read_bytes())) <= tflite.TFLM_INT8_OPERATORS
    assert tflite.read_metadata(path.read_bytes())["graph"] == "literal"


@pytest.mark.parametrize("name", ["savedmodel", "none", "onnx"])
def test_float32_artifacts_match_keras_exactly_in_digits_and_within_1e4(name, exported, test_images, reference):
    probabilities = runtimes.load_runtime(exported.paths[name]).predict(test_images[0][:PARITY_IMAGES])
    assert probabilities.dtype == np.float32 and probabilities.shape == (PARITY_IMAGES, 10)
    np.testing.assert_array_equal(probabilities.argmax(-1), reference.argmax(-1))
    assert np.abs(probabilities - reference).max() <= verify.FLOAT_MAX_ABS_DIFF
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["float16", "dynamic"])
def test_reduced_precision_tflite_agrees_on_at_least_99_9_percent_of_10000(name, exported, test_images):
    from lenet_tf.model import probability_model

    x_test = test_images[0]
    reference = probability_model(exported.model).predict(x_test, batch_size=1024, verbose=0)
    probabilities = runtimes.load_runtime(exported.paths[name]).predict(x_test)
    assert (probabilities.argmax(-1) == reference.argmax(-1)).mean() >= verify.REDUCED_AGREEMENT


def test_int8_test_error_is_within_0_1_point_of_keras_on_all_10000_images(exported, test_images):
    x_test, y_test = test_images
    probabilities = runtimes.load_runtime(exported.paths["int8"]).predict(x_test)
    error = (probabilities.argmax(-1) != y_test).mean()
    assert error <= exported.metrics["test_error"] + verify.INT8_ERROR_MARGIN
    # Dequantized int8 probabilities sum to 1 within a few steps of 1/256.
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=8 / 256)


def test_int8_input_quantization_makes_pixel_minus_128_exact(exported):
    data = exported.paths["int8"].read_bytes()
    quant = tflite.io_quantization(data)
    assert quant["input"] == (1.0, -128)
    assert quant["output"] == (1 / 256, -128)
    meta = tflite.read_metadata(data)
    assert meta["input"]["dtype"] == "int8"
    assert meta["input"]["quantization"]["scale"] == 1.0
    assert meta["input"]["quantization"]["zero_point"] == -128
    assert meta["output"]["quantization"]["scale"] == 1 / 256
    assert meta["output"]["quantization"]["zero_point"] == -128
    runtime = runtimes.load_runtime(exported.paths["int8"])
    assert runtime.input_dtype == np.int8
    pixels = np.arange(256, dtype=np.float32)
    np.testing.assert_array_equal(runtimes.quantize(pixels, 1.0, -128, np.int8), (pixels - 128).astype(np.int8))


def test_runtimes_take_uint8_float_and_single_images_alike(exported, test_images):
    images = test_images[0][:8]
    for name in ("none", "int8", "onnx"):
        runtime = runtimes.load_runtime(exported.paths[name])
        from_uint8 = runtime.predict(images)
        np.testing.assert_array_equal(runtime.predict(images.astype(np.float32)), from_uint8)
        np.testing.assert_array_equal(runtime.predict(images[..., None]), from_uint8)
        np.testing.assert_allclose(runtime.predict(images[3]), from_uint8[3:4], atol=1e-6)
        with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
            runtime.predict(np.zeros((2, 32, 32)))


# --- How the TFLite models are built ------------------------------------------------------------


@pytest.mark.parametrize("quantization", tflite.QUANTIZATIONS)
def test_tflite_uses_builtin_operators_only_and_c3_is_one_convolution(quantization, exported):
    ops = tflite.operators(exported.paths[quantization].read_bytes())
    assert not [op for op in ops if op.startswith("CUSTOM")]
    assert ops.count("CONV_2D") == 3
    assert not {"SPLIT", "SPLIT_V", "CONCATENATION", "GATHER"} & set(ops)
    assert "SOFTMAX" in ops and "FULLY_CONNECTED" in ops


def test_int8_operators_all_have_int8_kernels_in_tflite_micro(exported):
    ops = set(tflite.operators(exported.paths["int8"].read_bytes()))
    assert ops <= tflite.TFLM_INT8_OPERATORS, ops - tflite.TFLM_INT8_OPERATORS
    assert not {"SQUARE", "EXP", "NEG", "RSQRT"} & ops  # float-only in TFLite Micro
    assert tflite.tensor_types(exported.paths["int8"].read_bytes()) <= {"INT8", "INT32"}


def test_tflite_sizes_fit_their_quantization(exported):
    size = {q: exported.paths[q].stat().st_size for q in tflite.QUANTIZATIONS}
    assert size["int8"] <= verify.INT8_MAX_BYTES
    assert size["none"] < 300_000
    assert size["float16"] < 0.6 * size["none"]
    assert size["dynamic"] < 0.35 * size["none"]


@pytest.mark.parametrize("quantization", tflite.QUANTIZATIONS)
def test_tflite_metadata_reads_back_and_io_keeps_the_contract(quantization, exported):
    data = exported.paths[quantization].read_bytes()
    meta = tflite.read_metadata(data)
    assert meta["labels"] == [str(d) for d in range(10)]
    assert meta["format"] == "tflite" and meta["quantization"] == quantization and meta["graph"] == "folded"
    assert meta["test_error"] == exported.metrics["test_error"]
    assert meta["source_sha256"] == common.file_sha256(exported.source)
    assert meta["input"]["name"] == "image" and meta["input"]["shape"] == ["batch", 28, 28]
    assert meta["output"]["name"] == "probabilities"
    assert tflite.quantization_mode(data) == quantization
    assert all(offset % 16 == 0 for offset in tflite.buffer_offsets(data))

    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=data)
    (signature,) = interpreter.get_signature_list().values()
    assert signature == {"inputs": ["image"], "outputs": ["probabilities"]}
    details = interpreter.get_input_details()[0]
    assert details["name"] == "image" and list(details["shape_signature"]) == [-1, 28, 28]
    assert interpreter.get_output_details()[0]["name"] == "probabilities"


# --- TensorFlow Lite Micro and the C array -------------------------------------------------------


def test_int8_model_gives_litert_digits_on_tflite_micro_kernels(exported, test_images):
    images = test_images[0][:TFLM_IMAGES]
    micro = runtimes.load_runtime(exported.paths["int8"], backend="tflm")
    on_micro = micro.predict(images)
    on_litert = runtimes.load_runtime(exported.paths["int8"], xnnpack=False).predict(images)
    np.testing.assert_array_equal(on_micro.argmax(-1), on_litert.argmax(-1))
    # TFLM's reference kernels round a few intermediate values differently (one step).
    assert (on_micro == on_litert).all(-1).mean() >= 0.98
    assert 5_000 < micro.arena_bytes() < 64_000
    assert micro.arena_bytes() == exported.tflite["int8"]["arena_bytes"]


def test_c_array_holds_the_int8_model_16_byte_aligned_with_its_length(exported):
    data = exported.paths["int8"].read_bytes()
    source = (exported.folder / "lenet5_int8_model_data.cc").read_text()
    header = (exported.folder / "lenet5_int8_model_data.h").read_text()
    assert "alignas(16) const unsigned char g_lenet5_int8_model_data[] = {" in source
    assert f"const unsigned int g_lenet5_int8_model_data_len = {len(data)};" in source
    assert '#include "lenet5_int8_model_data.h"' in source
    body = source.split("= {", 1)[1].split("};", 1)[0]
    assert bytes(int(value, 16) for value in re.findall(r"0x([0-9a-f]{2})", body)) == data
    assert "extern const unsigned char g_lenet5_int8_model_data[];" in header
    assert "extern const unsigned int g_lenet5_int8_model_data_len;" in header
    arena = exported.tflite["int8"]["arena_bytes"]
    assert f"g_lenet5_int8_model_data_arena_bytes = {arena};" in header
    assert "int8 = pixel - 128" in header


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
    meta = runtimes.load_runtime(exported.paths["onnx"]).metadata()
    assert json.loads(meta["labels"]) == [str(d) for d in range(10)]
    assert float(meta["test_error"]) == pytest.approx(exported.metrics["test_error"])
    assert json.loads(meta["input"])["name"] == "image"
    assert "softmax of the negative" in json.loads(meta["output"])["meaning"]
    assert meta["format"] == "onnx" and meta["variant"] == "paper"


def test_saved_model_serves_the_contract_and_its_metadata(exported):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(exported.paths["savedmodel"]))
    serving = loaded.signatures["serving_default"]
    (spec,) = serving.structured_input_signature[1].values()
    assert spec.name == "image" and spec.shape.as_list() == [None, 28, 28] and spec.dtype == tf.float32
    assert list(serving.structured_outputs) == ["probabilities"]
    meta = savedmodel.read_saved_model_metadata(exported.paths["savedmodel"])
    assert meta["format"] == "savedmodel" and meta["test_error"] == exported.metrics["test_error"]


# --- Bad artifacts and atomic writing ------------------------------------------------------------


def _one_line_error(path, match):
    with pytest.raises(runtimes.ArtifactError) as info:
        runtimes.load_runtime(path)
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


def test_failed_export_leaves_the_old_artifact_and_no_temporary_file(exported, tmp_path, monkeypatch):
    target, cc = tmp_path / "model.tflite", tmp_path / "model.cc"
    target.write_bytes(b"old model")
    cc.write_text("old source")

    def broken_convert(*args, **kwargs):
        raise RuntimeError("converter crashed")

    with monkeypatch.context() as patch:
        patch.setattr(tflite, "convert", broken_convert)
        with pytest.raises(RuntimeError, match="converter crashed"):
            tflite.export_tflite(exported.model, target, "none", c_array=cc)
    assert target.read_bytes() == b"old model" and cc.read_text() == "old source"

    # A write that dies half-way (disk full) leaves the old file too.
    real_write = type(target).write_bytes

    def half_write(self, data):
        real_write(self, data[: len(data) // 2])
        raise OSError(28, "No space left on device", str(self))

    with monkeypatch.context() as patch:
        patch.setattr(type(target), "write_bytes", half_write)
        with pytest.raises(OSError, match="No space left"):
            onnx_export.export_onnx(exported.model, tmp_path / "model.onnx")
        with pytest.raises(OSError, match="No space left"):
            tflite.export_tflite(exported.model, target, "none")
    assert target.read_bytes() == b"old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.cc", "model.tflite"]


# --- Command lines -----------------------------------------------------------------------------


def _exit_status(main, argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.run(main, argv)
    captured = capsys.readouterr()
    return info.value.code, captured.out, captured.err


def test_verify_passes_good_artifacts_and_prints_json(exported, mnist_dir, capsys):
    argv = [
        "--model", str(exported.source), "--data-dir", str(mnist_dir), "--limit", "1000",
        "--latency-runs", "5", "--json",
        str(exported.paths["savedmodel"]), str(exported.paths["none"]), str(exported.paths["onnx"]),
    ]  # fmt: skip
    status, out, _ = _exit_status(verify.main, argv, capsys)
    rows = json.loads(out)
    assert status == 0, out
    assert [row["runtime"] for row in rows] == ["keras", "tensorflow", "litert", "onnxruntime"]
    assert all(row["passed"] for row in rows)
    assert all(row["agreement"] == 1.0 and row["latency_ms"] > 0 for row in rows[1:])


def test_verify_table_includes_tflite_micro_for_the_int8_model(exported, mnist_dir, capsys):
    argv = [
        "--model", str(exported.source), "--data-dir", str(mnist_dir), "--limit", "300",
        "--latency-runs", "5", "--tflm-images", "100", str(exported.paths["int8"]),
    ]  # fmt: skip
    _, out, _ = _exit_status(verify.main, argv, capsys)
    lines = [line for line in out.splitlines() if line.startswith("| lenet5_int8.tflite")]
    assert [line.split("|")[2].strip() for line in lines] == ["litert", "tflm"]
    assert "arena" in lines[1]


def test_verify_exits_1_when_an_artifact_comes_from_another_model(exported, mnist_dir, tmp_path, capsys):
    import keras

    from lenet_tf.model import build_lenet5

    keras.utils.set_random_seed(1)
    impostor = tmp_path / "impostor.tflite"
    tflite.export_tflite(build_lenet5(), impostor, "none")
    argv = ["--model", str(exported.source), "--data-dir", str(mnist_dir), "--limit", "500",
            "--latency-runs", "5", str(impostor)]  # fmt: skip
    status, out, err = _exit_status(verify.main, argv, capsys)
    assert status == 1
    assert "FAIL agreement 100%" in out
    assert f"FAILED {impostor}" in err


def test_verify_exits_2_with_one_line_for_a_corrupt_artifact(exported, mnist_dir, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00" * 100)
    status, _, err = _exit_status(verify.main, ["--model", str(exported.source), str(corrupt)], capsys)
    assert status == 2
    assert err.startswith(f"error: {corrupt}: not a valid ONNX model") and err.count("\n") == 1


def test_export_commands_write_artifacts(exported, mnist_dir, tmp_path, capsys):
    base = ["--model", str(exported.source), "--data-dir", str(mnist_dir)]
    status, out, _ = _exit_status(onnx_export.main, base + ["--out", str(tmp_path / "m.onnx"), "--opset", "13"], capsys)
    assert status == 0 and "3 full convolutions" in out
    argv = base + ["--out", str(tmp_path / "m.tflite"), "--quantize", "int8", "--calibration-images", "50",
                   "--c-array", str(tmp_path / "m_data.cc")]  # fmt: skip
    status, out, _ = _exit_status(tflite.main, argv, capsys)
    assert status == 0 and "TFLM arena" in out
    assert tflite.io_quantization((tmp_path / "m.tflite").read_bytes())["input"] == (1.0, -128)
    assert (tmp_path / "m_data.h").exists()


def test_export_commands_refuse_bad_input_in_one_line(exported, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    cases = [
        (savedmodel.main, ["--model", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "sm")], "no such file"),
        (onnx_export.main, ["--model", str(blocker), "--out", str(tmp_path / "m.onnx")], ".keras"),
        (tflite.main, ["--model", str(exported.source), "--out", str(blocker / "m.tflite")], "is not a folder"),
        (tflite.main, ["--model", str(exported.source), "--out", "m.tflite", "--quantize", "int4"], "invalid choice"),
        (onnx_export.main, ["--model", str(exported.source), "--out", "m.onnx", "--opset", "21"], "invalid choice"),
    ]
    for main, argv, match in cases:
        status, out, err = _exit_status(main, argv, capsys)
        assert status == 2, (argv, err)
        assert err.startswith("error: ") and err.count("\n") == 1 and match in err, err
        assert "Traceback" not in err


@pytest.mark.parametrize("module", [savedmodel, tflite, onnx_export, verify])
def test_help_describes_each_command(module, capsys):
    with pytest.raises(SystemExit) as info:
        module.build_parser().parse_args(["--help"])
    assert info.value.code == 0
    assert "--model" in capsys.readouterr().out
