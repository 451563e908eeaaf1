// basegpt explorer: the page's script. Plain JavaScript, no build step, no external files.
// Every number it shows comes from the server: /explorer/* (tokens, next token, attention,
// the model, the training curves) and the OpenAI-compatible /v1/completions (generation).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { view: "tokens", model: null, attention: null, query: null };

// ------------------------------------------------------------------ requests

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim() || localStorage.getItem("basegpt-key");
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

async function call(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  return answer(response);
}

async function answer(response) {
  let data = null;
  try { data = await response.json(); } catch (e) { /* not JSON: reported below */ }
  if (response.status === 401) {
    $("key-box").hidden = false;
    $("api-key").focus();
  }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return data;
}

function showError(error) {
  $("error").textContent = error ? String(error.message || error) : "";
  $("error").hidden = !error;
}

// Run `fn` for the current view; the newest call wins, errors go to the banner.
let generation = 0;
async function refresh() {
  const mine = ++generation;
  try {
    showError(null);
    await VIEWS[state.view](() => mine === generation);
  } catch (error) {
    if (mine === generation) showError(error);
  }
}

let timer = null;
function refreshSoon() {
  clearTimeout(timer);
  timer = setTimeout(refresh, 150);
}

// ------------------------------------------------------------------ shared bits

function escapeText(s) { return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }
function hex(bytes) { return bytes.map((b) => b.toString(16).padStart(2, "0")).join(" "); }
function pct(p) { return p >= 0.001 || p === 0 ? (100 * p).toFixed(1) + "%" : (100 * p).toExponential(1) + "%"; }
function visible(text) { return text.replace(/\n/g, "\u21b5\n").replace(/\t/g, "\u2192").replace(/ /g, "\u00b7"); }
function hue(id) { return (id * 47) % 360; }

function sampling() {
  const out = {};
  for (const name of ["temperature", "top_k", "top_p", "min_p", "repetition_penalty"]) {
    const value = $(name).value.trim();
    if (value !== "") out[name] = name === "top_k" ? parseInt(value, 10) : parseFloat(value);
  }
  return out;
}

const tip = $("tip");
function showTip(event, html) {
  tip.innerHTML = html;
  tip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = event.clientY + 18 + tip.offsetHeight > window.innerHeight
    ? event.clientY - tip.offsetHeight - 10 : event.clientY + 18;
  tip.style.left = x + "px";
  tip.style.top = y + "px";
}
function hideTip() { tip.hidden = true; }

function tokenSpan(token, label) {
  const span = document.createElement("span");
  span.className = "tok";
  span.style.background = `hsl(${hue(token.id)}, 70%, 86%)`;
  span.innerHTML = escapeText(visible(label)) + (token.showId ? `<sub>${token.id}</sub>` : "");
  return span;
}

// ------------------------------------------------------------------ views

const VIEWS = {};

VIEWS.tokens = async (current) => {
  const mode = document.querySelector("input[name=tok-mode]:checked").value;
  const data = await call("/explorer/tokens", { model: state.model, text: $("text").value, mode });
  if (!current()) return;
  const box = $("tok-spans");
  box.innerHTML = "";
  for (const t of data.tokens) {
    const span = tokenSpan({ id: t.id, showId: true }, t.text);
    span.addEventListener("mousemove", (e) => showTip(e, tokenCard(t)));
    span.addEventListener("mouseleave", hideTip);
    box.appendChild(span);
  }
  $("tok-stats").textContent = `${data.n_bytes} bytes \u2192 ${data.n_tokens} tokens` +
    (data.bytes_per_token ? ` (${data.bytes_per_token.toFixed(2)} bytes/token)` : "");
};

function tokenCard(t) {
  let html = `<b>token ${t.id}</b> <code>${escapeText(t.text)}</code><br>` +
    `${t.bytes.length} byte${t.bytes.length === 1 ? "" : "s"}: <code>${hex(t.bytes)}</code><br>`;
  if (t.parents) {
    const [[a, b], [ta, tb]] = [t.parents, t.parent_texts];
    html += `merge of ${a} <code>${escapeText(ta)}</code> + ${b} <code>${escapeText(tb)}</code>`;
  } else if (t.id < 256) {
    html += "a single byte: one of the 256 tokens every text starts from";
  } else {
    html += "a special token";
  }
  return html;
}

VIEWS.next = async (current) => {
  const k = parseInt($("next-k").value, 10) || 15;
  const data = await call("/explorer/next", { model: state.model, text: $("text").value, k, ...sampling() });
  if (!current()) return;
  const box = $("next-bars");
  box.innerHTML = "";
  const top = Math.max(...data.top.map((t) => Math.max(t.prob, t.model_prob)), 1e-9);
  for (const t of data.top) {
    const row = [document.createElement("div"), document.createElement("div"), document.createElement("div")];
    row[0].className = "bar-label";
    row[0].textContent = visible(t.text);
    row[0].title = `token ${t.id}`;
    row[1].className = "bar-track";
    row[1].innerHTML = `<div class="bar-model" style="width:${100 * t.model_prob / top}%"></div>` +
      `<div class="bar-prob" style="width:${100 * t.prob / top}%"></div>`;
    row[2].className = "bar-num";
    row[2].textContent = t.prob > 0 ? `${pct(t.prob)} (model ${pct(t.model_prob)})` : `removed (model ${pct(t.model_prob)})`;
    for (const cell of row) {
      if (t.prob === 0) cell.classList.add("bar-off");
      box.appendChild(cell);
    }
  }
  $("next-stats").textContent = (data.greedy ? "greedy: the most likely token is always taken; " : "") +
    `${data.kept} of ${data.vocab_size} tokens can be sampled` +
    (data.window_tokens < data.context_tokens ? `; the model sees the last ${data.window_tokens} of ${data.context_tokens} tokens` : "");
};

VIEWS.generate = async () => { /* generation runs on the button, not on every keystroke */ };

// Generate: stream the text through /v1/completions with logprobs; the last chunk brings each
// token's probability and its top-5 alternatives, and the text becomes hoverable tokens.
let streamAbort = null;
async function generate() {
  const prompt = $("text").value;
  const seed = $("seed").value.trim() === "" ? Math.floor(Math.random() * 2 ** 31) : parseInt($("seed").value, 10);
  const body = { model: state.model, prompt, max_tokens: parseInt($("max-tokens").value, 10) || 60, seed, ...sampling() };
  const out = $("gen-out");
  out.innerHTML = `<span class="prompt">${escapeText(prompt)}</span>`;
  const live = document.createElement("span");
  out.appendChild(live);
  $("gen-go").disabled = true;
  $("gen-stop").disabled = false;
  $("gen-stats").textContent = `seed ${seed}: generating\u2026`;
  showError(null);
  streamAbort = new AbortController();
  const started = performance.now();
  let text = "", logprobs = null, stopped = false;
  try {
    const response = await fetch("/v1/completions", { method: "POST", headers: headers(),
      body: JSON.stringify({ ...body, stream: true, logprobs: 5 }), signal: streamAbort.signal });
    if (!response.ok) await answer(response);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut).trim();
        buffer = buffer.slice(cut + 2);
        if (!event.startsWith("data: ") || event === "data: [DONE]") continue;
        const chunk = JSON.parse(event.slice(6));
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices) {
          text += choice.text;
          if (choice.logprobs) logprobs = choice.logprobs;
        }
        live.textContent = text;
        out.scrollTop = out.scrollHeight;
      }
    }
  } catch (error) {
    if (error.name === "AbortError") stopped = true; else showError(error);
  } finally {
    $("gen-go").disabled = false;
    $("gen-stop").disabled = true;
  }
  const seconds = (performance.now() - started) / 1000;
  $("gen-stats").textContent = `seed ${seed}: ${stopped ? "stopped" : "done"} in ${seconds.toFixed(2)} s`;
  if (stopped || !text || !logprobs) return;
  out.replaceChild(tokenSpans(text, logprobs), live);
  $("gen-stats").textContent = `seed ${seed}: ${logprobs.tokens.length} tokens in ${seconds.toFixed(2)} s; hover a token for its probability and the alternatives`;
}

// One span per generated token, cut from the text at logprobs.text_offset (counted in code
// points, as Python counts). A token that only begins a character (one byte of several) has
// no text of its own: it joins the span of the token that completes the character.
function tokenSpans(text, logprobs) {
  const box = document.createElement("span");
  const chars = Array.from(text), offsets = logprobs.text_offset;
  let pending = [];
  logprobs.tokens.forEach((token, i) => {
    pending.push(i);
    const piece = chars.slice(offsets[i], i + 1 < offsets.length ? offsets[i + 1] : chars.length).join("");
    if (piece === "" && i + 1 < offsets.length) return;
    const span = document.createElement("span");
    const steps = pending;
    const p = Math.exp(logprobs.token_logprobs[steps[steps.length - 1]]);
    span.className = "gen" + (p < 0.05 ? " unlikely" : "");
    span.textContent = piece;
    span.addEventListener("mousemove", (e) => showTip(e, steps.map((j) => stepCard(logprobs, j)).join("<hr>")));
    span.addEventListener("mouseleave", hideTip);
    box.appendChild(span);
    pending = [];
  });
  return box;
}

function stepCard(logprobs, i) {
  const token = logprobs.tokens[i], p = Math.exp(logprobs.token_logprobs[i]);
  const alternatives = Object.entries(logprobs.top_logprobs[i] || {});
  return `<b><code>${escapeText(visible(token))}</code></b> had probability <b>${pct(p)}</b><br>` +
    `the model's top 5 there:<table>` + alternatives.map(([t, lp]) =>
      `<tr><td><code>${escapeText(visible(t))}</code></td><td>${pct(Math.exp(lp))}</td></tr>`).join("") +
    "</table><span style='color:#b8c3d9'>(the model's own probabilities, before temperature and filters)</span>";
}

// Only the chosen layer's weights are asked for (a long text's every layer and head would be
// megabytes); choosing another layer asks again.
VIEWS.attention = async (current) => {
  const layerSelect = $("att-layer");
  const layer = layerSelect.value === "" ? 0 : parseInt(layerSelect.value, 10);
  const data = await call("/explorer/attention", { model: state.model, text: $("text").value, layer });
  if (!current()) return;
  state.attention = data;
  layerSelect.innerHTML = data.layers.map((_, l) => `<option value="${l}">${l}</option>`).join("");
  layerSelect.value = layer;
  fillHeads();
  if (state.query === null || state.query >= data.tokens.length) state.query = data.tokens.length - 1;
  drawAttention();
};

function fillHeads() {
  const data = state.attention, l = parseInt($("att-layer").value, 10);
  const select = $("att-head"), keep = select.value;
  select.innerHTML = `<option value="mean">mean of heads</option>` +
    Array.from({ length: data.n_heads[l] }, (_, h) => `<option value="${h}">${h}</option>`).join("");
  if (keep !== "" && (keep === "mean" || keep < data.n_heads[l])) select.value = keep;
}

function attentionMatrix() {
  const data = state.attention, layer = data.layers[parseInt($("att-layer").value, 10)];
  const head = $("att-head").value;
  return head === "mean" ? layer.mean : layer.heads[parseInt(head, 10)];
}

// The heatmap: cell (t, s) = how much token t takes from token s. Masked cells (s > t) are
// left white, unlike allowed cells of weight 0 (a pale grey), so the mask stays visible.
const LABELS = 90;                                  // pixels left of and above the map for labels
const MAX_CELL = 40;                                // pixels per token at most (short texts)

// The canvas is sized to fit under the controls on the screen, so the whole map is seen at once.
function attentionGeometry() {
  const canvas = $("att-canvas"), T = state.attention.tokens.length;
  const room = window.innerHeight - canvas.getBoundingClientRect().top - 12;
  const side = Math.max(260, Math.min(640, room));
  const cell = Math.max(1, Math.min(MAX_CELL, Math.floor((side - LABELS - 4) / T)));
  return { canvas, T, cell };
}

function drawAttention() {
  const data = state.attention, weights = attentionMatrix();
  const { canvas, T, cell } = attentionGeometry();
  canvas.width = canvas.height = LABELS + T * cell + 4;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#ffffff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  for (let t = 0; t < T; t++) {
    for (let s = 0; s <= t; s++) {
      const w = weights[t][s];
      // pale grey-blue (#eef1f6) at 0 to dark blue (#08306b) at 1
      const r = Math.round(238 + (8 - 238) * w), g = Math.round(241 + (48 - 241) * w), b = Math.round(246 + (107 - 246) * w);
      ctx.fillStyle = `rgb(${r},${g},${b})`;
      ctx.fillRect(LABELS + s * cell, LABELS + t * cell, cell, cell);
    }
  }
  ctx.strokeStyle = "#c5ccd8";                       // the whole T x T square, masked half too
  ctx.strokeRect(LABELS - 0.5, LABELS - 0.5, T * cell + 1, T * cell + 1);
  if (state.query !== null) {
    ctx.strokeStyle = "#c0392b";
    ctx.lineWidth = 2;
    ctx.strokeRect(LABELS, LABELS + state.query * cell, (state.query + 1) * cell, cell);
    ctx.lineWidth = 1;
  }
  const font = Math.max(7, Math.min(12, cell - 1));
  ctx.font = `${font}px ui-monospace, monospace`;
  ctx.fillStyle = "#1d2330";
  if (cell >= 6) {
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    data.tokens.forEach((tok, t) => ctx.fillText(visible(tok).slice(0, 10), LABELS - 4, LABELS + (t + 0.5) * cell));
    ctx.save();
    ctx.translate(LABELS, LABELS);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "left";
    data.tokens.forEach((tok, s) => ctx.fillText(visible(tok).slice(0, 10), 4, (s + 0.5) * cell));
    ctx.restore();
  }
  drawAttentionText(weights);
  const head = $("att-head").value;
  $("att-stats").textContent = `${T} tokens; layer ${$("att-layer").value}, ${head === "mean" ? "mean of its heads" : "head " + head}`;
}

function drawAttentionText(weights) {
  const data = state.attention, box = $("att-text"), q = state.query;
  box.innerHTML = "";
  data.tokens.forEach((tok, s) => {
    const span = document.createElement("span");
    span.className = "tok" + (s === q ? " selected" : "");
    const w = s <= q ? weights[q][s] : 0;
    span.style.background = s <= q ? `rgba(36, 87, 197, ${w.toFixed(3)})` : "#fff";
    span.style.color = w > 0.5 ? "#fff" : s <= q ? "#1d2330" : "#b0b7c3";
    span.textContent = visible(tok);
    span.addEventListener("click", () => { state.query = s; hideTip(); drawAttention(); });
    span.addEventListener("mousemove", (e) => showTip(e, s <= q
      ? `<code>${escapeText(visible(data.tokens[q]))}</code> takes <b>${pct(w)}</b> from <code>${escapeText(visible(tok))}</code>`
      : "a later token: masked, it cannot be seen"));
    span.addEventListener("mouseleave", hideTip);
    box.appendChild(span);
  });
}

VIEWS["model-view"] = async (current) => {
  const info = await call(`/explorer/model?model=${encodeURIComponent(state.model)}`);
  if (!current()) return;
  const m = info.model, p = info.parameters, fmt = (n) => n.toLocaleString("en");
  const norm = `${m.norm}`, ff = `${m.activation} feed-forward ${m.n_embed}\u2192${m.n_ff}\u2192${m.n_embed}`;
  const attn = `attention: ${m.n_head} heads` + (m.n_kv_head ? ` (${m.n_kv_head} key/value)` : "") + ` of ${m.n_k}`;
  const block = m.norm_position === "pre"
    ? `x + ${attn}(${norm}(x)), then x + ${ff}(${norm}(x))`
    : `${norm}(x + ${attn}(x)), then ${norm}(x + ${ff}(x))`;
  $("model-flow").textContent =
    `text \u2192 ${m.vocab_size} token ids \u2192 embedding (${m.n_embed} wide)` +
    (m.positional === "rope" ? "" : ` + ${m.positional} positions`) + "\n" +
    `\u2192 ${m.n_block} \u00d7 block [ ${block} ]` + (m.positional === "rope" ? "  (rotary positions inside attention)" : "") + "\n" +
    `\u2192 ${p.final_norm ? "final " + norm + " \u2192 " : ""}head (${m.n_embed}\u2192${m.vocab_size}${p.tied_head ? ", tied to the embedding" : ""}) \u2192 next-token logits` +
    `\n(context ${m.n_context} tokens; ${m.norm_position}-norm)`;
  const rows = [["embedding", p.embedding]];
  if (p.positional) rows.push(["positions", p.positional]);
  p.blocks.forEach((b, i) => rows.push([`block ${i}: attention`, b.attention], [`block ${i}: feed-forward`, b.feedforward], [`block ${i}: norms`, b.norms]));
  if (p.final_norm) rows.push(["final norm", p.final_norm]);
  rows.push(["head", p.tied_head ? "tied (shares the embedding)" : p.head]);
  $("model-params").innerHTML = `<tr><th>part</th><th>parameters</th><th>share</th></tr>` + rows.map(([name, n]) =>
    `<tr><td>${name}</td><td class="num">${typeof n === "number" ? fmt(n) : n}</td><td class="num">${typeof n === "number" ? (100 * n / p.total).toFixed(1) + "%" : ""}</td></tr>`).join("") +
    `<tr><th>total</th><th class="num">${fmt(p.total)}</th><th></th></tr>`;
  const prog = info.progress, tok = info.tokenizer;
  const facts = [["blocks", m.n_block], ["width (n_embed)", m.n_embed], ["heads", m.n_head + (m.n_kv_head ? ` (${m.n_kv_head} kv)` : "")],
    ["n_k / n_v", `${m.n_k} / ${m.n_v}`], ["n_ff", m.n_ff], ["context", m.n_context], ["vocabulary", m.vocab_size],
    ["norm", `${m.norm_position}-norm ${m.norm}`], ["positions", m.positional], ["activation", m.activation],
    ["attention kernel", m.attention], ["bias", m.bias], ["tied weights", m.tie_weights],
    ["tokenizer", `${fmt(tok.size)} tokens (${fmt(tok.merges)} merges), ${tok.pattern}`],
    ["trained", `${fmt(prog.steps)} steps, ${fmt(prog.tokens)} tokens`],
    ["last validation loss", prog.last_eval ? prog.last_eval.val_loss.toFixed(4) + ` (step ${prog.last_eval.step})` : "none yet"]];
  $("model-config").innerHTML = `<tr><th>setting</th><th>value</th></tr>` +
    facts.map(([k, v]) => `<tr><td>${k}</td><td>${escapeText(String(v))}</td></tr>`).join("");
};

// ------------------------------------------------------------------ training curves

const COLOURS = ["#2457c5", "#c0392b", "#1e8449", "#8e44ad", "#d68910", "#17a589"];
VIEWS.training = async (current) => {
  const runs = [state.model, ...Array.from(document.querySelectorAll("#train-runs input:checked"))
    .map((box) => box.value).filter((id) => id !== state.model)];
  const results = await Promise.all(runs.map((id) => call(`/explorer/metrics?model=${encodeURIComponent(id)}`)));
  if (!current()) return;
  const x = $("train-x").value;
  const series = [], lrSeries = [];
  runs.forEach((id, i) => {
    const records = results[i].records, colour = COLOURS[i % COLOURS.length];
    const train = records.filter((r) => r.train_loss != null && r[x] != null).map((r) => [r[x], r.train_loss]);
    const val = records.filter((r) => r.val_loss != null && r[x] != null).map((r) => [r[x], r.val_loss]);
    series.push({ name: `${id} train`, points: smooth(train), raw: train, colour });
    series.push({ name: `${id} validation`, points: val, colour, dashed: true, dots: true });
    lrSeries.push({ name: `${id} learning rate`, points: records.filter((r) => r.lr != null && r[x] != null).map((r) => [r[x], r.lr]), colour });
  });
  plot($("loss-canvas"), series, "loss (nats/token)", x);
  plot($("lr-canvas"), lrSeries, "learning rate", x);
  const first = results[0].records, last = first[first.length - 1];
  $("train-stats").textContent = last ? `${state.model}: step ${last.step}` + (last.train_loss != null ? `, train loss ${last.train_loss.toFixed(3)}` : "") +
    (first.some((r) => r.val_loss != null) ? `, validation ${first.filter((r) => r.val_loss != null).pop().val_loss.toFixed(3)}` : "") +
    ` \u00b7 updated ${new Date().toLocaleTimeString()}` : "no metrics.jsonl yet: this run has not logged a step";
};

// A centred moving average of the noisy per-step loss: each point is the mean of its
// neighbours within w steps on both sides, so the smooth curve does not lag behind the raw one
// (as a running average does); w grows with the number of points.
function smooth(points) {
  const w = Math.max(1, Math.floor(points.length / 40));
  return points.map(([x], i) => {
    const window = points.slice(Math.max(0, i - w), i + w + 1);
    return [x, window.reduce((sum, p) => sum + p[1], 0) / window.length];
  });
}

function plot(canvas, series, label, xName) {
  const ctx = canvas.getContext("2d"), W = canvas.width, H = canvas.height;
  const left = 62, right = 12, top = 10, bottom = 26;
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, W, H);
  const all = series.flatMap((s) => (s.raw || []).concat(s.points));
  ctx.fillStyle = "#667085";
  ctx.font = "12px system-ui, sans-serif";
  if (!all.length) { ctx.fillText(`${label}: no data yet`, left, H / 2); return; }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= 0.5 * Math.abs(y0 || 1); y1 += 0.5 * Math.abs(y1 || 1); }
  const X = (v) => left + (v - x0) / (x1 - x0) * (W - left - right);
  const Y = (v) => top + (1 - (v - y0) / (y1 - y0)) * (H - top - bottom);
  ctx.strokeStyle = "#e3e7ee";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i++) {
    const v = y0 + (y1 - y0) * i / 4;
    ctx.beginPath(); ctx.moveTo(left, Y(v)); ctx.lineTo(W - right, Y(v)); ctx.stroke();
    ctx.fillText(Math.abs(v) < 0.01 && v !== 0 ? v.toExponential(1) : v.toFixed(2), left - 6, Y(v));
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (let i = 0; i <= 5; i++) {
    const v = x0 + (x1 - x0) * i / 5;
    ctx.fillText(Math.round(v).toLocaleString("en"), X(v), H - bottom + 6);
  }
  ctx.textAlign = "left";
  ctx.fillText(`${label} vs ${xName}`, left + 6, top);
  for (const s of series) {
    if (s.raw && s.raw.length) line(ctx, s.raw.map(([x, y]) => [X(x), Y(y)]), s.colour + "40");
    line(ctx, s.points.map(([x, y]) => [X(x), Y(y)]), s.colour, s.dashed);
    if (s.dots) {
      ctx.fillStyle = s.colour;
      for (const [x, y] of s.points) { ctx.beginPath(); ctx.arc(X(x), Y(y), 3, 0, 2 * Math.PI); ctx.fill(); }
    }
  }
  let ly = top + 16;                                   // legend, top right
  ctx.textAlign = "right";
  for (const s of series.filter((s) => s.points.length)) {
    ctx.fillStyle = s.colour;
    ctx.fillText(s.name + (s.dashed ? " (dashed, dots)" : ""), W - right - 4, ly);
    ly += 15;
  }
}

function line(ctx, points, colour, dashed) {
  if (points.length < 2) return;
  ctx.strokeStyle = colour;
  ctx.lineWidth = 1.5;
  ctx.setLineDash(dashed ? [5, 4] : []);
  ctx.beginPath();
  points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
  ctx.stroke();
  ctx.setLineDash([]);
  ctx.lineWidth = 1;
}

// ------------------------------------------------------------------ wiring

function showView(view) {
  state.view = view;
  for (const button of document.querySelectorAll("#tabs button")) button.classList.toggle("active", button.dataset.view === view);
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== view;
  $("sampling").hidden = !(view === "next" || view === "generate");
  $("text-bar").hidden = view === "model-view" || view === "training";
  hideTip();
  refresh();
}

async function loadModels() {
  const list = await call("/v1/models");
  const select = $("model");
  const wanted = new URLSearchParams(location.search).get("model");
  select.innerHTML = list.data.map((m) => `<option value="${escapeText(m.id)}">${escapeText(m.id)}</option>`).join("");
  if (wanted && list.data.some((m) => m.id === wanted)) select.value = wanted;
  state.model = select.value;
  await modelChanged();
}

async function modelChanged() {
  state.model = $("model").value;
  $("att-layer").innerHTML = "";
  const others = Array.from($("model").options).map((o) => o.value).filter((id) => id !== state.model);
  $("train-runs").innerHTML = others.length ? others.map((id) => `<label><input type="checkbox" value="${escapeText(id)}"> ${escapeText(id)}</label>`).join("")
    : "<span class='muted'>(no other run is served)</span>";
  state.attention = null;
  $("run-status").textContent = "";
  try {
    const info = await call(`/explorer/model?model=${encodeURIComponent(state.model)}`);
    $("run-status").textContent = `${info.model.n_block} blocks \u00d7 ${info.model.n_embed}, context ${info.model.n_context}, ${info.parameters.total.toLocaleString("en")} parameters`;
  } catch (error) {
    $("run-status").textContent = "cannot read this run: " + error.message;
  }
  refresh();
}

async function start() {
  for (const button of document.querySelectorAll("#tabs button")) button.addEventListener("click", () => showView(button.dataset.view));
  $("model").addEventListener("change", modelChanged);
  $("text").addEventListener("input", () => { if (state.view !== "generate") refreshSoon(); });
  for (const id of ["temperature", "top_k", "top_p", "min_p", "repetition_penalty", "next-k"]) {
    $(id).addEventListener("input", () => { if (state.view === "next") refreshSoon(); });
  }
  for (const radio of document.querySelectorAll("input[name=tok-mode]")) radio.addEventListener("change", refresh);
  $("att-layer").addEventListener("change", refresh);
  $("att-head").addEventListener("change", drawAttention);
  $("att-canvas").addEventListener("click", (e) => {
    if (!state.attention) return;
    const { canvas, T, cell } = attentionGeometry();
    const rect = canvas.getBoundingClientRect();
    const t = Math.floor(((e.clientY - rect.top) * canvas.height / rect.height - LABELS) / cell);
    if (t >= 0 && t < T) { state.query = t; drawAttention(); }
  });
  window.addEventListener("resize", () => { if (state.view === "attention" && state.attention) drawAttention(); });
  $("train-x").addEventListener("change", refresh);
  $("train-runs").addEventListener("change", refresh);
  $("gen-go").addEventListener("click", generate);
  $("gen-stop").addEventListener("click", () => streamAbort && streamAbort.abort());
  $("api-key").addEventListener("change", () => { localStorage.setItem("basegpt-key", $("api-key").value.trim()); loadModels().catch(showError); });
  setInterval(() => { if (state.view === "training" && !document.hidden) refresh(); }, 3000);
  try { await loadModels(); } catch (error) { showError(error); }
}

start();
