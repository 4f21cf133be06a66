/*
 * Energy pages: the figures are server-rendered; every minute (and when the tab becomes visible again) the page
 * fetches itself and swaps the [data-energy-live] sections, so totals, buckets and the source note keep up with
 * the readings arriving. Nothing is computed here: the server's figures are the only ones.
 */
(function () {
  "use strict";
  var REFRESH_MS = 60000;
  var sections = document.querySelectorAll("[data-energy-live]");
  if (!sections.length || !window.fetch || !window.DOMParser) return;

  function refresh() {
    window
      .fetch(window.location.href, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null) return;
        var fresh = new window.DOMParser().parseFromString(html, "text/html").querySelectorAll("[data-energy-live]");
        var current = document.querySelectorAll("[data-energy-live]");
        if (fresh.length !== current.length) return;
        for (var i = 0; i < current.length; i++) current[i].innerHTML = fresh[i].innerHTML;
        document.body.setAttribute("data-energy-refreshed", String(Date.now()));
      })
      .catch(function () {
        // Offline or the server restarting: the next tick tries again.
      });
  }

  window.setInterval(function () {
    if (!document.hidden) refresh();
  }, REFRESH_MS);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) refresh();
  });
  window.fieldwatchEnergy = { refresh: refresh };
})();
