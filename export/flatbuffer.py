"""Reading and editing `.tflite` files: operators, tensor types, quantization, metadata.

A `.tflite` file is a flatbuffer of the TFLite schema; `ai-edge-litert` ships the schema's
Python classes and `flatbuffer_utils`, so this needs neither TensorFlow nor an interpreter.

    data = pathlib.Path("artifacts/lenet5_int8.tflite").read_bytes()
    operators(data)          # ["CONV_2D", "DEPTHWISE_CONV_2D", ...]
    io_quantization(data)    # {"input": (1.0, -128), "output": (0.00390625, -128)}
    read_metadata(data)      # the JSON dict `add_metadata` embedded
"""

import json
import re

from export import contract

# TFLM and XNNPACK read weights in place; 16 bytes suits every SIMD load.
ALIGNMENT = 16


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def _read(data):
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _enum_names(enum):
    return {code: name for name, code in vars(enum).items() if not name.startswith("_")}


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
    names = _enum_names(_schema().BuiltinOperator)
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
    names = _enum_names(_schema().TensorType)
    return {names[tensor.type] for subgraph in _read(data).subgraphs for tensor in subgraph.tensors}


def quantization_mode(data):
    """Which of `contract.QUANTIZATIONS` a `.tflite` model was converted with, read from its tensors."""
    subgraph = _read(data).subgraphs[0]
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


def short_name(name, index):
    """A tensor name cut to its layer and op, so names do not weigh 5% of an int8 file.

    The converter joins the names of fused ops with `;` and prefixes the model's name.

    >>> short_name(b"model_1/C5_1/mul;model_1/C5_1/add", 7)
    'C5/mul'
    >>> short_name(b"", 7)
    't7'
    """
    if not name:
        return f"t{index}"
    parts = name.decode(errors="replace").split(";")[0].split("/")
    if len(parts) > 1:
        parts = parts[1:]
    parts[0] = re.sub(r"_\d+$", "", parts[0])
    return "/".join(parts)


def _aligned_builder(size):
    import flatbuffers

    class AlignedBuilder(flatbuffers.Builder):
        """Starts every byte vector (buffer data) on an `ALIGNMENT` boundary, as `force_align:
        16` in the TFLite schema asks and the Python object API does not do."""

        def StartVector(self, elemSize, numElems, alignment):  # noqa: N802, N803 (flatbuffers API)
            if elemSize == 1:
                alignment = max(alignment, ALIGNMENT)
            return super().StartVector(elemSize, numElems, alignment)

    return AlignedBuilder(size)


def add_metadata(data, metadata):
    """Returns `data` with `metadata` embedded, the I/O tensors renamed and weights aligned.

    The JSON goes into a buffer referenced by a model metadata entry named `lenet_tf`
    (`contract.METADATA_NAME`); runtimes ignore metadata they do not know. The input and
    output tensors are renamed `image` and `probabilities` (the signature already uses those
    names), other tensor names are shortened (`short_name`), and every buffer starts on a
    16-byte boundary so TFLite Micro can read weights in place.

    Args:
        data: `.tflite` bytes from the converter.
        metadata: A JSON-serialisable dict.

    Returns:
        The new `.tflite` bytes.
    """
    import numpy as np

    schema = _schema()
    model = _read(data)
    subgraph = model.subgraphs[0]
    special = {subgraph.inputs[0]: contract.INPUT_NAME, subgraph.outputs[0]: contract.OUTPUT_NAME}
    for index, tensor in enumerate(subgraph.tensors):
        tensor.name = special.get(index) or short_name(tensor.name, index)
    model.metadata = [entry for entry in model.metadata or [] if entry.name.decode() != contract.METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(metadata, sort_keys=True).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = contract.METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    builder = _aligned_builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_metadata(data):
    """The metadata dict `add_metadata` embedded in `.tflite` bytes, or None."""
    model = _schema().Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name().decode() == contract.METADATA_NAME:
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
