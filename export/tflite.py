"""Exports a trained LeNet-5 to TensorFlow Lite, optionally as a C array for TensorFlow Lite Micro.

Usage:

    python -m export.tflite --model runs/paper/model.keras --out artifacts/lenet5.tflite
    python -m export.tflite --model runs/paper/model.keras --out artifacts/lenet5_int8.tflite \
        --quantize int8 --c-array artifacts/lenet5_int8_model_data.cc

Quantization modes:

- `none`: float32 weights and arithmetic.
- `float16`: float16 weights, float32 arithmetic (half the size).
- `dynamic`: int8 weights, float32 input and output (a quarter of the size).
- `int8`: full integer. Weights and activations int8, calibrated on 500 real training images
  plus an all-0 and an all-255 image; input int8 `pixel - 128` (scale 1, zero point -128,
  exact), output int8 probabilities (scale 1/256, zero point -128). Every operator is a
  builtin with an int8 kernel in TensorFlow Lite Micro; this is the model for the C array.

By default the paper model is exported as its folded inference graph (`export.folding`: the
same function in standard layers, with a smaller int8 error and faster); `--graph literal`
exports the trained layers as they are.

Every model uses builtin operators only (no Flex, no custom ops), takes `image` (batch, 28,
28) raw pixels and outputs `probabilities` (batch, 10) with a dynamic batch size, and carries
JSON metadata (labels, input/output contract, quantization, the source model's test error)
in a flatbuffer metadata entry named `lenet_tf`; `read_metadata` reads it back.

`--c-array FILE.cc` also writes `FILE.h`: the model as a 16-byte-aligned `const unsigned char`
array and its length, and the tensor-arena size TFLM needed for it.
"""

import json
import pathlib
import re

from lenet_tf import cli

from export import common

QUANTIZATIONS = ("none", "float16", "dynamic", "int8")

# Operators with int8 kernels in TensorFlow Lite Micro (SHAPE, STRIDED_SLICE and PACK handle
# the int32 shape of the dynamic-batch flatten). SQUARE, EXP, NEG and RSQRT are float-only
# there, which is why the RBF layer uses MUL/SUM/FULLY_CONNECTED and the posterior a MUL by -1
# (the literal graph); the folded graph needs only CONV_2D, DEPTHWISE_CONV_2D, TANH,
# FULLY_CONNECTED and SOFTMAX besides the reshapes.
TFLM_INT8_OPERATORS = frozenset(
    {
        "ADD", "AVERAGE_POOL_2D", "BATCH_MATMUL", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
        "DEQUANTIZE", "EXPAND_DIMS", "FULLY_CONNECTED", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D",
        "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "QUANTIZE", "RELU", "RESHAPE", "SHAPE", "SOFTMAX",
        "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH",
    }
)  # fmt: skip

_ALIGNMENT = 16  # TFLM and XNNPACK read weights in place; 16 bytes suits every SIMD load.


def convert(model, quantization="none", calibration_images=None, graph="folded"):
    """Converts `model` to a TFLite flatbuffer with builtin operators only.

    The model is written to a temporary SavedModel first (`common.write_saved_model`), so the
    converter freezes its weights, folds the preprocessing into C1 and C3's masked kernel into
    one constant, and names the signature's tensors `image` and `probabilities`.

    Args:
        model: The LeNet-5 to convert.
        quantization: One of `QUANTIZATIONS`.
        calibration_images: float32 `(N, 28, 28)` raw pixels for `"int8"`, normally
            `common.representative_images(x_train)`.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.

    Returns:
        The `.tflite` bytes, without this package's metadata (see `add_metadata`).

    Raises:
        ValueError: Unknown `quantization`, or `"int8"` without calibration images.
        RuntimeError: The int8 input quantization is not the exact `pixel - 128`.
    """
    import tempfile

    import tensorflow as tf

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"`quantization` must be one of {QUANTIZATIONS}. Received: {quantization!r}")
    if quantization == "int8" and calibration_images is None:
        raise ValueError("`calibration_images` are required for int8 quantization")
    with tempfile.TemporaryDirectory(prefix="lenet_tflite_") as folder:
        common.write_saved_model(model, folder, graph=graph)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder, signature_keys=["serving_default"])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantization != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantization == "int8":
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
            converter.representative_dataset = lambda: ([image[None]] for image in calibration_images)
        data = bytes(converter.convert())
    if quantization == "int8":
        scale, zero_point = io_quantization(data)["input"]
        if (scale, zero_point) != (1.0, -128):
            raise RuntimeError(
                f"int8 input quantization is scale={scale}, zero_point={zero_point}, not the exact "
                "pixel - 128 (scale 1, zero point -128); calibrate with common.representative_images"
            )
    return data


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _read(data):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _operator_names():
    return {code: name for name, code in vars(_schema().BuiltinOperator).items() if not name.startswith("_")}


def operators(data):
    """The operators of a `.tflite` model, in execution order, over all subgraphs.

    Args:
        data: The model's bytes.

    Returns:
        A list of names such as `"CONV_2D"`; custom operators (Flex ones included) appear
        as `"CUSTOM:<name>"`, e.g. `"CUSTOM:FlexConv2D"`.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = _read(data)
    names = _operator_names()
    codes = []
    for code in model.operatorCodes or []:
        builtin = flatbuffer_utils.get_builtin_code_from_operator_code(code)
        name = names.get(builtin, f"UNKNOWN_{builtin}")
        if name == "CUSTOM":
            custom = code.customCode.decode() if isinstance(code.customCode, bytes) else str(code.customCode)
            name = f"CUSTOM:{custom}"
        codes.append(name)
    return [codes[op.opcodeIndex] for subgraph in model.subgraphs for op in subgraph.operators or []]


def tensor_types(data):
    """The set of tensor type names (`"FLOAT32"`, `"INT8"`, ...) used in a `.tflite` model."""
    names = {code: name for name, code in vars(_schema().TensorType).items() if not name.startswith("_")}
    return {names[tensor.type] for subgraph in _read(data).subgraphs for tensor in subgraph.tensors}


def quantization_mode(data):
    """Which of `QUANTIZATIONS` a `.tflite` model was converted with, read from its tensors."""
    model = _read(data)
    subgraph = model.subgraphs[0]
    types = tensor_types(data)
    if subgraph.tensors[subgraph.inputs[0]].type == _schema().TensorType.INT8:
        return "int8"
    if "FLOAT16" in types:
        return "float16"
    if "INT8" in types:
        return "dynamic"
    return "none"


def io_quantization(data):
    """`{"input": (scale, zero_point), "output": (scale, zero_point)}` of a `.tflite` model.

    A float tensor has `(0.0, 0)`, as LiteRT reports it.
    """
    subgraph = _read(data).subgraphs[0]

    def params(index):
        quant = subgraph.tensors[index].quantization
        if quant is None or quant.scale is None or len(quant.scale) == 0:
            return (0.0, 0)
        return (float(quant.scale[0]), int(quant.zeroPoint[0]))

    return {"input": params(subgraph.inputs[0]), "output": params(subgraph.outputs[0])}


def _short_name(name, index):
    """A tensor name cut to its layer and op: `model_1/C5_1/mul;...` -> `C5/mul`.

    The converter joins the names of fused ops with `;` and prefixes the model's name; for
    a model this small those names are 5% of the int8 file.
    """
    if not name:
        return f"t{index}"
    parts = name.decode(errors="replace").split(";")[0].split("/")
    if len(parts) > 1:
        parts = parts[1:]
    parts[0] = re.sub(r"_\d+$", "", parts[0])
    return "/".join(parts)


def add_metadata(data, metadata):
    """Returns `data` with `metadata` embedded, the I/O tensors renamed and weights aligned.

    The JSON goes into a buffer referenced by a model metadata entry named `lenet_tf`
    (`common.METADATA_NAME`); runtimes ignore metadata they do not know. The input and
    output tensors are renamed `image` and `probabilities` (the signature already uses those
    names), other tensor names are shortened, and every buffer starts on a 16-byte boundary
    so TFLite Micro can read weights in place.

    Args:
        data: `.tflite` bytes from `convert`.
        metadata: A JSON-serialisable dict.

    Returns:
        The new `.tflite` bytes.
    """
    import flatbuffers
    import numpy as np

    schema = _schema()
    model = _read(data)
    subgraph = model.subgraphs[0]
    special = {subgraph.inputs[0]: common.INPUT_NAME, subgraph.outputs[0]: common.OUTPUT_NAME}
    for index, tensor in enumerate(subgraph.tensors):
        tensor.name = special.get(index) or _short_name(tensor.name, index)
    model.metadata = [
        entry for entry in model.metadata or [] if entry.name.decode() != common.METADATA_NAME
    ]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = common.METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)

    class AlignedBuilder(flatbuffers.Builder):
        """Starts every byte vector (buffer data) on a 16-byte boundary, as `force_align: 16`
        in the TFLite schema asks and the Python object API does not do."""

        def StartVector(self, elemSize, numElems, alignment):  # noqa: N802, N803 (flatbuffers API)
            if elemSize == 1:
                alignment = max(alignment, _ALIGNMENT)
            return super().StartVector(elemSize, numElems, alignment)

    builder = AlignedBuilder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(data):
    """The metadata dict `add_metadata` embedded in `.tflite` bytes, or None."""
    schema = _schema()
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == common.METADATA_NAME:
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


def buffer_offsets(data):
    """Byte offsets in `data` at which each non-empty buffer's contents start."""
    model = _schema().Model.GetRootAs(data, 0)
    offsets = []
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            offsets.append(buffer._tab.Vector(buffer._tab.Offset(4)))  # field 0: data
    return offsets


def c_identifier(path):
    """The C name for a model array written to `path`: `g_<stem>`, non-identifier chars -> `_`."""
    stem = re.sub(r"\W", "_", pathlib.Path(path).stem)
    return f"g_{stem}"


def c_array_sources(data, cc_path, metadata, arena_bytes=None):
    """The C++ source and header holding `data` for TensorFlow Lite Micro.

    Args:
        data: The `.tflite` bytes.
        cc_path: Path of the `.cc` file; the header is the same path with `.h`.
        metadata: The artifact's metadata, summarised in the header comment.
        arena_bytes: Tensor-arena bytes TFLM allocated for the model, or None.

    Returns:
        `(cc_text, h_text)`. The array is `alignas(16) const unsigned char <name>[]` and its
        length `const unsigned int <name>_len`, `<name>` from `c_identifier`.
    """
    cc_path = pathlib.Path(cc_path)
    name = c_identifier(cc_path)
    guard = re.sub(r"\W", "_", cc_path.with_suffix(".h").name).upper() + "_"
    inputs, outputs = metadata["input"], metadata["output"]
    notes = [
        f"LeNet-5 ({metadata['variant']} variant), TFLite model, quantization {metadata['quantization']}.",
        f"Input {inputs['name']!r}: {inputs['dtype']} [1, 28, 28] raw pixels"
        + (f", int8 = pixel - 128 (scale {inputs['quantization']['scale']:g}, "
           f"zero point {inputs['quantization']['zero_point']})." if "quantization" in inputs else " 0-255."),
        f"Output {outputs['name']!r}: {outputs['dtype']} [1, 10] probabilities of digits 0-9"
        + (f", p = (q - ({outputs['quantization']['zero_point']})) * {outputs['quantization']['scale']:g}."
           if "quantization" in outputs else "."),
    ]  # fmt: skip
    if metadata.get("test_error") is not None:
        notes.append(f"Source model test error: {100 * metadata['test_error']:.2f}% on the 10,000 MNIST test images.")
    if metadata.get("source_sha256"):
        notes.append(f"Source: {metadata.get('source_model')} (sha256 {metadata['source_sha256'][:16]}...).")
    if arena_bytes is not None:
        notes.append(
            f"Tensor arena: {arena_bytes} bytes allocated by the TFLM Python interpreter (64-bit host);"
        )
        notes.append("give the target some margin, and more for optimized kernels' scratch buffers.")
    comment = "".join(f"// {line}\n" for line in ["Generated by python -m export.tflite. Do not edit.", *notes])
    header = (
        f"{comment}\n#ifndef {guard}\n#define {guard}\n\n"
        f"extern const unsigned char {name}[];\n"
        f"extern const unsigned int {name}_len;\n"
    )
    if arena_bytes is not None:
        header += f"constexpr unsigned int {name}_arena_bytes = {arena_bytes};\n"
    header += f"\n#endif  // {guard}\n"
    rows = [
        "  " + ", ".join(f"0x{byte:02x}" for byte in data[i : i + 12]) + ","
        for i in range(0, len(data), 12)
    ]
    source = (
        f"{comment}\n#include \"{cc_path.with_suffix('.h').name}\"\n\n"
        f"alignas(16) const unsigned char {name}[] = {{\n" + "\n".join(rows) + "\n};\n"
        f"const unsigned int {name}_len = {len(data)};\n"
    )
    return source, header


def tflm_arena_bytes(data):
    """Tensor-arena bytes TensorFlow Lite Micro allocates for `data`, or None without tflite-micro."""
    import tempfile

    from export.runtimes import MicroRuntime

    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return None
    with tempfile.TemporaryDirectory(prefix="lenet_tflm_") as folder:
        path = pathlib.Path(folder) / "model.tflite"
        path.write_bytes(data)
        return MicroRuntime(path).arena_bytes()


def export_tflite(
    model, out, quantization="none", metadata=None, calibration_images=None, c_array=None, graph="folded"
):
    """Converts `model` and writes `out` (and the C array), each file only once it is complete.

    Args:
        model: The LeNet-5 to export.
        out: The `.tflite` path.
        quantization: One of `QUANTIZATIONS`.
        metadata: Dict from `common.build_metadata` (its `quantization`, `input` and `output`
            are completed here), or None for a minimal one.
        calibration_images: For `"int8"`: see `convert`.
        c_array: Optional `.cc` path; its `.h` is written beside it.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.

    Returns:
        A dict: `path`, `bytes`, `quantization`, `operators`, `arena_bytes` (int8 only,
        None without tflite-micro), `metadata`.
    """
    data = convert(model, quantization, calibration_images, graph)
    metadata = dict(metadata or common.build_metadata(model, "tflite"))
    metadata.update(format="tflite", quantization=quantization, graph=graph)
    metadata["input"], metadata["output"] = dict(metadata["input"]), dict(metadata["output"])
    if quantization == "int8":
        quant = io_quantization(data)
        scale, zero_point = quant["input"]
        metadata["input"].update(
            dtype="int8",
            quantization={"scale": scale, "zero_point": zero_point, "formula": "int8 = pixel - 128"},
        )
        scale, zero_point = quant["output"]
        metadata["output"].update(
            dtype="int8",
            quantization={"scale": scale, "zero_point": zero_point, "formula": "p = (q - zero_point) * scale"},
        )
        metadata["tflm_arena_bytes"] = tflm_arena_bytes(data)
    data = add_metadata(data, metadata)
    sources = None
    if c_array is not None:
        sources = c_array_sources(data, c_array, metadata, metadata.get("tflm_arena_bytes"))
    common.write_bytes(out, data)
    if sources is not None:
        common.write_bytes(pathlib.Path(c_array).with_suffix(".h"), sources[1].encode())
        common.write_bytes(c_array, sources[0].encode())
    return {
        "path": pathlib.Path(out),
        "bytes": len(data),
        "quantization": quantization,
        "operators": operators(data),
        "arena_bytes": metadata.get("tflm_arena_bytes"),
        "metadata": metadata,
    }


def build_parser():
    parser = cli.ArgumentParser(
        prog="python -m export.tflite",
        description="Export a trained LeNet-5 to TensorFlow Lite (builtin operators only), "
        "optionally quantized, optionally as a C array for TensorFlow Lite Micro.",
    )
    common.add_model_arguments(parser)
    parser.add_argument(
        "--out", required=True, metavar="FILE.tflite", help="model file to write (replaced if it exists)"
    )
    parser.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default="none",
        help="none: float32; float16: float16 weights; dynamic: int8 weights, float math; "
        "int8: full integer, int8 input (pixel - 128) and output, calibrated on real "
        "training images (default: none)",
    )
    parser.add_argument(
        "--c-array",
        metavar="FILE.cc",
        help="also write the model as a 16-byte-aligned C array (FILE.cc and FILE.h) for "
        "TensorFlow Lite Micro; use with --quantize int8",
    )
    parser.add_argument(
        "--calibration-images", type=int, default=500, metavar="N",
        help="training images that calibrate --quantize int8 (default: 500)",
    )  # fmt: skip
    return parser


def main(argv):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.c_array is not None and pathlib.Path(args.c_array).suffix not in (".cc", ".cpp"):
        parser.error(f"--c-array {args.c_array}: expected a .cc file name")
    if args.calibration_images < 1:
        parser.error("--calibration-images must be a positive integer")
    cli.quiet_tensorflow()
    common.check_writable(args.out)
    if args.c_array is not None:
        common.check_writable(args.c_array, "--c-array")
    model, source, mnist = common.load_for_export(args)
    calibration = None
    if args.quantize == "int8":
        calibration = common.representative_images(mnist[0][0], count=args.calibration_images)
    metadata = common.build_metadata(model, "tflite", args.quantize, **source)
    result = export_tflite(model, args.out, args.quantize, metadata, calibration, args.c_array, args.graph)
    line = f"{result['path']}: TFLite {args.quantize}, {result['bytes']:,} bytes, {len(result['operators'])} operators"
    if result["arena_bytes"] is not None:
        line += f", TFLM arena {result['arena_bytes']:,} bytes"
    print(line)
    if args.c_array is not None:
        print(f"{args.c_array}, {pathlib.Path(args.c_array).with_suffix('.h')}: C array {c_identifier(args.c_array)}")
    return 0


if __name__ == "__main__":
    cli.run(main)
