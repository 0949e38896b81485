"""Runs any exported LeNet-5 the same way: `load_runtime(path).predict(images)`.

    runtime = load_runtime("artifacts/lenet5_int8.tflite")   # or a SavedModel folder, an .onnx
    probabilities = runtime.predict(x_test)                   # (N, 28, 28) uint8 or float 0-255
    digits = probabilities.argmax(axis=-1)

Backends: a SavedModel folder runs through TensorFlow, a `.tflite` file through LiteRT
(`ai-edge-litert`) or, with `backend="tflm"`, through TensorFlow Lite Micro's own kernels
(`tflite-micro`), and an `.onnx` file through onnxruntime. Each backend's package is imported
only when a model needs it. Quantized inputs and outputs (the int8 TFLite model) are converted
inside `predict`, so callers always pass raw pixels and get float32 probabilities.
"""

import os
import pathlib
import re
import sys
import tempfile

import numpy as np

from lenet_tf.cli import UsageError

from export.common import IMAGE_SIZE, OUTPUT_NAME

BACKENDS = ("keras", "tensorflow", "litert", "tflm", "onnxruntime")


class ArtifactError(UsageError):
    """An artifact that cannot be run: missing, corrupt, or not the (batch, 28, 28) contract.

    The message is one line, `<path>: <problem>`.
    """


def _first_line(err):
    for line in str(err).splitlines():
        if line.strip():
            return line.strip()
    return type(err).__name__


def as_images(images):
    """Returns `images` as a `(N, 28, 28)` array, keeping its dtype.

    Args:
        images: `(N, 28, 28)`, `(N, 28, 28, 1)` or a single `(28, 28)` image of raw pixels
            (0-255), any integer or float dtype.

    Raises:
        ValueError: For any other shape, a non-numeric dtype, or NaN or infinite pixels.
    """
    array = np.asarray(images)
    if array.ndim == 2:
        array = array[None]
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"images must have shape (N, 28, 28). Received: shape={array.shape}")
    if array.dtype.kind not in "uif":
        raise ValueError(f"images must hold pixel values 0-255. Received: dtype={array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError("images contain NaN or infinity")
    return array


def quantize(values, scale, zero_point, dtype):
    """`round(values / scale) + zero_point`, clipped to `dtype`: the TFLite affine quantization."""
    info = np.iinfo(dtype)
    quantized = np.round(np.asarray(values, np.float32) / np.float32(scale)) + zero_point
    return np.clip(quantized, info.min, info.max).astype(dtype)


def dequantize(values, scale, zero_point):
    """`(values - zero_point) * scale` as float32."""
    return ((np.asarray(values, np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(np.float32)


class Runtime:
    """An exported model behind one call: raw pixels in, float32 probabilities out.

    Attributes:
        path: The artifact.
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
            float32 `(N, 10)`. For a quantized output, the dequantized values, which sum to 1
            within a few quantization steps.
        """
        images = as_images(images)
        parts = [self._run(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return np.concatenate(parts).astype(np.float32, copy=False)

    def _run(self, images):
        raise NotImplementedError

    def _check_input_shape(self, shape):
        """Refuses an artifact whose input is not `(batch, 28, 28)`."""
        dims = [None if d is None or isinstance(d, str) or int(d) < 0 else int(d) for d in shape]
        if len(dims) != 3 or dims[1:] != [IMAGE_SIZE, IMAGE_SIZE]:
            raise ArtifactError(
                f"{self.path}: input shape {_shape_text(dims)} is not the (batch, 28, 28) image contract"
            )

    def __repr__(self):
        return f"{type(self).__name__}({str(self.path)!r})"


def _shape_text(dims):
    return "(" + ", ".join("batch" if d is None else str(d) for d in dims) + ")"


class KerasRuntime(Runtime):
    """A `.keras` file written by `lenet_tf.train`, through Keras (loaded with `safe_mode`)."""

    backend = "keras"

    def __init__(self, path, batch_size=1024):
        from lenet_tf.model import probability_model
        from lenet_tf.saving import load_lenet5

        super().__init__(path, batch_size)
        self._model = probability_model(load_lenet5(path))

    def _run(self, images):
        return self._model.predict_on_batch(images.astype(np.float32, copy=False))


class SavedModelRuntime(Runtime):
    """A SavedModel folder through TensorFlow, via its `serving_default` signature."""

    backend = "tensorflow"

    def __init__(self, path, batch_size=1024):
        super().__init__(path, batch_size)
        import tensorflow as tf

        self._tf = tf
        try:
            loaded = tf.saved_model.load(str(self.path))
        except Exception as err:  # TensorFlow raises many types for a damaged SavedModel.
            raise ArtifactError(f"{self.path}: not a loadable SavedModel: {_first_line(err)}") from err
        if "serving_default" not in loaded.signatures:
            raise ArtifactError(f"{self.path}: SavedModel has no serving_default signature")
        self._loaded = loaded  # keeps the variables alive
        self._signature = loaded.signatures["serving_default"]
        _, inputs = self._signature.structured_input_signature
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path}: serving_default takes {len(inputs)} inputs, expected 1 image batch")
        (self._input_name, spec), = inputs.items()
        self._check_input_shape(spec.shape.as_list())
        outputs = self._signature.structured_outputs
        self._output_name = OUTPUT_NAME if OUTPUT_NAME in outputs else next(iter(outputs))

    def _run(self, images):
        tensor = self._tf.constant(images.astype(np.float32, copy=False))
        return self._signature(**{self._input_name: tensor})[self._output_name].numpy()


class LiteRTRuntime(Runtime):
    """A `.tflite` file through LiteRT (`ai_edge_litert.interpreter`), any batch size.

    By default LiteRT hands the graph to its XNNPACK delegate, the fast path on phones and
    desktops. XNNPACK requantizes int8 results in float32 arithmetic, the builtin kernels and
    TensorFlow Lite Micro in fixed point, so for an int8 model the builtin kernels are the
    closer reference for TFLM; pass `xnnpack=False` to run them.
    """

    backend = "litert"

    def __init__(self, path, batch_size=1024, num_threads=None, xnnpack=True):
        super().__init__(path, batch_size)
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            self._interpreter = Interpreter(
                model_path=str(self.path),
                num_threads=num_threads or os.cpu_count(),
                experimental_op_resolver_type=resolver,
            )
        except Exception as err:  # ValueError for a bad file; RuntimeError for unsupported ops.
            raise ArtifactError(f"{self.path}: not a valid TFLite model: {_first_line(err)}") from err
        inputs, outputs = self._interpreter.get_input_details(), self._interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ArtifactError(f"{self.path}: has {len(inputs)} inputs and {len(outputs)} outputs, expected 1 and 1")
        self._input, self._output = inputs[0], outputs[0]
        self._check_input_shape(self._input["shape_signature"])
        self.input_dtype = np.dtype(self._input["dtype"])
        self._batch = None

    def _run(self, images):
        interpreter = self._interpreter
        if self._batch != len(images):
            interpreter.resize_tensor_input(self._input["index"], [len(images), IMAGE_SIZE, IMAGE_SIZE])
            interpreter.allocate_tensors()
            self._batch = len(images)
        interpreter.set_tensor(self._input["index"], _to_input(images, self.input_dtype, self._input["quantization"]))
        interpreter.invoke()
        return _from_output(interpreter.get_tensor(self._output["index"]), self._output["quantization"])


def _to_input(images, dtype, quantization):
    if dtype.kind == "f":
        return images.astype(dtype, copy=False)
    scale, zero_point = quantization
    return quantize(images, scale, zero_point, dtype)


def _from_output(values, quantization):
    if values.dtype.kind == "f":
        return values.astype(np.float32, copy=True)
    scale, zero_point = quantization
    return dequantize(values, scale, zero_point)


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
            raise ArtifactError(f"{self.path}: TFLite Micro cannot load it: {_first_line(err)}") from err
        self._input = self._interpreter.get_input_details(0)
        self._output = self._interpreter.get_output_details(0)
        self._check_input_shape(self._input["shape"])
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
        """Tensor-arena bytes TFLM allocated for this model (after at least one invoke).

        Read from TFLM's `RecordingMicroAllocator` report. Measured on this machine
        (64-bit pointers); a 32-bit microcontroller needs a little less, optimized kernels
        (CMSIS-NN) may need scratch space on top.
        """
        if self._arena_bytes is None:
            self.predict(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE), np.uint8))  # allocation is lazy
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
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail/InvalidProtobuf types.
            raise ArtifactError(f"{self.path}: not a valid ONNX model: {_first_line(err)}") from err
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            raise ArtifactError(f"{self.path}: has {len(inputs)} inputs, expected 1 image batch")
        self._input_name = inputs[0].name
        self._check_input_shape(inputs[0].shape)
        if inputs[0].type != "tensor(float)":
            raise ArtifactError(f"{self.path}: input type {inputs[0].type}, expected tensor(float)")
        names = [output.name for output in outputs]
        self._output_name = OUTPUT_NAME if OUTPUT_NAME in names else names[0]

    def _run(self, images):
        return self._session.run([self._output_name], {self._input_name: images.astype(np.float32, copy=False)})[0]

    def metadata(self):
        """The model's `metadata_props` as a dict of strings."""
        return dict(self._session.get_modelmeta().custom_metadata_map)


def load_runtime(path, backend=None, batch_size=None, num_threads=None, xnnpack=True):
    """Opens an exported LeNet-5 for inference.

    Args:
        path: A `.keras` file, a SavedModel folder, a `.tflite` file or an `.onnx` file.
        backend: None to pick by the artifact (Keras, TensorFlow, LiteRT, onnxruntime), or `"tflm"`
            to run a `.tflite` file on TensorFlow Lite Micro's kernels.
        batch_size: Most images per call into the backend (default 1024; 256 for TFLM,
            which loops over single images anyway).
        num_threads: CPU threads for LiteRT and onnxruntime (default: all cores).
        xnnpack: For LiteRT: use its default XNNPACK delegate (True) or only the builtin
            kernels (False); see `LiteRTRuntime`.

    Returns:
        A `Runtime`.

    Raises:
        ArtifactError: One line, `<path>: <problem>`, when the artifact is missing, of an
            unknown kind, corrupt, or does not take `(batch, 28, 28)` images.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}. Received: backend={backend!r}")
    path = pathlib.Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: no such file or folder")
    sizes = {} if batch_size is None else {"batch_size": batch_size}
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise ArtifactError(f"{path}: a folder but not a SavedModel (no saved_model.pb)")
        kind = "tensorflow"
    elif path.suffix == ".keras":
        kind = "keras"
    elif path.suffix == ".tflite":
        kind = "tflm" if backend == "tflm" else "litert"
    elif path.suffix == ".onnx":
        kind = "onnxruntime"
    else:
        raise ArtifactError(
            f"{path}: unknown artifact type (expected a .keras file, a SavedModel folder, "
            "a .tflite or an .onnx file)"
        )
    if backend is not None and backend != kind:
        raise ArtifactError(f"{path}: cannot run on {backend} (it is a {kind} artifact)")
    if not os.access(path, os.R_OK):
        raise ArtifactError(f"{path}: not readable (permission denied)")
    if kind == "keras":
        return KerasRuntime(path, **sizes)
    if kind == "tensorflow":
        return SavedModelRuntime(path, **sizes)
    if kind == "litert":
        return LiteRTRuntime(path, num_threads=num_threads, xnnpack=xnnpack, **sizes)
    if kind == "tflm":
        return MicroRuntime(path, **sizes)
    return OnnxRuntime(path, num_threads=num_threads, **sizes)
