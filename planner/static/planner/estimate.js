// The request form's pre-flight estimate: as soon as a model and the hardware are chosen, asks the
// server (#preflight's data-url) for the roofline estimate of the baseline and each candidate family and
// shows it as a table, cheapest first. Also shows the pipeline fields or the search budget, by mode.
(function () {
  "use strict";

  const section = document.getElementById("preflight");
  const form = section && section.closest("form");
  if (!section || !form) return;
  const text = section.dataset;
  const status = document.getElementById("preflight-status");
  const body = document.getElementById("preflight-body");
  const watched = ["model_ref", "hardware", "task", "requests_per_day", "peak_factor", "target_utilisation",
    "horizon_months", "engineering_hours", "engineering_rate", "p95_target_ms"];
  let pending = null;

  function value(name) {
    const inputs = form.querySelectorAll("[name='" + name + "']");
    for (const input of inputs) {
      if ((input.type === "radio" || input.type === "checkbox") && !input.checked) continue;
      return input.value;
    }
    return "";
  }

  function cell(row, content, header) {
    const node = document.createElement(header ? "th" : "td");
    node.textContent = content;
    row.appendChild(node);
  }

  function render(data) {
    body.replaceChildren();
    const locale = document.documentElement.lang || "en";
    const money = new Intl.NumberFormat(locale, { style: "currency", currency: data.currency, maximumFractionDigits: 0 });
    status.textContent = text.params + ": " + data.parameters.toLocaleString(locale) + " · " +
      (data.calibrated ? text.calibrated + " (×" + data.efficiency.toFixed(2) + ")" : text.uncalibrated);
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    [text.candidate, text.latency, text.tokens, text.cost, text.bound].forEach(function (t) { cell(head, t, true); });
    const rows = table.createTBody();
    data.rows.forEach(function (r) {
      const tr = rows.insertRow();
      cell(tr, r.label);
      cell(tr, r.latency_ms.toFixed(2));
      cell(tr, r.tokens_per_s === null ? "—" : r.tokens_per_s.toFixed(1));
      cell(tr, r.total_cost === null ? "—" : money.format(r.total_cost));
      cell(tr, r.bound);
    });
    body.appendChild(table);
  }

  function refresh() {
    if (!value("model_ref") || !value("hardware")) return;
    const query = new URLSearchParams();
    watched.forEach(function (name) { const v = value(name); if (v) query.set(name, v); });
    if (pending) pending.abort();
    pending = new AbortController();
    fetch(section.dataset.url + "?" + query.toString(), { signal: pending.signal, credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        if (data.error) { status.textContent = data.error; body.replaceChildren(); return; }
        render(data);
      })
      .catch(function (error) { if (error.name !== "AbortError") status.textContent = String(error); });
  }

  function showMode() {
    const searching = value("mode") === "search";
    ["field-candidates", "field-custom_pipelines"].forEach(function (id) {
      const node = document.getElementById(id);
      if (node) node.hidden = searching;
    });
    document.querySelectorAll(".technique-params").forEach(function (node) { node.hidden = searching; });
    ["field-search_max_trials", "field-search_max_minutes"].forEach(function (id) {
      const node = document.getElementById(id);
      if (node) node.hidden = !searching;
    });
  }

  form.addEventListener("change", function (event) {
    if (event.target.name === "mode") showMode();
    if (watched.indexOf(event.target.name) >= 0) refresh();
  });
  showMode();
  refresh();
})();
