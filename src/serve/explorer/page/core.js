// The explorer's shared parts: the server API, models, tabs, number formats, the
// tooltip and the inline SVG charts. No framework and no build step: the binary embeds
// these files as they are.
"use strict";

const X = {
  models: [],
  apiKey: null,
  // Errors the page shows (the browser test fails on any).
  showError(msg) {
    const e = document.getElementById("error");
    e.textContent = msg;
    e.hidden = false;
  },
  clearError() {
    const e = document.getElementById("error");
    e.textContent = "";
    e.hidden = true;
  },
  headers() {
    const h = { "Content-Type": "application/json" };
    if (X.apiKey) h.Authorization = "Bearer " + X.apiKey;
    return h;
  },
  async checked(resp) {
    if (resp.status === 401) {
      document.getElementById("keybar").hidden = false;
      throw new Error("this server needs an API key: enter it above");
    }
    if (!resp.ok) {
      let msg = resp.status + " " + resp.statusText;
      try {
        const j = await resp.json();
        if (j.error && j.error.message) msg = j.error.message;
      } catch (_) { /* not JSON */ }
      throw new Error(msg);
    }
    return resp;
  },
  async get(path) {
    const r = await X.checked(await fetch(path, { headers: X.headers() }));
    return r.json();
  },
  async post(path, body, signal) {
    const r = await X.checked(await fetch(path, {
      method: "POST", headers: X.headers(), body: JSON.stringify(body), signal,
    }));
    return r;
  },
  // Server-sent events from a POST: calls onEvent with each parsed data object.
  async stream(path, body, signal, onEvent) {
    const r = await X.post(path, body, signal);
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
        if (data) onEvent(JSON.parse(data));
      }
    }
  },
  model() { return document.getElementById("model").value; },
  modelInfo(name) { return X.models.find((m) => m.name === name); },
  onModelChange: [],
};

// Number formats: a fixed number of digits so values do not jump while they change.
const fmt = {
  n(x, d) {
    if (x === Infinity) return "∞";
    if (x === -Infinity) return "−∞";
    return x === null || x === undefined || !isFinite(x) ? "–" : x.toFixed(d);
  },
  p(p) { return p === 0 ? "0" : p >= 0.001 ? p.toFixed(4) : p.toExponential(2); },
  bits(nats) { return nats / Math.LN2; },
  // A token's text in chips: newlines and tabs made visible.
  piece(s) { return s.replace(/\n/g, "↵").replace(/\t/g, "⇥"); },
  // In lists and labels spaces are made visible too.
  vis(s) { return fmt.piece(s).replace(/ /g, "␣"); },
};

// The exact source writes probability 0 as log p = -1e30: show it as -inf.
const IMPOSSIBLE = -1e29;
function normalizeScore(r) {
  const lp = (x) => (x <= IMPOSSIBLE ? -Infinity : x);
  for (const t of r.tokens) {
    t.logprob = lp(t.logprob);
    t.cumulative_logprob = lp(t.cumulative_logprob);
    for (const a of t.top) a.logprob = lp(a.logprob);
  }
  r.joint_logprob = lp(r.joint_logprob);
  if (r.joint_logprob === -Infinity) {
    for (const k of Object.keys(r.metrics)) r.metrics[k] = Infinity;
  }
  return r;
}

function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

// Tabs: arrow keys move between them (the WAI-ARIA tabs pattern).
function setupTabs() {
  const tabs = [...document.querySelectorAll('[role="tab"]')];
  const select = (tab) => {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", on);
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    hideTip();
  };
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => select(t));
    t.addEventListener("keydown", (e) => {
      let j = null;
      if (e.key === "ArrowRight") j = (i + 1) % tabs.length;
      if (e.key === "ArrowLeft") j = (i + tabs.length - 1) % tabs.length;
      if (e.key === "Home") j = 0;
      if (e.key === "End") j = tabs.length - 1;
      if (j !== null) { e.preventDefault(); tabs[j].focus(); select(tabs[j]); }
    });
  });
}

async function loadModels() {
  const r = await X.get("/explorer/models");
  X.models = r.models;
  const opts = X.models.map((m) => `<option value="${esc(m.name)}">${esc(m.name)}</option>`).join("");
  for (const id of ["model", "cmp-a", "cmp-b"]) document.getElementById(id).innerHTML = opts;
  if (X.models.length > 1) document.getElementById("cmp-b").value = X.models[1].name;
  describeModel();
}

function describeModel() {
  const m = X.modelInfo(X.model());
  if (!m) return;
  document.getElementById("model-desc").textContent =
    `${m.class} · ${m.description} · tokenizer ${m.tokenizer} (${m.vocab_size} ids)` +
    (m.max_context ? ` · context ${m.max_context}` : "");
}

// The tooltip: shown next to an element on hover and on keyboard focus.
function showTip(el, html) {
  const tip = document.getElementById("tip");
  tip.innerHTML = html;
  tip.hidden = false;
  const r = el.getBoundingClientRect();
  const w = tip.offsetWidth, h = tip.offsetHeight;
  let left = Math.min(Math.max(4, r.left), window.innerWidth - w - 4);
  let top = r.bottom + 6;
  if (top + h > window.innerHeight - 4) top = Math.max(4, r.top - h - 6);
  tip.style.left = left + "px";
  tip.style.top = top + "px";
}
function hideTip() { document.getElementById("tip").hidden = true; }

// Inline SVG charts, drawn at a fixed viewBox and scaled by CSS (no layout jumps).
const svg = {
  W: 600, H: 180, pad: { l: 44, r: 8, t: 8, b: 20 },
  frame(inner) {
    return `<svg viewBox="0 0 ${svg.W} ${svg.H}" preserveAspectRatio="none" role="img">${inner}</svg>`;
  },
  scale(lo, hi, a, b) { const d = hi - lo || 1; return (v) => a + ((v - lo) / d) * (b - a); },
  axes(ylo, yhi, n) {
    const p = svg.pad, y = svg.scale(ylo, yhi, svg.H - p.b, p.t);
    let s = `<line x1="${p.l}" y1="${p.t}" x2="${p.l}" y2="${svg.H - p.b}" stroke="#999"/>`;
    s += `<line x1="${p.l}" y1="${svg.H - p.b}" x2="${svg.W - p.r}" y2="${svg.H - p.b}" stroke="#999"/>`;
    for (const v of [ylo, (ylo + yhi) / 2, yhi]) {
      s += `<text x="${p.l - 4}" y="${y(v) + 3}" text-anchor="end">${fmt.n(v, Math.abs(yhi - ylo) < 10 ? 2 : 0)}</text>`;
    }
    s += `<text x="${svg.W - p.r}" y="${svg.H - 4}" text-anchor="end">${n} tokens</text>`;
    return s;
  },
  // Several series of (x index, y) with colours; null y values break the line.
  lines(series, n, ylo, yhi) {
    const p = svg.pad;
    const x = svg.scale(0, Math.max(1, n - 1), p.l + 2, svg.W - p.r);
    const y = svg.scale(ylo, yhi, svg.H - p.b, p.t);
    let s = svg.axes(ylo, yhi, n);
    for (const { ys, colour, dash } of series) {
      let d = "", pen = false;
      ys.forEach((v, i) => {
        if (v === null || !isFinite(v)) { pen = false; return; }
        d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      s += `<path d="${d}" fill="none" stroke="${colour}" stroke-width="1.8" ${dash ? 'stroke-dasharray="5 3"' : ""} vector-effect="non-scaling-stroke"/>`;
    }
    return svg.frame(s);
  },
  // Bars from 0; negative values go down (classes pos / neg when signed).
  bars(vals, signed) {
    const p = svg.pad, n = vals.length;
    const hi = Math.max(1e-9, ...vals.map((v) => (isFinite(v) ? v : 0)));
    const lo = signed ? Math.min(0, ...vals.map((v) => (isFinite(v) ? v : 0))) : 0;
    const y = svg.scale(lo, hi, svg.H - p.b, p.t);
    const bw = (svg.W - p.l - p.r) / Math.max(1, n);
    let s = svg.axes(lo, hi, n);
    vals.forEach((v, i) => {
      if (!isFinite(v)) return;
      const top = Math.min(y(v), y(0)), h = Math.abs(y(v) - y(0));
      const cls = signed ? (v >= 0 ? "pos" : "neg") : "bar";
      s += `<rect class="${cls}" x="${(p.l + i * bw).toFixed(2)}" y="${top.toFixed(2)}" width="${Math.max(0.5, bw - (bw > 3 ? 1 : 0)).toFixed(2)}" height="${h.toFixed(2)}"/>`;
    });
    return svg.frame(s);
  },
};

window.addEventListener("DOMContentLoaded", async () => {
  setupTabs();
  document.getElementById("model").addEventListener("change", () => {
    describeModel();
    for (const f of X.onModelChange) f();
  });
  document.getElementById("apikey-go").addEventListener("click", async () => {
    X.apiKey = document.getElementById("apikey").value;
    X.clearError();
    try { await loadModels(); document.getElementById("keybar").hidden = true; for (const f of X.onModelChange) f(); } catch (e) { X.showError(e.message); }
  });
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") hideTip(); });
  try {
    await loadModels();
    for (const f of X.onModelChange) f();
  } catch (e) {
    X.showError(e.message);
  }
});
