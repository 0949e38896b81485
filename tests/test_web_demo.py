"""The draw-a-digit page (examples/web) in a real headless browser, and its parts.

The page is served by its own server (`node server.mjs`, as `npm start` runs it) and driven
by Playwright in Debian's Chromium (`/usr/bin/chromium`; Playwright's own browser download is
not possible on these machines). Digits are drawn as mouse strokes; for each the test checks
that (a) the page reads the right digit, (b) the page's 28x28 input equals what
`lenet_tf.images.to_mnist` makes of a PNG export of the same canvas (one grey level per pixel
at most) and (c) the page's probabilities equal onnxruntime's in Python on that input
(|dp| <= 1e-4). The model is the shipped pretrained one, which must read every drawn digit.

`LENET_WEB_SCREENSHOT=1` also saves the page reading a digit to docs/images/web_demo.png.

Skipped (with the reason) when node, npm (needed only while examples/web/node_modules is
missing), Chromium or Playwright is missing; CI (.ci/run) installs all of them.
"""

import base64
import io
import math
import os
import queue
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from conftest import REPO, node_with_packages

WEB_DIR = REPO / "examples" / "web"
RUNTIME_DIR = WEB_DIR / "node_modules" / "onnxruntime-web" / "dist"
PRETRAINED_ONNX = REPO / "lenet_tf" / "pretrained" / "paper" / "lenet5.onnx"
SCREENSHOT = REPO / "docs" / "images" / "web_demo.png"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
PAD_SIZE = 280  # the canvas' pixels (index.html)
EMPTY_MESSAGE = "Draw a digit…"


# ---- what is drawn ----


def arc(cx, cy, rx, ry, start, end, points=32):
    """Points on an ellipse in the unit box (y down), from angle `start` to `end` in degrees."""
    angles = np.radians(np.linspace(start, end, points))
    return [(cx + rx * math.cos(a), cy + ry * math.sin(a)) for a in angles]


# Strokes as a person draws each digit, in a unit box (x right, y down).
STROKES = {
    0: [arc(0.5, 0.5, 0.3, 0.43, -90, 280)],
    1: [[(0.57, 0.06), (0.46, 0.94)]],
    2: [arc(0.5, 0.3, 0.27, 0.21, 195, 385) + [(0.2, 0.9), (0.84, 0.9)]],
    3: [arc(0.48, 0.29, 0.27, 0.2, 205, 450) + arc(0.48, 0.7, 0.31, 0.21, -90, 155)],
    4: [[(0.52, 0.06), (0.16, 0.62), (0.86, 0.62)], [(0.66, 0.3), (0.66, 0.95)]],
    5: [[(0.8, 0.08), (0.32, 0.08), (0.28, 0.46)] + arc(0.5, 0.67, 0.29, 0.24, -125, 150)],
    6: [[(0.7, 0.06), (0.5, 0.2), (0.35, 0.42), (0.28, 0.7)] + arc(0.52, 0.72, 0.24, 0.21, 180, 540)],
    7: [[(0.16, 0.1), (0.84, 0.1), (0.42, 0.94)]],
    8: [arc(0.5, 0.27, 0.21, 0.2, 90, 450), arc(0.5, 0.71, 0.26, 0.22, -90, 270)],
    9: [arc(0.48, 0.3, 0.24, 0.22, 0, -360), [(0.72, 0.3), (0.68, 0.95)]],
}  # fmt: skip

# (digit, centre x, centre y, height, pen width) in canvas pixels: thick and thin, small and
# large, centred and off-centre. The glyph is 0.75 times as wide as it is high.
CASES = [
    (0, 140, 140, 210, 20),  # centred, large
    (1, 70, 80, 100, 8),  # small and thin, top left
    (3, 180, 175, 150, 28),  # thick, bottom right
    (4, 140, 140, 240, 9),  # large and thin
    (7, 95, 165, 150, 32),  # very thick, left
    (2, 160, 120, 170, 14),
    (5, 200, 100, 120, 12),  # small, top right
    (6, 110, 150, 200, 24),
    (8, 150, 145, 190, 16),
    (9, 175, 170, 170, 18),
]


def stroke_points(digit, cx, cy, height):
    """The digit's strokes in canvas pixels, a point every ~8 px at most (a mouse moving steadily)."""
    width = 0.75 * height
    strokes = []
    for stroke in STROKES[digit]:
        corners = [(cx + (x - 0.5) * width, cy + (y - 0.5) * height) for x, y in stroke]
        points = [corners[0]]
        for (x0, y0), (x1, y1) in zip(corners, corners[1:]):
            steps = max(1, round(math.hypot(x1 - x0, y1 - y0) / 8))
            points += [(x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps) for i in range(1, steps + 1)]
        strokes.append(points)
    return strokes


# ---- fixtures ----


@pytest.fixture(scope="module")
def node():
    """The `node` executable, with examples/web's dependencies installed (`npm ci`)."""
    return node_with_packages(WEB_DIR, RUNTIME_DIR)


def start_server(node, model, port="0"):
    """`node server.mjs` with PORT and LENET_WEB_MODEL; returns (process, URL it printed)."""
    env = {**os.environ, "PORT": port, "LENET_WEB_MODEL": str(model)}
    proc = subprocess.Popen([node, "server.mjs"], cwd=WEB_DIR, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    lines = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=30)
    except queue.Empty:
        line = ""
    match = re.search(r"http://127\.0\.0\.1:\d+/", line)
    if not match:
        stop_server(proc)
        pytest.fail(f"the server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, match.group(0)


def stop_server(proc):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for stream in (proc.stdout, proc.stderr):
        stream.close()


@pytest.fixture(scope="module")
def server(node):
    """The page's URL, served from examples/web on a free port; stopped after the module."""
    proc, url = start_server(node, PRETRAINED_ONNX)
    try:
        yield url
    finally:
        stop_server(proc)


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium): the web demo test needs a browser")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[dev]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Demo:
    """The page in a browser tab, and what the test does to it."""

    def __init__(self, page, url):
        self.page, self.url = page, url
        self.requests, self.errors = [], []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))

    def load(self):
        self.page.goto(self.url)
        self.page.wait_for_function("window.lenet && (window.lenet.modelLoaded || window.lenet.error)", timeout=60_000)
        assert self.lenet("error") is None, self.lenet("error")
        self.wait_done(-1)

    def lenet(self, name):
        return self.page.evaluate(f"window.lenet.{name}")

    def wait_done(self, version_before):
        """Waits until the page shows the result for its current drawing, newer than `version_before`."""
        self.page.wait_for_function(
            "v => window.lenet.version > v && window.lenet.state === 'done' || window.lenet.error",
            arg=version_before, timeout=30_000,
        )  # fmt: skip
        assert self.lenet("error") is None, self.lenet("error")

    def draw(self, strokes, pen):
        """Draws `strokes` (lists of canvas points) with the mouse; returns when the page has read them."""
        self.page.eval_on_selector("#pen", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", pen)
        box = self.page.locator("#pad").bounding_box()
        scale = box["width"] / PAD_SIZE
        before = self.lenet("version")
        mouse = self.page.mouse
        for points in strokes:
            mouse.move(box["x"] + points[0][0] * scale, box["y"] + points[0][1] * scale)
            mouse.down()
            for x, y in points[1:]:
                mouse.move(box["x"] + x * scale, box["y"] + y * scale)
            mouse.up()
        self.wait_done(before)

    def clear(self):
        before = self.lenet("version")
        self.page.click("#clear")
        self.wait_done(before)

    def result(self):
        element = self.page.locator("#prediction")
        return {name: element.get_attribute(f"data-{name}") for name in ("digit", "probability", "state")}

    def canvas_png(self, selector="#pad"):
        """The canvas exported by the page as PNG (`canvas.toDataURL`), as bytes."""
        data_url = self.page.eval_on_selector(selector, "c => c.toDataURL('image/png')")
        return base64.b64decode(data_url.split(",", 1)[1])

    def pixels(self, selector):
        """The canvas' RGBA pixels as a (height, width, 4) uint8 array (lossless: opaque pixels)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.canvas_png(selector))) as image:
            return np.asarray(image.convert("RGBA"))


@pytest.fixture(scope="module")
def demo(browser, server):
    """One tab on the page, model loaded, shared by the module's tests (each starts by clearing)."""
    context = browser.new_context(viewport={"width": 820, "height": 640}, device_scale_factor=1)
    demo = Demo(context.new_page(), server)
    demo.load()
    try:
        yield demo
    finally:
        context.close()


@pytest.fixture(scope="module")
def onnx_session():
    import onnxruntime

    return onnxruntime.InferenceSession(str(PRETRAINED_ONNX), providers=["CPUExecutionProvider"])


# ---- the page in the browser ----


def test_empty_canvas_shows_the_message_and_no_digit(browser, server):
    """A freshly loaded page: the model is loaded, nothing is drawn, so no digit is shown."""
    context = browser.new_context(viewport={"width": 820, "height": 640})
    try:
        fresh = Demo(context.new_page(), server)
        fresh.load()
        assert fresh.result() == {"digit": "", "probability": "", "state": "done"}
        assert fresh.page.text_content("#prediction .message") == EMPTY_MESSAGE
        assert fresh.page.locator("#prediction .digit").is_hidden()
        assert fresh.lenet("lastInput") is None and fresh.lenet("lastProbabilities") is None
        assert (fresh.pixels("#pad") == 255).all() and (fresh.pixels("#preview")[..., :3] == 0).all()
        # Drawing with a finger or a pen must not scroll the page.
        assert fresh.page.eval_on_selector("#pad", "c => getComputedStyle(c).touchAction") == "none"
        assert fresh.errors == []
    finally:
        context.close()


def test_drawn_digits_are_read_and_match_python_preprocessing_and_onnxruntime(
    demo, onnx_session, tmp_path, record_property, capsys
):
    from lenet_tf.images import load_grayscale, to_mnist

    started = time.perf_counter()
    rows, max_pixel_diff, max_dp = [], 0.0, 0.0
    for digit, cx, cy, height, pen in CASES:
        demo.clear()
        demo.draw(stroke_points(digit, cx, cy, height), pen)
        result = demo.result()
        page_input = np.asarray(demo.lenet("lastInput"), dtype=np.float32).reshape(28, 28)
        page_probabilities = np.asarray(demo.lenet("lastProbabilities"), dtype=np.float64)

        # (b) the same canvas, exported as PNG and preprocessed in Python
        png = tmp_path / f"digit_{digit}.png"
        png.write_bytes(demo.canvas_png())
        python_input = to_mnist(load_grayscale(png), name=png.name)
        pixel_diff = float(np.abs(python_input - page_input).max())
        # The preview shows that input, rounded to grey levels (Math.round: halves go up).
        preview = demo.pixels("#preview")
        assert (preview[..., 0] == np.clip(np.floor(page_input + 0.5), 0, 255)).all(), f"digit {digit}: preview differs"

        # (c) onnxruntime in Python on the page's input
        (python_probabilities,) = onnx_session.run(["probabilities"], {"image": page_input[None]})
        dp = float(np.abs(python_probabilities[0] - page_probabilities).max())

        read = int(result["digit"])
        assert read == int(page_probabilities.argmax()), (digit, result)
        assert float(result["probability"]) == pytest.approx(page_probabilities[read], abs=1e-7)
        rows.append((digit, read, pixel_diff, dp))
        max_pixel_diff, max_dp = max(max_pixel_diff, pixel_diff), max(max_dp, dp)

    wrong = [(digit, read) for digit, read, _, _ in rows if digit != read]
    figures = {
        "digits_drawn": len(rows),
        "correct": len(rows) - len(wrong),
        "max_pixel_diff_js_vs_python": max_pixel_diff,
        "max_abs_dp_js_vs_onnxruntime": max_dp,
        "seconds": round(time.perf_counter() - started, 1),
    }
    for name, value in figures.items():
        record_property(name, value)
    with capsys.disabled():
        print(f"\nweb demo figures: {figures}; read as {[(digit, read) for digit, read, _, _ in rows]}")

    assert max_pixel_diff <= 1.0, [(digit, diff) for digit, _, diff, _ in rows if diff > 1.0]
    assert max_dp <= 1e-4, [(digit, dp) for digit, _, _, dp in rows if dp > 1e-4]
    assert not wrong, f"misread: {wrong}"


def test_clear_resets_canvas_preview_bars_and_result(demo):
    demo.clear()
    demo.draw(stroke_points(7, 140, 140, 200), 20)
    assert demo.result()["digit"] != "" and demo.lenet("lastInput") is not None
    assert (demo.pixels("#pad")[..., :3] < 255).any() and demo.pixels("#preview")[..., :3].any()

    demo.clear()
    assert (demo.pixels("#pad") == 255).all(), "the drawing is not cleared to white paper"
    preview = demo.pixels("#preview")
    assert (preview[..., :3] == 0).all() and (preview[..., 3] == 255).all(), "the preview is not cleared"
    widths = demo.page.eval_on_selector_all("#bars .fill", "fills => fills.map(f => f.style.width)")
    assert [float(width.rstrip("%")) for width in widths] == [0.0] * 10
    assert demo.page.locator("#bars li.top").count() == 0
    assert demo.result() == {"digit": "", "probability": "", "state": "done"}
    assert demo.page.text_content("#prediction .message") == EMPTY_MESSAGE
    assert demo.lenet("lastInput") is None and demo.lenet("lastProbabilities") is None


def test_page_runs_offline_from_the_local_server_without_errors(demo):
    """Every request the page made went to the local server (no CDN), and nothing failed."""
    assert demo.requests, "no requests recorded"
    assert [url for url in demo.requests if not url.startswith(demo.url)] == []
    assert any(url.endswith(".wasm") for url in demo.requests), "onnxruntime-web's WASM was not loaded"
    assert demo.errors == []


def test_screenshot_of_the_page_reading_a_digit(demo):
    """With LENET_WEB_SCREENSHOT=1: docs/images/web_demo.png, the page reading a 3 (for the README)."""
    if os.environ.get("LENET_WEB_SCREENSHOT") != "1":
        pytest.skip("set LENET_WEB_SCREENSHOT=1 to save docs/images/web_demo.png")
    demo.clear()
    demo.draw(stroke_points(3, 140, 140, 200), 22)
    assert demo.result()["digit"] == "3"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    demo.page.screenshot(path=str(SCREENSHOT), full_page=True, animations="disabled")


# ---- the server (no browser) ----


def fetch(url, path):
    """(status, content type, body) of a GET of `path`, sent as it is (no normalisation)."""
    import http.client
    import urllib.parse

    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()


def test_server_serves_the_page_runtime_and_model_with_their_types_and_nothing_else(server):
    expected_types = {
        "/": "text/html",
        "/app.mjs": "text/javascript",
        "/preprocess.mjs": "text/javascript",
        "/style.css": "text/css",
        "/node_modules/onnxruntime-web/dist/ort.wasm.min.mjs": "text/javascript",
        "/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.mjs": "text/javascript",
        "/node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm": "application/wasm",
        "/model/lenet5.onnx": "application/octet-stream",
    }
    for path, content_type in expected_types.items():
        status, served_type, _ = fetch(server, path)
        assert status == 200 and served_type.split(";")[0] == content_type, (path, status, served_type)
    assert fetch(server, "/model/lenet5.onnx")[2] == PRETRAINED_ONNX.read_bytes()

    refused = {
        "/../README.md": 403,
        "/%2e%2e/README.md": 403,
        "/..%2f..%2fREADME.md": 403,
        "/node_modules/onnxruntime-web/dist/..%2f..%2f..%2fpackage.json": 403,
        "/node_modules/onnxruntime-web/dist/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/setup.cfg": 403,
        "/.gitignore": 403,
        "/node_modules/onnxruntime-web/package.json": 404,
        "/node_modules/long/index.js": 404,
        "/package-lock.json": 404,
        "/missing.html": 404,
        "/%E0%A4%A": 400,
    }
    for path, status in refused.items():
        assert fetch(server, path)[0] == status, path
    request = urllib.request.Request(server, method="POST", data=b"x")
    with pytest.raises(urllib.error.HTTPError) as refused_post:
        urllib.request.urlopen(request, timeout=10)
    assert refused_post.value.code == 405


def test_server_refuses_a_missing_model_file_in_one_line(node, tmp_path):
    proc = subprocess.run([node, "server.mjs"], cwd=WEB_DIR, capture_output=True, text=True, timeout=30,
                          env={**os.environ, "PORT": "0", "LENET_WEB_MODEL": str(tmp_path / "none.onnx")})  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: LENET_WEB_MODEL=") and "no such file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ---- preprocess.mjs against lenet_tf.images in Node (no browser) ----


def synthetic_images(count, seed=0):
    """Grey images of random pen strokes: sizes 1-400 px, either polarity, some noisy or faint."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        width, height = (int(v) for v in rng.integers(1, 400, size=2))
        paper = int(rng.choice([0, 255, int(rng.integers(0, 256))]))
        ink = 255 - paper if rng.random() < 0.7 else int(rng.integers(0, 256))
        image = Image.new("L", (width, height), paper)
        pen = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(0, 4))):
            points = [(float(rng.uniform(0, width)), float(rng.uniform(0, height))) for _ in range(int(rng.integers(2, 6)))]
            pen.line(points, fill=ink, width=int(rng.integers(1, max(2, min(width, height) // 4))))
        gray = np.asarray(image, dtype=np.float32)
        if rng.random() < 0.3:
            gray = np.clip(gray + rng.normal(0, 8, gray.shape), 0, 255).astype(np.float32)
        images.append(gray)
    # A symmetric stroke puts the centre of mass on a half pixel: the rounding must agree.
    for width, height in ((10, 335), (105, 42), (280, 280)):
        image = Image.new("L", (width, height), 255)
        ImageDraw.Draw(image).line([(width / 2, height * 0.1), (width / 2, height * 0.9)], fill=0, width=max(1, width // 5))
        images.append(np.asarray(image, dtype=np.float32))
    return images


NODE_PREPROCESS = """
import { readFileSync, writeFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const [modulePath, inputPath, outputPath, rgbaPath, grayPath] = process.argv.slice(1);
const { toMnist, grayscaleFromRGBA } = await import(pathToFileURL(modulePath).href);
const input = readFileSync(inputPath);
const chunks = [];
for (let offset = 0; offset < input.length; ) {
  const height = input.readUInt32LE(offset), width = input.readUInt32LE(offset + 4);
  offset += 8;
  const gray = new Float32Array(input.buffer.slice(input.byteOffset + offset, input.byteOffset + offset + 4 * width * height));
  offset += 4 * width * height;
  const result = toMnist(gray, width, height);
  chunks.push(Buffer.from(new Uint32Array([result ? 1 : 0]).buffer), Buffer.from((result ?? new Float32Array(784)).buffer));
}
writeFileSync(outputPath, Buffer.concat(chunks));
const rgba = new Uint8Array(readFileSync(rgbaPath));
writeFileSync(grayPath, Buffer.from(grayscaleFromRGBA(rgba, 257, rgba.length / 4 / 257).buffer));
"""


def test_preprocess_module_equals_python_to_mnist_and_load_grayscale(node, tmp_path):
    from PIL import Image

    from lenet_tf.errors import ImageError
    from lenet_tf.images import load_grayscale, to_mnist

    images = synthetic_images(300)
    with open(tmp_path / "in.bin", "wb") as file:
        for gray in images:
            file.write(np.asarray(gray.shape, "<u4").tobytes() + gray.astype("<f4").tobytes())
    rgba = np.random.default_rng(1).integers(0, 256, size=(40, 257, 4), dtype=np.uint8)
    rgba[::3, :, 3] = 255  # opaque rows, translucent ones, and fully transparent ones
    rgba[1::7, :, 3] = 0
    rgba.tofile(tmp_path / "rgba.bin")
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")

    proc = subprocess.run(
        [node, "--input-type=module", "-e", NODE_PREPROCESS, str(WEB_DIR / "preprocess.mjs"),
         *(str(tmp_path / name) for name in ("in.bin", "out.bin", "rgba.bin", "gray.bin"))],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = np.fromfile(tmp_path / "out.bin", dtype="<u4").reshape(len(images), 1 + 784)
    found, js = out[:, 0], out[:, 1:].view("<f4").reshape(-1, 28, 28)

    differences, no_ink = [], 0
    for i, gray in enumerate(images):
        try:
            expected = to_mnist(gray)
        except ImageError:
            assert not found[i], f"image {i}: Python finds no ink, the page does"
            no_ink += 1
            continue
        assert found[i], f"image {i}: the page finds no ink, Python does"
        differences.append(float(np.abs(js[i] - expected).max()))
    assert max(differences) <= 1e-3, f"largest difference {max(differences)} on image {int(np.argmax(differences))}"
    assert 0 < no_ink < len(images) // 2  # both outcomes were exercised

    js_gray = np.fromfile(tmp_path / "gray.bin", dtype="<f4").reshape(40, 257)
    np.testing.assert_array_equal(js_gray, load_grayscale(tmp_path / "rgba.png"))
