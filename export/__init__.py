"""Exports of a trained LeNet-5 for phones, microcontrollers and other stacks, and their checks.

One module per format, each a command line:

    python -m export.savedmodel --model RUN_DIR/model.keras --out DIR
    python -m export.tflite --model RUN_DIR/model.keras --out FILE.tflite --quantize int8 \
        [--c-array FILE.cc]
    python -m export.onnx --model RUN_DIR/model.keras --out FILE.onnx [--opset 17]
    python -m export.verify --model RUN_DIR/model.keras ARTIFACT...

Every artifact has the same contract (`export.common.INPUT_CONTRACT`, `OUTPUT_CONTRACT`):

- input `image`: a batch of raw 28x28 grayscale pixels, float32 in 0-255, ink bright, shape
  `(batch, 28, 28)` with any batch size. The int8 TFLite model takes int8 `pixel - 128`
  (input scale 1, zero point -128, so the quantization is exact). Padding to 32x32 and the
  paper's normalisation happen inside the graph.
- output `probabilities`: `(batch, 10)` float32 summing to 1; argmax is the digit. For the
  paper variant it is the softmax of the negative RBF distances, the paper's posterior. The
  int8 model outputs int8; dequantize with the scale and zero point in its metadata.

The paper variant is exported as its folded inference graph by default (`export.folding`:
the same probabilities from standard layers; smaller int8 error, as fast as a stock LeNet);
`--graph literal` exports the trained layers as they are.

`export.runtimes.load_runtime(path)` runs any of them behind one `predict(images)` call.
"""
