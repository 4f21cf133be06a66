/*
 * Saved charts (uPlot): every [data-saved-chart] figure draws a chart configuration — series across devices, a
 * range (preset or custom), an aggregate, a resolution (auto: the server picks), a style (line, area, bars, steps),
 * the first unit on the left axis and a second on the right. Data comes through window.fieldwatchSeries (the series
 * API, its columnar layout); the footer shows the payload's size and encoding.
 *
 * Relative ranges are live: readings pushed by live.js (the "fieldwatch:reading" event) reach their series and the
 * window slides. On raw data each reading is a new point; on rollup buckets (the payload's interval 1m/5m/1h/1d)
 * it is folded into its series' open bucket (fieldwatchSeries.OpenBuckets: x = the bucket start, the chart's
 * aggregate over the readings pushed since the page loaded), marked partial in the footer, and once that bucket
 * has closed and its rollup can be read the chart reloads, so closed buckets show the server's figure. These
 * charts send no tz, so 1d buckets are UTC days, which the fold aligns to as well.
 * On the builder page ([data-chart-form]) the preview follows the form.
 * window.fieldwatchSavedCharts.charts exposes the drawn charts (their data, liveAppends: raw points appended,
 * liveFolds / liveIgnored: readings folded into a bucket / ignored as the server's, liveBuckets: the open buckets,
 * reloads) for tests.
 */
(function () {
  "use strict";

  var HOUR = 3600 * 1000;
  var LENGTHS = { "1h": HOUR, "24h": 24 * HOUR, "7d": 7 * 24 * HOUR, "30d": 30 * 24 * HOUR, "1y": 365 * 24 * HOUR };
  var COLORS = ["#1d4ed8", "#b91c1c", "#047857", "#a16207", "#7c3aed", "#be185d", "#0e7490", "#4d7c0f"];
  var HEIGHT = 240;
  var BUCKET_NAMES = { "1m": "minute", "5m": "5 minutes", "1h": "hour", "1d": "day (UTC)" };
  var charts = [];
  window.fieldwatchSavedCharts = { charts: charts };

  function jsonFrom(id) {
    var element = document.getElementById(id);
    return element ? JSON.parse(element.textContent) : null;
  }

  function formatNumber(value) {
    if (value === null || value === undefined || !isFinite(value)) return "—";
    var abs = Math.abs(value);
    if (abs >= 1e6) return value.toExponential(3);
    if (abs >= 1000) return Math.round(value).toLocaleString("en-US");
    return String(Math.round(value * 1000) / 1000);
  }

  function kilobytes(bytes) {
    return bytes >= 1024 ? (bytes / 1024).toFixed(1) + " kB" : bytes + " B";
  }

  function bounds(config) {
    if (config.range === "custom" && config.start && config.end) {
      return [new Date(config.start).getTime(), new Date(config.end).getTime()];
    }
    var end = Date.now();
    return [end - (LENGTHS[config.range] || LENGTHS["24h"]), end];
  }

  function Chart(figure, config) {
    this.figure = figure;
    this.plotEl = figure.querySelector("[data-chart-plot]");
    this.statusEl = figure.querySelector("[data-chart-status]");
    this.footerEl = figure.querySelector("[data-chart-footer]");
    this.url = figure.getAttribute("data-series-url") || "/api/v1/series";
    this.plot = null;
    this.data = null;
    this.liveAppends = 0;
    this.liveFolds = 0;
    this.liveIgnored = 0;
    this.liveBuckets = [];
    this.reloads = 0;
    this.loads = 0;
    this.buckets = null; // fieldwatchSeries.OpenBuckets while the data is rollup buckets of a relative range
    this.interval = null;
    this.footerText = "";
    this.request = 0;
    this.config = config;
    charts.push(this);
  }

  Chart.prototype.status = function (text) {
    if (this.statusEl) this.statusEl.textContent = text;
  };

  Chart.prototype.load = function (config) {
    var self = this;
    if (config) self.config = config;
    config = self.config;
    var request = ++self.request;
    if (!config || !config.series || !config.series.length) {
      if (self.plot) self.plot.destroy();
      self.plot = null;
      self.status("Pick series to preview the chart.");
      return;
    }
    var range = bounds(config);
    self.start = range[0];
    self.end = range[1];
    self.status("Loading…");
    window.fieldwatchSeries
      .fetchColumns(self.url, {
        series: config.series.map(function (s) { return s.device + ":" + s.metric; }).join(","),
        start: range[0],
        end: range[1],
        interval: config.resolution || "auto",
        agg: config.aggregate || "avg",
      })
      .then(function (result) {
        if (request !== self.request) return;
        self.loads += 1;
        var kept = self.track(result.payload);
        self.draw(result.payload);
        Object.keys(kept).forEach(function (key) {
          kept[key].forEach(function (bucket) { self.drawBucket(key, bucket); });
        });
        if (self.plot && Object.keys(kept).length) self.plot.setData(self.data);
        var text = result.payload.interval === "raw" ? "raw readings" : config.aggregate + " per " + result.payload.interval;
        self.footerText = kilobytes(result.bytes) + " MessagePack (columns) · " + text;
        self.footerTitle = "Payload: " + result.bytes + " bytes of columnar MessagePack from the series API";
        self.footer();
        self.settle();
      })
      .catch(function (error) {
        if (request !== self.request) return;
        self.status("Could not load the data: " + error.message);
        self.settle(); // a reload that failed is retried (a few times) by the same schedule
      });
  };

  // The payload's interval decides how live readings are taken: raw appends, rollup buckets fold (relative ranges
  // only). Returns the open buckets the payload does not cover yet, to draw again over it.
  Chart.prototype.track = function (payload) {
    var config = this.config;
    var served = {};
    payload.series.forEach(function (s) {
      served[s.device + ":" + s.metric] = s.ts.length ? s.ts[s.ts.length - 1] : null;
    });
    this.interval = payload.interval;
    var bucketed = window.fieldwatchSeries.bucketStart(payload.interval, 0) !== null && config.range !== "custom";
    if (!bucketed || !this.buckets || this.buckets.interval !== payload.interval) {
      if (this.buckets) this.buckets.cancel();
      this.buckets = bucketed ? new window.fieldwatchSeries.OpenBuckets(payload.interval, served) : null;
      this.liveBuckets = [];
      return {};
    }
    var kept = this.buckets.rebase(served);
    this.liveBuckets = this.buckets.list();
    return kept;
  };

  Chart.prototype.seriesIndex = function (key) {
    var index = -1;
    (this.config.series || []).forEach(function (s, i) {
      if (s.device + ":" + s.metric === key) index = i;
    });
    return index;
  };

  // A bucket's figure at its start, in its series' column: replaces the point there or inserts a time.
  Chart.prototype.drawBucket = function (key, bucket) {
    var index = this.seriesIndex(key);
    if (index === -1 || !this.data) return;
    var value = window.fieldwatchSeries.bucketValue(bucket, this.config.aggregate || "avg");
    var x = bucket.start / 1000;
    var xs = this.data[0];
    var at = xs.length;
    while (at > 0 && xs[at - 1] > x) at--;
    if (at > 0 && xs[at - 1] === x) {
      this.data[index + 1][at - 1] = value;
      return;
    }
    xs.splice(at, 0, x);
    for (var i = 1; i < this.data.length; i++) this.data[i].splice(at, 0, i === index + 1 ? value : null);
  };

  // The payload's size and resolution, and which buckets hold only the readings pushed since the page loaded.
  Chart.prototype.footer = function () {
    if (!this.footerEl) return;
    var text = this.footerText;
    var title = this.footerTitle || "";
    var starts = [];
    this.liveBuckets.forEach(function (bucket) {
      if (starts.indexOf(bucket.start) === -1) starts.push(bucket.start);
    });
    if (starts.length) {
      var newest = this.liveBuckets[this.liveBuckets.length - 1];
      var name = BUCKET_NAMES[this.interval] || this.interval;
      text += " · " + (newest.end > Date.now() ? "current " : "last ") + name + ": live, partial";
      if (starts.length > 1) text += " (and " + (starts.length - 1) + " earlier until the server's figures load)";
      title += ". A live bucket holds only the readings pushed since the page loaded; the chart reloads once the " +
        "bucket has closed and the server has rolled it up.";
    }
    this.footerEl.textContent = text;
    this.footerEl.title = title;
  };

  // One reload for the chart once its oldest open bucket has closed and been rolled up (not one per reading).
  Chart.prototype.settle = function () {
    var self = this;
    if (!self.buckets) return;
    self.buckets.schedule(function () {
      self.reloads += 1;
      self.load();
    });
  };

  Chart.prototype.draw = function (payload) {
    var config = this.config;
    var units = [];
    var byKey = {};
    payload.series.forEach(function (s) {
      byKey[s.device + ":" + s.metric] = s;
    });
    var rows = {};
    var columns = config.series.map(function (wanted, index) {
      var s = byKey[wanted.device + ":" + wanted.metric] || { ts: [], values: {}, columns: ["value"], unit: "" };
      var unit = s.unit || wanted.unit || "";
      if (units.indexOf(unit) === -1) units.push(unit);
      var name = s.columns.indexOf(config.aggregate) !== -1 ? config.aggregate : s.columns[0];
      var column = s.values[name] || [];
      for (var i = 0; i < s.ts.length; i++) {
        var x = s.ts[i] / 1000;
        if (!rows[x]) rows[x] = {};
        rows[x][index] = column[i] === column[i] ? column[i] : null; // NaN: the layout's null
      }
      return { label: wanted.label || wanted.device + " · " + wanted.metric, unit: unit };
    });
    var xs = Object.keys(rows).map(Number).sort(function (a, b) { return a - b; });
    this.data = [xs].concat(
      columns.map(function (_, index) {
        return xs.map(function (x) {
          var value = rows[x][index];
          return value === undefined ? null : value;
        });
      })
    );
    this.columns = columns;
    this.units = units;
    this.render();
    var points = xs.length;
    this.status(points ? points + " times, " + columns.length + " series." : "No data in this range.");
  };

  Chart.prototype.render = function () {
    var self = this;
    var config = self.config;
    var paths = null;
    if (config.style === "step" && window.uPlot.paths && window.uPlot.paths.stepped) {
      paths = window.uPlot.paths.stepped({ align: 1 });
    } else if (config.style === "bar" && window.uPlot.paths && window.uPlot.paths.bars) {
      paths = window.uPlot.paths.bars({ size: [0.6, 64] });
    }
    var series = [{}].concat(
      self.columns.map(function (column, index) {
        var color = COLORS[index % COLORS.length];
        var entry = {
          label: column.label + (column.unit ? " (" + column.unit + ")" : ""),
          stroke: color,
          width: 2,
          scale: self.units.indexOf(column.unit) === 0 ? "left" : "right",
          spanGaps: true,
          value: function (u, v) { return formatNumber(v); },
        };
        if (paths) entry.paths = paths;
        if (config.style === "area" || config.style === "bar") entry.fill = color + "33";
        return entry;
      })
    );
    var axes = [{}, { scale: "left", size: 70, values: function (u, splits) { return splits.map(formatNumber); } }];
    if (self.units.length > 1) {
      axes.push({ scale: "right", side: 1, size: 70, grid: { show: false }, values: function (u, splits) { return splits.map(formatNumber); } });
    }
    var options = {
      width: Math.max(self.plotEl.clientWidth, 200),
      height: HEIGHT,
      series: series,
      axes: axes,
      scales: {
        x: { time: true, range: function () { return [self.start / 1000, self.end / 1000]; } },
        left: { auto: true },
        right: { auto: true },
      },
      legend: { live: true },
    };
    if (self.plot) self.plot.destroy();
    self.plotEl.textContent = "";
    self.plot = new window.uPlot(options, self.data, self.plotEl);
  };

  // A pushed reading of one of the series. Raw data: a new time with this series' value (the others have none
  // there). Buckets: folded into the series' open bucket, unless the server already returned that bucket.
  Chart.prototype.append = function (device, metric, tsMs, value) {
    var config = this.config;
    if (!this.plot || !this.data || !config || config.range === "custom") return;
    var key = device + ":" + metric;
    var index = this.seriesIndex(key);
    if (index === -1) return;
    if (this.buckets) {
      var bucket = this.buckets.take(key, tsMs, value);
      if (!bucket) {
        this.liveIgnored += 1;
        return;
      }
      this.drawBucket(key, bucket);
      this.end = Math.max(Date.now(), tsMs + 1);
      this.start = this.end - (LENGTHS[config.range] || LENGTHS["24h"]);
      this.liveFolds += 1;
      this.liveBuckets = this.buckets.list();
      this.lastLive = { device: device, metric: metric, ts: tsMs, value: value, bucket: bucket.start };
      this.plot.setData(this.data);
      this.footer();
      this.settle();
      return;
    }
    var x = tsMs / 1000;
    var xs = this.data[0];
    if (xs.length && x <= xs[xs.length - 1]) return;
    xs.push(x);
    for (var i = 1; i < this.data.length; i++) this.data[i].push(i === index + 1 ? value : null);
    this.end = Math.max(Date.now(), tsMs + 1);
    this.start = this.end - (LENGTHS[config.range] || LENGTHS["24h"]);
    this.liveAppends += 1;
    this.lastLive = { device: device, metric: metric, ts: tsMs, value: value };
    this.plot.setData(this.data);
  };

  document.addEventListener("fieldwatch:reading", function (event) {
    var d = event.detail || {};
    charts.forEach(function (chart) {
      try {
        chart.append(d.device, d.metric, d.ts, d.value);
      } catch (error) {
        // A chart that cannot take the point keeps its data; the next load redraws it.
      }
    });
  });

  // ----------------------------------------------------------------------------------------------- series picker

  // A device select and a metric select filled from the page's #chart-choices (the user's devices and the
  // metrics of their types); used by the builder and by a dashboard's stat card form.
  function picker(container) {
    var choices = jsonFrom("chart-choices") || { devices: [], types: {} };
    var deviceSelect = container.querySelector("[data-series-device]");
    var metricSelect = container.querySelector("[data-series-metric]");
    var devices = {};
    choices.devices.forEach(function (device) {
      devices[device.uid] = device;
      var option = document.createElement("option");
      option.value = device.uid;
      option.textContent = device.name + " (" + device.uid + ", " + device.site + ")";
      deviceSelect.appendChild(option);
    });
    function metricsOf(uid) {
      var device = devices[uid];
      return device ? choices.types[String(device.type)] || [] : [];
    }
    function fillMetrics() {
      metricSelect.textContent = "";
      metricsOf(deviceSelect.value).forEach(function (metric) {
        var option = document.createElement("option");
        option.value = metric.key;
        option.textContent = metric.label + (metric.unit ? " (" + metric.unit + ")" : "");
        metricSelect.appendChild(option);
      });
    }
    deviceSelect.addEventListener("change", fillMetrics);
    fillMetrics();
    return { devices: devices, metricsOf: metricsOf, deviceSelect: deviceSelect, metricSelect: metricSelect };
  }

  var statForm = document.querySelector("[data-stat-picker]");
  if (statForm) {
    var stat = picker(statForm);
    statForm.addEventListener("submit", function () {
      statForm.querySelector("[data-stat-series]").value = stat.deviceSelect.value + ":" + stat.metricSelect.value;
    });
  }

  // ----------------------------------------------------------------------------------------------- the builder

  function builder(figure, form) {
    var initial = jsonFrom("chart-config");
    var pick = picker(form);
    var deviceSelect = pick.deviceSelect;
    var metricSelect = pick.metricSelect;
    var list = form.querySelector("[data-series-list]");
    var devices = pick.devices;
    var metricsOf = pick.metricsOf;
    function picked() {
      return Array.prototype.map.call(list.querySelectorAll("input[name=series]"), function (input) {
        var value = input.value;
        var cut = value.lastIndexOf(":");
        var uid = value.slice(0, cut), key = value.slice(cut + 1);
        var metric = metricsOf(uid).filter(function (m) { return m.key === key; })[0] || { label: key, unit: "" };
        var device = devices[uid] || { name: uid };
        return { device: uid, metric: key, label: device.name + " · " + metric.label, unit: metric.unit };
      });
    }
    function addSeries(uid, key) {
      var value = uid + ":" + key;
      if (!uid || !key || list.querySelector('input[value="' + value.replace(/["\\]/g, "\\$&") + '"]')) return;
      var item = document.createElement("li");
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = "series";
      input.value = value;
      var label = document.createElement("span");
      var device = devices[uid] || { name: uid };
      label.textContent = device.name + " · " + key;
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "button button--quiet";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + label.textContent);
      remove.addEventListener("click", function () {
        item.remove();
        preview();
      });
      item.appendChild(input);
      item.appendChild(label);
      item.appendChild(document.createTextNode(" "));
      item.appendChild(remove);
      list.appendChild(item);
    }
    function current() {
      var f = form.elements;
      return {
        range: f.range.value,
        start: f.range_start.value ? new Date(f.range_start.value).toISOString() : null,
        end: f.range_end.value ? new Date(f.range_end.value).toISOString() : null,
        aggregate: f.aggregate.value,
        resolution: f.resolution.value,
        style: f.style.value,
        series: picked(),
      };
    }
    var chart = new Chart(figure, null);
    function preview() {
      chart.load(current());
    }
    form.querySelector("[data-add-series]").addEventListener("click", function () {
      addSeries(deviceSelect.value, metricSelect.value);
      preview();
    });
    ["range", "range_start", "range_end", "aggregate", "resolution", "style"].forEach(function (name) {
      form.elements[name].addEventListener("change", preview);
    });
    ((initial && initial.series) || []).forEach(function (s) {
      addSeries(s.device, s.metric);
    });
    preview();
  }

  // ----------------------------------------------------------------------------------------------- start

  var figures = document.querySelectorAll("[data-saved-chart]");
  if (!figures.length) return;
  if (typeof window.uPlot !== "function" || !window.fieldwatchSeries) {
    Array.prototype.forEach.call(figures, function (figure) {
      var status = figure.querySelector("[data-chart-status]");
      if (status) status.textContent = "The chart library is not installed (run `npm ci`, or `make setup`).";
    });
    return;
  }
  Array.prototype.forEach.call(figures, function (figure) {
    var form = document.querySelector("[data-chart-form]");
    if (figure.hasAttribute("data-builder")) {
      if (form) builder(figure, form);
      else new Chart(figure, jsonFrom("chart-config")).load();
    } else {
      new Chart(figure, jsonFrom(figure.getAttribute("data-config-id"))).load();
    }
  });

  if (typeof ResizeObserver === "function") {
    var observer = new ResizeObserver(function () {
      charts.forEach(function (chart) {
        var width = Math.max(Math.floor(chart.plotEl.clientWidth), 200);
        if (chart.plot && chart.plot.width !== width) chart.plot.setSize({ width: width, height: HEIGHT });
      });
    });
    charts.forEach(function (chart) {
      observer.observe(chart.plotEl);
    });
  }
})();
