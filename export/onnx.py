"""Exports a trained LeNet-5 to ONNX through tf2onnx.

Usage:

    python -m export.onnx --model runs/paper/model.keras --out artifacts/lenet5.onnx [--opset 17]

The graph takes `image` (batch, 28, 28) float32 raw pixels and outputs `probabilities`
(batch, 10). It uses the default ONNX domain only (no custom or contrib ops), C3 is one `Conv`
(S2 and S4 are depthwise `Conv` nodes in the default folded graph, see `export.folding`),
and the file passes `onnx.checker.check_model(full_check=True)`. `metadata_props` carry the
labels, the input/output contract and the source model's test error (JSON-encoded values):

    session = onnxruntime.InferenceSession("artifacts/lenet5.onnx")
    session.get_modelmeta().custom_metadata_map["test_error"]

tf2onnx 1.17's `from_keras` fails on Keras 3 models, so a `tf.function` of the model is
converted with an explicit `TensorSpec`; opsets 13-18 work with tf2onnx 1.17.

This export does not read MNIST.
"""

import json
import pathlib

from lenet_tf.commands import base

from export import cli

DEFAULT_OPSET = 17
OPSETS = range(13, 19)
STANDARD_DOMAINS = ("", "ai.onnx")


def convert(model, opset=DEFAULT_OPSET, metadata=None, graph="folded"):
    """Converts `model` to a checked ONNX `ModelProto`.

    Args:
        model: The LeNet-5 to convert.
        opset: ONNX opset, 13-18.
        metadata: Dict from `export.contract.build_metadata`, stored in `metadata_props` (string
            values as they are, others JSON-encoded), or None.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.

    Returns:
        The `onnx.ModelProto`: only standard-domain operators, the batch dimension named
        `batch`, unused opset imports dropped.

    Raises:
        SettingError: An opset outside 13-18.
        ValueError: The converted graph has custom-domain nodes.
    """
    from lenet_tf.errors import SettingError

    if opset not in OPSETS:
        raise SettingError("opset", f"must be in {OPSETS.start}-{OPSETS.stop - 1} for tf2onnx 1.17. Received: {opset}")
    import onnx
    import tensorflow as tf
    import tf2onnx

    from export.contract import input_signature, serving_function

    _, serve = serving_function(model, graph)
    function = tf.function(serve, input_signature=input_signature())
    onnx_model, _ = tf2onnx.convert.from_function(function, input_signature=input_signature(), opset=opset)
    custom = sorted({node.domain for node in onnx_model.graph.node if node.domain not in STANDARD_DOMAINS})
    if custom:
        raise ValueError(f"the converted graph uses custom operator domains {custom}")
    # tf2onnx imports ai.onnx.ml whether or not a node needs it.
    used = {node.domain for node in onnx_model.graph.node}
    keep = [entry for entry in onnx_model.opset_import if entry.domain in used or entry.domain in STANDARD_DOMAINS]
    del onnx_model.opset_import[:]
    onnx_model.opset_import.extend(keep)
    for value in list(onnx_model.graph.input) + list(onnx_model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx_model.doc_string = "LeNet-5 (LeCun et al., 1998): raw 28x28 pixels in, 10 digit probabilities out"
    onnx_model.producer_name = "lenet-tf (tf2onnx)"
    if metadata is not None:
        onnx.helper.set_model_props(onnx_model, metadata_props(dict(metadata, format="onnx", graph=graph)))
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def full_convolutions(onnx_model):
    """The `Conv` nodes that are not depthwise (`group` == 1): C1, C3 and C5 in a LeNet-5.

    The folded graph's subsampling layers S2 and S4 are depthwise `Conv` nodes (`group` =
    channels); they are not counted.
    """
    count = 0
    for node in onnx_model.graph.node:
        if node.op_type == "Conv":
            group = next((attr.i for attr in node.attribute if attr.name == "group"), 1)
            count += group == 1
    return count


def metadata_props(metadata):
    """`metadata` as ONNX `metadata_props`: strings as they are, other values as JSON."""
    return {
        key: value if isinstance(value, str) else json.dumps(value, sort_keys=True) for key, value in metadata.items()
    }


def export_onnx(model, out, opset=DEFAULT_OPSET, metadata=None, graph="folded"):
    """Converts `model` (see `convert`) and writes `out` only once the checked model is complete.

    Args:
        model: The LeNet-5 to convert.
        out: The `.onnx` path, replaced only by a complete file.
        opset: ONNX opset, 13-18.
        metadata: Dict from `export.contract.build_metadata`, or None.
        graph: `"folded"` or `"literal"`; see `export.folding.inference_model`.

    Returns:
        The `onnx.ModelProto` written.
    """
    from lenet_tf.files import atomic_path

    onnx_model = convert(model, opset, metadata, graph)
    with atomic_path(out) as tmp:
        tmp.write_bytes(onnx_model.SerializeToString())
    return onnx_model


def build_parser(prog=None):
    """The parser of `python -m export.onnx`."""
    parser = cli.export_parser(
        prog or "python -m export.onnx",
        description="Export a trained LeNet-5 to ONNX (default domain only, checked with "
        "onnx.checker full_check): image (batch, 28, 28) raw pixels 0-255 -> probabilities (batch, 10).",
        out_metavar="FILE.onnx",
        out_help="model file to write (replaced if it exists)",
    )
    parser.add_argument(
        "--opset", type=int, choices=OPSETS, default=DEFAULT_OPSET, metavar="N",
        help=f"ONNX opset, {OPSETS.start}-{OPSETS.stop - 1} (default: {DEFAULT_OPSET})",
    )  # fmt: skip
    return parser


def execute(args):
    """Writes the ONNX file and prints one line about it."""
    model, metadata = cli.load_source(args, "onnx")
    metadata["opset"] = args.opset
    onnx_model = export_onnx(model, args.out, args.opset, metadata, args.graph)
    print(
        f"{pathlib.Path(args.out)}: ONNX opset {args.opset}, {cli.artifact_bytes(args.out):,} bytes, "
        f"{len(onnx_model.graph.node)} nodes ({full_convolutions(onnx_model)} full convolutions)"
    )


def main(argv=None, prog=None):
    return base.run(build_parser, execute, argv, prog)


if __name__ == "__main__":
    main()
