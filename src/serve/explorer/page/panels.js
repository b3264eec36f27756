// Generate (streamed text and the distribution after every sampler stage) and
// Exposure bias (teacher-forced against free-running NLL under the exact source).
"use strict";

const G = { steps: [], controller: null, follow: true, show: 8 };
const KNOBS = ["max_tokens", "seed", "temperature", "top_k", "top_p", "min_p", "typical_p",
  "repeat_penalty", "presence_penalty", "frequency_penalty", "beams", "length_penalty"];

function genRequest() {
  const req = { model: X.model(), prompt: document.getElementById("prompt").value,
    method: document.getElementById("g-method").value, show: G.show };
  for (const k of KNOBS) {
    const v = document.getElementById("g-" + k).value;
    req[k] = Number(v);
  }
  return req;
}

// One stage's bars over the displayed tokens; a fixed height so streaming never moves
// the layout.
function stageSvg(step, stage) {
  const rows = G.show + 1, rh = 16, W = 260, lw = 70, vw = 52;
  const bw = W - lw - vw;
  let s = "";
  step.shown.forEach((id, r) => {
    const p = stage.probs[r], y = r * rh;
    const chosen = id === step.chosen;
    const cls = chosen ? "bar chosen" : p === 0 ? "bar gone" : "bar";
    s += `<text x="${lw - 4}" y="${y + 12}" text-anchor="end" style="font-family:monospace">${esc(fmt.vis(step.pieces[r]).slice(0, 12))}</text>`;
    s += `<rect class="${cls}" x="${lw}" y="${y + 2}" width="${p === 0 ? 2 : Math.max(1, p * bw).toFixed(1)}" height="${rh - 4}"/>`;
    s += `<text x="${W - 2}" y="${y + 12}" text-anchor="end">${p === 0 ? "cut" : fmt.p(p)}${chosen ? " ◀" : ""}</text>`;
  });
  return `<svg viewBox="0 0 ${W} ${rows * rh}" role="img" aria-label="${esc(stage.name)}: ${stage.kept} tokens kept">${s}</svg>`;
}

function renderStep(k) {
  const step = G.steps[k];
  const el = document.getElementById("stages");
  if (!step) { el.innerHTML = ""; return; }
  el.innerHTML = step.stages.map((st, i) =>
    `<div class="stage"><h3>${i === 0 ? "model" : i + ". " + esc(st.name)} <span class="muted">(${st.kept} kept)</span></h3>${stageSvg(step, st)}</div>`).join("");
  document.getElementById("gen-step-label").textContent =
    `token ${k + 1}: ${fmt.vis(step.chosen_piece)} · log p = ${fmt.n(step.chosen_logprob, 4)}`;
}

async function generateNow() {
  if (G.controller) G.controller.abort();
  const ctl = new AbortController();
  G.controller = ctl;
  G.steps = [];
  G.follow = true;
  const req = genRequest();
  const text = document.getElementById("gen-text");
  const status = document.getElementById("gen-status");
  const slider = document.getElementById("gen-step");
  document.querySelector("#gen-out .prompt-echo").textContent = req.prompt;
  text.textContent = "";
  document.getElementById("beams").innerHTML = "";
  document.getElementById("stages").innerHTML = "";
  slider.disabled = true;
  document.getElementById("gen-stop").disabled = false;
  document.getElementById("gen-go").disabled = true;
  status.textContent = "generating…";
  document.body.dataset.genState = "running";
  try {
    await X.stream("/explorer/generate", req, ctl.signal, (ev) => {
      if (ev.type === "step") {
        G.steps.push(ev);
        slider.max = G.steps.length - 1;
        if (G.follow) { slider.value = G.steps.length - 1; renderStep(G.steps.length - 1); }
      } else if (ev.type === "text") {
        text.textContent += ev.text;
        const out = document.getElementById("gen-out");
        out.scrollTop = out.scrollHeight;
      } else if (ev.type === "done") {
        status.textContent = `${ev.tokens} tokens · finish: ${ev.finish} · log p = ${fmt.n(ev.total_logprob, 3)} nats`;
        if (ev.beams) {
          document.getElementById("beams").innerHTML = `<table class="data"><tr><th>beam</th><th>log p</th><th>score</th><th>tokens</th><th>text</th></tr>${ev.beams.map((b, i) =>
            `<tr><td>${i + 1}</td><td>${fmt.n(b.logprob, 3)}</td><td>${fmt.n(b.score, 3)}</td><td>${b.tokens}</td><td class="mono" style="text-align:left;white-space:pre-wrap">${esc(b.text)}</td></tr>`).join("")}</table>`;
        }
      } else if (ev.type === "error") {
        throw new Error(ev.message);
      }
    });
    slider.disabled = G.steps.length === 0;
    X.clearError();
  } catch (e) {
    if (e.name !== "AbortError") X.showError(e.message);
    else status.textContent = "stopped";
  } finally {
    document.getElementById("gen-stop").disabled = true;
    document.getElementById("gen-go").disabled = false;
    slider.disabled = G.steps.length === 0;
    document.body.dataset.genState = "done";
  }
}

function exposureIntro() {
  const m = X.modelInfo(X.model());
  const out = document.getElementById("x-out");
  const go = document.getElementById("x-go");
  if (m && !m.exact_source) {
    out.innerHTML = `<p id="x-none">This model (${esc(m.class)}, ${esc(m.tokenizer)} tokenizer) has no exact source: the page knows the true probabilities only for the synthetic corpus (bytes tokenizer). Serve a model trained with <code>arlm train</code> on the default corpus, or the source itself (<code>arlm corpus synth --model-out DIR</code>), to measure exposure bias here; <code>arlm exposure --text FILE</code> compares teacher-forced and free-running NLL on real text.</p>`;
    go.disabled = true;
  } else {
    out.innerHTML = "";
    go.disabled = false;
  }
}

async function exposureNow() {
  const num = (id) => Number(document.getElementById(id).value);
  const out = document.getElementById("x-out");
  out.innerHTML = '<p class="muted">measuring…</p>';
  try {
    const r = await (await X.post("/explorer/exposure", { model: X.model(), prompts: num("x-prompts"),
      prefix: num("x-prefix"), length: num("x-length"), seed: num("x-seed") })).json();
    X.clearError();
    const tf = r.teacher_forced, sa = r.sampled, gr = r.greedy, n = tf.model_nll.length;
    const series = [
      { ys: tf.model_nll, colour: "#1f5fbf", name: "teacher forced: model NLL of the true text" },
      { ys: tf.true_nll, colour: "#5f6368", dash: true, name: "true NLL of the true text (the floor)" },
      { ys: sa.true_nll, colour: "#e37400", name: "sampled: true NLL of the model's own text" },
      { ys: sa.model_nll, colour: "#e37400", dash: true, name: "sampled: model NLL of its own text" },
      { ys: gr.true_nll, colour: "#9334e6", name: "greedy: true NLL of the model's own text" },
    ];
    const all = series.flatMap((s) => s.ys).filter((v) => v !== null && isFinite(v));
    const key = (ss) => ss.map((s) => `<span><span class="swatch" style="background:${s.colour}"></span>${s.name}${s.dash ? " (dashed)" : ""}</span>`).join("<br>");
    const kls = [
      { ys: tf.kl, colour: "#1f5fbf", name: "KL(true ‖ model) at true prefixes" },
      { ys: sa.kl, colour: "#e37400", name: "KL(true ‖ model) at the model's sampled prefixes" },
    ];
    const klAll = kls.flatMap((s) => s.ys).filter((v) => v !== null && isFinite(v));
    const mean = (xs) => { const v = xs.filter((x) => x !== null && isFinite(x)); return v.reduce((a, b) => a + b, 0) / Math.max(1, v.length); };
    out.innerHTML = `<p>${r.prompts} prompts, true prefix ${r.options.prefix_len} tokens, ${n} continuation tokens, seed ${r.options.seed}. Nats per token by continuation position.</p>
<div class="charts"><figure><figcaption>NLL by position (nats)</figcaption><div class="chart" id="x-chart">${svg.lines(series, n, Math.min(0, ...all), Math.max(...all))}</div><div class="legend">${key(series)}</div></figure>
<figure><figcaption>KL divergence from the truth by position (nats)</figcaption><div class="chart">${svg.lines(kls, n, 0, Math.max(1e-6, ...klAll))}</div><div class="legend">${key(kls)}</div></figure></div>
<table class="data" id="x-table"><tr><th>mean over positions</th><th>model NLL</th><th>true NLL</th><th>KL</th></tr>
<tr><td>teacher forced (true text)</td><td>${fmt.n(mean(tf.model_nll), 4)}</td><td>${fmt.n(mean(tf.true_nll), 4)}</td><td>${fmt.n(mean(tf.kl), 4)}</td></tr>
<tr><td>sampled (own text)</td><td>${fmt.n(mean(sa.model_nll), 4)}</td><td>${fmt.n(mean(sa.true_nll), 4)}</td><td>${fmt.n(mean(sa.kl), 4)}</td></tr>
<tr><td>greedy (own text)</td><td>${fmt.n(mean(gr.model_nll), 4)}</td><td>${fmt.n(mean(gr.true_nll), 4)}</td><td>${fmt.n(mean(gr.kl), 4)}</td></tr></table>`;
  } catch (e) {
    out.innerHTML = "";
    X.showError(e.message);
  }
}

window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("gen-go").addEventListener("click", generateNow);
  document.getElementById("gen-stop").addEventListener("click", () => G.controller && G.controller.abort());
  const slider = document.getElementById("gen-step");
  slider.addEventListener("input", () => {
    G.follow = +slider.value === G.steps.length - 1;
    renderStep(+slider.value);
  });
  document.getElementById("x-go").addEventListener("click", exposureNow);
  X.onModelChange.push(exposureIntro);
});
