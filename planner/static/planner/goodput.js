// Draws a candidate's latency against offered load (the serving scenario's trials) with the target line and
// the goodput point, from the JSON the raw-figures page embeds (#goodput-data), with the vendored Chart.js.
// Labels come from data-text-* attributes on #goodput, so they are translated with the rest of the page.
(function () {
  "use strict";
  const dataNode = document.getElementById("goodput-data");
  const section = document.getElementById("goodput");
  const canvas = document.getElementById("goodput-chart");
  if (!dataNode || !section || !canvas || typeof window.Chart === "undefined") return;
  const g = JSON.parse(dataNode.textContent);
  const text = section.dataset;
  const target = parseFloat(text.targetMs);
  const trials = (g.curve || []).filter(function (p) { return p[2] !== null; })
    .map(function (p) { return { x: p[0], y: p[2], attainment: p[1] }; });
  const reach = Math.max.apply(null, trials.map(function (p) { return p.x; }).concat([g.rps || 1]));
  const atGoodput = trials.filter(function (p) { return p.x === g.rps; });

  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  new Chart(canvas, {
    type: "scatter",
    data: {
      datasets: [
        { label: text.textTrials, data: trials, showLine: true, borderColor: "#1f6feb", backgroundColor: "#1f6feb" },
        {
          label: text.textTarget, data: [{ x: 0, y: target }, { x: reach, y: target }], showLine: true,
          borderColor: "#b42318", borderDash: [6, 4], pointRadius: 0,
        },
        { label: text.textGoodput, data: atGoodput, pointStyle: "star", pointRadius: 10, borderColor: "#1a7f37", backgroundColor: "#1a7f37" },
      ],
    },
    options: {
      scales: {
        x: { beginAtZero: true, title: { display: true, text: text.textLoad } },
        y: { beginAtZero: true, title: { display: true, text: text.textLatency } },
      },
      plugins: {
        tooltip: {
          callbacks: {
            label: function (item) {
              const p = item.raw;
              const share = p.attainment === undefined ? "" : " · " + (p.attainment * 100).toFixed(1) + "%";
              return p.x.toFixed(1) + " req/s · " + p.y.toFixed(1) + " ms" + share;
            },
          },
        },
      },
    },
  });
  section.dataset.rendered = "true";
})();
