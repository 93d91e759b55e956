// Plots the review page's cumulative cash flow, predicted against actual, from the JSON the page embeds
// (#review-data) with the vendored Chart.js. The figures are computed on the server; labels come from the
// data-text-* attributes of #review-chart, so they are translated with the page.
(function () {
  "use strict";

  const dataNode = document.getElementById("review-data");
  const figure = document.getElementById("review-chart");
  const canvas = document.getElementById("chart-review");
  if (!dataNode || !figure || !canvas || typeof window.Chart === "undefined") return;
  const data = JSON.parse(dataNode.textContent);
  if (!data) return;
  const text = figure.dataset;
  const locale = document.documentElement.lang || "en";
  const money = new Intl.NumberFormat(locale, { style: "currency", currency: data.currency });

  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;

  new Chart(canvas, {
    type: "line",
    data: {
      labels: data.labels,
      datasets: [
        { label: text.textPredicted, data: data.predicted, borderColor: "#8c959f", borderDash: [6, 4], pointRadius: 0 },
        { label: text.textActual, data: data.actual, borderColor: "#1f6feb", backgroundColor: "#1f6feb" },
      ],
    },
    options: {
      scales: {
        x: { title: { display: true, text: text.textMonth } },
        y: { title: { display: true, text: text.textCash }, ticks: { callback: function (v) { return money.format(v); } } },
      },
      plugins: {
        tooltip: { callbacks: { label: function (c) { return c.dataset.label + ": " + money.format(c.parsed.y); } } },
      },
    },
  });
})();
