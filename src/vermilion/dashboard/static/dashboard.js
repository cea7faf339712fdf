/* vermilion dashboard: polls the app's JSON and redraws.
 * Data from Redis only ever reaches the page as text (textContent), never as HTML. */
"use strict";
(function () {
  const body = document.body;
  const root = body.dataset.root;
  const interval = Number(body.dataset.interval) || 1000;
  const actions = body.dataset.actions === "true";
  const tokenHeader = body.dataset.tokenHeader;
  const TOKEN_KEY = "vermilion-dashboard-token";

  let selected = null;
  let charts = null;
  let lastFailed = null;

  const CHARTS = [
    { id: "chart-rates", series: [["enqueued", "#2e86de"], ["handled", "#27ae60"], ["failed", "#c0392b"]] },
    { id: "chart-size", series: [["ready", "#2e86de"], ["locked", "#8e44ad"], ["backoff", "#f39c12"]] },
    { id: "chart-lag", series: [["lag", "#c0392b"]] },
    { id: "chart-time", series: [["p50", "#27ae60"], ["p99", "#8e44ad"]] },
  ];

  const WORKER_COLUMNS = ["id", "host", "pid", "in_flight", "concurrency", "success", "retry", "error", "p50", "p99",
    "started_at", "last_seen"];

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function cell(row, text, className) {
    row.appendChild(el("td", text, className));
  }

  // Replace a table's rows; its "no-..." line shows when there are none.
  function fillTable(id, rows) {
    const tbody = document.querySelector("#" + id + " tbody");
    tbody.replaceChildren.apply(tbody, rows);
    document.getElementById("no-" + id).hidden = rows.length > 0;
  }

  function api(path) {
    return root + "api/" + path;
  }

  function queuePath(name) {
    return "queues/" + encodeURIComponent(name);
  }

  async function getJSON(path) {
    const response = await fetch(api(path), { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!response.ok) {
      throw new Error(path + ": HTTP " + response.status);
    }
    return response.json();
  }

  function showError(text) {
    const node = document.getElementById("error");
    node.textContent = text || "";
    node.hidden = !text;
  }

  function selectedFromHash() {
    const match = /^#queue=(.+)$/.exec(window.location.hash);
    return match ? decodeURIComponent(match[1]) : null;
  }

  function renderQueues(queues) {
    const rows = queues.map(function (queue) {
      const row = el("tr");
      row.dataset.queue = queue.name;
      if (queue.name === selected) row.className = "selected";
      const name = el("td");
      const link = el("a", queue.name);
      link.href = "#queue=" + encodeURIComponent(queue.name);
      name.appendChild(link);
      row.appendChild(name);
      for (const key of ["ready", "locked", "backoff", "done", "failed", "dropped", "lag"]) cell(row, queue[key], "num");
      return row;
    });
    fillTable("queues", rows);
  }

  function chartWidth(node) {
    return Math.max(300, node.clientWidth || 400);
  }

  function makeCharts() {
    return CHARTS.map(function (spec) {
      const node = document.getElementById(spec.id);
      node.replaceChildren();
      const series = [{}].concat(spec.series.map(function (pair) {
        return { label: pair[0], stroke: pair[1], width: 1.5, spanGaps: false, points: { show: false } };
      }));
      const empty = [[]].concat(spec.series.map(function () { return []; }));
      const options = { width: chartWidth(node), height: 200, series: series, legend: { live: false }, scales: { x: { time: true } } };
      const plot = new uPlot(options, empty, node);
      return { spec: spec, node: node, plot: plot };
    });
  }

  function drawCharts(series) {
    for (const chart of charts) {
      const data = [series.t].concat(chart.spec.series.map(function (pair) { return series[pair[0]]; }));
      chart.plot.setData(data);
      // For whoever checks that the plots move (the tests): points drawn, and the newest values.
      chart.node.dataset.points = String(series.t.length);
      chart.node.dataset.latest = JSON.stringify(chart.spec.series.map(function (pair) {
        const values = series[pair[0]];
        return values.length ? values[values.length - 1] : null;
      }));
    }
  }

  function renderWorkers(workers) {
    const rows = workers.map(function (worker) {
      const row = el("tr");
      row.dataset.worker = worker.id;
      for (const key of WORKER_COLUMNS) {
        const value = worker[key];
        cell(row, value === null ? "" : value, typeof value === "number" ? "num" : "");
      }
      return row;
    });
    fillTable("workers", rows);
  }

  function actionButton(label, onClick, className) {
    const button = el("button", label, className);
    button.type = "button";
    button.addEventListener("click", onClick);
    return button;
  }

  function renderFailed(messages, total) {
    const key = JSON.stringify(messages);
    document.getElementById("failed-count").textContent = "(" + total + " in the history)";
    if (key === lastFailed) return;
    lastFailed = key;
    const rows = messages.map(function (message) {
      const row = el("tr");
      row.dataset.mid = message.mid;
      cell(row, message.mid);
      cell(row, message.failed_at);
      cell(row, message.attempts, "num");
      cell(row, message.reason);
      const payload = el("td");
      payload.appendChild(el("pre", message.payload + (message.payload_cut ? " …" : ""), "payload"));
      row.appendChild(payload);
      if (actions) {
        const buttons = el("td");
        buttons.appendChild(actionButton("Replay", function () { act("replay", { mids: [message.mid] }); }, "replay"));
        buttons.appendChild(actionButton("Purge", function () { act("purge-failed", { mids: [message.mid] }); }, "purge danger"));
        row.appendChild(buttons);
      }
      return row;
    });
    fillTable("failed", rows);
  }

  async function act(action, payload) {
    const result = document.getElementById("action-result");
    if (action === "purge-failed" && !window.confirm("Delete these failed messages from the history for good?")) return;
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    headers[tokenHeader] = window.sessionStorage.getItem(TOKEN_KEY) || "";
    try {
      const response = await fetch(api(queuePath(selected) + "/" + action), {
        method: "POST",
        headers: headers,
        body: JSON.stringify(payload),
        cache: "no-store",
      });
      const answer = await response.json();
      if (!response.ok) {
        result.textContent = action + " refused: " + answer.error;
      } else if (action === "replay") {
        result.textContent = "replayed " + answer.replayed;
      } else {
        result.textContent = "purged " + answer.purged;
      }
    } catch (error) {
      result.textContent = action + " failed: " + error;
    }
    lastFailed = null;
    refresh();
  }

  async function refreshDetail(status) {
    const section = document.getElementById("detail");
    if (!selected || !status) {
      section.hidden = true;
      return;
    }
    section.hidden = false;
    document.getElementById("detail-name").textContent = selected;
    const detail = await getJSON(queuePath(selected));
    if (!charts || charts.queue !== selected) {
      charts = makeCharts();
      charts.queue = selected;
      lastFailed = null;
    }
    drawCharts(detail.series);
    renderWorkers(detail.workers);
    const failed = await getJSON(queuePath(selected) + "/failed?limit=50");
    renderFailed(failed.failed, detail.status.failed);
  }

  let pending = null;

  async function refresh() {
    if (pending) return pending;
    pending = (async function () {
      try {
        const overview = await getJSON("overview");
        const names = overview.queues.map(function (queue) { return queue.name; });
        selected = selectedFromHash() || (names.includes(selected) ? selected : names[0] || null);
        renderQueues(overview.queues);
        const status = overview.queues.find(function (queue) { return queue.name === selected; });
        await refreshDetail(status);
        showError(overview.error);
        document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
      } catch (error) {
        showError("cannot reach the dashboard: " + error.message);
      } finally {
        pending = null;
      }
    })();
    return pending;
  }

  function setUp() {
    if (actions) {
      const token = document.getElementById("token");
      token.value = window.sessionStorage.getItem(TOKEN_KEY) || "";
      token.addEventListener("input", function () { window.sessionStorage.setItem(TOKEN_KEY, token.value); });
      document.getElementById("replay-all").addEventListener("click", function () { act("replay", { all: true }); });
      document.getElementById("purge-all").addEventListener("click", function () { act("purge-failed", { all: true }); });
    }
    window.addEventListener("hashchange", function () { charts = null; refresh(); });
    window.addEventListener("resize", function () {
      if (!charts) return;
      for (const chart of charts) chart.plot.setSize({ width: chartWidth(chart.node), height: 200 });
    });
    refresh();
    window.setInterval(refresh, interval);
  }

  setUp();
})();
