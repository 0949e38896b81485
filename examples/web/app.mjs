// The draw-a-digit page: pointer drawing on #pad, the Python preprocessing (preprocess.mjs),
// the ONNX LeNet-5 on onnxruntime-web's WASM backend, and the result.
//
// Contract for tests and automation (tests/test_web_demo.py relies on it):
//   #pad        the drawing canvas (dark ink on white paper)
//   #clear      clears the drawing, the preview, the bars and the result
//   #pen        pen size (range input, canvas pixels)
//   #preview    the 28x28 input the model sees (8-bit rendering of it)
//   #prediction data-digit: the digit read ("" for none), data-probability: its probability
//               ("" for none), data-state: "loading" | "pending" | "done" | "error"
//   window.lenet  { modelLoaded, error, version, state, lastInput, lastProbabilities }:
//               lastInput is the model's float input (784 values, row-major) and
//               lastProbabilities its output (10 values), null when no digit is shown.

import * as ort from "./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs";
import { grayscaleFromRGBA, MNIST_SIZE, toMnist } from "./preprocess.mjs";

const MODEL_URL = new URL("model/lenet5.onnx", document.baseURI).href;
const INPUT_NAME = "image";
const OUTPUT_NAME = "probabilities";
const DEBOUNCE_MS = 120;
const EMPTY_MESSAGE = "Draw a digit…";

// onnxruntime-web finds its .wasm/.mjs files here: an absolute URL path ending in "/" (a bare
// relative path fails to resolve), served by server.mjs from node_modules: no CDN.
ort.env.wasm.wasmPaths = new URL("node_modules/onnxruntime-web/dist/", import.meta.url).pathname;
ort.env.wasm.numThreads = 1; // a 60k-parameter network needs no worker threads (nor cross-origin isolation)

const pad = document.getElementById("pad");
const padContext = pad.getContext("2d", { willReadFrequently: true });
const preview = document.getElementById("preview");
const previewContext = preview.getContext("2d");
const result = document.getElementById("prediction");
const digitText = result.querySelector(".digit");
const messageText = result.querySelector(".message");
const status = document.getElementById("status");
const pen = document.getElementById("pen");
const bars = buildBars(document.getElementById("bars"));

const lenet = {
  modelLoaded: false,
  error: null,
  version: 0, // bumped by every change to the drawing
  state: "loading",
  lastInput: null,
  lastProbabilities: null,
};
window.lenet = lenet;

let session = null;
let shownVersion = 0;
let busy = false;
let rerun = false;
let timer = null;

function buildBars(list) {
  const rows = [];
  for (let digit = 0; digit < 10; digit++) {
    const item = document.createElement("li");
    item.dataset.digit = String(digit);
    item.innerHTML = `<span class="label">${digit}</span><span class="track"><span class="fill"></span></span><span class="value">0%</span>`;
    list.append(item);
    rows.push({ item, fill: item.querySelector(".fill"), value: item.querySelector(".value") });
  }
  return rows;
}

function setState(state) {
  lenet.state = state;
  result.dataset.state = state;
}

// ---- drawing ----

function clearPad() {
  padContext.fillStyle = "#fff"; // opaque paper: the PNG of the canvas is what Python reads
  padContext.fillRect(0, 0, pad.width, pad.height);
}

function canvasPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function inkStyle() {
  padContext.strokeStyle = padContext.fillStyle = "#000";
  padContext.lineWidth = Number(pen.value);
  padContext.lineCap = "round";
  padContext.lineJoin = "round";
}

let activePointer = null;
let lastPoint = null;

pad.addEventListener("pointerdown", (event) => {
  if (activePointer !== null || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  activePointer = event.pointerId;
  pad.setPointerCapture(event.pointerId);
  lastPoint = canvasPoint(event);
  inkStyle();
  padContext.beginPath();
  padContext.arc(lastPoint.x, lastPoint.y, padContext.lineWidth / 2, 0, 2 * Math.PI);
  padContext.fill(); // a tap leaves a dot
  changed();
});

pad.addEventListener("pointermove", (event) => {
  if (event.pointerId !== activePointer) return;
  event.preventDefault();
  const events = typeof event.getCoalescedEvents === "function" ? event.getCoalescedEvents() : [];
  inkStyle();
  padContext.beginPath();
  padContext.moveTo(lastPoint.x, lastPoint.y);
  for (const each of events.length ? events : [event]) {
    lastPoint = canvasPoint(each);
    padContext.lineTo(lastPoint.x, lastPoint.y);
  }
  padContext.stroke();
  changed();
});

function endStroke(event) {
  if (event.pointerId !== activePointer) return;
  activePointer = null;
  schedule(0); // read the digit as soon as the pen lifts
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
pad.addEventListener("contextmenu", (event) => event.preventDefault());

document.getElementById("clear").addEventListener("click", clearAll);
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") clearAll();
});

function clearAll() {
  clearPad();
  showEmpty();
  lenet.version++;
  if (session) {
    setState("pending");
    schedule(0);
  }
}

// ---- prediction (debounced while drawing, serialised: one session.run at a time) ----

function changed() {
  lenet.version++;
  if (session) setState("pending");
  schedule(DEBOUNCE_MS);
}

function schedule(delay) {
  clearTimeout(timer);
  timer = setTimeout(() => {
    timer = null;
    predictLoop();
  }, delay);
}

async function predictLoop() {
  if (!session) return;
  if (busy) {
    rerun = true;
    return;
  }
  busy = true;
  try {
    do {
      rerun = false;
      const version = lenet.version;
      await predictDrawing();
      shownVersion = version;
    } while (rerun);
  } catch (error) {
    showError(`Could not read the digit: ${error.message ?? error}`);
    return;
  } finally {
    busy = false;
  }
  if (shownVersion === lenet.version && timer === null) setState("done");
}

async function predictDrawing() {
  const { data, width, height } = padContext.getImageData(0, 0, pad.width, pad.height);
  const input = toMnist(grayscaleFromRGBA(data, width, height), width, height);
  if (!input) {
    showEmpty();
    return;
  }
  const outputs = await session.run({ [INPUT_NAME]: new ort.Tensor("float32", input, [1, MNIST_SIZE, MNIST_SIZE]) });
  showPrediction(input, Float32Array.from(outputs[OUTPUT_NAME].data));
}

// ---- display ----

function drawPreview(input) {
  const image = previewContext.createImageData(MNIST_SIZE, MNIST_SIZE);
  for (let i = 0; i < MNIST_SIZE * MNIST_SIZE; i++) {
    const level = input ? Math.min(255, Math.max(0, Math.round(input[i]))) : 0;
    image.data.set([level, level, level, 255], 4 * i);
  }
  previewContext.putImageData(image, 0, 0);
}

function percent(p) {
  const value = 100 * p;
  if (value >= 99.95) return "100%";
  if (value < 0.05) return "0%";
  return `${value.toFixed(1)}%`;
}

function showBars(probabilities, top) {
  bars.forEach(({ item, fill, value }, digit) => {
    const p = probabilities ? probabilities[digit] : 0;
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    value.textContent = percent(p);
    item.classList.toggle("top", digit === top);
  });
}

function showEmpty() {
  drawPreview(null);
  showBars(null, -1);
  result.dataset.digit = "";
  result.dataset.probability = "";
  digitText.textContent = "";
  messageText.textContent = EMPTY_MESSAGE;
  lenet.lastInput = null;
  lenet.lastProbabilities = null;
}

function showPrediction(input, probabilities) {
  let digit = 0;
  for (let d = 1; d < probabilities.length; d++) if (probabilities[d] > probabilities[digit]) digit = d;
  const p = probabilities[digit];
  drawPreview(input);
  showBars(probabilities, digit);
  result.dataset.digit = String(digit);
  result.dataset.probability = String(p);
  digitText.textContent = String(digit);
  messageText.textContent = `${percent(p)} sure`;
  lenet.lastInput = Array.from(input);
  lenet.lastProbabilities = Array.from(probabilities);
}

function showError(message) {
  lenet.error = message;
  setState("error");
  result.dataset.digit = "";
  result.dataset.probability = "";
  digitText.textContent = "";
  messageText.textContent = message;
  status.textContent = message;
  status.classList.add("error");
}

// ---- model ----

async function loadModel() {
  const response = await fetch(MODEL_URL);
  if (!response.ok) {
    const detail = (await response.text()).trim();
    throw new Error(`the model (${MODEL_URL}) did not load: HTTP ${response.status}${detail ? `: ${detail}` : ""}`);
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  const created = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  if (!created.inputNames.includes(INPUT_NAME) || !created.outputNames.includes(OUTPUT_NAME)) {
    throw new Error(
      `the model takes ${created.inputNames.join(", ")} and gives ${created.outputNames.join(", ")}; ` +
        `this page needs "${INPUT_NAME}" (1x28x28 pixels) and "${OUTPUT_NAME}" (1x10)`,
    );
  }
  return { created, size: bytes.length };
}

clearPad();
showEmpty();
loadModel().then(
  ({ created, size }) => {
    session = created;
    lenet.modelLoaded = true;
    const version = ort.env.versions?.web ?? "";
    status.textContent =
      `Model: lenet5.onnx (${Math.round(size / 1024)} kB), run by onnxruntime-web ${version} ` +
      "on WebAssembly, in this page.";
    setState("pending");
    predictLoop();
  },
  (error) => showError(`Error: ${error.message ?? error}`),
);
