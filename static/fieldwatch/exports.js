/*
 * Exports from the dashboard: a [data-export-form] starts an export through POST /api/v1/exports (the async export
 * the API documents) and follows its progress by polling the job until it is done (download link and expiry) or
 * failed; on the Exports page, every unfinished [data-export-row data-export-url] is followed the same way.
 */
(function () {
  "use strict";

  var POLL_MS = 700;

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }
  function localInput(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  // Follow one job: update(job) after every poll, until it is done or failed.
  function follow(url, update) {
    window
      .fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (job) {
        update(job);
        if (job.status === "pending" || job.status === "running") {
          window.setTimeout(function () { follow(url, update); }, POLL_MS);
        }
      })
      .catch(function () {
        window.setTimeout(function () { follow(url, update); }, POLL_MS * 4);
      });
  }

  function show(container, job) {
    var progress = container.querySelector("progress");
    var status = container.querySelector("[data-export-status]");
    var download = container.querySelector("[data-export-download]");
    var expiry = container.querySelector("[data-export-expiry]");
    if (progress) progress.value = job.progress || 0;
    if (status) status.textContent = job.status + (job.status === "running" ? " " + (job.progress || 0) + " %" : "") + (job.error ? ": " + job.error : "");
    if (job.status === "done" && download && job.download_url) {
      download.href = job.download_url;
      download.hidden = false;
      if (expiry && job.expires_at) expiry.textContent = "expires " + new Date(job.expires_at).toLocaleString();
      if (status) status.textContent = "done: " + job.rows + " rows, " + job.file_size + " bytes";
    }
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-export-form]"), function (form) {
    var panel = form.closest(".export-panel") || form.parentNode;
    var box = panel.querySelector("[data-export-progress]");
    var start = Number(form.getAttribute("data-start-ms")), end = Number(form.getAttribute("data-end-ms"));
    if (isFinite(start) && start) form.elements.start.value = localInput(start);
    // The inputs hold whole minutes: the end is rounded up, so the readings of the current minute are exported too.
    if (isFinite(end) && end) form.elements.end.value = localInput(Math.ceil(end / 60000) * 60000);
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var f = form.elements;
      var body = {
        series: (form.getAttribute("data-series") || "").split(",").filter(Boolean),
        start: new Date(f.start.value).toISOString(),
        end: new Date(f.end.value).toISOString(),
        interval: f.interval.value,
        format: f.format.value,
      };
      if (body.interval !== "raw") body.agg = [f.agg.value || "avg"];
      box.hidden = false;
      show(box, { status: "starting", progress: 0 });
      window
        .fetch(form.getAttribute("data-export-api"), {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": f.csrfmiddlewaretoken.value },
          body: JSON.stringify(body),
        })
        .then(function (response) {
          return response.json().then(function (answer) {
            if (!response.ok) throw new Error(JSON.stringify(answer));
            return answer;
          });
        })
        .then(function (answer) {
          follow(answer.url, function (job) { show(box, job); });
        })
        .catch(function (error) {
          show(box, { status: "refused", progress: 0, error: error.message });
        });
    });
  });

  Array.prototype.forEach.call(document.querySelectorAll("[data-export-row][data-export-url]"), function (row) {
    follow(row.getAttribute("data-export-url"), function (job) { show(row, job); });
  });
})();
