// spade-tf: run the model's .tflite in this browser with LiteRT.js (wasm, XNNPACK), offline.
//
// The studio's "run here" and the `spade-tf export --web` page use it. LiteRT.js cannot read
// the file's metadata, so the model's description (size, classes, inputs) comes from a sidecar
// JSON (spade_tf.studio.web.sidecar). The TFLite graph checks nothing, so this module checks
// the label ids and the map's size first, and builds the inputs the graph takes besides the
// label map: the renumbered instance map, CLADE's ICPE offsets (intraClassOffsets, equal to
// spade_tf.semantics.intra_class_offsets), and a VAE's latent or OASIS' noise from a seed.
import { loadLiteRt, loadAndCompile, Tensor } from "./vendor/litertjs/core/index.js";

const DONTCARE = 255;

// ---------------------------------------------------------------- inputs

// The ids a model accepts (spade_tf.semantics.invalid_label_ids).
export function allowedIds(model) {
  const ok = new Set();
  const k = model.num_classes + (model.contain_dontcare ? 1 : 0);
  for (let i = 0; i < (model.family === "oasis" ? k : model.num_classes); i++) ok.add(i);
  if (model.family !== "oasis" && model.contain_dontcare) { ok.add(model.num_classes); ok.add(DONTCARE); }
  if (model.family === "oasis") ok.add(DONTCARE);
  return ok;
}

export function checkLabels(labels, width, height, model) {
  if (width !== model.width || height !== model.height) {
    throw new Error(`label map is ${height}x${width} (HxW), this model takes ${model.height}x${model.width}`);
  }
  if (labels.length !== width * height) throw new Error(`label map has ${labels.length} ids, not ${width * height}`);
  const ok = allowedIds(model), bad = new Set();
  for (const v of labels) if (!ok.has(v)) bad.add(v);
  if (bad.size) {
    throw new Error(`label id(s) out of range: ${[...bad].sort((a, b) => a - b).slice(0, 10).join(", ")}; ` +
                    `allowed 0..${model.num_classes - 1}` + (model.contain_dontcare ? `, ${model.num_classes} or 255 (dontcare)` : ""));
  }
}

// Instance ids as 0..K-1 in order of value (spade_tf.export.renumber_instances): the same
// edges, and ids that half precision holds exactly.
export function renumberInstances(inst) {
  const values = Array.from(new Set(inst)).sort((a, b) => a - b);
  const rank = new Map(values.map((v, i) => [v, i]));
  const out = new Int32Array(inst.length);
  for (let i = 0; i < inst.length; i++) out[i] = rank.get(inst[i]);
  return out;
}

// CLADE's ICPE map, as spade_tf.semantics.intra_class_offsets computes it: for each pixel of a
// class other than 0, its row and column offset from the centroid of its 8-connected
// same-class component, divided by that component's largest absolute offset along the axis
// (plus 1e-5); 0 for class 0. Float64 throughout, one rounding to float32 at the end: the same
// operations as the Python function, so the same bits.
export function intraClassOffsets(labels, width, height) {
  const n = width * height, comp = new Int32Array(n).fill(-1), stack = new Int32Array(n);
  const sums = [];  // per component: [rows, cols, count]
  let count = 0;
  for (let p = 0; p < n; p++) {
    if (labels[p] === 0 || comp[p] >= 0) continue;
    const c = count++, cls = labels[p];
    let top = 0, sr = 0, sc = 0, k = 0;
    stack[top++] = p; comp[p] = c;
    while (top) {
      const q = stack[--top], i = (q / width) | 0, j = q - i * width;
      sr += i; sc += j; k += 1;
      for (let di = -1; di <= 1; di++) for (let dj = -1; dj <= 1; dj++) {
        const a = i + di, b = j + dj;
        if (a < 0 || a >= height || b < 0 || b >= width) continue;
        const r = a * width + b;
        if (comp[r] < 0 && labels[r] === cls) { comp[r] = c; stack[top++] = r; }
      }
    }
    sums.push([sr, sc, k]);
  }
  const centroid = sums.map(([sr, sc, k]) => [sr / k, sc / k]);
  const reach = sums.map(() => [0, 0]);
  for (let p = 0; p < n; p++) {
    const c = comp[p];
    if (c < 0) continue;
    const i = (p / width) | 0, j = p - i * width;
    reach[c][0] = Math.max(reach[c][0], Math.abs(i - centroid[c][0]));
    reach[c][1] = Math.max(reach[c][1], Math.abs(j - centroid[c][1]));
  }
  const out = new Float32Array(n * 2);
  for (let p = 0; p < n; p++) {
    const c = comp[p];
    if (c < 0) continue;
    const i = (p / width) | 0, j = p - i * width;
    out[2 * p] = (i - centroid[c][0]) / (reach[c][0] + 1e-5);
    out[2 * p + 1] = (j - centroid[c][1]) / (reach[c][1] + 1e-5);
  }
  return out;
}

// N(0, 1) draws from a seed (mulberry32 + Box-Muller). Not the Python seeds' numbers: a seed
// names the same image on this page, not the same image as the server's.
export function gaussians(seed, count) {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 1) / 4294967297;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(uniform())), a = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(a);
    if (i + 1 < count) out[i + 1] = r * Math.sin(a);
  }
  return out;
}

// OASIS' noise map: one vector per image, and classes with their own seed get their own
// vector inside their pixels (the studio's re-roll).
export function noiseMap(labels, width, height, zDim, seed, classSeeds = {}) {
  const base = gaussians(seed, zDim), own = new Map();
  for (const [cls, s] of Object.entries(classSeeds)) own.set(Number(cls), gaussians(s, zDim));
  const out = new Float32Array(width * height * zDim);
  for (let p = 0; p < width * height; p++) out.set(own.get(labels[p]) || base, p * zDim);
  return out;
}

// ---------------------------------------------------------------- the runtime

// Where the runtime is, what it loaded, and the compiled model.
// threads: how many (default: up to 4 where the page may use them; 1 otherwise). LiteRT.js
// loads one runtime per page, so a page keeps the build it loaded first.
export async function loadModel(model, modelUrl, { base = "./vendor/litertjs/wasm/", accelerator = "wasm", threads } = {}) {
  // The threaded build needs SharedArrayBuffer, which browsers give to cross-origin-isolated
  // pages only (COOP + COEP headers: the studio sends them; the --web page's service worker
  // adds them). Otherwise one thread.
  const isolated = self.crossOriginIsolated === true;
  const numThreads = accelerator !== "wasm" ? 1
    : threads !== undefined ? threads
    : isolated ? Math.max(1, Math.min(navigator.hardwareConcurrency || 1, 4)) : 1;
  if (numThreads > 1 && !isolated) throw new Error(`${numThreads} threads need a cross-origin-isolated page (COOP/COEP headers)`);
  const jspi = accelerator === "webgpu";  // LiteRT.js runs partly delegated models with JSPI only
  try {
    await loadLiteRt(base, numThreads > 1 ? { threads: true } : jspi ? { jspi: true } : {});
  } catch (e) {
    // a runtime file that does not load rejects with its <script> element's error Event
    if (e instanceof Event) throw new Error(`LiteRT.js runtime did not load: ${e.target && e.target.src || base}`);
    throw e;
  }
  const compiled = await loadAndCompile(modelUrl, {
    accelerator, ...(accelerator === "wasm" ? { cpuOptions: { numThreads } } : {}),
  });
  const where = accelerator === "wasm"
    ? `this device (LiteRT.js wasm, ${numThreads} thread${numThreads > 1 ? "s" : ""})`
    : `this device (LiteRT.js ${accelerator})`;
  return new HereRunner(model, compiled, where);
}

export class HereRunner {
  constructor(model, compiled, where) {
    this.model = model; this.compiled = compiled; this.where = where;
    this.inputs = new Set(compiled.getInputDetails().map((d) => d.name));
  }

  // labels: ids [H*W]; inst: instance ids [H*W] (instance models); seed, classSeeds: the
  // latent's or OASIS' noise. Returns {rgba: Uint8ClampedArray H*W*4, ms}.
  async run(labels, inst = null, { seed = 0, classSeeds = {} } = {}) {
    const m = this.model, W = m.width, H = m.height;
    checkLabels(labels, W, H, m);
    const feed = {}, made = [];
    const tensor = (array, shape) => { const t = new Tensor(array, shape); made.push(t); return t; };
    feed.label = tensor(Int32Array.from(labels), [1, H, W]);
    if (this.inputs.has("instance")) {
      if (!inst) throw new Error("this model takes an instance map");
      feed.instance = tensor(renumberInstances(inst), [1, H, W]);
    }
    if (this.inputs.has("positional")) feed.positional = tensor(intraClassOffsets(labels, W, H), [1, H, W, 2]);
    if (this.inputs.has("z")) feed.z = tensor(gaussians(seed, m.z_dim), [1, m.z_dim]);
    if (this.inputs.has("noise")) feed.noise = tensor(noiseMap(labels, W, H, m.z_dim, seed, classSeeds), [1, H, W, m.z_dim]);
    const t0 = performance.now();
    let out;
    try {
      out = await this.compiled.run(feed);
    } finally {
      for (const t of made) t.delete();
    }
    let values;
    try {
      values = (await out.image.data()).slice();  // a copy: uint8, or the GPU graph's float32 levels
    } finally {
      for (const t of Object.values(out)) t.delete();
    }
    // after the read-back: on WebGPU, run() only queues the work and data() waits for it
    const ms = performance.now() - t0;
    const rgba = new Uint8ClampedArray(W * H * 4);
    for (let p = 0; p < W * H; p++) {
      rgba[4 * p] = values[3 * p]; rgba[4 * p + 1] = values[3 * p + 1];
      rgba[4 * p + 2] = values[3 * p + 2]; rgba[4 * p + 3] = 255;
    }
    return { rgba, ms };
  }
}

self.spadeHere = { loadModel, intraClassOffsets, renumberInstances, checkLabels, gaussians, noiseMap };
