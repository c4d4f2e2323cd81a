// chute dashboard: confirmations, select-all, and live updates over server-sent events.
// Plain JS, no build step; every value from the server goes in through textContent (never innerHTML).
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";

  document.addEventListener("submit", function (e) {
    const button = e.submitter;
    const message = (button && button.dataset.confirm) || e.target.dataset.confirm;
    if (message && !window.confirm(message)) e.preventDefault();
  });

  const all = document.querySelector("[data-select-all]");
  if (all) {
    all.addEventListener("change", function () {
      document.querySelectorAll("input[name=ids]").forEach(function (box) { box.checked = all.checked; });
    });
  }

  // A task page of an unfinished task reloads when the task's state changes.
  const watched = document.body.dataset.watchTask;
  if (watched) {
    const shown = document.body.dataset.watchState;
    const timer = window.setInterval(function () {
      fetch("/api/tasks/" + encodeURIComponent(watched), {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (t) { if (t && t.state !== shown) { window.clearInterval(timer); window.location.reload(); } })
        .catch(function () {});
    }, 1000);
  }

  const topics = document.body.dataset.live;
  const status = document.getElementById("live-status");
  if (!topics || !window.EventSource) { if (status) status.hidden = true; return; }
  const source = new EventSource("/api/stream?topics=" + encodeURIComponent(topics));
  source.onopen = function () { if (status) { status.className = "live on"; status.textContent = "live"; } };
  source.onerror = function () { if (status) { status.className = "live off"; status.textContent = "reconnecting"; } };
  source.addEventListener("overview", function (m) { overview(JSON.parse(m.data)); });
  source.addEventListener("workers", function (m) { workers(JSON.parse(m.data)); });

  function setText(key, value) {
    document.querySelectorAll('[data-live="' + key + '"]').forEach(function (el) { el.textContent = value; });
  }

  function cell(row, value, cls) {
    const td = document.createElement("td");
    if (value instanceof Node) td.appendChild(value); else td.textContent = String(value);
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function link(href, text, cls) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    if (cls) a.className = cls;
    return a;
  }

  function badge(state) {
    const span = document.createElement("span");
    span.className = "state state-" + state;
    span.textContent = state;
    return span;
  }

  function ago(ts) {
    if (!ts) return "—";
    const s = Math.max(0, Date.now() / 1000 - ts);
    if (s < 60) return Math.round(s) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    return (s / 3600).toFixed(1) + " h ago";
  }

  function overview(o) {
    ["workers_alive", "tasks_running", "succeeded_last_hour", "failed_last_hour", "retried_last_hour"].forEach(
      function (k) { setText(k, o[k]); });
    setText("failure_rate", (100 * o.failure_rate).toFixed(1) + " %");
    const body = document.querySelector('[data-live-table="queues"]');
    if (body && o.queues.length) {
      body.replaceChildren();
      o.queues.forEach(function (q) {
        const tr = document.createElement("tr");
        cell(tr, q.queue);
        cell(tr, q.ready, "num"); cell(tr, q.in_flight, "num"); cell(tr, q.delayed, "num");
        cell(tr, q.dead ? link("/dlq?queue=" + encodeURIComponent(q.queue), String(q.dead), "bad") : "0", "num");
        body.appendChild(tr);
      });
    }
    drawBars(o.rates);
    drawLine(o.rates);
  }

  function drawBars(rates) {
    const g = document.querySelector("#chart-throughput [data-chart-bars]");
    if (!g) return;
    const width = 720, height = 140, step = width / Math.max(1, rates.length);
    const top = Math.max(1, ...rates.map(function (r) { return r.succeeded + r.failed + r.dead; }));
    g.replaceChildren();
    rates.forEach(function (r, i) {
      const bad = r.failed + r.dead, hOk = r.succeeded / top * height, hBad = bad / top * height;
      const title = r.succeeded + " succeeded, " + bad + " failed, " + r.retried + " retried";
      if (r.succeeded) g.appendChild(rect(i * step, height - hOk, Math.max(1, step - 1), hOk, "bar ok", title));
      if (bad) g.appendChild(rect(i * step, height - hOk - hBad, Math.max(1, step - 1), hBad, "bar bad", title));
    });
    const label = document.querySelector("#chart-throughput [data-chart-top]");
    if (label) label.textContent = String(top);
  }

  function rect(x, y, w, h, cls, title) {
    const r = document.createElementNS(SVG, "rect");
    r.setAttribute("x", x.toFixed(1)); r.setAttribute("y", y.toFixed(1));
    r.setAttribute("width", w.toFixed(1)); r.setAttribute("height", h.toFixed(1));
    r.setAttribute("class", cls);
    const t = document.createElementNS(SVG, "title");
    t.textContent = title;
    r.appendChild(t);
    return r;
  }

  function drawLine(rates) {
    const line = document.querySelector("#chart-failures [data-chart-line]");
    if (!line) return;
    const width = 720, height = 140, step = width / Math.max(1, rates.length);
    line.setAttribute("points", rates.map(function (r, i) {
      const done = r.succeeded + r.failed + r.dead, rate = done ? (r.failed + r.dead) / done : 0;
      return (i * step + step / 2).toFixed(1) + "," + (height - rate * height).toFixed(1);
    }).join(" "));
  }

  function workers(list) {
    const body = document.querySelector('[data-live-table="workers"]');
    if (!body || !list.length) return;
    body.replaceChildren();
    list.forEach(function (w) {
      const tr = document.createElement("tr");
      if (w.state === "offline") tr.className = "gone";
      const id = document.createElement("span");
      id.className = "mono"; id.title = w.id; id.textContent = w.id.slice(0, 10) + "…";
      cell(tr, id); cell(tr, badge(w.state)); cell(tr, w.hostname); cell(tr, w.pid || "", "num");
      cell(tr, w.queues.join(", ")); cell(tr, w.concurrency || "", "num"); cell(tr, ago(w.heartbeat_at));
      cell(tr, w.processed, "num"); cell(tr, w.failed, "num");
      const running = cell(tr, "");
      w.running.slice(0, 5).forEach(function (t) {
        running.appendChild(link("/tasks/" + encodeURIComponent(t), t.slice(0, 10) + "…"));
        running.appendChild(document.createTextNode(" "));
      });
      if (w.running.length > 5) running.appendChild(document.createTextNode("+" + (w.running.length - 5)));
      body.appendChild(tr);
    });
  }
})();
