// The demo page: a drawing pad, and the maps of every layer as the server computes them.
// The page only draws; the network runs on the server (lenet/demo/server.py).
"use strict";

const SQUASH = 1.7159;                 // f(a) = 1.7159 tanh(2a/3) lies in (-SQUASH, SQUASH)
const INPUT_RANGE = [-0.1, 1.175];     // lenet.data.preprocess: background, full ink
const LAYOUT = {       // columns of maps, CSS pixels per map pixel (before fitting the width)
  input: { columns: 1, zoom: 4 },
  C1: { columns: 1, zoom: 2.5 },
  S2: { columns: 1, zoom: 5 },
  C3: { columns: 2, zoom: 5 },
  S4: { columns: 2, zoom: 10 },
  C5: { zoom: 18 },
  F6: { zoom: 14 },
};
const SHAPES = { input: [1, 32, 32], C1: [6, 28, 28], S2: [6, 14, 14], C3: [16, 10, 10],
  S4: [16, 5, 5] };
const C5_GRID = [20, 6], F6_GRID = [12, 7];   // rows, columns (as lenet show maps draws)

const $ = (selector) => document.querySelector(selector);
const pad = $("#pad"), maps = $("#maps");
const ctx = pad.getContext("2d", { willReadFrequently: true });
let info = { classes: ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"], bitmaps: null,
  noun: "digit" };
const withArticle = (word) => (/^[aeiou]/.test(word) ? "an " : "a ") + word;   // "an item"
let view = "draw";
const canvases = {};                   // layer name -> its canvases, in map order

// ------------------------------------------------------------------ maps
function canvas(width, height, zoom, layer, index) {
  const c = document.createElement("canvas");
  c.width = width;
  c.height = height;
  c.dataset.zoom = zoom;
  c.dataset.layer = layer;
  c.dataset.map = index;
  return c;
}

// Every canvas at its zoom times one factor: the layers in one row that fills the maps'
// width where they fit at 0.7 of their size or more; on a narrower screen (a phone) they
// wrap onto several rows at up to their size, the widest layer no wider than the maps.
function fitMaps() {
  let pixels = 0, gaps = 16 * (Object.keys(LAYOUT).length - 1);   // between the layers
  let widest = 0;
  for (const [name, { columns = 1, zoom }] of Object.entries(LAYOUT)) {
    const width = name === "C5" ? C5_GRID[1] : name === "F6" ? F6_GRID[1] : SHAPES[name][2];
    pixels += columns * width * zoom;
    gaps += 4 * (columns - 1);                                       // inside a grid
    widest = Math.max(widest, columns * width * zoom + 4 * (columns - 1));
  }
  const room = maps.clientWidth - 2;
  const row = (room - gaps) / pixels;
  const factor = row >= 0.7 ? Math.min(1.6, row) : Math.min(1, room / widest);
  maps.classList.toggle("wrapped", row < 0.7);
  for (const c of maps.querySelectorAll("canvas")) {
    c.style.width = `${Math.floor(c.width * c.dataset.zoom * factor)}px`;
    c.style.height = `${Math.floor(c.height * c.dataset.zoom * factor)}px`;
  }
}

function buildMaps() {
  for (const [name, [count, h, w]] of Object.entries(SHAPES)) {
    const { columns, zoom } = LAYOUT[name];
    const grid = document.createElement("div");
    grid.className = "grid";
    const rows = Math.ceil(count / columns);
    grid.style.gridTemplateRows = `repeat(${rows}, auto)`;
    grid.style.gridAutoFlow = "column";          // map k at (k % rows, k / rows)
    canvases[name] = [];
    for (let k = 0; k < count; k++) {
      const c = canvas(w, h, zoom, name, k);
      canvases[name].push(c);
      grid.append(c);
    }
    maps.querySelector(`[data-layer="${name}"]`).append(grid);
  }
  canvases.C5 = [canvas(C5_GRID[1], C5_GRID[0], LAYOUT.C5.zoom, "C5", 0)];
  maps.querySelector('[data-layer="C5"]').append(canvases.C5[0]);
  const pair = document.createElement("div");
  pair.className = "pair";
  canvases.F6 = [canvas(F6_GRID[1], F6_GRID[0], LAYOUT.F6.zoom, "F6", 0)];
  canvases.bitmap = [canvas(F6_GRID[1], F6_GRID[0], LAYOUT.F6.zoom, "bitmap", 0)];
  for (const [c, label] of [[canvases.F6[0], "F6 output"], [canvases.bitmap[0], "bitmap"]]) {
    const cell = document.createElement("div");
    const text = document.createElement("span");
    text.textContent = label;
    if (label === "bitmap") text.id = "bitmap-label";
    cell.append(c, text);
    pair.append(cell);
  }
  maps.querySelector('[data-layer="F6"]').append(pair);
  fitMaps();
}
window.addEventListener("resize", fitMaps);

// values [offset, offset + w*h) of a Float32Array as greys: lo white, hi black
function paint(c, values, offset, lo, hi) {
  const image = c.getContext("2d").createImageData(c.width, c.height);
  for (let i = 0; i < c.width * c.height; i++) {
    const g = Math.round(255 * (hi - values[offset + i]) / (hi - lo));
    const v = Math.min(255, Math.max(0, g));
    image.data.set([v, v, v, 255], 4 * i);
  }
  c.getContext("2d").putImageData(image, 0, 0);
}

function floats(layer) {
  const text = atob(layer.data);
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}

// Clears every map; `shows` is what the blank maps now stand for (#maps' version).
function blankMaps(shows) {
  maps.dataset.version = shows;
  for (const list of Object.values(canvases)) {
    for (const c of list) c.getContext("2d").clearRect(0, 0, c.width, c.height);
  }
  $("#answer").textContent = "";
  $("#margin").textContent = "";
  $("#bitmap-label").textContent = "bitmap";
  $("#penalties").replaceChildren();
  $("#timing").textContent = "";
}

function render(answer, version) {
  for (const name of Object.keys(SHAPES)) {
    const values = floats(answer.layers[name]);
    const [, h, w] = SHAPES[name];
    const [lo, hi] = name === "input" ? INPUT_RANGE : [-SQUASH, SQUASH];
    canvases[name].forEach((c, k) => paint(c, values, k * h * w, lo, hi));
  }
  paint(canvases.C5[0], floats(answer.layers.C5), 0, -SQUASH, SQUASH);
  paint(canvases.F6[0], floats(answer.layers.F6), 0, -SQUASH, SQUASH);
  if (info.bitmaps) paint(canvases.bitmap[0], info.bitmaps[answer.answer], 0, -SQUASH, SQUASH);
  $("#bitmap-label").textContent = `bitmap ${info.classes[answer.answer]}`;
  renderPenalties(answer.penalties, answer.answer);
  const name = answer.name;
  $("#answer").textContent = name;
  $("#answer").classList.toggle("word", name.length > 2);
  const sorted = [...answer.penalties].sort((a, b) => a - b);
  $("#margin").textContent = `margin to the runner-up ${(sorted[1] - sorted[0]).toFixed(2)}`;
  $("#timing").textContent = `server: ${answer.ms.toFixed(1)} ms for every layer (${info.device})`;
  maps.dataset.version = version;
}

function renderPenalties(penalties, winner) {
  const largest = Math.max(...penalties);
  const rows = penalties.map((y, k) => {
    const row = document.createElement("div");
    row.className = "bar-row" + (k === winner ? " winner" : "");
    row.dataset.penalty = String(y);
    row.dataset.class = String(k);
    row.innerHTML = '<span class="name"></span><div class="track"><div class="bar"></div>' +
      '</div><span class="value"></span>';
    row.querySelector(".name").textContent = info.classes[k];
    row.querySelector(".name").title = info.classes[k];
    row.querySelector(".bar").style.width = `${(100 * y / largest).toFixed(1)}%`;
    row.querySelector(".value").textContent = y.toFixed(1);
    return row;
  });
  $("#penalties").replaceChildren(...rows);
}

function status(text) { $("#status").textContent = text; }

// ------------------------------------------------------------------ pad
let version = 0, sent = 0, inflight = false, blank = true, last = null;
let changed = 0;         // performance.now() of the drawing's latest change

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  blank = true;
  version++;
  pad.dataset.version = version;
  blankMaps(version);
  status("");
}

// The pad holds only greys (black ink on white), so its red channel is the grey level
// that a PNG of it gives `lenet predict`.
function greyPixels() {
  const rgba = ctx.getImageData(0, 0, pad.width, pad.height).data;
  const grey = new Uint8Array(pad.width * pad.height);
  for (let i = 0; i < grey.length; i++) grey[i] = rgba[4 * i];
  let text = "";
  for (let i = 0; i < grey.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, grey.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

async function post(step) {
  const body = JSON.stringify({ width: pad.width, height: pad.height, pixels: greyPixels(),
    step });
  const response = await fetch("/api/draw", { method: "POST", body,
    headers: { "Content-Type": "application/json" } });
  return [response.ok, await response.json()];
}

// One request at a time; when the drawing changed meanwhile, the newest goes next.
async function send() {
  if (inflight || blank || sent === version) return;
  inflight = true;
  document.body.dataset.busy = "1";
  const v = version;
  sent = v;
  try {
    const [ok, answer] = await post(0);
    if (v === version && view === "draw") {
      if (ok) {
        render(answer, v);
        status("");
        // from the last ink to its answer drawn (bench/demo_latency.py reads it)
        maps.dataset.latency = (performance.now() - changed).toFixed(2);
      } else {
        status(answer.error);
      }
    }
  } catch (e) {
    status(`no answer from the server: ${e.message}`);
  } finally {
    inflight = false;
    document.body.dataset.busy = "0";
    if (sent !== version && !blank) send();
  }
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width,
    (event.clientY - box.top) * pad.height / box.height];
}

const PEN = 20;   // pixels of the 280x280 pad: a stroke about as thick as MNIST's

function stroke(to) {
  ctx.fillStyle = ctx.strokeStyle = "#000";
  ctx.lineWidth = PEN;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  if (last) {
    ctx.moveTo(...last);
    ctx.lineTo(...to);
    ctx.stroke();
  } else {                                   // a stroke's first point: a dot
    ctx.arc(...to, PEN / 2, 0, 2 * Math.PI);
    ctx.fill();
  }
  last = to;
  blank = false;
  changed = performance.now();
  version++;
  pad.dataset.version = version;
  send();
}

pad.addEventListener("pointerdown", (event) => {
  pad.setPointerCapture(event.pointerId);
  last = null;
  stroke(point(event));
});
pad.addEventListener("pointermove", (event) => {
  if (!pad.hasPointerCapture(event.pointerId)) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) stroke(point(e));
});
function endStroke(event) {
  if (!pad.hasPointerCapture(event.pointerId)) return;
  pad.releasePointerCapture(event.pointerId);
  last = null;
  send();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
$("#clear").addEventListener("click", clearPad);

// ------------------------------------------------- mistakes and distortions
const errors = { source: "mistakes", k: 0, step: 0 };

function describe(d) {
  if (!d) return "original (no distortion)";
  const sign = (x) => (x >= 0 ? "+" : "\u2212") + Math.abs(x).toFixed(2);
  return `shift ${sign(d.shift_x)}, ${sign(d.shift_y)} px \u00b7 scale ${d.scale.toFixed(3)}` +
    ` \u00b7 squeeze ${d.squeeze.toFixed(3)} \u00b7 shear ${sign(d.shear)}`;
}

async function showErrors() {
  const { source, k, step } = errors;
  $("#step-count").textContent = step ? `distortion ${step}` : "original";
  $("#mistake-stepper").hidden = source !== "mistakes";
  let ok, answer;
  try {
    if (source === "drawing") {
      if (blank) {
        blankMaps("errors-drawing-blank");
        const what = withArticle(info.noun);
        $("#mistake-caption").textContent = `draw ${what} first (Draw ${what})`;
        return;
      }
      [ok, answer] = await post(step);
    } else {
      if (info.mistakes !== "ready") return waitForMistakes();
      const response = await fetch(`/api/mistake?k=${k}&step=${step}`);
      [ok, answer] = [response.ok, await response.json()];
    }
  } catch (e) {
    return status(`no answer from the server: ${e.message}`);
  }
  if (view !== "errors" || errors.k !== k || errors.step !== step || errors.source !== source) {
    return;                                    // the user moved on meanwhile
  }
  if (!ok) return status(answer.error);
  status("");
  render(answer, `errors-${source}-${k}-${step}`);
  $("#step-caption").textContent = describe(answer.distortion);
  if (answer.mistake) {
    const m = answer.mistake;
    $("#mistake-count").textContent = `mistake ${m.k + 1} of ${m.count}`;
    $("#mistake-caption").textContent = `${info.test_title} test image #${m.index}: ` +
      `labelled ${m.label_name}, read as ${info.classes[m.predicted]} ` +
      `(margin ${m.margin.toFixed(2)}; surest mistakes first, as lenet show errors ` +
      `orders them)${info.test_note ? `. Note: ${info.test_note}` : ""}`;
  } else {
    $("#mistake-caption").textContent = "your drawing, prepared as lenet predict prepares " +
      "an image file";
  }
}

async function waitForMistakes() {
  blankMaps("errors-waiting");
  $("#mistake-count").textContent = "mistake";
  while (view === "errors" && info.mistakes === "computing") {
    $("#mistake-caption").textContent = "finding the test set's mistakes\u2026";
    await new Promise((resolve) => setTimeout(resolve, 1000));
    await loadInfo();
  }
  if (info.mistakes === "ready") return showErrors();
  $("#mistake-caption").textContent = `no mistakes to show: ${info.reason}`;
}

function move(what, delta) {
  if (what === "k") {
    const count = info.mistake_count || 1;
    errors.k = (errors.k + delta + count) % count;
    errors.step = 0;
  } else {
    errors.step = Math.min(info.max_step, Math.max(0, errors.step + delta));
  }
  showErrors();
}

$("#prev-mistake").addEventListener("click", () => move("k", -1));
$("#next-mistake").addEventListener("click", () => move("k", 1));
$("#prev-step").addEventListener("click", () => move("step", -1));
$("#next-step").addEventListener("click", () => move("step", 1));
for (const radio of document.querySelectorAll('input[name="source"]')) {
  radio.addEventListener("change", () => {
    errors.source = radio.value;
    errors.step = 0;
    showErrors();
  });
}
document.addEventListener("keydown", (event) => {
  if (view !== "errors" || event.target.tagName === "INPUT") return;
  const keys = { ArrowLeft: ["k", -1], ArrowRight: ["k", 1], ArrowUp: ["step", -1],
    ArrowDown: ["step", 1] };
  // the mistakes' keys only while mistakes are shown (the drawing keeps its distortion)
  if (keys[event.key] && (keys[event.key][0] === "step" || errors.source === "mistakes")) {
    event.preventDefault();
    move(...keys[event.key]);
  }
});

function setView(name) {
  view = name;
  $("#view-draw").classList.toggle("active", name === "draw");
  $("#view-errors").classList.toggle("active", name === "errors");
  $("#draw-panel").hidden = name !== "draw";
  $("#errors-panel").hidden = name !== "errors";
  status("");
  if (name === "errors") return showErrors();
  blankMaps(blank ? version : "draw-waiting");   // a blank pad's maps are blank
  sent = 0;
  send();
}
$("#view-draw").addEventListener("click", () => setView("draw"));
$("#view-errors").addEventListener("click", () => setView("errors"));

// ------------------------------------------------------------------ start
async function loadInfo() {
  try {
    info = await (await fetch("/api/info")).json();
  } catch (e) {
    status(`no answer from the server: ${e.message}`);
  }
  $("#about").textContent = "LeCun et al. (1998) \u00b7 weights trained on " +
    `${info.dataset || "the checkpoint's data"} \u00b7 computed on the server's ${info.device}`;
  const noun = info.noun || "digit";     // what the model's classes are: the page's words
  $("#view-draw").textContent = `Draw ${withArticle(noun)}`;
  pad.setAttribute("aria-label", `drawing pad: draw one ${noun}`);
  $("#hint").textContent = `draw one ${noun} with the mouse, a pen or a finger`;
}

buildMaps();
clearPad();
loadInfo();
