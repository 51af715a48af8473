// spade-tf studio: paint a label map, and the model draws it.
//
// The page talks to its own server only. Predictions use TensorFlow Serving's REST body for the
// export's "png" signature (or "style" with a style image), so the server can forward them to a
// real Serving unchanged (spade-tf studio --serving-url). No build step, no dependencies.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_UNDO = 100;
  const MAX_RECENT = 8;
  // While a stroke goes on, the image follows at most this often. A quick stroke sends nothing
  // until it ends, so that its image does not wait behind one of a half-drawn stroke.
  const LIVE_INTERVAL_MS = 250;
  const FIRST_NEW_INSTANCE = 256; // above every class id: strokes' own instances never clash

  const S = {
    info: null, W: 0, H: 0,
    labels: null,          // Uint8Array H*W: class ids
    inst: null,            // Uint16Array H*W: instance ids (instance-aware models)
    cls: 0, tool: "brush", size: 8,
    undo: [], redo: [], recent: [],
    newInstancePerStroke: false, nextInstance: FIRST_NEW_INSTANCE,
    seed: 0, style: null,  // style: [H][W][3] uint8 rows, or null
    classSeeds: {},        // OASIS: class id -> the seed of that class's own noise ("re-roll")
    inFlight: false, pending: false, requests: 0, lastSent: -Infinity,
    strokeEnd: null,       // performance.now() at the end of the last stroke not yet drawn
    latencies: [],         // {total_ms, model_ms} per stroke, stroke end -> image on screen
    stroke: null, lastStroke: null, errors: [], shown: 0,
    colors: new Map(),     // id -> [r, g, b]
    where: "server",       // "here": the page runs the .tflite itself (LiteRT.js, here.js)
    here: null,            // the loaded HereRunner
    staticMode: window.SPADE_STATIC === true, // the export --web page: no server at all
  };

  // ------------------------------------------------------------------ errors
  function showError(message) {
    S.errors.push(message);
    $("error-text").textContent = message;
    $("error").hidden = false;
  }
  function clearError() { $("error").hidden = true; $("error-text").textContent = ""; }

  async function getJSON(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new Error(`the studio server is not reachable (${e.message}); is spade-tf studio still running?`);
    }
    const text = await response.text();
    let body;
    try { body = JSON.parse(text); } catch (e) {
      throw new Error(`HTTP ${response.status} from ${url}: ${text.slice(0, 300)}`);
    }
    if (!response.ok || body.error) throw new Error(body.error || `HTTP ${response.status} from ${url}`);
    return { body, response };
  }

  // ------------------------------------------------------------------ PNG encoding
  // Grayscale PNGs of ids, as the "png" signature takes them: 8-bit labels, 16-bit instances.
  const CRC_TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c >>> 0;
    }
    return t;
  })();
  function crc32(bytes) {
    let c = 0xffffffff;
    for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }
  function adler32(bytes) {
    let a = 1, b = 0;
    for (let i = 0; i < bytes.length; i++) { a = (a + bytes[i]) % 65521; b = (b + a) % 65521; }
    return ((b << 16) | a) >>> 0;
  }
  function zlibStored(raw) { // zlib stream of uncompressed deflate blocks (no CompressionStream)
    const blocks = Math.max(1, Math.ceil(raw.length / 65535));
    const out = new Uint8Array(2 + raw.length + blocks * 5 + 4);
    let o = 0;
    out[o++] = 0x78; out[o++] = 0x01;
    for (let i = 0; i < blocks; i++) {
      const chunk = raw.subarray(i * 65535, Math.min(raw.length, (i + 1) * 65535));
      out[o++] = i === blocks - 1 ? 1 : 0;
      out[o++] = chunk.length & 0xff; out[o++] = chunk.length >>> 8;
      out[o++] = ~chunk.length & 0xff; out[o++] = (~chunk.length >>> 8) & 0xff;
      out.set(chunk, o); o += chunk.length;
    }
    const ad = adler32(raw);
    out[o++] = ad >>> 24; out[o++] = (ad >>> 16) & 0xff; out[o++] = (ad >>> 8) & 0xff; out[o++] = ad & 0xff;
    return out;
  }
  async function zlib(raw) {
    if (typeof CompressionStream === "undefined") return zlibStored(raw);
    const stream = new Blob([raw]).stream().pipeThrough(new CompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function chunk(type, data) {
    const out = new Uint8Array(12 + data.length);
    const view = new DataView(out.buffer);
    view.setUint32(0, data.length);
    for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
    out.set(data, 8);
    view.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
    return out;
  }
  async function encodeGrayPNG(values, width, height, bitDepth) {
    const bpp = bitDepth / 8, stride = width * bpp;
    const raw = new Uint8Array(height * (stride + 1));
    for (let y = 0; y < height; y++) {
      const row = y * (stride + 1); // filter byte 0 (none)
      for (let x = 0; x < width; x++) {
        const v = values[y * width + x];
        if (bpp === 1) raw[row + 1 + x] = v;
        else { raw[row + 1 + 2 * x] = v >>> 8; raw[row + 2 + 2 * x] = v & 0xff; }
      }
    }
    const ihdr = new Uint8Array(13);
    const dv = new DataView(ihdr.buffer);
    dv.setUint32(0, width); dv.setUint32(4, height);
    ihdr[8] = bitDepth; ihdr[9] = 0; ihdr[10] = 0; ihdr[11] = 0; ihdr[12] = 0;
    const parts = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
                   chunk("IHDR", ihdr), chunk("IDAT", await zlib(raw)), chunk("IEND", new Uint8Array(0))];
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  }
  function toBase64(bytes) {
    let s = "";
    for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(s);
  }
  function fromBase64(b64) {
    const s = atob(b64);
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  // ------------------------------------------------------------------ the label map
  function defaultInstance(cls) { return cls; } // one instance per class region unless strokes start new ones

  function render() {
    const canvas = $("label-canvas");
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(S.W, S.H);
    for (let i = 0; i < S.labels.length; i++) {
      const c = S.colors.get(S.labels[i]) || [255, 0, 255];
      img.data[4 * i] = c[0]; img.data[4 * i + 1] = c[1]; img.data[4 * i + 2] = c[2]; img.data[4 * i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    $("undo").disabled = !S.undo.length;
    $("redo").disabled = !S.redo.length;
  }

  function snapshot() { return { labels: S.labels.slice(), inst: S.inst.slice() }; }
  function pushUndo() {
    S.undo.push(snapshot());
    if (S.undo.length > MAX_UNDO) S.undo.shift();
    S.redo = [];
  }
  function restore(from, to) {
    if (!from.length) return;
    to.push(snapshot());
    const s = from.pop();
    S.labels = s.labels; S.inst = s.inst;
    render();
    endEdit();
  }

  // Pixel (x, y) is painted when its centre lies within size/2 of the segment between the
  // centres of the pixels under two successive pointer positions: a round brush of that diameter.
  function paintSegment(a, b, cls, inst) {
    const r = S.size / 2;
    const ax = a[0] + 0.5, ay = a[1] + 0.5, bx = b[0] + 0.5, by = b[1] + 0.5;
    const x0 = Math.max(0, Math.floor(Math.min(ax, bx) - r)), x1 = Math.min(S.W - 1, Math.ceil(Math.max(ax, bx) + r));
    const y0 = Math.max(0, Math.floor(Math.min(ay, by) - r)), y1 = Math.min(S.H - 1, Math.ceil(Math.max(ay, by) + r));
    const dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const px = x + 0.5, py = y + 0.5;
        const t = len2 ? Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / len2)) : 0;
        const ex = px - (ax + t * dx), ey = py - (ay + t * dy);
        if (ex * ex + ey * ey <= r * r) { S.labels[y * S.W + x] = cls; S.inst[y * S.W + x] = inst; }
      }
    }
  }

  function floodFill(p, cls, inst) { // one 4-connected region of the class under p
    const W = S.W, H = S.H, start = p[1] * W + p[0], target = S.labels[start];
    const seen = new Uint8Array(W * H);
    const stack = [start];
    seen[start] = 1;
    while (stack.length) {
      const i = stack.pop();
      S.labels[i] = cls; S.inst[i] = inst;
      const x = i % W, y = (i - x) / W;
      const nbrs = [x > 0 ? i - 1 : -1, x < W - 1 ? i + 1 : -1, y > 0 ? i - W : -1, y < H - 1 ? i + W : -1];
      for (const n of nbrs) {
        if (n >= 0 && !seen[n] && S.labels[n] === target) { seen[n] = 1; stack.push(n); }
      }
    }
  }

  function fillRect(a, b, cls, inst) {
    for (let y = Math.min(a[1], b[1]); y <= Math.max(a[1], b[1]); y++)
      for (let x = Math.min(a[0], b[0]); x <= Math.max(a[0], b[0]); x++) {
        S.labels[y * S.W + x] = cls; S.inst[y * S.W + x] = inst;
      }
  }

  function strokeInstance() {
    if (S.info.use_instance && S.newInstancePerStroke) {
      S.nextInstance = S.nextInstance >= 65535 ? FIRST_NEW_INSTANCE : S.nextInstance + 1;
      return S.nextInstance;
    }
    return defaultInstance(S.cls);
  }

  function pixelAt(event) {
    const r = $("label-canvas").getBoundingClientRect();
    const x = Math.floor((event.clientX - r.left) / r.width * S.W);
    const y = Math.floor((event.clientY - r.top) / r.height * S.H);
    return [Math.max(0, Math.min(S.W - 1, x)), Math.max(0, Math.min(S.H - 1, y))];
  }

  function drawOverlay(p) {
    const ov = $("overlay").getContext("2d");
    ov.clearRect(0, 0, S.W, S.H);
    if (!p) return;
    ov.strokeStyle = "#ffffffcc"; ov.lineWidth = 0.5;
    if (S.stroke && S.tool === "rect") {
      const a = S.stroke.points[0];
      const x = Math.min(a[0], p[0]), y = Math.min(a[1], p[1]);
      ov.fillStyle = colorCss(S.cls) + "99";
      ov.fillRect(x, y, Math.abs(p[0] - a[0]) + 1, Math.abs(p[1] - a[1]) + 1);
    } else if (S.tool === "brush") {
      ov.beginPath(); ov.arc(p[0] + 0.5, p[1] + 0.5, S.size / 2, 0, 2 * Math.PI); ov.stroke();
    }
  }

  function onPointerDown(event) {
    if (!S.info || event.button !== 0) return;
    event.preventDefault();
    $("label-canvas").setPointerCapture(event.pointerId);
    const p = pixelAt(event);
    if (S.tool === "picker") { selectClass(S.labels[p[1] * S.W + p[0]]); return; }
    pushUndo();
    S.stroke = { tool: S.tool, cls: S.cls, inst: strokeInstance(), points: [p], size: S.size,
                 started: performance.now() };
    if (S.tool === "brush") paintSegment(p, p, S.cls, S.stroke.inst);
    if (S.tool === "fill") { floodFill(p, S.cls, S.stroke.inst); finishStroke(); return; }
    render();
    drawOverlay(p);
  }

  function onPointerMove(event) {
    if (!S.info) return;
    const p = pixelAt(event);
    const c = S.labels[p[1] * S.W + p[0]];
    $("hover").textContent = `(${p[0]}, ${p[1]}) ${className(c)}`;
    if (!S.stroke) { drawOverlay(p); return; }
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    for (const e of events.length ? events : [event]) {
      const q = pixelAt(e), last = S.stroke.points[S.stroke.points.length - 1];
      if (q[0] === last[0] && q[1] === last[1]) continue;
      S.stroke.points.push(q);
      if (S.tool === "brush") paintSegment(last, q, S.stroke.cls, S.stroke.inst);
    }
    if (S.tool === "brush") {
      render();
      const now = performance.now();
      if (!S.inFlight && now - Math.max(S.stroke.started, S.lastSent) >= LIVE_INTERVAL_MS) synthesize();
    }
    drawOverlay(p);
  }

  function onPointerUp(event) {
    if (!S.stroke) return;
    const p = pixelAt(event);
    if (S.stroke.tool === "rect") fillRect(S.stroke.points[0], p, S.stroke.cls, S.stroke.inst);
    if (S.stroke.tool === "rect") S.stroke.points.push(p);
    finishStroke();
    drawOverlay(p);
  }

  function finishStroke() {
    S.lastStroke = S.stroke;
    S.stroke = null;
    useClass(S.lastStroke.cls);
    render();
    endEdit();
  }

  // Every finished edit: the image is asked for at once, and the time to it is measured.
  function endEdit() {
    S.strokeEnd = performance.now();
    synthesize();
  }

  // ------------------------------------------------------------------ synthesis
  function nested(values, W, H) {
    const rows = new Array(H);
    for (let y = 0; y < H; y++) rows[y] = Array.from(values.subarray(y * W, (y + 1) * W));
    return rows;
  }

  async function requestBody() {
    const info = S.info;
    if (S.style) {
      const row = { label: nested(S.labels, S.W, S.H), style_image: S.style };
      if (info.use_instance) row.instance = nested(S.inst, S.W, S.H);
      return { signature_name: "style", instances: [row] };
    }
    const row = { label_png: { b64: toBase64(await encodeGrayPNG(S.labels, S.W, S.H, 8)) } };
    if (info.use_instance) row.instance_png = { b64: toBase64(await encodeGrayPNG(S.inst, S.W, S.H, 16)) };
    if (info.has_latent) row.seed = S.seed;  // a VAE's latent or OASIS' noise
    if (info.regional_noise && Object.keys(S.classSeeds).length) row.class_seeds = { ...S.classSeeds };
    return { signature_name: "png", instances: [row] };
  }

  function imageFromRows(rows) { // the "style" signature answers uint8 [H][W][3]
    const c = document.createElement("canvas");
    c.width = rows[0].length; c.height = rows.length;
    const ctx = c.getContext("2d"), img = ctx.createImageData(c.width, c.height);
    let i = 0;
    for (const row of rows) for (const px of row) { img.data.set([px[0], px[1], px[2], 255], i); i += 4; }
    ctx.putImageData(img, 0, 0);
    return c.toDataURL("image/png");
  }

  // ------------------------------------------------------------------ run here (LiteRT.js)
  async function loadHere() {
    if (S.here) return S.here;
    const base = S.staticMode ? "./" : "/static/";
    const mod = await import(base + "here.js");
    const url = S.staticMode ? "./model.tflite" : "/studio/model.tflite";
    // the sidecar: the model's ids and inputs (the static page's info is the sidecar already)
    const model = S.staticMode ? S.info : (await getJSON("/studio/model.json")).body;
    S.here = await mod.loadModel(model, url, { base: base + "vendor/litertjs/wasm/" });
    return S.here;
  }

  let hereCanvas = null;
  async function runHere() { // the image and the model's time, drawn by this browser
    const runner = await loadHere();
    const { rgba, ms } = await runner.run(S.labels, S.info.use_instance ? S.inst : null,
                                          { seed: S.seed, classSeeds: S.classSeeds });
    hereCanvas = hereCanvas || document.createElement("canvas");
    hereCanvas.width = S.W; hereCanvas.height = S.H;
    hereCanvas.getContext("2d").putImageData(new ImageData(rgba, S.W, S.H), 0, 0);
    return { src: hereCanvas.toDataURL("image/png"), modelMs: ms, ran: runner.where };
  }

  async function setWhere(where) {
    S.where = where;
    $("where").value = where;
    if (where === "here") {
      try {
        $("ran").textContent = "loading the model into this browser…";
        await loadHere();
      } catch (e) {
        S.where = "server"; $("where").value = "server";
        $("ran").textContent = "";
        showError(`cannot run the model here: ${e.message}`);
        return;
      }
    }
    synthesize();
  }

  async function runServer() { // the image and the model's time, from the studio's server
    const body = JSON.stringify(await requestBody());
    const { body: answer, response } = await getJSON(`/v1/models/${encodeURIComponent(S.info.name)}:predict`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body,
    });
    const pred = answer.predictions && answer.predictions[0];
    if (!pred) throw new Error("the answer has no predictions");
    const src = pred.image_png_bytes ? "data:image/png;base64," + pred.image_png_bytes.b64 : imageFromRows(pred.image);
    return { src, modelMs: parseFloat(response.headers.get("X-Studio-Model-Ms")), ran: S.info.backend };
  }

  async function synthesize() {
    if (!S.info) return;
    if (S.inFlight) { S.pending = true; return; } // at most one request; the latest map wins
    S.inFlight = true; S.pending = false;
    $("busy").hidden = false;
    const sentAt = performance.now();
    S.lastSent = sentAt;
    const id = ++S.requests;
    try {
      const encoded = performance.now();
      const { src, modelMs, ran } = S.where === "here" ? await runHere() : await runServer();
      const answered = performance.now();
      const out = $("output");
      out.src = src;
      await out.decode();
      await new Promise((resolve) => requestAnimationFrame(() => resolve()));
      S.shown = id;
      clearError();
      $("ran").textContent = `ran on ${ran}` + (Number.isFinite(modelMs) ? `: model ${modelMs.toFixed(1)} ms` : "");
      if (S.strokeEnd !== null && sentAt >= S.strokeEnd) {
        const strokeEnd = S.strokeEnd, total = performance.now() - strokeEnd;
        S.strokeEnd = null;
        // where the time went: waiting for a request already in flight at the stroke's end,
        // encoding the maps, the round trip (the model's share of it), decoding and drawing
        S.latencies.push({ total_ms: total, model_ms: Number.isFinite(modelMs) ? modelMs : null,
                           waited_ms: sentAt - strokeEnd, encode_ms: encoded - sentAt,
                           request_ms: answered - encoded, show_ms: performance.now() - answered });
        showLatency();
      }
    } catch (e) {
      showError(e.message);
    } finally {
      S.inFlight = false;
      $("busy").hidden = true;
      if (S.pending || (S.strokeEnd !== null && sentAt < S.strokeEnd)) synthesize();
    }
  }

  function median(xs) {
    const s = xs.slice().sort((a, b) => a - b), n = s.length;
    return n ? (n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2) : NaN;
  }
  function showLatency() {
    const last = S.latencies[S.latencies.length - 1];
    const med = median(S.latencies.map((l) => l.total_ms));
    let text = `stroke → image <b>${last.total_ms.toFixed(0)} ms</b>`;
    if (last.model_ms !== null) text += ` (model ${last.model_ms.toFixed(0)} ms, studio ${(last.total_ms - last.model_ms).toFixed(0)} ms)`;
    text += ` · median of ${S.latencies.length}: ${med.toFixed(0)} ms`;
    $("latency").innerHTML = text;
  }

  // ------------------------------------------------------------------ palette
  function colorCss(id) {
    const c = S.colors.get(id) || [255, 0, 255];
    return "#" + c.map((v) => v.toString(16).padStart(2, "0")).join("");
  }
  function className(id) {
    const c = S.info.classes.find((k) => k.id === id);
    return c ? `${c.name} (${id})` : `unknown id ${id}`;
  }
  function swatch(c) {
    const b = document.createElement("button");
    b.type = "button"; b.className = "swatch"; b.dataset.id = c.id; b.title = `${c.name} (id ${c.id})`;
    const chip = document.createElement("span"); chip.className = "chip"; chip.style.background = c.color;
    const name = document.createElement("span"); name.className = "name"; name.textContent = c.name;
    const id = document.createElement("span"); id.className = "id"; id.textContent = c.id;
    b.append(chip, name, id);
    b.addEventListener("click", () => selectClass(c.id));
    return b;
  }
  function renderPalette() {
    const q = $("search").value.trim().toLowerCase();
    const list = $("classes");
    list.replaceChildren(...S.info.classes
      .filter((c) => !q || c.name.toLowerCase().includes(q) || String(c.id) === q)
      .map(swatch));
    $("recent").replaceChildren(...S.recent.map((id) => S.info.classes.find((c) => c.id === id)).filter(Boolean).map(swatch));
    for (const el of document.querySelectorAll(".swatch")) el.classList.toggle("selected", Number(el.dataset.id) === S.cls);
    const cur = S.info.classes.find((c) => c.id === S.cls);
    const chip = document.createElement("span"); chip.className = "chip"; chip.style.background = cur ? cur.color : "#f0f";
    $("current").replaceChildren(chip, document.createTextNode(cur ? `${cur.name} (${cur.id})` : `id ${S.cls}`));
    $("reroll").firstChild.textContent = `Re-roll ${cur ? cur.name : `id ${S.cls}`} `;
  }
  function selectClass(id) { S.cls = id; renderPalette(); }
  function useClass(id) { // recently used classes come first
    S.recent = [id, ...S.recent.filter((r) => r !== id)].slice(0, MAX_RECENT);
    renderPalette();
  }

  // ------------------------------------------------------------------ tools and files
  function setTool(tool) {
    S.tool = tool;
    for (const b of document.querySelectorAll(".tool")) b.classList.toggle("active", b.dataset.tool === tool);
    drawOverlay(null);
  }
  function setSize(n) {
    S.size = Math.max(1, Math.min(64, Math.round(n)));
    $("size").value = S.size; $("size-value").textContent = S.size;
  }

  function setMaps(payload) { // {label_b64, instance_b64?}: ids from the server
    const label = fromBase64(payload.label_b64);
    if (label.length !== S.W * S.H) throw new Error(`the map has ${label.length} pixels, the model takes ${S.W}x${S.H}`);
    pushUndo();
    S.labels = label;
    if (payload.instance_b64) {
      const bytes = fromBase64(payload.instance_b64);
      S.inst = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    } else {
      S.inst = Uint16Array.from(label, defaultInstance);
    }
    render();
    endEdit();
  }

  function readFile(file) {
    return new Promise((resolve, reject) => {
      const r = new FileReader();
      r.onload = () => resolve(new Uint8Array(r.result));
      r.onerror = () => reject(new Error(`${file.name}: cannot read the file`));
      r.readAsArrayBuffer(file);
    });
  }

  async function loadLabelFile(file) {
    try {
      const bytes = await readFile(file);
      const { body } = await getJSON("/studio/decode-label", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ name: file.name, file: { b64: toBase64(bytes) } }),
      });
      setMaps(body);
      clearError();
    } catch (e) { showError(e.message); }
  }

  async function loadExample() {
    try {
      const { body } = await getJSON("/studio/example");
      setMaps(body);
      clearError();
    } catch (e) { showError(e.message); }
  }

  async function loadStyle(file) {
    try {
      const url = URL.createObjectURL(file);
      const img = new Image();
      img.src = url;
      try { await img.decode(); } catch (e) { throw new Error(`${file.name}: not an image the browser can read`); }
      const c = document.createElement("canvas");
      c.width = S.W; c.height = S.H;
      const ctx = c.getContext("2d");
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(img, 0, 0, S.W, S.H);
      URL.revokeObjectURL(url);
      const data = ctx.getImageData(0, 0, S.W, S.H).data;
      const rows = [];
      for (let y = 0; y < S.H; y++) {
        const row = [];
        for (let x = 0; x < S.W; x++) { const i = 4 * (y * S.W + x); row.push([data[i], data[i + 1], data[i + 2]]); }
        rows.push(row);
      }
      S.style = rows;
      $("style-clear").hidden = false;
      $("style-label").firstChild.textContent = `Style: ${file.name} `;
      endEdit();
    } catch (e) { showError(e.message); }
  }

  function download(href, name) {
    const a = document.createElement("a");
    a.href = href; a.download = name;
    document.body.append(a); a.click(); a.remove();
  }

  function showSeed() {
    const n = Object.keys(S.classSeeds).length;
    $("seed").textContent = `seed ${S.seed}` + (n ? ` · ${n} class${n > 1 ? "es" : ""} re-rolled` : "");
  }

  function newLook() { // a new seed for the whole image; re-rolled classes follow it again
    S.seed = Math.floor(Math.random() * 2 ** 31);
    S.classSeeds = {};
    showSeed();
    endEdit();
  }

  // OASIS' local editing: new noise inside the current class's pixels only; the rest of the
  // noise, and so most of the rest of the image, stays
  function reroll(cls = S.cls) {
    S.classSeeds[cls] = Math.floor(Math.random() * 2 ** 31);
    showSeed();
    endEdit();
  }

  function onKey(event) {
    const t = event.target;
    if (t && (t.tagName === "INPUT" && t.type !== "checkbox" && t.type !== "range")) {
      if (event.key === "Escape") t.blur();
      return;
    }
    const ctrl = event.ctrlKey || event.metaKey;
    const k = event.key.toLowerCase();
    if (ctrl && k === "z") { event.preventDefault(); restore(event.shiftKey ? S.redo : S.undo, event.shiftKey ? S.undo : S.redo); return; }
    if (ctrl && k === "y") { event.preventDefault(); restore(S.redo, S.undo); return; }
    if (ctrl || event.altKey) return;
    const tools = { b: "brush", f: "fill", r: "rect", i: "picker" };
    if (tools[k]) setTool(tools[k]);
    else if (event.key === "[") setSize(S.size - (S.size > 16 ? 4 : 1));
    else if (event.key === "]") setSize(S.size + (S.size >= 16 ? 4 : 1));
    else if (k === "n" && S.info.use_instance) { $("new-instance").checked = !$("new-instance").checked; S.newInstancePerStroke = $("new-instance").checked; }
    else if (event.key === "C" && event.shiftKey) clearTo();
    else if (k === "g" && S.info.regional_noise) reroll();
    else if (event.key === "/") { event.preventDefault(); $("search").focus(); }
  }

  function clearTo() {
    pushUndo();
    S.labels.fill(S.cls);
    S.inst.fill(strokeInstance());
    useClass(S.cls);
    render();
    endEdit();
  }

  // ------------------------------------------------------------------ start
  // The label map and the image side by side, each scaled by a whole number (crisp pixels)
  // as large as the window allows, at most 512 CSS pixels unless the model is larger.
  function layout() {
    const avail = $("canvases").clientWidth - 20, high = window.innerHeight - 140;
    const fit = Math.min(avail / 2 / S.W, high / S.H, Math.max(1, 512 / Math.max(S.W, S.H)));
    const scale = fit >= 1 ? Math.floor(fit) : fit;
    for (const id of ["label-canvas", "overlay", "output"]) {
      $(id).style.width = `${S.W * scale}px`; $(id).style.height = `${S.H * scale}px`;
    }
  }

  async function start() {
    const { body: info } = await getJSON(S.staticMode ? "./model.json" : "/studio/info");
    if (S.staticMode && "serviceWorker" in navigator) {
      // offline after the first visit, and cross-origin isolated (two threads) from the second
      navigator.serviceWorker.register("./sw.js").catch((e) => console.warn("service worker:", e));
    }
    S.info = info; S.W = info.width; S.H = info.height;
    for (const c of info.classes) S.colors.set(c.id, [1, 3, 5].map((i) => parseInt(c.color.slice(i, i + 2), 16)));
    $("model-name").textContent = `${info.name} · ${info.width}×${info.height} · ${info.classes.length} classes · ${info.backend}`;
    document.title = `spade-tf studio · ${info.name}`;
    for (const id of ["label-canvas", "overlay"]) { $(id).width = info.width; $(id).height = info.height; }
    layout();
    window.addEventListener("resize", layout);
    // start from the most common first class that is not dontcare
    S.cls = info.classes[0].id;
    S.labels = new Uint8Array(S.W * S.H).fill(S.cls);
    S.inst = new Uint16Array(S.W * S.H).fill(defaultInstance(S.cls));
    $("instance-group").hidden = !info.use_instance;
    $("vae-group").hidden = !info.has_latent;
    $("style-label").hidden = !info.has_style;
    $("vae-note").hidden = !info.vae_note;
    $("vae-note").textContent = info.vae_note;
    if (info.use_vae && !info.has_style) {
      $("vae-note").hidden = false;
      $("vae-note").textContent = "this export has no style signature (no encoder), so there is no style upload";
    }
    $("example").disabled = !info.examples;
    if (!info.examples) $("example").title = info.examples_note;
    $("seed").textContent = info.has_latent ? `seed ${S.seed}` : "";
    $("reroll").hidden = !info.regional_noise;
    // where the model runs: the static page only here; the studio offers here beside its
    // server when it serves a .tflite and has LiteRT.js (info.here)
    $("where-group").hidden = S.staticMode || !info.here;
    if (info.here && !info.here.available) {
      $("where").querySelector('option[value="here"]').disabled = true;
      $("where-group").title = info.here.reason;
    }
    $("where").addEventListener("change", (e) => setWhere(e.target.value));
    if (S.staticMode) {
      S.where = "here";
      $("load-label").closest("label").hidden = true; // decoding uploads needs the server
      $("example").hidden = true;
    }

    const canvas = $("label-canvas");
    canvas.addEventListener("pointerdown", onPointerDown);
    canvas.addEventListener("pointermove", onPointerMove);
    canvas.addEventListener("pointerup", onPointerUp);
    canvas.addEventListener("pointercancel", onPointerUp);
    canvas.addEventListener("pointerleave", () => { if (!S.stroke) drawOverlay(null); });
    for (const b of document.querySelectorAll(".tool")) b.addEventListener("click", () => setTool(b.dataset.tool));
    $("size").addEventListener("input", (e) => setSize(Number(e.target.value)));
    $("undo").addEventListener("click", () => restore(S.undo, S.redo));
    $("redo").addEventListener("click", () => restore(S.redo, S.undo));
    $("clear").addEventListener("click", clearTo);
    $("new-instance").addEventListener("change", (e) => { S.newInstancePerStroke = e.target.checked; });
    $("load-label").addEventListener("change", (e) => { if (e.target.files[0]) loadLabelFile(e.target.files[0]); e.target.value = ""; });
    $("example").addEventListener("click", loadExample);
    $("download-label").addEventListener("click", async () => {
      const png = await encodeGrayPNG(S.labels, S.W, S.H, 8);
      const url = URL.createObjectURL(new Blob([png], { type: "image/png" }));
      download(url, "label.png");
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    });
    $("download-image").addEventListener("click", () => { if ($("output").src) download($("output").src, "image.png"); });
    $("new-look").addEventListener("click", newLook);
    $("reroll").addEventListener("click", () => reroll());
    $("style-file").addEventListener("change", (e) => { if (e.target.files[0]) loadStyle(e.target.files[0]); e.target.value = ""; });
    $("style-clear").addEventListener("click", () => {
      S.style = null; $("style-clear").hidden = true; $("style-label").firstChild.textContent = "Style image… "; endEdit();
    });
    $("search").addEventListener("input", renderPalette);
    $("error-close").addEventListener("click", clearError);
    document.addEventListener("keydown", onKey);

    setTool("brush");
    setSize(Math.max(1, Math.round(Math.min(S.W, S.H) / 16)));
    renderPalette();
    render();
    await synthesize();
  }

  // For tests and benchmarks (and the curious, in the browser's console).
  window.studio = {
    state: S,
    labelIds: () => Array.from(S.labels),
    instanceIds: () => Array.from(S.inst),
    setSize, setTool, selectClass, reroll, setWhere,
    redraw: () => { render(); endEdit(); },  // after a test or script wrote state.labels
    encodeGrayPNG: async (values, w, h, bits) => toBase64(await encodeGrayPNG(values, w, h, bits)),
    ready: null,
  };
  window.studio.ready = start().then(() => true, (e) => { showError(e.message); return false; });
})();
