// The search's Pareto chart on a request's page: every measured candidate's total cost over the horizon
// against its quality (#search-data), the Pareto front as a line, and the quality target as a dashed line.
(function () {
  "use strict";

  const node = document.getElementById("search-data");
  const canvas = document.getElementById("search-pareto");
  if (!node || !canvas || typeof window.Chart === "undefined") return;
  const data = JSON.parse(node.textContent);
  if (!data.points.length) return;
  const text = canvas.dataset;
  const costs = data.points.map(function (p) { return p.cost; });
  const datasets = [
    {
      type: "scatter",
      label: text.trials,
      data: data.points.map(function (p) { return { x: p.quality, y: p.cost, label: p.label }; }),
      pointBackgroundColor: data.points.map(function (p) { return p.feasible ? "#1a7f37" : "#b42318"; }),
      pointRadius: 5,
    },
    {
      type: "line",
      label: text.front,
      data: data.front.map(function (p) { return { x: p.quality, y: p.cost }; }),
      borderColor: "#1f6feb",
      fill: false,
    },
  ];
  if (data.target !== null) {
    datasets.push({
      type: "line",
      label: text.target,
      data: [{ x: data.target, y: Math.min.apply(null, costs) }, { x: data.target, y: Math.max.apply(null, costs) }],
      borderColor: "#8c959f",
      borderDash: [6, 4],
      pointRadius: 0,
    });
  }
  new Chart(canvas, {
    data: { datasets: datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: {
        x: { type: "linear", title: { display: true, text: data.metric } },
        y: { title: { display: true, text: text.cost + " (" + data.currency + ")" } },
      },
      plugins: {
        tooltip: {
          callbacks: {
            label: function (item) { return (item.raw.label || "") + " " + item.raw.y.toFixed(0); },
          },
        },
      },
    },
  });
})();
