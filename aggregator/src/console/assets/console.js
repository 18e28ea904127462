// The Sluice console's script: plots of a stream's flow, the live tail and
// the try-an-event form. No libraries; everything it draws comes from the
// aggregator that served it.
"use strict";

const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

// ---- Plots: /console/api/flow every 2 s, one polyline per kind.
function plots(section) {
  const stream = section.dataset.flow;
  const draw = async () => {
    let flow;
    try {
      const r = await fetch(`/console/api/flow?stream=${encodeURIComponent(stream)}`, { cache: "no-store" });
      flow = await r.json();
    } catch {
      return;
    }
    for (const svg of section.querySelectorAll("svg[data-series]")) {
      const kind = svg.dataset.series;
      const series = flow.series[kind] ?? [];
      const max = Math.max(1, ...series);
      const n = Math.max(series.length - 1, 1);
      const points = series.map((y, i) => `${((i / n) * 600).toFixed(1)},${(98 - (y / max) * 94).toFixed(1)}`).join(" ");
      svg.replaceChildren();
      const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
      line.setAttribute("points", series.length === 1 ? `0,${98 - (series[0] / max) * 94} 600,${98 - (series[0] / max) * 94}` : points);
      svg.append(line);
      svg.dataset.points = String(series.length);
      svg.dataset.sum = String(series.reduce((a, b) => a + b, 0));
      const now = section.querySelector(`[data-now="${kind}"]`);
      if (now) now.textContent = `now ${(flow.recent_rate[kind] ?? 0).toFixed(2)}/s, peak ${Math.max(0, ...series)}/s over ${series.length} s`;
    }
    for (const [kind, total] of Object.entries(flow.totals)) {
      const t = document.querySelector(`[data-total="${kind}"]`);
      if (t) t.textContent = String(total);
    }
    const last = document.getElementById("last-event");
    if (last && flow.last_event_ms > 0) last.textContent = new Date(flow.last_event_ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
    const state = document.getElementById("state");
    if (state) {
      state.replaceChildren(flow.alert ? el("span", { class: "alert", "data-alert": flow.alert }, flow.alert) : el("span", { class: "ok" }, "ok"));
    }
  };
  draw();
  setInterval(draw, 2000);
}

// ---- An event as an indented tree, the errors next to the fields they name.
function tree(value, errors) {
  const byPath = new Map();
  for (const e of errors ?? []) {
    const list = byPath.get(e.path) ?? [];
    list.push(e.message);
    byPath.set(e.path, list);
  }
  const out = el("div", { class: "tree" });
  const line = (depth, text, path) => {
    const row = el("div", {}, "  ".repeat(depth) + text);
    const errs = byPath.get(path);
    if (errs) {
      row.className = "field-error";
      row.dataset.path = path;
      row.append(el("span", { class: "err" }, "← " + errs.join("; ")));
      byPath.delete(path);
    }
    out.append(row);
  };
  const walk = (v, depth, path, key) => {
    const label = key === undefined ? "" : `${JSON.stringify(key)}: `;
    if (v && typeof v === "object") {
      const entries = Array.isArray(v) ? v.map((x, i) => [i, x]) : Object.entries(v);
      line(depth, label + (Array.isArray(v) ? "[" : "{"), path);
      for (const [k, x] of entries) walk(x, depth + 1, `${path}/${String(k).replace(/~/g, "~0").replace(/\//g, "~1")}`, Array.isArray(v) ? undefined : k);
      line(depth, Array.isArray(v) ? "]" : "}", null);
    } else {
      line(depth, label + JSON.stringify(v), path);
    }
  };
  walk(value, 0, "", undefined);
  // Errors about fields the event lacks (a missing required one) are named at the top.
  for (const [path, errs] of byPath) {
    out.prepend(el("div", { class: "field-error", "data-path": path }, el("span", { class: "err" }, `${path || "(the event)"}: ${errs.join("; ")}`)));
  }
  return out;
}

// ---- The live tail over server-sent events.
function tail(form) {
  const stream = document.getElementById("stream");
  const field = document.getElementById("field");
  const value = document.getElementById("value");
  const pause = document.getElementById("pause");
  const status = document.getElementById("tail-status");
  const events = document.getElementById("events");
  const invalid = document.getElementById("invalid");
  const counts = { event: 0, invalid: 0 };
  let source;
  let paused = false;
  const held = [];
  const show = (m) => {
    const list = m.kind === "invalid" ? invalid : events;
    const head = m.kind === "invalid"
      ? `${m.verdict}: ${m.message ?? ""}`
      : `accepted · ${m.event?.meta?.id ?? ""} · ${m.event?.meta?.dt ?? m.event?.dt ?? ""}`;
    const item = el("li", { class: m.kind === "invalid" ? "invalid" : "event" }, el("div", { class: "head" }, head),
      m.event ? tree(m.event, m.errors) : el("div", { class: "tree" }, m.raw ?? ""));
    list.prepend(item);
    while (list.children.length > 200) list.lastChild.remove();
    counts[m.kind === "invalid" ? "invalid" : "event"] += 1;
    document.getElementById("event-count").textContent = String(counts.event);
    document.getElementById("invalid-count").textContent = String(counts.invalid);
  };
  const connect = () => {
    source?.close();
    if (!stream.value) return;
    const q = new URLSearchParams({ stream: stream.value });
    if (field.value.trim()) {
      q.set("field", field.value.trim());
      q.set("value", value.value);
    }
    const url = new URL(location.href);
    url.search = q.toString();
    history.replaceState(null, "", url);
    status.textContent = "connecting";
    source = new EventSource(`/console/api/tail?${q}`);
    source.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.kind === "ready") {
        status.textContent = `following ${stream.value}`;
        status.dataset.ready = "1";
      } else if (m.kind === "skipped") {
        status.textContent = `following ${stream.value} (${m.count} not shown: more than the page keeps up with)`;
      } else if (m.kind === "error") {
        status.textContent = m.message;
      } else if (paused) {
        held.push(m);
        pause.textContent = `Resume (${held.length} waiting)`;
      } else {
        show(m);
      }
    };
    source.onerror = () => {
      status.textContent = "reconnecting";
      delete status.dataset.ready;
    };
  };
  pause.onclick = () => {
    paused = !paused;
    pause.classList.toggle("paused", paused);
    if (!paused) {
      for (const m of held.splice(0)) show(m);
      pause.textContent = "Pause";
    } else {
      pause.textContent = "Resume";
    }
  };
  stream.onchange = connect;
  field.onchange = connect;
  value.onchange = connect;
  const wanted = new URLSearchParams(location.search).get("stream");
  if (wanted) stream.value = wanted;
  connect();
}

// ---- Try an event.
function tryForm() {
  const text = document.getElementById("try-event");
  const result = document.getElementById("try-result");
  document.getElementById("try-check").onclick = async () => {
    const r = await fetch("/console/api/try", { method: "POST", headers: { "Content-Type": "application/json" }, body: text.value });
    const answer = await r.json();
    let events = [];
    try {
      const parsed = JSON.parse(text.value);
      events = Array.isArray(parsed) ? parsed : [parsed];
    } catch {
      events = [];
    }
    result.replaceChildren(el("p", { class: "status", id: "try-status", "data-status": String(answer.status) }, `${answer.status}: ${answer.summary}`));
    for (const v of answer.events) {
      const box = el("div", { class: `event ${v.verdict}`, "data-verdict": v.verdict },
        el("div", {}, el("b", {}, v.verdict.replace("_", " ")), v.kind ? ` (${v.kind})` : "", ` · ${v.stream ?? "no stream"}`),
        el("p", {}, v.message ?? ""));
      if (v.stream !== undefined && v.rate_limits !== undefined) {
        box.append(el("div", { class: "muted" }, v.sample ? `sampling: rate ${v.sample.rate} by ${v.sample.unit}` : "sampling: none, every event is kept"));
        box.append(el("div", { class: "muted" }, v.windows ? `producing windows: ${v.windows}, ${v.kind === "stream_closed" ? "closed" : "open"} now` : "producing windows: none, always open"));
      }
      for (const l of v.rate_limits ?? []) {
        box.append(el("div", { class: l.would_limit ? "bad" : "muted" },
          `rate limit: ${l.events_per_second}/s per ${l.per} (burst ${l.burst}); now ${Number(l.current_rate).toFixed(2)}/s${l.would_limit ? ": it would be limited" : ""}`));
      }
      if (v.errors?.length && events[v.index] !== undefined) box.append(tree(events[v.index], v.errors));
      result.append(box);
    }
  };
}

document.addEventListener("DOMContentLoaded", () => {
  for (const s of document.querySelectorAll("section[data-flow]")) plots(s);
  const t = document.getElementById("tail-form");
  if (t) tail(t);
  if (document.getElementById("try-form")) tryForm();
});
