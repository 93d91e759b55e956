// Draws the request dashboard's three charts from the JSON the page embeds (#dashboard-data), with the
// vendored Chart.js. The figures are computed on the server; this file only plots them. Labels come from
// data-text-* attributes on #charts, so they are translated with the rest of the page.
(function () {
  "use strict";

  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.addEventListener("click", function () { window.print(); });
  });

  const dataNode = document.getElementById("dashboard-data");
  const section = document.getElementById("charts");
  if (!dataNode || !section || typeof window.Chart === "undefined") return;
  const data = JSON.parse(dataNode.textContent);
  const text = section.dataset;
  const locale = document.documentElement.lang || "en";
  const money = new Intl.NumberFormat(locale, { style: "currency", currency: data.currency });
  const unitMoney = new Intl.NumberFormat(locale, { style: "currency", currency: data.currency, maximumFractionDigits: 4 });
  const colours = {
    ok: "#1a7f37", bad: "#b42318", accent: "#1f6feb", muted: "#8c959f", region: "rgba(26, 127, 55, 0.08)",
    warn: "#9a6700",
  };

  Chart.defaults.animation = false; // figures, not a show: draw at once (and print what is drawn)
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;

  // Dashed reference lines (and an optional shaded rectangle) drawn under the datasets.
  function guides(spec) {
    return {
      id: "guides",
      beforeDatasetsDraw: function (chart) {
        const ctx = chart.ctx, area = chart.chartArea, x = chart.scales.x, y = chart.scales.y;
        ctx.save();
        if (spec.region) {
          const r = spec.region;
          const left = Math.max(area.left, x.getPixelForValue(r.xMin));
          const right = Math.min(area.right, x.getPixelForValue(r.xMax));
          const top = Math.max(area.top, y.getPixelForValue(r.yMax));
          const bottom = Math.min(area.bottom, y.getPixelForValue(r.yMin));
          if (right > left && bottom > top) {
            ctx.fillStyle = colours.region;
            ctx.fillRect(left, top, right - left, bottom - top);
          }
        }
        ctx.setLineDash([6, 4]);
        ctx.lineWidth = 1;
        ctx.font = "12px " + Chart.defaults.font.family;
        (spec.lines || []).forEach(function (line) {
          ctx.strokeStyle = line.colour;
          ctx.fillStyle = line.colour;
          ctx.beginPath();
          if (line.x !== undefined) {
            const px = x.getPixelForValue(line.x);
            if (px < area.left) return;
            if (px > area.right) {
              // Off the scale to the right (a target far above every measurement): say where it is.
              const label = line.label + " →";
              ctx.fillText(label, area.right - ctx.measureText(label).width - 2, area.top + 12);
              return;
            }
            ctx.moveTo(px, area.top);
            ctx.lineTo(px, area.bottom);
            ctx.stroke();
            ctx.fillText(line.label, Math.min(px + 4, area.right - ctx.measureText(line.label).width), area.top + 12);
          } else {
            const py = y.getPixelForValue(line.y);
            if (py < area.top || py > area.bottom) return;
            ctx.moveTo(area.left, py);
            ctx.lineTo(area.right, py);
            ctx.stroke();
            ctx.fillText(line.label, area.left + 4, py - 4);
          }
        });
        ctx.restore();
      },
    };
  }

  // Horizontal error bars: each point's latency interval (p95_low_ms … p95_high_ms), when it has one.
  const errorBars = {
    id: "errorBars",
    afterDatasetsDraw: function (chart) {
      const ctx = chart.ctx, x = chart.scales.x, y = chart.scales.y;
      ctx.save();
      ctx.lineWidth = 1.5;
      chart.data.datasets.forEach(function (dataset, index) {
        if (dataset.type === "line" || !chart.isDatasetVisible(index)) return;
        ctx.strokeStyle = dataset.borderColor;
        dataset.data.forEach(function (p) {
          if (p.low === null || p.high === null || p.low === undefined) return;
          const py = y.getPixelForValue(p.y), left = x.getPixelForValue(p.low), right = x.getPixelForValue(p.high);
          ctx.beginPath();
          ctx.moveTo(left, py); ctx.lineTo(right, py);
          ctx.moveTo(left, py - 4); ctx.lineTo(left, py + 4);
          ctx.moveTo(right, py - 4); ctx.lineTo(right, py + 4);
          ctx.stroke();
        });
      });
      ctx.restore();
    },
  };

  // Text generation plots perplexity (lower is better, no upper bound) against TTFT p95; classification
  // plots accuracy (%) against p95. The x values come as "p95_ms" either way.
  const generative = data.task === "causal-lm";
  function quality(p) { return generative ? p.perplexity : p.accuracy_pct; }

  function qualityAxis(points) {
    if (!generative) {
      const ys = points.map(quality).concat([data.accuracy_floor_pct]);
      return {
        min: Math.max(0, Math.floor(Math.min.apply(null, ys) - 1)),
        max: Math.min(100, Math.ceil(Math.max.apply(null, ys) + 1)),
        // Meets the floor: from the floor up to 100%.
        region: { yMin: data.accuracy_floor_pct, yMax: 100 },
        line: data.accuracy_floor_pct,
        lineLabel: text.textFloor + " " + data.accuracy_floor_pct.toFixed(1) + "%",
        title: text.textAccuracy,
      };
    }
    const ceiling = data.perplexity_ceiling;
    const ys = points.map(quality).concat(ceiling === null ? [] : [ceiling]);
    const low = Math.min.apply(null, ys), high = Math.max.apply(null, ys);
    // A candidate whose perplexity exploded (layers cut without distillation) would flatten every other
    // point onto the axis: past a tenfold spread the axis is logarithmic.
    const logarithmic = low > 0 && high / low > 10;
    const pad = Math.max((high - low) * 0.1, high * 0.02, 0.01);
    const min = logarithmic ? low / 1.25 : Math.max(0, low - pad);
    return {
      type: logarithmic ? "logarithmic" : "linear",
      min: min,
      max: logarithmic ? high * 1.25 : high + pad,
      // Keeps the perplexity limit: from the bottom of the axis up to the limit.
      region: ceiling === null ? null : { yMin: min, yMax: ceiling },
      line: ceiling,
      lineLabel: ceiling === null ? "" : text.textCeiling + " " + ceiling.toFixed(2),
      title: text.textPerplexity,
    };
  }

  function paretoChart(canvas) {
    const points = data.pareto;
    const slowest = Math.max.apply(null, points.map(function (p) {
      return Math.max(p.p95_ms, p.p95_high_ms || 0);
    }).concat([0]));
    // A target far beyond every model would squeeze them all into one corner: then the axis ends past
    // the slowest model and the target line is labelled at the edge instead.
    const xMax = data.p95_target_ms > 4 * slowest && slowest > 0
      ? slowest * 1.6
      : Math.max(slowest, data.p95_target_ms) * 1.15;
    const axis = qualityAxis(points);
    function group(filter, label, colour, style) {
      return {
        type: "scatter",
        label: label,
        data: points.filter(filter).map(function (p) {
          return {
            x: p.p95_ms, y: quality(p), name: p.label, low: p.p95_low_ms, high: p.p95_high_ms,
            undecided: p.undecided, unstable: p.unstable,
          };
        }),
        backgroundColor: colour,
        borderColor: colour,
        pointStyle: style || "circle",
        pointRadius: style === "star" ? 9 : 6,
        pointHoverRadius: style === "star" ? 11 : 8,
        borderWidth: style === "star" ? 2 : 1,
        // A baseline whose measurement cannot tell is ringed in the undecided colour.
        pointBorderColor: function (ctx) { return ctx.raw && ctx.raw.undecided ? colours.warn : colour; },
        pointBorderWidth: function (ctx) { return ctx.raw && ctx.raw.undecided ? 3 : (style === "star" ? 2 : 1); },
      };
    }
    const front = points.filter(function (p) { return p.frontier; })
      .sort(function (a, b) { return a.p95_ms - b.p95_ms; })
      .map(function (p) { return { x: p.p95_ms, y: quality(p), name: p.label }; });
    return new Chart(canvas, {
      type: "scatter",
      data: {
        datasets: [
          { type: "line", label: text.textFrontier, data: front, borderColor: colours.muted, borderWidth: 1,
            pointRadius: 0, fill: false, tension: 0 },
          group(function (p) { return p.recommended; }, text.textRecommended, colours.accent, "star"),
          group(function (p) { return p.baseline && !p.recommended; }, text.textBaseline, "#1d2430", "triangle"),
          group(function (p) { return p.feasible && !p.recommended && !p.baseline; }, text.textFeasible, colours.ok),
          group(function (p) { return p.undecided && !p.recommended && !p.baseline; }, text.textUndecided, colours.warn, "rectRot"),
          group(function (p) { return !p.feasible && !p.undecided && !p.recommended && !p.baseline; }, text.textInfeasible, colours.bad),
        ],
      },
      options: {
        scales: {
          x: { type: "linear", min: 0, max: xMax, title: { display: true, text: generative ? text.textTtft : text.textP95 } },
          y: { type: axis.type || "linear", min: axis.min, max: axis.max, title: { display: true, text: axis.title } },
        },
        plugins: {
          tooltip: {
            callbacks: {
              label: function (item) {
                const p = item.raw;
                const range = p.low !== null && p.low !== undefined && p.high !== null
                  ? " (" + p.low.toFixed(1) + "–" + p.high.toFixed(1) + ")" : "";
                const flag = p.unstable ? " · " + text.textUnstable : p.undecided ? " · " + text.textUndecided : "";
                if (generative) return p.name + ": " + p.x.toFixed(1) + " ms" + range + ", " + p.y.toFixed(2) + flag;
                return p.name + ": " + p.x.toFixed(1) + " ms" + range + ", " + p.y.toFixed(1) + "%" + flag;
              },
            },
          },
        },
      },
      plugins: [errorBars, guides({
        region: axis.region === null ? null : { xMin: 0, xMax: data.p95_target_ms, yMin: axis.region.yMin, yMax: axis.region.yMax },
        lines: [
          { x: data.p95_target_ms, label: (generative ? text.textTtftTarget : text.textTarget) + " " + data.p95_target_ms + " ms", colour: colours.bad },
        ].concat(axis.line === null ? [] : [{ y: axis.line, label: axis.lineLabel, colour: colours.bad }]),
      })],
    });
  }

  function costChart(canvas) {
    const bars = data.cost;
    return new Chart(canvas, {
      type: "bar",
      data: {
        // A long pipeline goes on several lines, one step each, rather than being cut at the edge.
        labels: bars.map(function (b) {
          if (b.baseline) return text.textBaseline;
          const steps = b.label.split(" → ");
          return steps.map(function (step, i) { return i < steps.length - 1 ? step + " →" : step; });
        }),
        datasets: [{
          label: text.textMonthlyCost,
          data: bars.map(function (b) { return b.monthly_cost === null ? null : parseFloat(b.monthly_cost); }),
          backgroundColor: bars.map(function (b) {
            if (b.recommended) return colours.accent;
            if (b.baseline) return "#1d2430";
            return b.feasible ? colours.ok : b.undecided ? colours.warn : colours.muted;
          }),
        }],
      },
      options: {
        indexAxis: "y",
        scales: { x: { beginAtZero: true, ticks: { callback: function (v) { return money.format(v); } } } },
        plugins: {
          legend: { display: false },
          tooltip: {
            callbacks: {
              label: function (item) {
                const b = bars[item.dataIndex];
                if (b.monthly_cost === null) return text.textUnservable;
                const lines = [
                  text.textMonthlyCost + ": " + money.format(parseFloat(b.monthly_cost)),
                  text.textPerMillion + ": " + money.format(parseFloat(b.cost_per_million)),
                ];
                if (b.cost_per_million_tokens) {
                  // Per-token costs keep more places than the currency's cents (see quantize_unit_cost).
                  lines.push(text.textPerMillionTokens + ": " + unitMoney.format(parseFloat(b.cost_per_million_tokens)));
                }
                return lines;
              },
            },
          },
        },
      },
    });
  }

  function cashflowChart(canvas) {
    const flow = data.cashflow;
    const values = flow.cumulative.map(parseFloat);
    const lines = [{ y: 0, label: "0", colour: colours.muted }];
    if (flow.payback_months !== null && flow.payback_months <= values.length - 1) {
      lines.push({ x: flow.payback_months, label: text.textPayback + " " + flow.payback_months.toFixed(1), colour: colours.ok });
    }
    return new Chart(canvas, {
      type: "line",
      data: {
        datasets: [{
          label: text.textCumulative + ": " + flow.label,
          data: values.map(function (v, month) { return { x: month, y: v }; }),
          borderColor: colours.accent,
          backgroundColor: colours.accent,
          pointRadius: 2,
          tension: 0,
          segment: {
            borderColor: function (ctx) { return ctx.p1.parsed.y < 0 ? colours.bad : colours.ok; },
          },
        }],
      },
      options: {
        scales: {
          x: { type: "linear", min: 0, max: values.length - 1, ticks: { stepSize: 1 }, title: { display: true, text: text.textMonth } },
          y: { ticks: { callback: function (v) { return money.format(v); } } },
        },
        plugins: {
          tooltip: { callbacks: { label: function (item) { return money.format(item.parsed.y); } } },
        },
      },
      plugins: [guides({ lines: lines })],
    });
  }

  const charts = [["chart-pareto", paretoChart], ["chart-cost", costChart], ["chart-cashflow", cashflowChart]];
  charts.forEach(function (pair) {
    const canvas = document.getElementById(pair[0]);
    if (canvas) pair[1](canvas);
  });
  section.dataset.rendered = "true"; // the browser test waits for this
})();
