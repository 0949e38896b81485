"""Runs a LeNet-5 or any of its exported artifacts the same way: `load_runtime(path).predict(images)`.

    runtime = load_runtime("artifacts/lenet5_int8.tflite")   # or .keras, a SavedModel, an .onnx
    probabilities = runtime.predict(x_test)                   # (N, 28, 28) uint8 or float 0-255
    digits = probabilities.argmax(axis=-1)

Backends: a `.keras` file runs through Keras, a SavedModel folder through TensorFlow, a
`.tflite` file through LiteRT (`ai-edge-litert`) or, with `backend="tflm"`, through TensorFlow
Lite Micro's own kernels (`tflite-micro`), and an `.onnx` file through onnxruntime. Each
backend's package is imported only when a model needs it: a `.tflite` or an `.onnx` file never
loads TensorFlow or Keras. Quantized inputs and outputs (the int8 TFLite model) are converted
inside `predict`, so callers always pass raw pixels and get float32 probabilities.

Every artifact must keep the image contract: one input of raw `(batch, 28, 28)` pixels and one
output of `(batch, 10)` probabilities. Anything else is refused with an `ArtifactError` of one
line, `<path>: <problem>`.
"""

import functools
import os
import pathlib
import re
import sys
import tempfile

import numpy as np

from lenet_tf.errors import ArtifactError, ImageError, first_line
from lenet_tf.images import MNIST_SIZE, as_pixel_batch, load_digit

BACKENDS = ("keras", "tensorflow", "litert", "tflm", "onnxruntime")
# LiteRT's kernel sets by name -> `OpResolverType` member. `xnnpack` is the default fast path
# of phones and desktops; `builtin` the optimized builtin kernels without a delegate;
# `reference` the plain reference kernels, which TensorFlow Lite Micro shares, so an int8
# model gives TFLM's outputs bit for bit there (the other two may round a near tie
# differently, a few images in 10,000).
LITERT_KERNELS = {
    "xnnpack": "AUTO",
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",
    "reference": "BUILTIN_REF",
}


def quantize(values, scale, zero_point, dtype):
    """`round(values / scale) + zero_point`, clipped to `dtype`: TFLite's affine quantization.

    >>> quantize([0, 128, 255], 1.0, -128, np.int8)
    array([-128,    0,  127], dtype=int8)
    """
    info = np.iinfo(dtype)
    quantized = np.round(np.asarray(values, np.float32) / np.float32(scale)) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize(values, scale, zero_point):
    """`(values - zero_point) * scale` as float32.

    >>> dequantize(np.array([127, -128], np.int8), 1 / 256, -128)
    array([0.99609375, 0.        ], dtype=float32)
    """
    return ((np.asarray(values, np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class Runtime:
    """A model behind one call: raw pixels in, float32 probabilities out.

    Attributes:
        path: The model file or folder.
        backend: One of `BACKENDS`.
        input_dtype: The dtype the artifact itself takes (`float32`, or `int8` for the
            full-integer TFLite model); `predict` converts to it.
        batch_size: Most images per call into the backend.
    """

    backend = None

    def __init__(self, path, batch_size=1024):
        self.path = pathlib.Path(path)
        self.batch_size = batch_size
        self.input_dtype = np.dtype(np.float32)

    def predict(self, images):
        """Class probabilities of raw-pixel images.

        Args:
            images: `(N, 28, 28)` (or `(N, 28, 28, 1)`, or one `(28, 28)` image) raw pixels,
                0-255, uint8 or float.

        Returns:
            float32 `(N, 10)`. For a quantized output, the dequantized values (see
            `dequantize`); their sum is within a few steps of 1.

        Raises:
            ValueError: `images` breaks the contract (see `lenet_tf.images.as_pixel_batch`).
        """
        images = as_pixel_batch(images)
        parts = [self._run(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _run(self, images):
        raise NotImplementedError

    def _check_contract(self, inputs, outputs, input_shape):
        """Refuses an artifact that is not one `(batch, 28, 28)` input and one output."""
        if inputs != 1 or outputs != 1:
            raise ArtifactError(f"{self.path}: has {inputs} inputs and {outputs} outputs, expected 1 and 1")
        dims = [None if d is None or isinstance(d, str) or int(d) < 0 else int(d) for d in input_shape]
        if len(dims) != 3 or dims[1:] != [MNIST_SIZE, MNIST_SIZE]:
            shape = "(" + ", ".join("batch" if d is None else str(d) for d in dims) + ")"
            raise ArtifactError(f"{self.path}: input shape {shape} is not the (batch, 28, 28) image contract")

    def __repr__(self):
        return f"{type(self).__name__}({str(self.path)!r})"


class KerasRuntime(Runtime):
    """A `.keras` file written by lenet-tf, through Keras (`lenet_tf.saving.load_lenet5`).

    `also_allow` names further code-free Keras layer classes the file may hold (see `load_lenet5`).
    """

    backend = "keras"

    def __init__(self, path, batch_size=1024, also_allow=()):
        from lenet_tf.model import probability_model
        from lenet_tf.saving import load_lenet5

        super().__init__(path, batch_size)
        self._model = probability_model(load_lenet5(path, also_allow=also_allow))

    def _run(self, images):
        return np.asarray(self._model.predict_on_batch(images.astype(np.float32, copy=False)))


class SavedModelRuntime(Runtime):
    """A SavedModel folder through TensorFlow, via its `serving_default` signature."""

    backend = "tensorflow"

    def __init__(self, path, batch_size=1024):
        super().__init__(path, batch_size)
        import tensorflow as tf

        self._tf = tf
        try:
            self._loaded = tf.saved_model.load(str(self.path))  # keeps the variables alive
        except Exception as err:  # TensorFlow raises many types for a damaged SavedModel.
            raise ArtifactError(f"{self.path}: not a loadable SavedModel: {first_line(err)}") from err
        if "serving_default" not in self._loaded.signatures:
            raise ArtifactError(f"{self.path}: SavedModel has no serving_default signature")
        self._signature = self._loaded.signatures["serving_default"]
        _, inputs = self._signature.structured_input_signature
        outputs = self._signature.structured_outputs
        spec = next(iter(inputs.values()), None)
        self._check_contract(len(inputs), len(outputs), spec.shape.as_list() if spec is not None else [])
        self._input_name, self._output_name = next(iter(inputs)), next(iter(outputs))

    def _run(self, images):
        tensor = self._tf.constant(images.astype(np.float32, copy=False))
        return self._signature(**{self._input_name: tensor})[self._output_name].numpy()


# Integer pixels (0-255, checked by `as_pixel_batch`) and one-byte outputs convert by a lookup
# in a 256-entry table of `quantize`'s or `dequantize`'s results: one NumPy call instead of
# five. At batch 1 that took the int8 model's `predict` from 10 µs to 1-2 µs behind float32's
# on an AVX-512 host, where LiteRT's int8 interpreter itself is as fast (docs/performance.md).
@functools.lru_cache(maxsize=8)
def _pixel_table(scale, zero_point, dtype):
    return quantize(np.arange(256), scale, zero_point, dtype)


@functools.lru_cache(maxsize=8)
def _byte_table(scale, zero_point, dtype):
    return dequantize(np.arange(256, dtype=np.uint8).view(dtype), scale, zero_point)


def _to_input(images, dtype, quantization):
    if dtype.kind == "f":
        return images.astype(dtype, copy=False)
    scale, zero_point = quantization
    if images.dtype.kind in "ui":
        return _pixel_table(float(scale), int(zero_point), dtype).take(images)
    return quantize(images, scale, zero_point, dtype)


def _from_output(values, quantization):
    if values.dtype.kind == "f":
        return values.astype(np.float32, copy=True)
    scale, zero_point = quantization
    if values.dtype.itemsize == 1:
        return _byte_table(float(scale), int(zero_point), values.dtype).take(values.view(np.uint8))
    return dequantize(values, scale, zero_point)


class LiteRTRuntime(Runtime):
    """A `.tflite` file through LiteRT (`ai_edge_litert.interpreter`), any batch size.

    Args:
        path: The `.tflite` file.
        batch_size: Most images per invoke.
        num_threads: CPU threads (default: all cores).
        kernels: A key of `LITERT_KERNELS`: `"xnnpack"` (default, LiteRT's own default),
            `"builtin"` or `"reference"` (the kernels TensorFlow Lite Micro runs too).
    """

    backend = "litert"

    def __init__(self, path, batch_size=1024, num_threads=None, kernels="xnnpack"):
        super().__init__(path, batch_size)
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        if kernels not in LITERT_KERNELS:
            raise ValueError(f"`kernels` must be one of {tuple(LITERT_KERNELS)}. Received: kernels={kernels!r}")
        self.kernels = kernels
        try:
            self._interpreter = Interpreter(
                model_path=str(self.path),
                num_threads=num_threads or os.cpu_count(),
                experimental_op_resolver_type=getattr(OpResolverType, LITERT_KERNELS[kernels]),
            )
        except Exception as err:  # ValueError for a bad file; RuntimeError for unsupported ops.
            raise ArtifactError(f"{self.path}: not a valid TFLite model: {first_line(err)}") from err
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        self._check_contract(len(inputs), len(outputs), inputs[0]["shape_signature"] if inputs else [])
        self._input, self._output = inputs[0], outputs[0]
        self.input_dtype = np.dtype(self._input["dtype"])
        self._batch = None

    def _run(self, images):
        interpreter = self._interpreter
        if self._batch != len(images):
            interpreter.resize_tensor_input(self._input["index"], [len(images), MNIST_SIZE, MNIST_SIZE])
            interpreter.allocate_tensors()
            self._batch = len(images)
        interpreter.set_tensor(self._input["index"], _to_input(images, self.input_dtype, self._input["quantization"]))
        interpreter.invoke()
        return _from_output(interpreter.get_tensor(self._output["index"]), self._output["quantization"])


class MicroRuntime(Runtime):
    """A `.tflite` file through TensorFlow Lite Micro's kernels (the `tflite-micro` package).

    TFLM runs one image per invoke with the batch size stored in the model (1), as on a
    microcontroller; `predict` loops.
    """

    backend = "tflm"

    def __init__(self, path, batch_size=256):
        super().__init__(path, batch_size)
        from tflite_micro.python.tflite_micro import runtime as tflm

        try:
            self._interpreter = tflm.Interpreter.from_file(str(self.path))
        except Exception as err:  # RuntimeError from the C++ side for a bad or unsupported model.
            raise ArtifactError(f"{self.path}: TFLite Micro cannot load it: {first_line(err)}") from err
        self._input = self._interpreter.get_input_details(0)
        self._output = self._interpreter.get_output_details(0)
        self._check_contract(1, 1, self._input["shape"])
        self.input_dtype = np.dtype(self._input["dtype"])
        self._arena_bytes = None

    @staticmethod
    def _quantization(details):
        params = details["quantization_parameters"]
        if len(params["scales"]) == 0:
            return (0.0, 0)
        return float(params["scales"][0]), int(params["zero_points"][0])

    def _run(self, images):
        batch = _to_input(images, self.input_dtype, self._quantization(self._input))
        results = []
        for image in batch:
            self._interpreter.set_input(image[None], 0)
            self._interpreter.invoke()
            results.append(self._interpreter.get_output(0)[0])
        return _from_output(np.stack(results), self._quantization(self._output))

    def arena_bytes(self):
        """Tensor-arena bytes TFLM allocated for this model.

        Read from TFLM's `RecordingMicroAllocator` report after one invoke (allocation is
        lazy). Measured on this machine (64-bit pointers); a 32-bit microcontroller needs a
        little less, optimized kernels (CMSIS-NN) may need scratch space on top.
        """
        if self._arena_bytes is None:
            self.predict(np.zeros((1, MNIST_SIZE, MNIST_SIZE), np.uint8))
            report = _capture_native_output(self._interpreter.print_allocations)
            match = re.search(r"Arena allocation total (\d+) bytes", report)
            if match is None:
                raise RuntimeError(f"TFLM printed no arena total: {report[:200]!r}")
            self._arena_bytes = int(match.group(1))
        return self._arena_bytes


def _capture_native_output(function):
    """Runs `function` and returns what C++ code in it printed to stdout and stderr."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as capture:
        try:
            os.dup2(capture.fileno(), 1)
            os.dup2(capture.fileno(), 2)
            function()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        capture.seek(0)
        return capture.read().decode(errors="replace")


class OnnxRuntime(Runtime):
    """An `.onnx` file through onnxruntime on the CPU, all graph optimisations on."""

    backend = "onnxruntime"

    def __init__(self, path, batch_size=1024, num_threads=None):
        super().__init__(path, batch_size)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads or os.cpu_count()
        options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf types.
            raise ArtifactError(f"{self.path}: not a valid ONNX model: {first_line(err)}") from err
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        self._check_contract(len(inputs), len(outputs), inputs[0].shape if inputs else [])
        if inputs[0].type != "tensor(float)":
            raise ArtifactError(f"{self.path}: input type {inputs[0].type}, expected tensor(float)")
        self._input_name, self._output_name = inputs[0].name, outputs[0].name

    def _run(self, images):
        return self._session.run([self._output_name], {self._input_name: images.astype(np.float32, copy=False)})[0]

    def metadata(self):
        """The model's `metadata_props` as a dict of strings."""
        return dict(self._session.get_modelmeta().custom_metadata_map)


def _backend_of(path, backend):
    """The backend that runs `path` (`backend` if given and possible)."""
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ArtifactError(f"{path}: a folder but not a SavedModel (no saved_model.pb)")
        kind = "tensorflow"
    elif path.suffix == ".tflite":
        kind = "tflm" if backend == "tflm" else "litert"
    else:
        kind = {".keras": "keras", ".onnx": "onnxruntime"}.get(path.suffix)
    if kind is None:
        raise ArtifactError(
            f"{path}: unknown artifact type (expected a .keras file, a SavedModel folder, a .tflite or an .onnx file)"
        )
    if backend is not None and backend != kind:
        raise ArtifactError(f"{path}: cannot run on {backend} (it is a {kind} artifact)")
    return kind


def load_runtime(path, backend=None, batch_size=None, num_threads=None, kernels="xnnpack", also_allow=()):
    """Opens a LeNet-5 or an exported artifact for inference.

    Args:
        path: A `.keras` file, a SavedModel folder, a `.tflite` file or an `.onnx` file.
        backend: None to pick by the artifact (Keras, TensorFlow, LiteRT, onnxruntime), or
            `"tflm"` to run a `.tflite` file on TensorFlow Lite Micro's kernels.
        batch_size: Most images per call into the backend (default 1024; 256 for TFLM,
            which loops over single images anyway).
        num_threads: CPU threads for LiteRT and onnxruntime (default: all cores).
        kernels: For LiteRT, a key of `LITERT_KERNELS` (see `LiteRTRuntime`).
        also_allow: For a `.keras` file, further code-free Keras layer classes it may hold
            (`lenet_tf.saving.load_lenet5`'s; the benchmarks' stock LeNet needs one).

    Returns:
        A `Runtime`.

    Raises:
        ArtifactError: One line, `<path>: <problem>`, when the artifact is missing, of an
            unknown kind, corrupt, or does not keep the image contract.
        ModelFileError: A `.keras` file that is not a loadable LeNet-5.
        ValueError: An unknown `backend` or `kernels`.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}. Received: backend={backend!r}")
    path = pathlib.Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or folder")
    kind = _backend_of(path, backend)
    if not os.access(path, os.R_OK):
        raise ArtifactError(f"{path}: not readable (permission denied)")
    sizes = {} if batch_size is None else {"batch_size": batch_size}
    if kind == "litert":
        return LiteRTRuntime(path, num_threads=num_threads, kernels=kernels, **sizes)
    if kind == "onnxruntime":
        return OnnxRuntime(path, num_threads=num_threads, **sizes)
    if kind == "keras":
        return KerasRuntime(path, also_allow=also_allow, **sizes)
    runtime_class = {"tensorflow": SavedModelRuntime, "tflm": MicroRuntime}[kind]
    return runtime_class(path, **sizes)


def predict_files(runtime, paths):
    """Reads the digit in each of several image files (made MNIST-style by `load_digit`).

    Args:
        runtime: A runtime from `load_runtime`.
        paths: Image file paths.

    Returns:
        One dict per path, in order: `{"file", "digit", "probability"}`, or `{"file", "error"}`
        for a file that could not be read.
    """
    results, images, readable = [], [], []
    for path in paths:
        try:
            images.append(load_digit(path))
            readable.append(len(results))
            results.append({"file": str(path)})
        except ImageError as err:
            results.append({"file": str(path), "error": str(err)})
    if images:
        probabilities = runtime.predict(np.stack(images))
        for index, row in zip(readable, probabilities):
            digit = int(row.argmax())
            results[index].update({"digit": digit, "probability": round(float(row[digit]), 6)})
    return results
