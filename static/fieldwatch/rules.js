/*
 * The alert rule form's backtest: posts the form's fields to the backtest view, says how many alerts the rule would
 * have opened over the last days (from the 1-minute rollups) and marks when on a small chart (the value that
 * triggered, or 1 for a silence). Validation errors come back with the messages a save would give.
 */
(function () {
  "use strict";

  var form = document.querySelector("[data-rule-form]");
  if (!form) return;
  var result = document.querySelector("[data-backtest-result]");
  var plotEl = document.querySelector("[data-backtest-plot]");
  var plot = null;
  window.fieldwatchBacktest = { last: null };

  function draw(answer) {
    if (typeof window.uPlot !== "function" || !plotEl) return;
    var xs = answer.openings.map(function (o) { return o.at / 1000; });
    var ys = answer.openings.map(function (o) { return o.value === null ? 1 : o.value; });
    if (plot) plot.destroy();
    plotEl.textContent = "";
    plot = new window.uPlot(
      {
        width: Math.max(plotEl.clientWidth, 200),
        height: 140,
        series: [{}, { label: "alert opened", stroke: "#b91c1c", width: 0, points: { show: true, size: 8, fill: "#b91c1c" } }],
        scales: { x: { time: true, range: function () { return [answer.start / 1000, answer.end / 1000]; } } },
        axes: [{}, { size: 60 }],
      },
      [xs, ys],
      plotEl
    );
  }

  form.querySelector("[data-backtest]").addEventListener("click", function () {
    result.textContent = "Computing…";
    window
      .fetch(form.getAttribute("data-backtest-url"), {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRFToken": form.elements.csrfmiddlewaretoken.value, Accept: "application/json" },
        body: new FormData(form),
      })
      .then(function (response) {
        return response.json().then(function (answer) {
          return { ok: response.ok, answer: answer };
        });
      })
      .then(function (outcome) {
        var answer = outcome.answer;
        if (!outcome.ok) {
          var errors = answer.errors || {};
          result.textContent = "Fix the rule first: " + Object.keys(errors).map(function (name) {
            return name + ": " + [].concat(errors[name]).join(" ");
          }).join("; ");
          return;
        }
        window.fieldwatchBacktest.last = answer;
        result.textContent =
          "Over the last " + answer.days + " days this rule would have opened " + answer.count + " alert" +
          (answer.count === 1 ? "" : "s") + " on " + answer.devices + " device" + (answer.devices === 1 ? "" : "s") +
          " (from " + answer.resolution + " rollups).";
        result.setAttribute("data-count", String(answer.count));
        draw(answer);
      })
      .catch(function (error) {
        result.textContent = "The backtest failed: " + error.message;
      });
  });
})();
