// The drawing -> MNIST-style 28x28 input, exactly as lenet_tf/images.py does it in Python.
//
// No DOM: the page and Node (tests/test_web_demo.py) import the same module.
//
//   import { grayscaleFromRGBA, toMnist } from "./preprocess.mjs";
//   const gray = grayscaleFromRGBA(imageData.data, width, height);  // what load_grayscale reads
//   const pixels = toMnist(gray, width, height);                     // Float32Array(784) or null
//
// Each step follows `to_mnist` (lenet_tf/images.py) operation for operation, including where
// NumPy and Pillow compute in float32 (Math.fround here), the order in which NumPy sums and
// Python's rounding (half to even), so the result equals Python's: tests/test_web_demo.py finds
// no difference at all on the browser's drawings and on 300 synthetic images in Node (it allows
// one grey level in the browser, 1e-3 in Node).
//
//   1. background = median of the border pixels; ink = |gray - background| (ink bright on 0);
//   2. contrast below MIN_CONTRAST grey levels: no digit (null here, ImageError in Python);
//   3. ink stretched to 0-255, cropped to the pixels >= INK_THRESHOLD * 255, pixels below half
//      that threshold set to 0 (faint noise);
//   4. resized to fit 20x20 keeping the aspect ratio with Pillow's Lanczos (a = 3) on a float32
//      ("F") image: separable, the kernel widened by the scale factor when shrinking, weights
//      normalised per output pixel, the two passes in Pillow's order (see resizeLanczos);
//   5. brightened so that the peak is 255 again;
//   6. placed in 28x28 with its centre of mass at (14, 14), rounded half to even and clamped
//      so that the box stays inside the field.
//
// Written against Pillow 13's libImaging/Resample.c and NumPy 2's pairwise summation; a change
// there that moves Python's result shows up in the test.

export const MNIST_SIZE = 28;
export const INK_BOX = 20;
export const INK_THRESHOLD = 0.25;
export const MIN_CONTRAST = 16;

const f32 = Math.fround;

/** Python's round(): to the nearest integer, halves to the even neighbour. */
export function roundHalfEven(x) {
  const r = Math.round(x); // halves go up here
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * Grey levels (Float32Array, 0 black - 255 white) of RGBA pixels, as `load_grayscale` gets
 * them from a PNG with Pillow: composited over white paper (Pillow's integer
 * `alpha_composite`), then ITU-R 601-2 luma in Pillow's 16-bit fixed point (`convert("L")`).
 * An opaque grey pixel keeps its level exactly.
 */
export function grayscaleFromRGBA(rgba, width, height) {
  const n = width * height;
  if (!(width > 0 && height > 0) || rgba.length !== 4 * n) {
    throw new Error(`expected ${width}x${height} RGBA pixels (${4 * n} values), got ${rgba.length}`);
  }
  const gray = new Float32Array(n);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    let r = rgba[j], g = rgba[j + 1], b = rgba[j + 2];
    const a = rgba[j + 3];
    if (a === 0) {
      r = g = b = 255;
    } else if (a !== 255) {
      // AlphaComposite.c (PRECISION_BITS 7) with an opaque white destination.
      const outa255 = a * 255 + 255 * (255 - a);
      const coef1 = Math.floor((a * 255 * 255 * 128) / outa255);
      const coef2 = 255 * 128 - coef1;
      const mix = (c) => {
        const t = c * coef1 + 255 * coef2 + (0x80 << 7);
        return (((t >>> 8) + t) >>> 8) >>> 7;
      };
      r = mix(r); g = mix(g); b = mix(b);
    }
    gray[i] = (r * 19595 + g * 38470 + b * 7471 + 0x8000) >>> 16;
  }
  return gray;
}

// ---- NumPy's float32/float64 summation order (so the centre of mass rounds as in Python) ----

/** NumPy's pairwise sum of values[start, start + n*stride) (stride in elements). */
function pairwiseSum(values, start, n, stride, round) {
  if (n < 8) {
    let res = -0;
    for (let i = 0; i < n; i++) res = round(res + values[start + i * stride]);
    return res;
  }
  if (n <= 128) {
    const r = new Array(8);
    for (let j = 0; j < 8; j++) r[j] = values[start + j * stride];
    let i = 8;
    for (; i < n - (n % 8); i += 8) {
      for (let j = 0; j < 8; j++) r[j] = round(r[j] + values[start + (i + j) * stride]);
    }
    let res = round(round(round(r[0] + r[1]) + round(r[2] + r[3])) + round(round(r[4] + r[5]) + round(r[6] + r[7])));
    for (; i < n; i++) res = round(res + values[start + i * stride]);
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return round(pairwiseSum(values, start, n2, stride, round) + pairwiseSum(values, start + n2 * stride, n - n2, stride, round));
}

const identity = (x) => x;
/** `array.sum()` of a contiguous float32 run: 0 + pairwise sum. */
const sum32 = (values, start, n, stride = 1) => f32(0 + pairwiseSum(values, start, n, stride, f32));
/** `array.sum()` of a contiguous float64 array. */
const sum64 = (values) => 0 + pairwiseSum(values, 0, values.length, 1, identity);

// ---- Pillow's resampling (libImaging/Resample.c), float32 images ----

function sinc(x) {
  if (x === 0) return 1;
  x *= Math.PI;
  return Math.sin(x) / x;
}

function lanczos(x) {
  return -3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0;
}

/** `precompute_coeffs` for LANCZOS (support 3): per output pixel, first input index and weights. */
function lanczosCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1); // shrinking widens the kernel
  const support = 3 * filterscale;
  const ss = 1 / filterscale;
  const bounds = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = 0 + (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const weights = new Float64Array(Math.max(xmax, 0));
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = lanczos((x + xmin - center + 0.5) * ss);
      weights[x] = w;
      ww += w;
    }
    if (ww !== 0) for (let x = 0; x < xmax; x++) weights[x] /= ww;
    bounds.push({ xmin, weights });
  }
  return bounds;
}

/** One horizontal pass (`_ImagingResampleHorizontal_32bpc`): double sums stored as float32. */
function resampleRows(image, width, height, outWidth) {
  const coeffs = lanczosCoefficients(width, outWidth);
  const out = new Float32Array(outWidth * height);
  for (let y = 0; y < height; y++) {
    for (let xx = 0; xx < outWidth; xx++) {
      const { xmin, weights } = coeffs[xx];
      let s = 0;
      for (let x = 0; x < weights.length; x++) s += image[y * width + x + xmin] * weights[x];
      out[y * outWidth + xx] = s;
    }
  }
  return out;
}

/** One vertical pass (`_ImagingResampleVertical_32bpc`). */
function resampleColumns(image, width, height, outHeight) {
  const coeffs = lanczosCoefficients(height, outHeight);
  const out = new Float32Array(width * outHeight);
  for (let yy = 0; yy < outHeight; yy++) {
    const { xmin: ymin, weights } = coeffs[yy];
    for (let x = 0; x < width; x++) {
      let s = 0;
      for (let y = 0; y < weights.length; y++) s += image[(y + ymin) * width + x] * weights[y];
      out[yy * width + x] = s;
    }
  }
  return out;
}

/**
 * `Image.fromarray(float32 array).resize((outWidth, outHeight), Image.Resampling.LANCZOS)`
 * (Pillow 11-13, `ImagingResampleInner`): two passes, each accumulated in double and stored as
 * float32; a pass whose size does not change is skipped; the horizontal pass runs first unless
 * the height shrinks by more than twice as many pixels as the width does.
 */
export function resizeLanczos(pixels, width, height, outWidth, outHeight) {
  const needHorizontal = outWidth !== width;
  const needVertical = outHeight !== height;
  const horizontalFirst = !(height - outHeight > 0 && height - outHeight > (width - outWidth) * 2);
  let image = Float32Array.from(pixels);
  if (horizontalFirst) {
    if (needHorizontal) image = resampleRows(image, width, height, outWidth);
    if (needVertical) image = resampleColumns(image, outWidth, height, outHeight);
  } else {
    if (needVertical) image = resampleColumns(image, width, height, outHeight);
    if (needHorizontal) image = resampleRows(image, width, outHeight, outWidth);
  }
  return image;
}

// ---- to_mnist ----

function median(values) {
  const sorted = Float32Array.from(values).sort();
  const n = sorted.length;
  const mid = n >> 1;
  return n % 2 ? sorted[mid] : f32(f32(sorted[mid - 1] + sorted[mid]) / 2);
}

/**
 * Steps 1-5 of `to_mnist`: the digit's ink, bright on 0, fitted into 20x20 and peaking at 255.
 *
 * @returns {{pixels: Float32Array, width: number, height: number}|null} row-major; null when
 *   there is no ink (where Python raises ImageError), e.g. an empty canvas.
 */
export function fitInBox(gray, width, height) {
  if (!(Number.isInteger(width) && Number.isInteger(height) && width > 0 && height > 0) || gray.length !== width * height) {
    throw new Error(`expected a non-empty ${width}x${height} grayscale image, got ${gray.length} values`);
  }
  const border = [];
  for (let x = 0; x < width; x++) border.push(gray[x]);
  for (let x = 0; x < width; x++) border.push(gray[(height - 1) * width + x]);
  for (let y = 0; y < height; y++) border.push(gray[y * width]);
  for (let y = 0; y < height; y++) border.push(gray[y * width + width - 1]);
  const background = median(border);

  const ink = new Float32Array(width * height);
  let contrast = 0;
  for (let i = 0; i < ink.length; i++) {
    if (!Number.isFinite(gray[i])) throw new Error("pixel values contain NaN or infinity");
    ink[i] = Math.abs(f32(gray[i] - background));
    if (ink[i] > contrast) contrast = ink[i];
  }
  if (contrast < MIN_CONTRAST) return null;
  const stretch = f32(255 / contrast);
  const threshold = f32(INK_THRESHOLD * 255);
  let top = height, bottom = -1, left = width, right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      ink[i] = Math.min(Math.max(f32(ink[i] * stretch), 0), 255);
      if (ink[i] >= threshold) {
        if (y < top) top = y;
        if (y > bottom) bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  const h = bottom - top + 1;
  const w = right - left + 1;
  const faint = f32(INK_THRESHOLD * 255 * 0.5);
  const crop = new Float32Array(w * h);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const v = ink[(y + top) * width + x + left];
      crop[y * w + x] = v >= faint ? v : 0;
    }
  }

  const scale = INK_BOX / Math.max(h, w);
  const bw = Math.max(1, roundHalfEven(w * scale));
  const bh = Math.max(1, roundHalfEven(h * scale));
  const boxed = resizeLanczos(crop, w, h, bw, bh);
  let peak = -Infinity;
  for (const v of boxed) if (v > peak) peak = v;
  if (!(peak > 0)) return null;
  const brighten = f32(255 / peak);
  for (let i = 0; i < boxed.length; i++) boxed[i] = Math.min(Math.max(f32(boxed[i] * brighten), 0), 255);
  return { pixels: boxed, width: bw, height: bh };
}

/**
 * Step 6 of `to_mnist`: the boxed digit placed in 28x28 with its centre of mass at (14, 14).
 *
 * The sums follow NumPy's order (`boxed.sum()` and `boxed.sum(axis=1)` pairwise along rows,
 * `boxed.sum(axis=0)` row after row, the moments in float64), so that a centre of mass on a
 * half pixel (a symmetric stroke) rounds the way Python rounds it.
 */
export function placeByCentreOfMass({ pixels: boxed, width: bw, height: bh }) {
  const total = sum32(boxed, 0, boxed.length);
  const rowMoments = new Float64Array(bh);
  for (let y = 0; y < bh; y++) rowMoments[y] = sum32(boxed, y * bw, bw) * y;
  const colMoments = new Float64Array(bw);
  if (bw > 1) {
    const cols = new Float32Array(bw);
    for (let y = 0; y < bh; y++) for (let x = 0; x < bw; x++) cols[x] = f32(cols[x] + boxed[y * bw + x]);
    for (let x = 0; x < bw; x++) colMoments[x] = cols[x] * x;
  }
  const rowCentre = sum64(rowMoments) / total;
  const colCentre = sum64(colMoments) / total;
  const centre = MNIST_SIZE / 2;
  const top = Math.min(Math.max(roundHalfEven(centre - rowCentre), 0), MNIST_SIZE - bh);
  const left = Math.min(Math.max(roundHalfEven(centre - colCentre), 0), MNIST_SIZE - bw);
  const field = new Float32Array(MNIST_SIZE * MNIST_SIZE);
  for (let y = 0; y < bh; y++) {
    for (let x = 0; x < bw; x++) field[(y + top) * MNIST_SIZE + x + left] = boxed[y * bw + x];
  }
  return field;
}

/**
 * The MNIST-style input for the digit in a grayscale image (row-major, 0-255), as
 * `lenet_tf.images.to_mnist` computes it.
 *
 * @returns {Float32Array|null} 28*28 values, 0-255, ink bright; null when there is no ink
 *   (where Python raises ImageError), e.g. an empty canvas.
 */
export function toMnist(gray, width, height) {
  const boxed = fitInBox(gray, width, height);
  return boxed && placeByCentreOfMass(boxed);
}
