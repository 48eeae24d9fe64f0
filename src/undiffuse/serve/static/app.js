"use strict";
// The page of `undiffuse serve`: plain JS, no build step, no CDN. Talks to /api only.
const $ = (sel) => document.querySelector(sel);
let models = [], current = null, lastUrl = null;

async function api(path, options) {
  const r = await fetch(path, options);
  if (!r.ok) {
    let msg = r.statusText;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(`${r.status}: ${msg}`);
  }
  return r;
}

function option(value, text) { const o = document.createElement("option"); o.value = value; o.textContent = text; return o; }

function fill(select, items, keep) {
  const old = select.value;
  select.replaceChildren(...items.map(([v, t]) => option(v, t)));
  if (keep && items.some(([v]) => String(v) === old)) select.value = old;
}

function pickModel(name) {
  current = models.find((m) => m.name === name);
  const m = current, names = m.samplers.map((s) => [s.name, s.name]);
  const first = !$("#sampler").options.length;
  fill($("#sampler"), names, true);
  if (first) { $("#sampler").value = m.default_sampler; $("#steps").value = Math.min(m.default_steps, m.max_steps); }
  fill($("#cmp-a"), names, true); fill($("#cmp-b"), names, true);
  if (!$("#cmp-b").dataset.set && names.length > 1) { // the run's own sampler against another (ddim vs dpmpp_2m by default)
    const other = names.find(([v]) => v === "dpmpp_2m" && v !== m.default_sampler) || names.find(([v]) => v !== m.default_sampler);
    $("#cmp-a").value = m.default_sampler; $("#cmp-b").value = other[0]; $("#cmp-b").dataset.set = 1;
  }
  fill($("#format"), m.formats.map((f) => [f, f]), true);
  const classes = m.classes ? [["", "cycle through classes"], ...m.class_names.map((c, i) => [i, `${i} · ${c}`])] : [];
  fill($("#class"), classes, true);
  document.querySelectorAll(".cond-class").forEach((e) => (e.hidden = !m.classes));
  document.querySelectorAll(".cond-text").forEach((e) => (e.hidden = !m.text));
  document.querySelectorAll(".cond-any").forEach((e) => (e.hidden = !m.guidance));
  $("#n").max = m.max_n; $("#steps").max = m.max_steps;
  $("#edit-go").disabled = !m.editable;
  $("#model-info").textContent = `${m.kind} model of ${m.data} ${m.shape.join("×")}, trained ${m.step} steps (T = ${m.T})` +
    (m.classes ? `, ${m.classes} classes` : "") + (m.text ? ", text prompts" : "") + ` · at most ${m.max_n} samples, ${m.max_steps} steps`;
  syncSampler();
}

function syncSampler() {
  const s = current && current.samplers.find((x) => x.name === $("#sampler").value);
  document.querySelectorAll(".opt-eta").forEach((e) => (e.hidden = !(s && "eta" in s.options)));
}

function num(id) { const v = $(id).value; return v === "" ? null : Number(v); }

function settings(extra) {
  const b = { model: current.name, n: num("#n"), seed: num("#seed") ?? 0, sampler: $("#sampler").value, steps: num("#steps"), format: $("#format").value };
  if (!$(".opt-eta").hidden && num("#eta") !== null) b.eta = num("#eta");
  if (current.classes && $("#class").value !== "") b.class = Number($("#class").value);
  if (current.text && $("#prompt").value.trim()) b.prompt = $("#prompt").value.trim();
  if (current.guidance && num("#guidance") !== null) b.guidance = num("#guidance");
  return Object.assign(b, extra || {});
}

// Reads a server-sent-event stream from a POST response; calls on(event, data) for each event.
async function readEvents(response, on) {
  const reader = response.body.getReader(), decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      let event = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) event = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) on(event, JSON.parse(data));
    }
  }
}

function stageParts(fig) {
  return { img: fig.querySelector("img"), bar: fig.querySelector(".bar > div"), cap: fig.querySelector("figcaption"), hint: fig.querySelector(".placeholder") };
}

function show(parts, src) { parts.img.src = src; parts.img.classList.add("shown"); if (parts.hint) parts.hint.hidden = true; }

async function run(fig, path, init, label) {
  const p = stageParts(fig); let result = null;
  p.bar.style.width = "0"; p.cap.textContent = `${label}: queued…`; fig.dataset.state = "running";
  const t0 = performance.now();
  await readEvents(await api(path, init), (event, d) => {
    if (event === "progress") { p.bar.style.width = `${(100 * d.step) / d.steps}%`; p.cap.textContent = `${label}: step ${d.step} of ${d.steps}`; }
    else if (event === "preview" && d.image) { show(p, d.image); fig.dataset.previews = Number(fig.dataset.previews || 0) + 1; }
    else if (event === "result") result = d;
    else if (event === "error") throw new Error(`${d.status}: ${d.error}`);
  });
  if (!result) throw new Error("the stream ended without a result");
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  p.bar.style.width = "100%"; p.cap.textContent = `${label}: done in ${secs} s` + (result.shared_with ? ` (batched with ${result.shared_with} other request${result.shared_with > 1 ? "s" : ""})` : "");
  fig.dataset.state = "done";
  return result;
}

function jsonInit(body) { return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) }; }

function blobOf(result) {
  const bytes = Uint8Array.from(atob(result.data), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: result.media_type });
}

// In-place radix-2 FFT of (re, im), length a power of two.
function fft(re, im) {
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = (-2 * Math.PI) / len;
    for (let i = 0; i < n; i += len) {
      for (let k = 0; k < len / 2; k++) {
        const wr = Math.cos(ang * k), wi = Math.sin(ang * k), a = i + k, b = a + len / 2;
        const tr = re[b] * wr - im[b] * wi, ti = re[b] * wi + im[b] * wr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
      }
    }
  }
}

// A spectrogram of a sound's first channel: |STFT| in dB over 60 dB (512-point Hann windows, hop 256), low
// frequencies at the bottom, one column per frame (at most 1200). Returns the canvas.
async function spectrogram(url) {
  const data = await (await fetch(url)).arrayBuffer();
  const sound = await new OfflineAudioContext(1, 1, 44100).decodeAudioData(data);
  const x = sound.getChannelData(0), N = 512, hop = Math.max(256, Math.ceil((x.length - N) / 1200));
  const frames = Math.max(1, Math.floor((x.length - N) / hop) + 1), H = N / 2, db = new Float32Array(frames * H);
  for (let f = 0; f < frames; f++) {
    const re = new Float32Array(N), im = new Float32Array(N);
    for (let k = 0; k < N; k++) re[k] = (x[f * hop + k] || 0) * (0.5 - 0.5 * Math.cos((2 * Math.PI * k) / N));
    fft(re, im);
    for (let k = 0; k < H; k++) db[f * H + k] = 10 * Math.log10(re[k] * re[k] + im[k] * im[k] + 1e-12);
  }
  const top = Math.max(...db), canvas = document.createElement("canvas");
  canvas.width = frames; canvas.height = H; canvas.className = "spectrogram"; canvas.dataset.sampleRate = sound.sampleRate;
  const g = canvas.getContext("2d"), img = g.createImageData(frames, H);
  for (let f = 0; f < frames; f++) for (let k = 0; k < H; k++) {
    const v = Math.max(0, 1 + (db[f * H + k] - top) / 60), o = 4 * ((H - 1 - k) * frames + f);
    img.data[o] = 255 * Math.min(1, 1.6 * v); img.data[o + 1] = 255 * v * v; img.data[o + 2] = 255 * (0.35 + 0.65 * v * (1 - v)); img.data[o + 3] = 255;
  }
  g.putImageData(img, 0, 0);
  return canvas;
}

// How a finished result is shown, by format: images in place, tables and text below, sound with a player.
const RENDER = {
  png: (p, url) => show(p, url), jpg: (p, url) => show(p, url), jpeg: (p, url) => show(p, url),
  csv: async (p, url, extra) => { const rows = (await (await fetch(url)).text()).trim().split("\n").slice(0, 200).map((l) => l.split(","));
    const t = document.createElement("table");
    rows.forEach((r, i) => { const tr = t.insertRow(); r.forEach((c) => { const cell = document.createElement(i ? "td" : "th"); cell.textContent = c; tr.appendChild(cell); }); });
    extra.replaceChildren(t); extra.classList.add("shown"); extra.parentElement.classList.add("has-table"); },
  txt: async (p, url, extra) => { const pre = document.createElement("pre"); pre.textContent = await (await fetch(url)).text(); extra.replaceChildren(pre); extra.classList.add("shown"); },
  wav: async (p, url, extra) => { const a = document.createElement("audio"); a.controls = true; a.src = url;
    extra.replaceChildren(a, await spectrogram(url)); extra.classList.add("shown"); },
};

function download(name, blob) {
  const a = document.createElement("a"); a.href = URL.createObjectURL(blob); a.download = name; a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 10000);
}

function downloadButtons(body) {
  const box = $("#downloads"); box.replaceChildren();
  for (const fmt of current.formats) {
    const a = document.createElement("a"); a.href = "#"; a.textContent = `download .${fmt}`; a.className = "download";
    a.onclick = async (e) => { e.preventDefault(); // the same settings in another format: the same samples
      const r = await api("/api/sample", jsonInit({ ...body, format: fmt })); download(`samples.${fmt}`, await r.blob()); };
    box.appendChild(a);
  }
}

async function generate(e) {
  e.preventDefault();
  const go = $("#go"), fig = $("#stage"), body = settings(), extra = $("#result-extra");
  extra.classList.remove("shown"); extra.parentElement.classList.remove("has-table");
  go.disabled = true; fig.dataset.previews = 0;
  try {
    const result = await run(fig, "/api/sample/stream", jsonInit(body), `${body.sampler}, ${body.steps} steps`);
    if (lastUrl) URL.revokeObjectURL(lastUrl);
    lastUrl = URL.createObjectURL(blobOf(result));
    const render = RENDER[result.format];
    const parts = stageParts(fig);
    if (!["png", "jpg", "jpeg"].includes(result.format)) { parts.img.classList.remove("shown"); parts.hint.hidden = true; }
    if (render) await render(parts, lastUrl, extra);
    fig.querySelector("img").dataset.final = result.format;
    downloadButtons(body);
  } catch (err) { fig.dataset.state = "error"; stageParts(fig).cap.textContent = String(err.message || err); }
  finally { go.disabled = false; }
}

async function compare(e) {
  e.preventDefault();
  const base = settings({ steps: num("#cmp-steps"), n: num("#cmp-n"), format: current.formats.includes("png") ? "png" : current.formats[0] });
  delete base.eta;
  const go = $("#cmp-go"); go.disabled = true;
  const one = async (id, sampler) => {
    const fig = $(id);
    try { const r = await run(fig, "/api/sample/stream", jsonInit({ ...base, sampler }), sampler);
      if (r.format === "png") show(stageParts(fig), URL.createObjectURL(blobOf(r))); }
    catch (err) { stageParts(fig).cap.textContent = String(err.message || err); }
  };
  await Promise.all([one("#stage-a", $("#cmp-a").value), one("#stage-b", $("#cmp-b").value)]);
  go.disabled = false;
}

// --- inpainting canvas: the image at the model's size, a mask painted over it (white = generate) ---
const paint = { ready: false, down: false };

function loadEditImage(file) {
  const img = new Image();
  img.onload = () => {
    const [c, h, w] = current.shape, s = Math.min(img.width, img.height);
    for (const id of ["#paint-img", "#paint-mask"]) { $(id).width = w; $(id).height = h; }
    const ctx = $("#paint-img").getContext("2d");
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(img, (img.width - s) / 2, (img.height - s) / 2, s, s, 0, 0, w, h); // centre crop, as the CLI
    if (c === 1) { const d = ctx.getImageData(0, 0, w, h); for (let i = 0; i < d.data.length; i += 4) { const y = 0.299 * d.data[i] + 0.587 * d.data[i + 1] + 0.114 * d.data[i + 2]; d.data[i] = d.data[i + 1] = d.data[i + 2] = y; } ctx.putImageData(d, 0, 0); }
    clearMask(); paint.ready = true; $("#paint-hint").hidden = true;
  };
  img.src = URL.createObjectURL(file);
}

function clearMask() { const m = $("#paint-mask"), ctx = m.getContext("2d"); ctx.clearRect(0, 0, m.width, m.height); }

function brushAt(ev) {
  const m = $("#paint-mask"), r = m.getBoundingClientRect(), ctx = m.getContext("2d");
  const x = ((ev.clientX - r.left) / r.width) * m.width, y = ((ev.clientY - r.top) / r.height) * m.height;
  const radius = (Number($("#brush").value) / 24) * Math.max(2, m.width / 4);
  ctx.fillStyle = "#ff3b3b"; ctx.beginPath(); ctx.arc(x, y, radius, 0, 2 * Math.PI); ctx.fill();
}

function maskBlob() {
  const m = $("#paint-mask"), out = document.createElement("canvas"); out.width = m.width; out.height = m.height;
  const src = m.getContext("2d").getImageData(0, 0, m.width, m.height), ctx = out.getContext("2d"), dst = ctx.createImageData(m.width, m.height);
  for (let i = 0; i < src.data.length; i += 4) { const v = src.data[i + 3] > 0 ? 255 : 0; dst.data[i] = dst.data[i + 1] = dst.data[i + 2] = v; dst.data[i + 3] = 255; }
  ctx.putImageData(dst, 0, 0);
  return new Promise((ok) => out.toBlob(ok, "image/png"));
}

async function runEdit(e) {
  e.preventDefault();
  const fig = $("#stage-edit");
  if (!paint.ready) { stageParts(fig).cap.textContent = "choose an image first"; return; }
  const form = new FormData(), s = settings();
  form.append("image", await new Promise((ok) => $("#paint-img").toBlob(ok, "image/png")), "image.png");
  if ($("#edit-mode").value === "inpaint") form.append("mask", await maskBlob(), "mask.png");
  else form.append("strength", $("#strength").value);
  for (const k of ["model", "seed", "sampler", "steps"]) form.append(k, s[k]);
  if (s.class !== undefined) form.append("class", s.class);
  if (s.prompt) form.append("prompt", s.prompt);
  $("#edit-go").disabled = true;
  try { const r = await run(fig, "/api/edit/stream", { method: "POST", body: form }, $("#edit-mode").value); show(stageParts(fig), URL.createObjectURL(blobOf(r))); }
  catch (err) { stageParts(fig).cap.textContent = String(err.message || err); }
  finally { $("#edit-go").disabled = !current.editable; }
}

function wire() {
  document.querySelectorAll(".tab").forEach((t) => (t.onclick = () => {
    document.querySelectorAll(".tab, .panel").forEach((x) => x.classList.remove("active"));
    t.classList.add("active"); $(`#${t.dataset.tab}`).classList.add("active");
  }));
  $("#model").onchange = () => pickModel($("#model").value);
  $("#sampler").onchange = syncSampler;
  $("#dice").onclick = () => ($("#seed").value = Math.floor(Math.random() * 1e6));
  $("#gen-form").onsubmit = generate;
  $("#cmp-form").onsubmit = compare;
  $("#edit-form").onsubmit = runEdit;
  $("#edit-file").onchange = (ev) => ev.target.files[0] && loadEditImage(ev.target.files[0]);
  $("#edit-mode").onchange = () => ($(".opt-strength").hidden = $("#edit-mode").value !== "sdedit");
  $(".opt-strength").hidden = true;
  $("#clear-mask").onclick = clearMask;
  const m = $("#paint-mask");
  m.onpointerdown = (ev) => { if (!paint.ready) return; paint.down = true; m.setPointerCapture(ev.pointerId); brushAt(ev); };
  m.onpointermove = (ev) => paint.down && brushAt(ev);
  m.onpointerup = () => (paint.down = false);
}

async function start() {
  wire();
  try {
    const health = await (await api("/api/health")).json();
    $("#health").className = `dot ${health.ok ? "ok" : "bad"}`;
    models = (await (await api("/api/models")).json()).filter((m) => m.ok);
    fill($("#model"), models.map((m) => [m.name, `${m.name} (${m.kind})`]));
    if (models.length) pickModel(models[0].name);
    document.body.dataset.ready = "1";
  } catch (err) { $("#model-info").textContent = `cannot reach the server: ${err.message}`; $("#health").className = "dot bad"; }
}

start();
