// Serves the draw-a-digit page on 127.0.0.1 (no framework, no build step):
//
//   npm start                                   # http://127.0.0.1:8000/
//   PORT=8080 npm start                         # another port (PORT=0: any free one)
//   LENET_WEB_MODEL=path/to/lenet5.onnx npm start
//
// It serves the page's own files in this folder, onnxruntime-web's dist/ folder from
// node_modules (the WASM runtime, so the page works offline), and the ONNX model at
// /model/lenet5.onnx: $LENET_WEB_MODEL, else the repository's shipped pretrained model
// (lenet_tf/pretrained/paper/lenet5.onnx). Nothing else: no directory listings, no dotfiles,
// no path that leaves these folders.

import fs from "node:fs";
import http from "node:http";
import path from "node:path";
import { fileURLToPath } from "node:url";

const HERE = fs.realpathSync(path.dirname(fileURLToPath(import.meta.url)));
const HOST = "127.0.0.1";
const DEFAULT_PORT = 8000;
const MODEL_URL = "/model/lenet5.onnx";
const REPO_MODEL = path.resolve(HERE, "..", "..", "lenet_tf", "pretrained", "paper", "lenet5.onnx");
const RUNTIME_DIR = path.join("node_modules", "onnxruntime-web", "dist");

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".wasm": "application/wasm",
  ".map": "application/json; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".ico": "image/x-icon",
  ".onnx": "application/octet-stream",
};

function fail(message) {
  process.stderr.write(`error: ${message}\n`);
  process.exit(2);
}

function port() {
  const text = process.env.PORT ?? String(DEFAULT_PORT);
  const value = Number(text);
  if (!/^\d+$/.test(text) || value > 65535) fail(`PORT must be a port number (0-65535). Received: ${JSON.stringify(text)}`);
  return value;
}

function modelPath() {
  const chosen = process.env.LENET_WEB_MODEL;
  if (chosen) {
    const file = path.resolve(chosen);
    if (!fs.existsSync(file) || !fs.statSync(file).isFile()) fail(`LENET_WEB_MODEL=${chosen}: no such file`);
    return file;
  }
  return REPO_MODEL;
}

/**
 * The file a URL path names, or an HTTP status: 403 for a path that tries to leave the served
 * folders (`..`, dotfiles, backslashes, NUL), 404 for anything that is not served.
 */
function resolve(urlPath, model) {
  let pathname;
  try {
    pathname = decodeURIComponent(urlPath.split(/[?#]/, 1)[0]);
  } catch {
    return { status: 400 };
  }
  if (!pathname.startsWith("/")) return { status: 400 };
  if (pathname === "/") pathname = "/index.html";
  if (pathname === MODEL_URL) return { file: model, type: TYPES[".onnx"] };
  const segments = pathname.slice(1).split("/");
  if (segments.some((s) => s.startsWith(".") || s.includes("\\") || s.includes("\0"))) return { status: 403 };
  if (segments.includes("")) return { status: 404 };
  const relative = path.join(...segments);
  const underRuntime = relative.startsWith(RUNTIME_DIR + path.sep);
  if (segments.length > 1 && !underRuntime) return { status: 404 };
  const type = TYPES[path.extname(relative)];
  if (!type) return { status: 404 };
  const file = path.join(HERE, relative);
  let real;
  try {
    real = fs.realpathSync(file);
  } catch {
    return { status: 404 };
  }
  if (!real.startsWith(HERE + path.sep)) return { status: 403 };
  return { file: real, type };
}

function send(res, status, text) {
  res.writeHead(status, { "Content-Type": "text/plain; charset=utf-8", "X-Content-Type-Options": "nosniff" });
  res.end(`${text}\n`);
}

function handle(req, res, model) {
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    return send(res, 405, "405 method not allowed");
  }
  const found = resolve(req.url ?? "/", model);
  if (found.status) return send(res, found.status, `${found.status} ${http.STATUS_CODES[found.status].toLowerCase()}`);
  fs.stat(found.file, (err, stats) => {
    if (err || !stats.isFile()) {
      if (found.file === model) {
        return send(res, 404, `no model at ${model}: export one (python -m export.onnx --model RUN/model.keras --out lenet5.onnx) and start the server with LENET_WEB_MODEL=path/to/lenet5.onnx`);
      }
      return send(res, 404, "404 not found");
    }
    res.writeHead(200, {
      "Content-Type": found.type,
      "Content-Length": stats.size,
      "Cache-Control": "no-cache",
      "X-Content-Type-Options": "nosniff",
    });
    if (req.method === "HEAD") return res.end();
    fs.createReadStream(found.file)
      .on("error", () => res.destroy())
      .pipe(res);
  });
}

function main() {
  const model = modelPath();
  const server = http.createServer((req, res) => handle(req, res, model));
  server.on("error", (err) => fail(err.code === "EADDRINUSE" ? `${HOST}:${err.port} is in use: set PORT to another port` : err.message));
  server.listen(port(), HOST, () => {
    const { port: bound } = server.address();
    process.stdout.write(`Serving the LeNet-5 page at http://${HOST}:${bound}/ (model: ${model})\n`);
    if (!fs.existsSync(model)) {
      process.stderr.write(`warning: no model at ${model}: the page cannot read digits until it exists (or set LENET_WEB_MODEL)\n`);
    }
    if (!fs.existsSync(path.join(HERE, RUNTIME_DIR))) {
      process.stderr.write("warning: onnxruntime-web is not installed: run `npm ci` in examples/web first\n");
    }
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);
}

main();
