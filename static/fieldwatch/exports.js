/*
 * Exports from the dashboard: a [data-export-form] starts an export through POST /api/v1/exports (the async export
 * the API documents) and follows its progress until it is done (download link and expiry) or failed; on the Exports
 * page, every unfinished [data-export-row data-export-id data-export-url] is followed the same way.
 *
 * Progress is pushed: live.js subscribes the page's websocket to the user's own exports and dispatches each job
 * state as `fieldwatch:export`. While the websocket is down (`fieldwatch:live-closed`, or not up yet) the job is
 * polled instead, every FALLBACK_POLL_MS; after a reconnect, and for rows rendered before the subscription, it is
 * looked at once, since what changed meanwhile was not pushed. A push is at most once, so a job not heard of for
 * QUIET_CHECK_MS is looked at once more.
 */
(function () {
  "use strict";

  var FALLBACK_POLL_MS = 2000;
  var QUIET_CHECK_MS = 15000;
  var EARLY_KEEP = 20;
  var FINISHED = { done: true, failed: true };

  var followed = {}; // job id -> {url, update, timer, heardAt}
  var early = {}; // pushes for a job whose POST answer has not come back yet

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }
  function localInput(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function pushing() {
    var live = window.fieldwatchLive;
    return !!(live && live.connected && live.exportsSubscribed);
  }

  function apply(id, job) {
    var entry = followed[id];
    if (!entry) return;
    entry.heardAt = Date.now();
    entry.update(job);
    if (FINISHED[job.status]) {
      window.clearTimeout(entry.timer);
      delete followed[id];
    }
  }

  function schedule(id, wait) {
    var entry = followed[id];
    if (!entry) return;
    window.clearTimeout(entry.timer);
    entry.timer = window.setTimeout(function () {
      var current = followed[id];
      if (!current) return;
      if (pushing() && Date.now() - current.heardAt < QUIET_CHECK_MS) schedule(id);
      else poll(id);
    }, wait !== undefined ? wait : pushing() ? QUIET_CHECK_MS : FALLBACK_POLL_MS);
  }

  function poll(id) {
    var entry = followed[id];
    if (!entry) return;
    window
      .fetch(entry.url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      })
      .then(function (job) {
        apply(id, job);
        schedule(id);
      })
      .catch(function () {
        schedule(id, FALLBACK_POLL_MS * 2);
      });
  }

  // Follow one job: update(job) on every state pushed or polled, until it is done or failed.
  function follow(id, url, update, rendered) {
    followed[id] = { url: url, update: update, timer: null, heardAt: Date.now(), rendered: !!rendered };
    if (early[id]) {
      var job = early[id];
      delete early[id];
      apply(id, job);
    }
    schedule(id);
  }

  document.addEventListener("fieldwatch:export", function (event) {
    var job = event.detail;
    if (!job || !job.id) return;
    if (followed[job.id]) {
      apply(job.id, job);
      return;
    }
    early[job.id] = job;
    var ids = Object.keys(early);
    if (ids.length > EARLY_KEEP) delete early[ids[0]];
  });
  document.addEventListener("fieldwatch:live-closed", function () {
    Object.keys(followed).forEach(function (id) { schedule(id, FALLBACK_POLL_MS); });
  });
  document.addEventListener("fieldwatch:exports-live", function (event) {
    var reconnected = event.detail && event.detail.reconnected;
    Object.keys(followed).forEach(function (id) {
      var entry = followed[id];
      if (reconnected || entry.rendered) {
        entry.rendered = false;
        poll(id);
      } else {
        schedule(id);
      }
    });
  });

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
          follow(answer.id, answer.url, function (job) { show(box, job); });
        })
        .catch(function (error) {
          show(box, { status: "refused", progress: 0, error: error.message });
        });
    });
  });

  Array.prototype.forEach.call(document.querySelectorAll("[data-export-row][data-export-url]"), function (row) {
    var id = row.getAttribute("data-export-id");
    follow(id, row.getAttribute("data-export-url"), function (job) { show(row, job); }, true);
  });
})();
