// The status page: reads /status/recipes, /status/providers and /status/timeline every few
// seconds.
// With API keys configured it asks for one once and keeps it for this tab only.
"use strict";
const REFRESH_MS = 3000;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

async function getJSON(path) {
  const headers = {};
  const key = sessionStorage.getItem("alchemist-key");
  if (key) headers.Authorization = "Bearer " + key;
  const res = await fetch(path, { headers });
  if (res.status === 401) {
    const given = window.prompt("API key for this llm-alchemist:");
    if (given) { sessionStorage.setItem("alchemist-key", given); return getJSON(path); }
  }
  if (!res.ok) throw new Error(path + ": HTTP " + res.status);
  return res.json();
}

function fmt(v, digits) { return v === null || v === undefined ? "–" : Number(v).toFixed(digits); }

function heat(weight) {  // 0: white, 1: deep blue
  const w = Math.max(0, Math.min(1, weight));
  const light = Math.round(97 - 55 * w);
  return `hsl(215, 80%, ${light}%)`;
}

function heatMap(recipe) {
  const head = el("tr", {}, el("th", {}, "skill \\ provider"),
    ...recipe.providers.map((p) => el("th", {}, p)));
  const rows = recipe.skills.map((skill) => el("tr", {}, el("th", {}, skill),
    ...recipe.providers.map((p) => {
      const w = recipe.weights[skill][p];
      const cell = el("td", { class: "w", "data-recipe": recipe.name, "data-skill": skill,
        "data-provider": p, "data-weight": w.toFixed(3) }, w.toFixed(2));
      cell.style.background = heat(w);
      if (w > 0.6) cell.style.color = "#fff";
      return cell;
    })));
  return el("table", { class: "grid heatmap" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

function history(recipe) {
  const head = el("tr", {}, ...["version", "reason", "fitness", "incumbent", "ratings",
    "generation", "written"].map((h) => el("th", {}, h)));
  const rows = recipe.history.map((v) => el("tr", {}, el("td", {}, "v" + v.version),
    el("td", {}, v.reason), el("td", {}, fmt(v.fitness, 4)), el("td", {}, fmt(v.baseline_fitness, 4)),
    el("td", {}, v.n_ratings), el("td", {}, v.generation),
    el("td", {}, new Date(v.created_at * 1000).toLocaleString())));
  return el("table", { class: "grid history" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

function renderRecipes(data) {
  const box = document.getElementById("recipes");
  box.replaceChildren(...data.recipes.map((r) => el("div", { class: "recipe", id: "recipe-" + r.name },
    el("h3", {}, `${r.name} v${r.version}`),
    el("p", { class: "muted" }, `strategy ${r.strategy} · answer ${r.answer.kind} · ` +
      `min_weight ${r.min_weight} · explore ${r.explore} · last written: ${r.current.reason}`),
    el("div", { class: "cols" },
      el("div", {}, el("h3", {}, "Weights (skill × provider)"), heatMap(r)),
      el("div", {}, el("h3", {}, "Versions (newest first)"), history(r))))));
}

function renderProviders(data) {
  const body = document.querySelector("#providers tbody");
  body.replaceChildren(...data.providers.map((p) => el("tr", { "data-provider": p.name },
    el("td", {}, p.name), el("td", { class: "state-" + p.breaker }, p.breaker.replace("_", "-")),
    el("td", {}, fmt(p.p50_ms, 1)), el("td", {}, fmt(p.p99_ms, 1)),
    el("td", {}, p.error_share === null ? "–" : (100 * p.error_share).toFixed(1) + "%"),
    el("td", {}, fmt(p.calls_per_request, 2)), el("td", {}, p.calls))));
  const r = data.requests;
  const rated = data.ratings.accepted || 0;
  document.getElementById("summary").textContent = `${r.answered} answered · ${r.errors} errors · ` +
    `${r.inflight} in flight · ${rated} ratings · ${data.evolver.promotions || 0} promotions`;
}

function spark(id, values) {  // values in [0, 1], null where nothing was served
  const svg = document.getElementById(id);
  const n = values.length;
  const pts = values.map((v, i) => v === null ? null :
    `${(n > 1 ? 400 * i / (n - 1) : 200).toFixed(1)},${(78 - 76 * Math.max(0, Math.min(1, v))).toFixed(1)}`)
    .filter((p) => p !== null);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", pts.join(" "));
  svg.setAttribute("data-points", String(pts.length));
  const last = values.filter((v) => v !== null).pop();
  const label = document.createElementNS("http://www.w3.org/2000/svg", "title");
  label.textContent = last === undefined ? "no answers yet" : "latest " + last.toFixed(3);
  if (pts.length) { svg.replaceChildren(label, line); return; }
  const empty = document.createElementNS("http://www.w3.org/2000/svg", "text");
  empty.setAttribute("x", "200"); empty.setAttribute("y", "44");
  empty.setAttribute("text-anchor", "middle"); empty.setAttribute("class", "empty");
  empty.textContent = n ? "no answers served yet" : "the first point comes after one interval";
  svg.replaceChildren(label, empty);
}

function renderTimeline(data) {
  spark("confidence", data.points.map((p) => p.confidence));
  spark("rated", data.points.map((p) => p.rated_share));
  const last = data.points[data.points.length - 1];
  document.getElementById("timeline-note").textContent = `One point every ${data.interval_s} s ` +
    `(the last hour at most)` + (last ? ` · latest: ${fmt(last.requests_per_s, 1)} requests/s, ` +
    `confidence ${fmt(last.confidence, 3)}, ${fmt(last.ratings_per_s, 2)} ratings/s` : "");
}

async function refresh() {
  // each part on its own: one endpoint failing leaves the others drawn
  const parts = [["/status/recipes", renderRecipes], ["/status/providers", renderProviders],
    ["/status/timeline", renderTimeline]];
  const results = await Promise.allSettled(parts.map(([path]) => getJSON(path)));
  const failed = [];
  results.forEach((r, i) => {
    try {
      if (r.status === "fulfilled") parts[i][1](r.value); else failed.push(r.reason.message);
    } catch (err) { failed.push(parts[i][0] + ": " + err.message); }
  });
  document.getElementById("updated").textContent = failed.length
    ? "not updated: " + failed.join("; ") : "updated " + new Date().toLocaleTimeString();
}

refresh();
setInterval(refresh, REFRESH_MS);
