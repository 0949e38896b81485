"""Exports of a trained LeNet-5 for phones, microcontrollers and other stacks, and their checks.

One command module per format, plus the check of them all (see docs/export.md):

    python -m export.savedmodel --model RUN_DIR/model.keras --out DIR
    python -m export.tflite --model RUN_DIR/model.keras --out FILE.tflite \
        [--quantize none|float16|dynamic|int8] [--c-array FILE.cc]
    python -m export.onnx --model RUN_DIR/model.keras --out FILE.onnx [--opset 17]
    python -m export.verify --model RUN_DIR/model.keras ARTIFACT...

(`lenet-tf export savedmodel|tflite|onnx|verify ...` runs the same commands.) Every artifact
keeps one contract (`export.contract`): input `image`, raw 28x28 pixels 0-255 with any batch
size; output `probabilities`, 10 per image. The library modules behind the commands:

- `export.contract`: input/output names, the traced serving function, the metadata.
- `export.folding`: the paper model rewritten in standard layers (the default `--graph`).
- `export.savedmodel`, `export.tflite`, `export.onnx`: one format each.
- `export.flatbuffer`: reading and editing `.tflite` files; `export.c_array`: the C array.
- `export.verify`: the pass/fail bars, in one table.
- `export.cli`: the options and start-up every export command shares.

`lenet_tf.inference.load_runtime(path)` runs any artifact behind one `predict(images)` call.
Only the int8 TFLite export and verify read MNIST.
"""
