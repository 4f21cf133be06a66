/*
 * Device charts (uPlot): one chart per [data-chart] element, all sharing the range chosen in [data-chart-controls].
 *
 * Data comes from GET /api/v1/series with interval=auto, so the server picks raw readings or a rollup resolution
 * that fits the range; aggregated views draw the average as a line over a min–max band, raw views a plain line.
 * It is fetched in the columnar layout through series_client.js (decoded into typed arrays, no object per point).
 * Each chart's CSV link is the same query (with the interval the server chose) as format=csv: what is shown.
 *
 * The "1 h" preset is live: window.fieldwatchCharts.append(uid, metric, ts_ms, value), called by live.js for each
 * pushed reading, slides the window and shows the reading: a new point when the server sent raw readings, or, when
 * auto chose 1m buckets (a device reporting more than max_points readings an hour), folded into the open minute
 * (avg/min/max of the readings pushed since the page loaded, fieldwatchSeries.OpenBuckets), marked partial in the
 * chart's status, and reloaded once that minute has been rolled up. Other ranges are historical and stay still.
 */
(function () {
  "use strict";

  var HOUR = 3600 * 1000;
  var PRESETS = { "1h": HOUR, "24h": 24 * HOUR, "7d": 7 * 24 * HOUR, "30d": 30 * 24 * HOUR, "1y": 365 * 24 * HOUR };
  var LIVE_PRESET = "1h";
  var AGGREGATES = "avg,min,max";
  var HEIGHT = 220;
  var BUCKET_NAMES = { "1m": "minute", "5m": "5 minutes", "1h": "hour", "1d": "day (UTC)" };

  var controls = document.querySelector("[data-chart-controls]");
  var elements = Array.prototype.slice.call(document.querySelectorAll("[data-chart]"));
  var charts = new Map(); // "uid:metric" -> chart state
  var state = { preset: LIVE_PRESET, start: 0, end: 0, request: 0, reloads: 0 };
  var trackers = new Map(); // uid -> fieldwatchSeries.OpenBuckets while the live preset shows buckets
  var seriesUrl = (controls && controls.getAttribute("data-series-url")) || "/api/v1/series";
  var seriesClient = window.fieldwatchSeries; // series_client.js: the one reader of the series API

  function key(uid, metric) {
    return uid + ":" + metric;
  }

  function pad(n) {
    return (n < 10 ? "0" : "") + n;
  }

  function toLocalInput(ms) {
    var d = new Date(ms);
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function formatValue(value, unit) {
    if (value === null || value === undefined || !isFinite(value)) return "—";
    var text = Math.abs(value) >= 1000 ? Math.round(value).toLocaleString() : String(Math.round(value * 100) / 100);
    return unit ? text + " " + unit : text;
  }

  // Y ticks: as many decimals as the tick step needs, so ticks are distinct however large the values (a totalizer
  // at 800,375 kWh with 0.2 kWh steps reads 800,375.2 / 800,375.4 ..., not 800,375 five times).
  function tickDecimals(splits) {
    var step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 0;
    if (!(step > 0) || !isFinite(step)) return 0;
    for (var d = 0; d < 6; d++) {
      var scaled = step * Math.pow(10, d);
      if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
    }
    return 6;
  }

  function tickLabels(splits) {
    var decimals = tickDecimals(splits);
    return splits.map(function (v) {
      if (v === null || v === undefined || !isFinite(v)) return "";
      return v.toLocaleString(undefined, { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
    });
  }

  // The labels drawn are also left on the chart's element (data-y-ticks), as the canvas holds them only as pixels.
  function yTicks(chart, splits) {
    var labels = tickLabels(splits);
    chart.el.setAttribute("data-y-ticks", labels.join("|"));
    return labels;
  }

  function tickAxisSize(u, values) {
    var longest = (values || []).reduce(function (n, text) { return Math.max(n, String(text).length); }, 0);
    return Math.max(48, longest * 7 + 18);
  }

  function setStatus(chart, text) {
    if (chart.statusEl) chart.statusEl.textContent = text;
  }

  function query(params) {
    return Object.keys(params)
      .map(function (name) {
        return encodeURIComponent(name) + "=" + encodeURIComponent(params[name]);
      })
      .join("&");
  }

  // ------------------------------------------------------------------------------------------------- drawing

  function plotOptions(chart, aggregated) {
    var unit = chart.unit;
    var fmt = function (u, v) {
      return formatValue(v, unit);
    };
    var series = [{}];
    var bands;
    if (aggregated) {
      series.push(
        { label: "avg", stroke: "#1d4ed8", width: 2, value: fmt, spanGaps: false },
        { label: "min", stroke: "rgba(29, 78, 216, 0.35)", width: 1, value: fmt },
        { label: "max", stroke: "rgba(29, 78, 216, 0.35)", width: 1, value: fmt }
      );
      bands = [{ series: [3, 2], fill: "rgba(29, 78, 216, 0.15)" }];
    } else {
      series.push({ label: chart.label, stroke: "#1d4ed8", width: 2, value: fmt });
    }
    var options = {
      width: Math.max(chart.el.clientWidth, 200),
      height: HEIGHT,
      series: series,
      scales: {
        x: {
          time: true,
          range: function () {
            return [state.start / 1000, state.end / 1000];
          },
        },
      },
      axes: [{}, { size: tickAxisSize, values: function (u, splits) { return yTicks(chart, splits); } }],
      legend: { live: true },
    };
    if (bands) options.bands = bands;
    return options;
  }

  // A decoded column as a plain array (live appends push onto it), NaN (a null of the layout) as uPlot's gap.
  function plain(column) {
    var out = new Array(column.length);
    for (var i = 0; i < column.length; i++) out[i] = column[i] === column[i] ? column[i] : null;
    return out;
  }

  function draw(chart, series, interval) {
    var aggregated = series.columns[0] !== "value";
    var xs = new Array(series.ts.length);
    for (var i = 0; i < xs.length; i++) xs[i] = series.ts[i] / 1000;
    var ys = aggregated
      ? [plain(series.values.avg), plain(series.values.min), plain(series.values.max)]
      : [plain(series.values.value)];
    chart.data = [xs].concat(ys);
    chart.aggregated = aggregated;
    if (chart.plot) chart.plot.destroy();
    chart.el.textContent = "";
    chart.plot = new window.uPlot(plotOptions(chart, aggregated), chart.data, chart.el);
    var count = xs.length;
    var what = aggregated ? "averages per " + interval + " with the min–max band" : "raw readings";
    chart.statusText = count ? count + " points, " + what + "." : "No data in this range.";
    setStatus(chart, chart.statusText);
  }

  // An open bucket's avg/min/max at its start: replaces the point there or inserts one in time order.
  function drawBucket(chart, bucket) {
    var x = bucket.start / 1000;
    var xs = chart.data[0];
    var values = chart.aggregated
      ? ["avg", "min", "max"].map(function (name) { return seriesClient.bucketValue(bucket, name); })
      : [seriesClient.bucketValue(bucket, "avg")];
    var at = xs.length;
    while (at > 0 && xs[at - 1] > x) at--;
    if (at > 0 && xs[at - 1] === x) {
      for (var i = 1; i < chart.data.length; i++) chart.data[i][at - 1] = values[i - 1];
      return;
    }
    xs.splice(at, 0, x);
    for (var j = 1; j < chart.data.length; j++) chart.data[j].splice(at, 0, values[j - 1]);
  }

  function markPartial(chart) {
    var tracker = trackers.get(chart.uid);
    var open = tracker ? tracker.list().filter(function (b) { return b.key === key(chart.uid, chart.metric); }) : [];
    chart.liveBuckets = open;
    if (!open.length) return setStatus(chart, chart.statusText);
    var newest = open[open.length - 1];
    var name = BUCKET_NAMES[tracker.interval] || tracker.interval; // auto picks 1m for the live hour, if not raw
    setStatus(chart, chart.statusText + " " + (newest.end > Date.now() ? "Current" : "Last") + " " + name + ": live, partial.");
  }

  // The server's coverage of one device's payload: a new tracker when the live preset shows buckets, or the
  // open buckets the payload does not cover yet (to draw again over it).
  function track(uid, payload) {
    var bucketed = state.preset === LIVE_PRESET && seriesClient.bucketStart(payload.interval, 0) !== null;
    var served = {};
    payload.series.forEach(function (s) {
      served[key(s.device, s.metric)] = s.ts.length ? s.ts[s.ts.length - 1] : null;
    });
    var tracker = trackers.get(uid);
    if (bucketed && tracker && tracker.interval === payload.interval) return tracker.rebase(served);
    if (tracker) tracker.cancel();
    if (bucketed) trackers.set(uid, new seriesClient.OpenBuckets(payload.interval, served));
    else trackers.delete(uid);
    return {};
  }

  // One reload of the live range once the oldest open minute has been rolled up (not one per reading).
  function settle(uid) {
    var tracker = trackers.get(uid);
    if (!tracker) return;
    tracker.schedule(function () {
      if (state.preset !== LIVE_PRESET) return;
      state.reloads += 1;
      choosePreset(LIVE_PRESET);
    });
  }

  function updateCsv(chart, interval) {
    if (!chart.csvLink) return;
    chart.csvLink.href =
      seriesUrl +
      "?" +
      query({
        device: chart.uid,
        metrics: chart.metric,
        start: state.start,
        end: state.end,
        interval: interval,
        agg: AGGREGATES,
        format: "csv",
      });
  }

  // ------------------------------------------------------------------------------------------------- loading

  function load() {
    var request = ++state.request;
    var byDevice = new Map();
    charts.forEach(function (chart) {
      if (!byDevice.has(chart.uid)) byDevice.set(chart.uid, []);
      byDevice.get(chart.uid).push(chart);
      setStatus(chart, "Loading…");
    });
    showRange();
    byDevice.forEach(function (list, uid) {
      seriesClient
        .fetchColumns(seriesUrl, {
          device: uid,
          metrics: list.map(function (c) { return c.metric; }).join(","),
          start: state.start,
          end: state.end,
          interval: "auto",
          agg: AGGREGATES,
        })
        .then(function (answer) {
          var payload = answer.payload;
          if (request !== state.request) return; // a newer range was chosen meanwhile
          var kept = track(uid, payload);
          payload.series.forEach(function (s) {
            var chart = charts.get(key(s.device, s.metric));
            if (!chart) return;
            draw(chart, s, payload.interval);
            (kept[key(s.device, s.metric)] || []).forEach(function (bucket) { drawBucket(chart, bucket); });
            if (kept[key(s.device, s.metric)]) chart.plot.setData(chart.data);
            markPartial(chart);
            updateCsv(chart, payload.interval);
          });
          settle(uid);
        })
        .catch(function (error) {
          if (request !== state.request) return;
          list.forEach(function (chart) {
            setStatus(chart, "Could not load the data (" + error.message + "). Choose the range again to retry.");
          });
          settle(uid);
        });
    });
  }

  function showRange() {
    if (!controls) return;
    var label = controls.querySelector("[data-chart-range]");
    if (label) {
      label.textContent =
        "Showing " + new Date(state.start).toLocaleString() + " – " + new Date(state.end).toLocaleString() +
        (state.preset === LIVE_PRESET ? " (live)" : "");
    }
    var start = controls.querySelector("#range-start");
    var end = controls.querySelector("#range-end");
    if (start) start.value = toLocalInput(state.start);
    if (end) end.value = toLocalInput(state.end);
    Array.prototype.forEach.call(controls.querySelectorAll("[data-range]"), function (button) {
      button.setAttribute("aria-pressed", button.getAttribute("data-range") === state.preset ? "true" : "false");
    });
  }

  function choosePreset(preset) {
    if (!PRESETS[preset]) return;
    state.preset = preset;
    state.end = Date.now();
    state.start = state.end - PRESETS[preset];
    load();
  }

  // ------------------------------------------------------------------------------------------------- live appends

  function append(uid, metric, tsMs, value) {
    if (state.preset !== LIVE_PRESET) return;
    var chart = charts.get(key(uid, metric));
    if (!chart || !chart.plot || !chart.data) return;
    var tracker = trackers.get(uid);
    if (tracker) {
      var bucket = tracker.take(key(uid, metric), tsMs, value);
      if (!bucket) return; // a bucket the server returned: its figure covers the reading
      drawBucket(chart, bucket);
      chart.liveFolds = (chart.liveFolds || 0) + 1;
      state.end = Math.max(Date.now(), tsMs + 1);
      state.start = state.end - PRESETS[LIVE_PRESET];
      trim(chart);
      chart.plot.setData(chart.data);
      markPartial(chart);
      settle(uid);
      return;
    }
    var x = tsMs / 1000;
    var xs = chart.data[0];
    if (xs.length && x <= xs[xs.length - 1]) return; // already shown (or out of order)
    xs.push(x);
    for (var i = 1; i < chart.data.length; i++) chart.data[i].push(value);
    state.end = Math.max(Date.now(), tsMs + 1);
    state.start = state.end - PRESETS[LIVE_PRESET];
    trim(chart);
    chart.plot.setData(chart.data);
  }

  // Points that slid out of the live window.
  function trim(chart) {
    var xs = chart.data[0];
    var cut = 0;
    while (cut < xs.length && xs[cut] < state.start / 1000) cut++;
    if (cut) chart.data = chart.data.map(function (column) { return column.slice(cut); });
  }

  window.fieldwatchCharts = { append: append, reload: load, charts: charts, state: state, trackers: trackers };

  // ------------------------------------------------------------------------------------------------- start

  if (!elements.length) return;
  elements.forEach(function (el) {
    var figure = el.closest("figure") || el.parentNode;
    var chart = {
      el: el,
      uid: el.getAttribute("data-device"),
      metric: el.getAttribute("data-metric"),
      unit: el.getAttribute("data-unit") || "",
      label: el.getAttribute("data-label") || el.getAttribute("data-metric"),
      statusEl: figure.querySelector("[data-chart-status]"),
      csvLink: figure.querySelector("[data-chart-csv]"),
      plot: null,
      data: null,
    };
    charts.set(key(chart.uid, chart.metric), chart);
  });

  if (typeof window.uPlot !== "function") {
    charts.forEach(function (chart) {
      setStatus(chart, "The chart library is not installed (run `npm ci`, or `make setup`).");
    });
    return;
  }

  if (controls) {
    controls.addEventListener("click", function (event) {
      var button = event.target.closest("[data-range]");
      if (button) choosePreset(button.getAttribute("data-range"));
    });
    var form = controls.querySelector("[data-custom-range]");
    if (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        var start = new Date(form.elements.start.value).getTime();
        var end = new Date(form.elements.end.value).getTime();
        var label = controls.querySelector("[data-chart-range]");
        if (!isFinite(start) || !isFinite(end) || start >= end) {
          if (label) label.textContent = "Choose a start before the end.";
          return;
        }
        state.preset = null;
        state.start = start;
        state.end = end;
        load();
      });
    }
  }

  if (typeof ResizeObserver === "function") {
    var observer = new ResizeObserver(function (entries) {
      entries.forEach(function (entry) {
        charts.forEach(function (chart) {
          var width = Math.max(Math.floor(entry.contentRect.width), 200);
          // Only on a width change: resizing to the same size would re-trigger the observer for nothing.
          if (chart.el === entry.target && chart.plot && chart.plot.width !== width) {
            chart.plot.setSize({ width: width, height: HEIGHT });
          }
        });
      });
    });
    charts.forEach(function (chart) {
      observer.observe(chart.el);
    });
  }

  choosePreset(LIVE_PRESET);
})();
