#!/usr/bin/env node
/**
 * Test accuracy of lenet-tf's exported ONNX LeNet-5, computed in Node.js with onnxruntime-node.
 *
 * Usage:
 *
 *     node mnist_accuracy.js --model ../../artifacts/lenet5.onnx --data-dir path/to/mnist \
 *         [--limit N] [--batch-size N] [--predictions]
 *
 * Reads the MNIST test set from the original IDX files (t10k-images-idx3-ubyte and
 * t10k-labels-idx1-ubyte, raw or .gz), feeds the raw pixels to the model exactly as they are in
 * the file (float32, shape [N, 28, 28], 0 background, 255 ink: padding and normalisation are
 * inside the model), and prints one JSON object: images, correct, accuracy, test_error, and with
 * --predictions the predicted digit of every image.
 *
 * Bad input (a missing file, a malformed IDX file, a bad flag) prints `error: <message>` on
 * stderr and exits with status 2, like the lenet-tf commands.
 */
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

const IMAGE_SIZE = 28;
// IDX magic numbers: 0x0803 = unsigned bytes, 3 dimensions (images); 0x0801 = 1 dimension (labels).
const IMAGES_MAGIC = 0x00000803;
const LABELS_MAGIC = 0x00000801;

class UsageError extends Error {}

function parseArgs(argv) {
  const args = { model: null, dataDir: process.env.LENET_MNIST_DIR || null, limit: null, batchSize: 1000, predictions: false };
  const positive = (flag, text) => {
    const value = Number(text);
    if (!Number.isInteger(value) || value < 1) {
      throw new UsageError(`${flag} must be a positive integer, got ${JSON.stringify(text)}`);
    }
    return value;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new UsageError(`${flag} needs a value`);
      return argv[++i];
    };
    if (flag === '--model') args.model = next();
    else if (flag === '--data-dir') args.dataDir = next();
    else if (flag === '--limit') args.limit = positive(flag, next());
    else if (flag === '--batch-size') args.batchSize = positive(flag, next());
    else if (flag === '--predictions') args.predictions = true;
    else if (flag === '--help' || flag === '-h') {
      process.stdout.write(
        'usage: node mnist_accuracy.js --model FILE.onnx [--data-dir DIR] [--limit N] [--batch-size N] [--predictions]\n' +
          '  --data-dir defaults to $LENET_MNIST_DIR; the folder holds t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]\n'
      );
      process.exit(0);
    } else throw new UsageError(`unknown argument ${JSON.stringify(flag)} (see --help)`);
  }
  if (!args.model) throw new UsageError('--model FILE.onnx is required');
  if (!args.dataDir) throw new UsageError('--data-dir DIR is required (or set LENET_MNIST_DIR)');
  return args;
}

/** Finds `<stem>-<kind>` or `<stem>.<kind>`, raw or gzipped, in `dir` (the spellings MNIST mirrors use). */
function findIdx(dir, stem, kind) {
  for (const name of [`${stem}-${kind}`, `${stem}.${kind}`]) {
    for (const candidate of [name, `${name}.gz`]) {
      const file = path.join(dir, candidate);
      if (fs.existsSync(file)) return file;
    }
  }
  throw new UsageError(`${dir}: no ${stem}-${kind} or ${stem}-${kind}.gz`);
}

/** Reads an IDX file of unsigned bytes: returns { dims, data } with data a Uint8Array view. */
function readIdx(file, magic) {
  let bytes = fs.readFileSync(file);
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = zlib.gunzipSync(bytes);
    } catch (err) {
      throw new UsageError(`${file}: corrupt gzip data (${err.message})`);
    }
  }
  if (bytes.length < 4 || bytes.readUInt32BE(0) !== magic) {
    throw new UsageError(`${file}: not an IDX file of unsigned bytes with ${magic & 0xff} dimension(s) (bad magic number)`);
  }
  const rank = magic & 0xff;
  const header = 4 + 4 * rank;
  if (bytes.length < header) throw new UsageError(`${file}: truncated header`);
  const dims = [];
  for (let d = 0; d < rank; d++) dims.push(bytes.readUInt32BE(4 + 4 * d));
  const size = dims.reduce((a, b) => a * b, 1);
  if (bytes.length !== header + size) {
    throw new UsageError(`${file}: ${bytes.length - header} data bytes, the header promises ${size}`);
  }
  return { dims, data: new Uint8Array(bytes.buffer, bytes.byteOffset + header, size) };
}

function loadTestSet(dataDir) {
  const images = readIdx(findIdx(dataDir, 't10k', 'images-idx3-ubyte'), IMAGES_MAGIC);
  const labels = readIdx(findIdx(dataDir, 't10k', 'labels-idx1-ubyte'), LABELS_MAGIC);
  if (images.dims[1] !== IMAGE_SIZE || images.dims[2] !== IMAGE_SIZE) {
    throw new UsageError(`${dataDir}: test images are ${images.dims.slice(1).join('x')}, expected 28x28`);
  }
  if (images.dims[0] !== labels.dims[0]) {
    throw new UsageError(`${dataDir}: ${images.dims[0]} test images but ${labels.dims[0]} labels`);
  }
  return { count: images.dims[0], pixels: images.data, labels: labels.data };
}

function argmax(values, offset, length) {
  let best = 0;
  for (let k = 1; k < length; k++) if (values[offset + k] > values[offset + best]) best = k;
  return best;
}

/** Runs the model over the first `count` images in batches; returns the predicted digits. */
async function predictDigits(session, pixels, count, batchSize) {
  const ort = require('onnxruntime-node');
  const inputName = session.inputNames[0];
  const outputName = session.outputNames.includes('probabilities') ? 'probabilities' : session.outputNames[0];
  const perImage = IMAGE_SIZE * IMAGE_SIZE;
  const digits = new Array(count);
  for (let start = 0; start < count; start += batchSize) {
    const n = Math.min(batchSize, count - start);
    // The contract is raw pixels as float32: the same numbers as the file's bytes, no scaling.
    const batch = Float32Array.from(pixels.subarray(start * perImage, (start + n) * perImage));
    const input = new ort.Tensor('float32', batch, [n, IMAGE_SIZE, IMAGE_SIZE]);
    const output = (await session.run({ [inputName]: input }))[outputName];
    const classes = output.dims[1];
    for (let i = 0; i < n; i++) digits[start + i] = argmax(output.data, i * classes, classes);
  }
  return digits;
}

async function main(argv) {
  const args = parseArgs(argv);
  if (!fs.existsSync(args.model)) throw new UsageError(`${args.model}: no such file`);
  const test = loadTestSet(args.dataDir);
  const count = args.limit === null ? test.count : Math.min(args.limit, test.count);
  const ort = require('onnxruntime-node');
  let session;
  try {
    session = await ort.InferenceSession.create(args.model, { executionProviders: ['cpu'] });
  } catch (err) {
    throw new UsageError(`${args.model}: not a valid ONNX model: ${String(err.message).split('\n')[0]}`);
  }
  const digits = await predictDigits(session, test.pixels, count, args.batchSize);
  let correct = 0;
  for (let i = 0; i < count; i++) correct += digits[i] === test.labels[i] ? 1 : 0;
  const result = {
    model: args.model,
    runtime: `onnxruntime-node ${require('onnxruntime-node/package.json').version}`,
    images: count,
    correct,
    accuracy: correct / count,
    test_error: (count - correct) / count,
  };
  if (args.predictions) result.predictions = digits;
  process.stdout.write(JSON.stringify(result) + '\n');
}

main(process.argv.slice(2)).catch((err) => {
  if (err instanceof UsageError) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`${err.stack || err}\n`);
  process.exit(1);
});
