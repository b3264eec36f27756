// Score & What if, and Compare: a text scored token by token, the chain rule with its
// numbers, a branch at any token, and two models on one text.
"use strict";

const S = { last: null, ids: [], selected: -1, timer: null, seq: 0, controller: null };

function colourMode() {
  return document.querySelector('input[name="colour"]:checked').value;
}

function rankClass(rank) {
  return rank <= 10 ? "r1" : rank <= 100 ? "r2" : rank <= 1000 ? "r3" : "r4";
}

// Probability on a log scale: p = 1e-4 and below red, p = 1 green.
function probStyle(logprob) {
  const t = Math.min(1, Math.max(0, 1 + logprob / Math.LN10 / 4));
  return `background:hsl(${Math.round(120 * t)},70%,82%)`;
}

function legend() {
  const el = document.getElementById("legend");
  if (colourMode() === "rank") {
    el.innerHTML = '<span class="r1">top 10</span><span class="r2">top 100</span><span class="r3">top 1000</span><span class="r4">rest</span>';
  } else {
    el.innerHTML = [0, -1, -2, -3, -4].map((e) =>
      `<span style="${probStyle(e * Math.LN10)}">p=1e${e}</span>`).join("");
  }
}

// Chips for `tokens`; `style(i, t)` gives [class, inline style] per token.
function chipsHtml(tokens, style) {
  let s = "";
  tokens.forEach((t, i) => {
    const [cls, st] = style(i, t);
    const nl = t.piece.endsWith("\n");
    s += `<span class="chip ${cls}" style="${st}" data-i="${i}" role="button" tabindex="${i === 0 ? 0 : -1}">${esc(fmt.piece(t.piece))}</span>${nl ? "<br>" : ""}`;
  });
  return s;
}

function tokenStyle(i, t) {
  return colourMode() === "rank" ? [rankClass(t.rank), ""] : ["", probStyle(t.logprob)];
}

function tipHtml(t, extra) {
  const bits = -fmt.bits(t.logprob);
  let rows = t.top.map((a) =>
    `<tr${a.id === t.id ? ' style="color:#fdd663"' : ""}><td class="mono">${esc(fmt.vis(a.piece))}</td><td>${fmt.p(Math.exp(a.logprob))}</td><td>${fmt.n(a.logprob, 3)}</td></tr>`).join("");
  return `<div><b class="mono">${esc(fmt.vis(t.piece))}</b> (id ${t.id}) · rank ${t.rank}</div>
<div>p = ${fmt.p(Math.exp(t.logprob))} · log p = ${fmt.n(t.logprob, 4)} nats = ${fmt.n(t.logprob / Math.LN2, 4)} bits</div>
<div>surprisal ${fmt.n(bits, 3)} bits · entropy ${fmt.n(fmt.bits(t.entropy), 3)} bits</div>
${extra || ""}
<div class="muted" style="color:#bdc1c6">top ${t.top.length} alternatives:</div>
<table class="alts-tip">${rows}</table>`;
}

// Hover, focus, arrow keys and Enter on a chip container.
function wireChips(el, tokensOf, onPick, extraOf) {
  const chipOf = (e) => e.target.closest && e.target.closest(".chip");
  const show = (c) => {
    const i = +c.dataset.i, toks = tokensOf();
    if (toks[i]) showTip(c, tipHtml(toks[i], extraOf ? extraOf(i) : ""));
  };
  el.addEventListener("mouseover", (e) => { const c = chipOf(e); if (c) show(c); });
  el.addEventListener("mouseout", (e) => { if (chipOf(e)) hideTip(); });
  el.addEventListener("focusin", (e) => { const c = chipOf(e); if (c) show(c); });
  el.addEventListener("focusout", hideTip);
  el.addEventListener("click", (e) => { const c = chipOf(e); if (c && onPick) onPick(+c.dataset.i); });
  el.addEventListener("keydown", (e) => {
    const c = chipOf(e);
    if (!c) return;
    const all = el.querySelectorAll(".chip");
    let i = +c.dataset.i, j = null;
    if (e.key === "ArrowRight") j = Math.min(all.length - 1, i + 1);
    if (e.key === "ArrowLeft") j = Math.max(0, i - 1);
    if (e.key === "Home") j = 0;
    if (e.key === "End") j = all.length - 1;
    if (j !== null) {
      e.preventDefault();
      c.tabIndex = -1; all[j].tabIndex = 0; all[j].focus();
    } else if ((e.key === "Enter" || e.key === " ") && onPick) {
      e.preventDefault(); onPick(i);
    }
  });
}

function totalsHtml(r, idp) {
  const m = r.metrics, n = r.tokens.length;
  const cell = (id, dt, dd) => `<div><dt>${dt}</dt><dd id="${idp}${id}">${dd}</dd></div>`;
  return cell("tokens", `tokens (${esc(r.tokenizer)} tokenizer)`, n) +
    cell("bytes", "bytes", r.totals.bytes) +
    cell("joint", "log p(text), nats", fmt.n(r.joint_logprob, 4)) +
    cell("nll", "NLL per token, nats", fmt.n(m.nll_per_token_nats, 4)) +
    cell("nllbits", "NLL per token, bits", fmt.n(m.nll_per_token_bits, 4)) +
    cell("ppl", "perplexity (per token)", fmt.n(m.token_perplexity, 3)) +
    cell("bpb", "bits per byte", fmt.n(m.bits_per_byte, 4));
}

function chainHtml(tokens, joint) {
  const term = (t, i) => `<span title="${esc(fmt.piece(t.piece))}">(${fmt.n(t.logprob, 3)})</span>`;
  const n = tokens.length;
  if (n === 0) return "log p(empty text) = 0";
  let terms;
  if (n <= 40) {
    terms = tokens.map(term).join(" + ");
  } else {
    terms = tokens.slice(0, 16).map(term).join(" + ") + ` + … ${n - 32} more terms … + ` +
      tokens.slice(n - 16).map((t, k) => term(t, n - 16 + k)).join(" + ");
  }
  const sym = n === 1 ? "log p(x<sub>1</sub>)" :
    `log p(x<sub>1</sub>) + log p(x<sub>2</sub> | x<sub>1</sub>) + … + log p(x<sub>${n}</sub> | x<sub>&lt;${n}</sub>)`;
  return `log p(x<sub>1</sub>..x<sub>${n}</sub>) = ${sym}<br>= ${terms}<br>= <b>${fmt.n(joint, 4)}</b> nats = ${fmt.n(joint / Math.LN2, 4)} bits`;
}

function chartsHtml(tokens) {
  const cum = tokens.map((t) => t.cumulative_logprob);
  const lo = Math.min(0, ...cum);
  return [
    svg.lines([{ ys: [0, ...cum], colour: "#1f5fbf" }], cum.length + 1, lo, 0),
    svg.bars(tokens.map((t) => -t.logprob / Math.LN2), false),
  ];
}

function renderScore(r) {
  S.last = r;
  S.ids = r.tokens.map((t) => t.id);
  S.selected = -1;
  const chips = document.getElementById("chips");
  chips.innerHTML = chipsHtml(r.tokens, tokenStyle);
  chips.dataset.seq = ++S.seq;
  document.getElementById("totals").innerHTML = totalsHtml(r, "tot-");
  document.getElementById("chain").innerHTML = chainHtml(r.tokens, r.joint_logprob);
  const [sum, bars] = chartsHtml(r.tokens);
  document.getElementById("chart-sum").innerHTML = sum;
  document.getElementById("chart-bars").innerHTML = bars;
  document.getElementById("whatif").innerHTML = r.tokens.length
    ? '<p class="muted">Click a token (or focus it and press Enter) to branch the text there.</p>' : "";
}

async function scoreNow() {
  const text = document.getElementById("text").value;
  if (S.controller) S.controller.abort();
  const ctl = new AbortController();
  S.controller = ctl;
  const t0 = performance.now();
  try {
    const r = normalizeScore(await (await X.post("/explorer/score", { model: X.model(), text, top_k: 5 }, ctl.signal)).json());
    if (ctl.signal.aborted) return;
    renderScore(r);
    X.clearError();
    // Time from the request to the rendered page (read by the browser test).
    await new Promise((res) => requestAnimationFrame(() => res()));
    X.lastScoreMs = performance.now() - t0;
    document.body.dataset.scoreMs = X.lastScoreMs.toFixed(1);
  } catch (e) {
    if (e.name !== "AbortError") X.showError(e.message);
  }
}

function pickToken(i) {
  const r = S.last;
  if (!r) return;
  const chips = document.querySelectorAll("#chips .chip");
  chips.forEach((c) => c.classList.toggle("sel", +c.dataset.i === i));
  S.selected = i;
  const t = r.tokens[i];
  const alts = t.top.filter((a) => a.id !== t.id).map((a) =>
    `<button type="button" data-id="${a.id}">${esc(fmt.vis(a.piece))} <span class="muted">${fmt.p(Math.exp(a.logprob))}</span></button>`).join("");
  const box = document.getElementById("whatif");
  box.innerHTML = `<div class="box"><div>What if token ${i + 1}, <b class="mono">${esc(fmt.vis(t.piece))}</b> (p = ${fmt.p(Math.exp(t.logprob))}), were another? Pick one; the rest of the text is rescored after it.</div>
<div class="alts" role="group" aria-label="Alternatives">${alts || '<span class="muted">no other alternative in the top k</span>'}</div><div id="branch"></div></div>`;
  box.querySelectorAll(".alts button").forEach((b) => b.addEventListener("click", () => branch(i, +b.dataset.id)));
}

async function branch(i, id) {
  const r = S.last;
  const ids = S.ids.slice();
  ids[i] = id;
  try {
    const b = normalizeScore(await (await X.post("/explorer/score", { model: X.model(), ids, top_k: 5 })).json());
    const delta = b.joint_logprob - r.joint_logprob;
    const d = b.tokens.map((t, k) => (k < i ? 0 : t.logprob - r.tokens[k].logprob));
    const el = document.getElementById("branch");
    el.innerHTML = `<table class="data"><tr><th></th><th>log p (nats)</th><th>bits</th></tr>
<tr><td>original</td><td>${fmt.n(r.joint_logprob, 4)}</td><td>${fmt.n(r.joint_logprob / Math.LN2, 3)}</td></tr>
<tr><td>branch</td><td id="branch-joint">${fmt.n(b.joint_logprob, 4)}</td><td>${fmt.n(b.joint_logprob / Math.LN2, 3)}</td></tr>
<tr><td>change</td><td id="branch-delta">${delta >= 0 ? "+" : ""}${fmt.n(delta, 4)}</td><td>${fmt.n(delta / Math.LN2, 3)}</td></tr></table>
<div class="chips" id="branch-chips">${chipsHtml(b.tokens, (k, t) => [k === i ? "changed " + (colourMode() === "rank" ? rankClass(t.rank) : "") : tokenStyle(k, t)[0], tokenStyle(k, t)[1]])}</div>
<figure><figcaption>Change in log p per token from the branch on (nats; green: the branch made it more likely)</figcaption><div class="chart">${svg.bars(d, true)}</div></figure>
<button type="button" id="branch-use">Continue from the branch</button>`;
    wireChips(document.getElementById("branch-chips"), () => b.tokens, null);
    document.getElementById("branch-use").addEventListener("click", () => {
      document.getElementById("text").value = b.text;
      scoreNow();
    });
  } catch (e) {
    X.showError(e.message);
  }
}

// Compare: two models on one text.
async function compareNow() {
  const text = document.getElementById("cmp-text").value;
  const a = document.getElementById("cmp-a").value, b = document.getElementById("cmp-b").value;
  const out = document.getElementById("cmp-out");
  try {
    const [ra, rb] = await Promise.all([a, b].map(async (m) =>
      normalizeScore(await (await X.post("/explorer/score", { model: m, text, top_k: 5 })).json())));
    X.clearError();
    const same = ra.tokens.length === rb.tokens.length && ra.tokens.every((t, i) => t.id === rb.tokens[i].id);
    const row = (name, r) => `<tr><td>${esc(name)}</td><td>${r.tokens.length}</td><td>${fmt.n(r.joint_logprob, 4)}</td><td>${fmt.n(r.metrics.nll_per_token_nats, 4)}</td><td>${fmt.n(r.metrics.token_perplexity, 3)}</td><td>${fmt.n(r.metrics.bits_per_byte, 4)}</td></tr>`;
    const surprised = (r) => r.tokens.map((t, i) => [i, t]).sort((x, y) => x[1].logprob - y[1].logprob).slice(0, 5)
      .map(([i, t]) => `<span class="mono">${esc(fmt.vis(t.piece))}</span> (#${i + 1}, ${fmt.n(-t.logprob / Math.LN2, 2)} bits)`).join(", ");
    let html = `<table class="data" id="cmp-table"><tr><th>model</th><th>tokens</th><th>log p</th><th>NLL/token</th><th>perplexity</th><th>bits/byte</th></tr>${row(a, ra)}${row(b, rb)}</table>
<p>Most surprised, ${esc(a)}: ${surprised(ra)}</p><p>Most surprised, ${esc(b)}: ${surprised(rb)}</p>`;
    if (same) {
      const d = ra.tokens.map((t, i) => rb.tokens[i].logprob - t.logprob);
      html += `<p>Same tokens under both tokenizers: per-token difference log p<sub>B</sub> &minus; log p<sub>A</sub> (green: ${esc(b)} more confident).</p>
<div class="chips" id="cmp-chips">${chipsHtml(ra.tokens, (i) => ["", `background:hsl(${d[i] >= 0 ? 120 : 0},70%,${Math.round(95 - Math.min(1, Math.abs(d[i]) / 3) * 20)}%)`])}</div>
<div class="chart">${svg.bars(d, true)}</div>`;
    } else {
      html += `<p>The tokenizers split this text differently (${ra.tokens.length} vs ${rb.tokens.length} tokens), so per-token values do not line up and perplexities are not comparable; bits per byte is.</p>
<div class="chips" id="cmp-chips">${chipsHtml(ra.tokens, tokenStyle)}</div><div class="chips" id="cmp-chips-b">${chipsHtml(rb.tokens, tokenStyle)}</div>`;
    }
    out.innerHTML = html;
    const da = (i) => same ? `<div>${esc(b)}: log p = ${fmt.n(rb.tokens[i].logprob, 4)}, Δ = ${fmt.n(rb.tokens[i].logprob - ra.tokens[i].logprob, 4)}</div>` : "";
    wireChips(document.getElementById("cmp-chips"), () => ra.tokens, null, da);
    const cb = document.getElementById("cmp-chips-b");
    if (cb) wireChips(cb, () => rb.tokens, null);
  } catch (e) {
    X.showError(e.message);
  }
}

window.addEventListener("DOMContentLoaded", () => {
  legend();
  wireChips(document.getElementById("chips"), () => (S.last ? S.last.tokens : []), pickToken);
  document.getElementById("score-go").addEventListener("click", scoreNow);
  document.getElementById("text").addEventListener("input", () => {
    clearTimeout(S.timer);
    S.timer = setTimeout(scoreNow, 400);
  });
  document.querySelectorAll('input[name="colour"]').forEach((r) => r.addEventListener("change", () => {
    legend();
    if (S.last) renderScore(S.last);
  }));
  document.getElementById("cmp-go").addEventListener("click", compareNow);
  X.onModelChange.push(scoreNow);
});
