// The events page's chart: events per time bucket by type for the range the page
// chose (hour, day or week, named in data-summary; the store counts the buckets),
// drawn with uPlot from GET /api/summary (the same numbers as the counts beside it),
// redrawn every 30 s and on resize. Labels come from the page (data-labels, rendered from the
// server's known-type table), never from a copy here.
(function () {
  "use strict";

  var MAX_SERIES = 6; // the busiest types get a line each; the rest sum into "other"
  var COLORS = ["#f5b83d", "#7cc4ff", "#3fb950", "#f85149", "#d2a8ff", "#ff9b6a", "#8b98a8"];

  function build(summary, labels) {
    var totals = Object.keys(summary.by_type).map(function (t) {
      return [t, summary.by_type[t]];
    });
    totals.sort(function (a, b) {
      return b[1] - a[1];
    });
    var top = totals.slice(0, MAX_SERIES).map(function (x) {
      return x[0];
    });
    var xs = summary.buckets.map(function (b) {
      return Date.parse(b.minute) / 1000;
    });
    var data = [xs];
    var series = [{}];
    top.forEach(function (t, i) {
      data.push(
        summary.buckets.map(function (b) {
          return b.by_type[t] || 0;
        })
      );
      series.push({ label: labels[t] || t, stroke: COLORS[i % COLORS.length], width: 2, points: { show: false } });
    });
    // The server names the busiest types only and sums the rest in `other`.
    if (totals.length > MAX_SERIES || summary.other > 0) {
      data.push(
        summary.buckets.map(function (b) {
          var rest = b.total;
          top.forEach(function (t) {
            rest -= b.by_type[t] || 0;
          });
          return rest;
        })
      );
      series.push({ label: "other", stroke: COLORS[COLORS.length - 1], width: 1, dash: [4, 4], points: { show: false } });
    }
    return { data: data, series: series };
  }

  function boot() {
    var el = document.getElementById("chart");
    if (!el || !window.uPlot) return;
    var labels = {};
    try {
      labels = JSON.parse(el.dataset.labels || "{}");
    } catch (e) {
      labels = {};
    }
    var plot = null;
    var shape = "";
    function size() {
      return { width: Math.max(200, el.clientWidth), height: 220 };
    }
    function draw() {
      fetch(el.dataset.summary, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (summary) {
          var built = build(summary, labels);
          var newShape = built.series
            .map(function (s) {
              return s.label;
            })
            .join("|");
          if (plot && newShape === shape) return plot.setData(built.data);
          if (plot) plot.destroy();
          el.textContent = "";
          shape = newShape;
          var axis = { stroke: "#8b98a8", grid: { stroke: "#263241", width: 1 }, ticks: { stroke: "#263241" } };
          var opts = size();
          opts.series = built.series;
          opts.axes = [axis, Object.assign({}, axis, { size: 40 })];
          opts.scales = { x: { time: true } };
          opts.legend = { live: false };
          plot = new uPlot(opts, built.data, el);
        })
        .catch(function (e) {
          el.textContent = "The chart could not be loaded (" + e.message + ").";
        });
    }
    draw();
    setInterval(draw, 30000);
    window.addEventListener("resize", function () {
      if (plot) plot.setSize(size());
    });
  }

  if (document.readyState === "complete") boot();
  else document.addEventListener("DOMContentLoaded", boot);
})();
