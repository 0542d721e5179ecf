// Patronus explorer: pick an image, move a slider per prototype, see the decoded image and its re-encoded s.
// One render request is in flight at a time; slider moves while it runs are merged into the next one
// (debounced), and the server drops a request that a newer one of this page overtook. Beside each slider: its
// prototype's nearest training patches; the edit can be timed (a window LO <= t/T < HI of the decoding steps).
"use strict";

const $ = (id) => document.getElementById(id);
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4"];
const state = {
  info: null, cur: null, s: null, seq: 0, inflight: false, pending: false, timer: null,
  client: Math.random().toString(36).slice(2), offset: 0, a: null, b: null, lastImage: null,
  window: [0, 1], patches: null,
};

async function api(path, body, raw) {
  const opts = body === undefined ? {} : {
    method: "POST", body: raw ? body : JSON.stringify(body),
    headers: { "Content-Type": raw ? "application/octet-stream" : "application/json" },
  };
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new Error("the explorer server does not answer (is `patronus explore` still running?)");
  }
  let data;
  try { data = await res.json(); } catch (e) { throw new Error(`the server answered ${res.status} without JSON`); }
  if (!res.ok) throw new Error(data.error || `the server answered ${res.status}`);
  return data;
}

function say(text, ok) {
  const m = $("message");
  m.textContent = text || "";
  m.className = ok ? "ok" : "";
}

function fmt(v) { return v === null || v === undefined ? "n/a" : Number(v).toFixed(3); }

// ------------------------------------------------------------------ boxes over the images
function drawBoxes(boxId, boxes, ids) {
  const holder = $(boxId);
  holder.querySelectorAll(".box").forEach((b) => b.remove());
  if (!boxes) return;
  const size = state.info.image_size;
  ids.forEach((j, k) => {
    const [x0, y0, x1, y1] = boxes[j];
    const d = document.createElement("div");
    d.className = "box";
    d.style.left = (100 * x0 / size) + "%";
    d.style.top = (100 * y0 / size) + "%";
    d.style.width = (100 * (x1 - x0) / size) + "%";
    d.style.height = (100 * (y1 - y0) / size) + "%";
    d.style.borderColor = COLORS[k % COLORS.length];
    const tag = document.createElement("span");
    tag.textContent = "P" + j;
    tag.style.background = COLORS[k % COLORS.length];
    d.appendChild(tag);
    holder.appendChild(d);
  });
}

function topIds(s, k) {
  return s.map((v, j) => [v, j]).sort((p, q) => q[0] - p[0]).slice(0, k).map((p) => p[1]);
}

// ------------------------------------------------------------------ sliders
function buildSliders() {
  const rows = $("rows");
  rows.textContent = "";
  const order = topIds(state.cur.s, state.cur.s.length);
  for (const j of order) {
    const r = state.info.sliders[j];
    const lo = Math.min(r.min, state.cur.s[j]), hi = Math.max(r.max, state.cur.s[j]);
    const row = document.createElement("div");
    row.className = "proto";
    row.dataset.id = j;
    row.innerHTML = `<span class="name">P${j}</span><span class="pcell"></span>` +
      `<input type="range" aria-label="prototype ${j}"><span class="req"></span><span class="reached"></span>`;
    fillPatches(row, j);
    const input = row.querySelector("input");
    input.min = lo; input.max = hi; input.step = ((hi - lo) / 200) || 1e-4; input.value = state.cur.s[j];
    input.addEventListener("input", () => {
      state.s[j] = Number(input.value);
      updateRow(row, j);
      schedule();
    });
    row.addEventListener("mouseenter", () => {
      drawBoxes("orig-box", state.cur.boxes, [j]);
      drawBoxes("edit-box", state.editBoxes || state.cur.boxes, [j]);
    });
    row.addEventListener("mouseleave", showTopBoxes);
    rows.appendChild(row);
    updateRow(row, j);
  }
}

function updateRow(row, j, reached) {
  const changed = Math.abs(state.s[j] - state.cur.s[j]) > 1e-9;
  row.classList.toggle("edited", changed);
  row.querySelector(".req").textContent = fmt(state.s[j]);
  const cell = row.querySelector(".reached");
  if (reached !== undefined) {
    cell.textContent = fmt(reached[j]);
    cell.classList.remove("took", "missed");
    if (changed) {
      const rise = (reached[j] - state.cur.s[j]) / (state.s[j] - state.cur.s[j]);
      cell.classList.add(rise >= 0.5 ? "took" : "missed");
      cell.title = `rise ${rise.toFixed(2)} of the requested change`;
    } else {
      cell.title = "";
    }
  }
}

// ------------------------------------------------------------------ nearest training patches
function fillPatches(row, j) {
  const cell = row.querySelector(".pcell");
  cell.textContent = "";
  const p = state.patches;
  if (!p || !p.available) return;
  const im = document.createElement("img");
  im.className = "patches";
  im.src = p.prototypes[j].src;
  im.alt = `nearest training patches of P${j}`;
  im.title = `P${j}: the ${p.k} ${p.split} images (of ${p.images_searched} searched) whose best patch is nearest ` +
    `to it: ` + p.prototypes[j].nearest.map((n) => `${n.label} d=${n.distance.toFixed(3)}`).join(", ");
  cell.appendChild(im);
}

async function loadPatches() {
  try {
    state.patches = await api("/api/patches");
  } catch (e) {
    state.patches = { available: false, reason: `no nearest training patches: ${e.message}` };
  }
  const p = state.patches;
  $("patches-note").textContent = p.available
    ? `Beside each slider: its ${p.k} nearest training patches (${p.split} split, ${p.images_searched} images ` +
      `searched; as in \`patronus report\`; hover for classes and distances).`
    : p.reason;
  document.querySelectorAll(".proto").forEach((row) => fillPatches(row, Number(row.dataset.id)));
}

// ------------------------------------------------------------------ the window of timesteps
function readWindow() {
  state.window = [Number($("win-lo").value), Number($("win-hi").value)];
  windowText();
}

function windowText() {
  const [lo, hi] = state.window, w = state.info.window;
  $("window-box").classList.toggle("timed", !(lo <= 0 && hi >= 1));
  if (!(Number.isFinite(lo) && Number.isFinite(hi) && lo >= 0 && hi <= 1 && lo <= hi)) {
    $("win-text").textContent = "not a window: give 0 ≤ down-to ≤ from ≤ 1";
    return;
  }
  const ts = w.timesteps, inside = ts.filter((t) => lo <= t / w.T && t / w.T < hi);
  let text;
  if (inside.length === ts.length) text = `every step: the plain edit (${ts.length} steps)`;
  else if (!inside.length) text = `no step: the edited s is never used, so this decodes the reconstruction`;
  else {
    text = `the edited s on ${inside.length} of ${ts.length} steps (t = ${inside[0]} … ${inside[inside.length - 1]}` +
      ` of T = ${w.T}), the picked image's own s on the other ${ts.length - inside.length}`;
  }
  $("win-text").textContent = `Steps with ${lo} ≤ t/T < ${hi}: ${text}. (1 = pure noise, where decoding starts.)`;
}

function showReached(reached) {
  document.querySelectorAll(".proto").forEach((row) => updateRow(row, Number(row.dataset.id), reached));
}

function showTopBoxes() {
  if (!state.cur) return;
  const ids = topIds(state.cur.s, 3);
  drawBoxes("orig-box", state.cur.boxes, ids);
  drawBoxes("edit-box", state.editBoxes || state.cur.boxes, ids);
}

// ------------------------------------------------------------------ rendering (debounced, one in flight)
function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => {
    if (state.inflight) { state.pending = true; return; }
    render();
  }, 30);
}

async function render() {
  if (!state.cur) return;
  state.inflight = true;
  const seq = ++state.seq;
  const key = state.cur.key;
  const t0 = performance.now();
  try {
    const out = await api("/api/render", { key, s: state.s, seq, client: state.client, window: state.window });
    // keep an answer only if it is the newest and still about the picked image (a pick may have overtaken it)
    if (!out.stale && seq === state.seq && state.cur && key === state.cur.key) {
      setEdited(out.image, out.s_requested);
      state.editBoxes = out.boxes;
      showReached(out.s_reached);
      showTopBoxes();
      $("edited").dataset.seq = String(seq);
      const timed = out.window_steps.length < state.info.window.timesteps.length
        ? `, edited s on ${out.window_steps.length} of ${state.info.window.timesteps.length} steps` : "";
      $("timing").textContent = `(${out.seconds.toFixed(2)} s model, ` +
        `${((performance.now() - t0) / 1000).toFixed(2)} s total${timed})`;
      $("edited").dataset.window = out.window.join(",");
      say("", true);
    }
  } catch (e) {
    say(e.message);
  } finally {
    state.inflight = false;
    if (state.pending) { state.pending = false; render(); }
  }
}

function setEdited(src, s) {
  $("edited").src = src;
  state.lastImage = src;
  $("dl-img").href = src;
  const blob = new Blob([JSON.stringify({ run: state.info.run, image: state.cur.name, s_requested: s,
    window: state.window, window_rule: state.info.window.rule, guidance: state.info.guidance }, null, 1)],
  { type: "application/json" });
  const old = $("dl-s").href;
  if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  $("dl-s").href = URL.createObjectURL(blob);
  $("dl-img").classList.remove("disabled");
  $("dl-s").classList.remove("disabled");
}

// ------------------------------------------------------------------ the classifier's counterfactual
function counterfactualIntro() {
  const c = state.info.classifier;
  $("cf-box").hidden = !c;
  if (!c) return;
  $("cf-show").textContent = `Flip ${c.attribute}`;
  const protos = c.flip.prototypes.map((p) => "P" + p.prototype).join(", ");
  $("cf-what").textContent = `${c.file}: p(${c.predicts}); edits ${protos}`;
  $("cf-box").title = c.rule;
}

function clearCounterfactual() {
  $("cf-figure").hidden = true;
  $("cf-image").removeAttribute("src");
  $("cf-text").textContent = "";
  $("cf-show").disabled = !state.cur;
}

async function counterfactual() {
  if (!state.cur) return;
  const key = state.cur.key;
  $("cf-show").disabled = true;
  say("flipping the attribute…", true);
  try {
    const out = await api("/api/counterfactual", { key });
    if (!state.cur || key !== state.cur.key) return;  // another image was picked meanwhile
    const c = state.info.classifier;
    $("cf-image").src = out.image;
    $("cf-text").textContent = `${out.edit} (it ${out.has_attribute ? "has" : "lacks"} ${c.attribute} by ` +
      `${out.has_attribute_from}): the classifier's p(${c.predicts}) ${fmt(out.p_before)} before → ` +
      `${fmt(out.p_after)} after (${out.seconds.toFixed(2)} s)`;
    $("cf-figure").hidden = false;
    say("", true);
  } catch (e) { say(e.message); } finally { $("cf-show").disabled = !state.cur; }
}

// ------------------------------------------------------------------ picking
function picked(out) {
  clearTimeout(state.timer);
  state.pending = false;
  state.seq++;  // any render still on its way belongs to the previous image
  state.cur = out;
  state.s = out.s.slice();
  state.editBoxes = null;
  $("orig").src = out.image;
  $("orig-name").textContent = out.name;
  setEdited(out.image, out.s);
  $("edited").dataset.seq = String(state.seq);
  $("timing").textContent = `(inverted in ${out.invert_seconds.toFixed(2)} s)`;
  ["reset", "set-a", "set-b"].forEach((id) => { $(id).disabled = false; });
  clearCounterfactual();
  buildSliders();
  showReached(out.s);
  showTopBoxes();
  document.querySelectorAll(".thumbs img").forEach((im) => im.classList.toggle("current", im.alt === out.name));
  say(`${out.name} picked; move a slider`, true);
}

async function pick(fn, what) {
  say(`${what}…`, true);
  try { picked(await fn()); } catch (e) { say(e.message); }
}

async function loadThumbs(offset) {
  try {
    const out = await api(`/api/thumbs?offset=${offset}&count=48`);
    state.offset = out.offset;
    const grid = $("thumbs");
    grid.textContent = "";
    for (const im of out.images) {
      const el = document.createElement("img");
      el.src = im.src;
      el.alt = `test:${im.index}`;
      el.title = `test image ${im.index}`;
      el.addEventListener("click", () => pick(() => api("/api/pick", { index: im.index }), `inverting test image ${im.index}`));
      grid.appendChild(el);
    }
    $("page").textContent = out.total ? `${out.offset} … ${out.offset + out.images.length - 1} of ${out.total}`
      : out.reason;
  } catch (e) { say(e.message); }
}

function upload(file) {
  const limit = state.info.max_upload_mib * 1024 * 1024;
  if (file.size > limit) {
    say(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB; the limit is ${state.info.max_upload_mib} MiB`);
    return;
  }
  pick(async () => api(`/api/upload?name=${encodeURIComponent(file.name)}`, await file.arrayBuffer(), true),
    `reading ${file.name}`);
}

async function interpolate() {
  if (!state.a || !state.b) return;
  const alpha = Number($("alpha").value);
  try {
    const out = await api("/api/interpolate", { a: state.a.key, b: state.b.key, alpha });
    $("edited").src = out.image;
    $("dl-img").href = out.image;
    $("edited").dataset.seq = String(++state.seq);
    $("timing").textContent = `(A→B at ${alpha.toFixed(2)}, ${out.seconds.toFixed(2)} s)`;
  } catch (e) { say(e.message); }
}

// ------------------------------------------------------------------ start
async function start() {
  try {
    state.info = await api("/api/info");
  } catch (e) { say(e.message); return; }
  const i = state.info;
  $("model").textContent = `${i.run} · ${i.dataset} ${i.image_size}px · ${i.num_prototypes} prototypes · ` +
    `${i.steps} ${i.inversion.toUpperCase()} steps per update`;
  $("index").max = i.test_images - 1;
  $("upload-hint").textContent = `Uploads: any image file up to ${i.max_upload_mib} MiB; it is converted to ` +
    `${i.channels === 1 ? "greyscale" : "RGB"} ${i.image_size} × ${i.image_size}.`;
  $("guidance").textContent = `Every edit is ${i.guidance.text}.`;
  $("guidance").title = "the guidance the edit engine applies to these decodes (docs/explore.md)";
  windowText();
  counterfactualIntro();
  $("cf-show").addEventListener("click", counterfactual);
  ["win-lo", "win-hi"].forEach((id) => $(id).addEventListener("input", () => { readWindow(); schedule(); }));
  $("win-full").addEventListener("click", () => {
    $("win-lo").value = "0"; $("win-hi").value = "1"; readWindow(); schedule();
  });
  const patches = loadPatches();  // beside the sliders when they arrive; the page does not wait for them
  $("prior").disabled = !i.prior;
  if (!i.prior) $("prior").title = "this run has no prior (patronus train-prior --run RUN)";
  $("prev").addEventListener("click", () => loadThumbs(Math.max(0, state.offset - 48)));
  $("next").addEventListener("click", () => loadThumbs(state.offset + 48));
  $("open").addEventListener("click", () => {
    const n = Number($("index").value);
    pick(() => api("/api/pick", { index: n }), `inverting test image ${n}`);
  });
  $("upload").addEventListener("change", (ev) => { if (ev.target.files[0]) upload(ev.target.files[0]); ev.target.value = ""; });
  $("prior").addEventListener("click", () =>
    pick(() => api("/api/prior", { seed: Number($("prior-seed").value) }), "sampling from the prior"));
  $("reset").addEventListener("click", () => {
    if (!state.cur) return;
    state.s = state.cur.s.slice();
    buildSliders();
    render();
  });
  $("set-a").addEventListener("click", () => { state.a = state.cur; abText(); });
  $("set-b").addEventListener("click", () => { state.b = state.cur; abText(); });
  $("alpha").addEventListener("input", () => { clearTimeout(state.itimer); state.itimer = setTimeout(interpolate, 60); });
  await loadThumbs(0);
  if (i.test_images) await pick(() => api("/api/pick", { index: 0 }), "inverting test image 0");
  else {
    ["open", "index", "prev", "next"].forEach((id) => { $(id).disabled = true; });
    say(`${i.no_test_images}: upload an image${i.prior ? " or sample one from the prior" : ""}`, true);
  }
  await patches;
}

function abText() {
  $("ab").textContent = `A = ${state.a ? state.a.name : "—"}, B = ${state.b ? state.b.name : "—"}`;
  $("alpha").disabled = !(state.a && state.b && state.a.key !== state.b.key);
  if (!$("alpha").disabled) interpolate();
}

start();
