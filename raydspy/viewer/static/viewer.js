// The rollout viewer's one script: refreshes the fragments a page polls (runs' progress, a live
// run's counts and charts) and draws its charts with the vendored Chart.js. Chart data comes with
// the page or the fragment (a JSON script element), so no inline script is needed and the
// Content-Security-Policy allows only this folder's files.
(function () {
  "use strict";

  function poll(element) {
    var url = element.dataset.poll;
    var every = Number(element.dataset.pollMs || 2000);
    var last = element.innerHTML;
    function tick() {
      if (element.querySelector("[data-final]")) return; // the run ended: nothing changes any more
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; } // signed out: the login form
          return response.ok ? response.text() : null;
        })
        .then(function (html) {
          if (html === null || html === last) return; // unchanged: keep the charts as drawn
          last = html;
          undraw(element);
          element.innerHTML = html;
          draw(element);
        })
        .catch(function () { /* the server restarts: try again */ })
        .finally(function () { window.setTimeout(tick, every); });
    }
    window.setTimeout(tick, every);
  }

  function bars(id, data, options) {
    var canvas = document.getElementById(id);
    if (!canvas || !data || !data.labels.length) return;
    var css = getComputedStyle(document.documentElement);
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.labels,
        datasets: [{ label: "rollouts", data: data.counts, maxBarThickness: 48, backgroundColor: css.getPropertyValue(options.color).trim() }],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        indexAxis: options.horizontal ? "y" : "x",
        plugins: { legend: { display: false } },
        scales: {
          x: { title: { display: true, text: options.horizontal ? "rollouts" : "reward" }, ticks: { precision: 0 } },
          y: { title: { display: !options.horizontal, text: "rollouts" }, ticks: { precision: 0 } },
        },
        onHover: function (event, hits) { event.native.target.style.cursor = hits.length ? "pointer" : "default"; },
        onClick: function (event, hits) { if (hits.length) window.location.href = data.links[hits[0].index]; },
      },
    });
  }

  // The charts whose data lies under root (the page, or a fragment just put in).
  function draw(root) {
    var source = root.querySelector("#chart-data");
    if (!source || !window.Chart) return;
    var charts = JSON.parse(source.textContent);
    bars("reward-histogram", charts.histogram, { color: "--accent" });
    bars("error-breakdown", charts.errors, { color: "--bad", horizontal: true });
  }

  // Chart.js keeps every chart it drew: free those whose canvases a refresh is about to replace.
  function undraw(root) {
    if (!window.Chart) return;
    root.querySelectorAll("canvas").forEach(function (canvas) {
      var chart = window.Chart.getChart(canvas);
      if (chart) chart.destroy();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    draw(document);
  });
})();
