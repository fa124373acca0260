// The rollout viewer's one script: refreshes the fragments a page polls (runs' progress) and draws
// its charts with the vendored Chart.js. Data comes from the page (a JSON script element), so no
// inline script is needed and the Content-Security-Policy allows only this folder's files.
(function () {
  "use strict";

  function poll(element) {
    var url = element.dataset.poll;
    var every = Number(element.dataset.pollMs || 2000);
    function tick() {
      if (element.querySelector("[data-final]")) return; // the run ended: nothing changes any more
      fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (response) {
          if (response.status === 401) { window.location.reload(); return null; } // signed out: the login form
          return response.ok ? response.text() : null;
        })
        .then(function (html) { if (html !== null) element.innerHTML = html; })
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

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll]").forEach(poll);
    var source = document.getElementById("chart-data");
    if (source && window.Chart) {
      var charts = JSON.parse(source.textContent);
      bars("reward-histogram", charts.histogram, { color: "--accent" });
      bars("error-breakdown", charts.errors, { color: "--bad", horizontal: true });
    }
  });
})();
