/*
 * The one place the dashboard reads GET /api/v1/series: window.fieldwatchSeries.fetchColumns(url, params) (the
 * device page's and the saved charts) asks for the columnar layout (application/vnd.fieldwatch.series.v2+msgpack,
 * docs/series-layout.md) and resolves to { payload, bytes, encoding } with payload = decodeColumns(body): per series
 * ts (Float64Array, epoch ms) and values {column: Float32Array or Float64Array}, a NaN standing for the JSON
 * layout's null; no object per point. When the series API's layout changes, this file is the only one to follow it.
 *
 * It also knows the API's buckets, for live charts that fold pushed readings into the bucket still open
 * (bucketStart, foldReading, bucketValue): UTC buckets [start, start + interval) floored from the epoch, as
 * apps/telemetry/rollups.py aligns them, and the aggregates as apps/telemetry/queries.py defines them.
 */
(function () {
  "use strict";

  var utf8 = new TextDecoder("utf-8");
  var COLUMNS = "application/vnd.fieldwatch.series.v2+msgpack";
  var LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

  // A MessagePack decoder for what the series API sends: maps, arrays, strings, binaries, integers, floats, nil and
  // booleans (no extension types).
  function decode(buffer) {
    var view = new DataView(buffer);
    var bytes = new Uint8Array(buffer);
    var offset = 0;

    function str(length) {
      var text = utf8.decode(bytes.subarray(offset, offset + length));
      offset += length;
      return text;
    }
    function array(length) {
      var out = new Array(length);
      for (var i = 0; i < length; i++) out[i] = value();
      return out;
    }
    function map(length) {
      var out = {};
      for (var i = 0; i < length; i++) {
        var key = value();
        out[key] = value();
      }
      return out;
    }
    function bin(length) {
      var out = bytes.slice(offset, offset + length);
      offset += length;
      return out;
    }
    function u64() {
      var high = view.getUint32(offset), low = view.getUint32(offset + 4);
      offset += 8;
      return high * 4294967296 + low;
    }
    function i64() {
      var high = view.getInt32(offset), low = view.getUint32(offset + 4);
      offset += 8;
      return high * 4294967296 + low;
    }
    function value() {
      var type = bytes[offset++];
      var n;
      if (type <= 0x7f) return type;
      if (type >= 0xe0) return type - 0x100;
      if ((type & 0xf0) === 0x80) return map(type & 0x0f);
      if ((type & 0xf0) === 0x90) return array(type & 0x0f);
      if ((type & 0xe0) === 0xa0) return str(type & 0x1f);
      switch (type) {
        case 0xc0: return null;
        case 0xc2: return false;
        case 0xc3: return true;
        case 0xc4: n = bytes[offset]; offset += 1; return bin(n);
        case 0xc5: n = view.getUint16(offset); offset += 2; return bin(n);
        case 0xc6: n = view.getUint32(offset); offset += 4; return bin(n);
        case 0xca: n = view.getFloat32(offset); offset += 4; return n;
        case 0xcb: n = view.getFloat64(offset); offset += 8; return n;
        case 0xcc: return bytes[offset++];
        case 0xcd: n = view.getUint16(offset); offset += 2; return n;
        case 0xce: n = view.getUint32(offset); offset += 4; return n;
        case 0xcf: return u64();
        case 0xd0: n = view.getInt8(offset); offset += 1; return n;
        case 0xd1: n = view.getInt16(offset); offset += 2; return n;
        case 0xd2: n = view.getInt32(offset); offset += 4; return n;
        case 0xd3: return i64();
        case 0xd9: n = bytes[offset]; offset += 1; return str(n);
        case 0xda: n = view.getUint16(offset); offset += 2; return str(n);
        case 0xdb: n = view.getUint32(offset); offset += 4; return str(n);
        case 0xdc: n = view.getUint16(offset); offset += 2; return array(n);
        case 0xdd: n = view.getUint32(offset); offset += 4; return array(n);
        case 0xde: n = view.getUint16(offset); offset += 2; return map(n);
        case 0xdf: n = view.getUint32(offset); offset += 4; return map(n);
        default: throw new Error("MessagePack type 0x" + type.toString(16) + " is not supported");
      }
    }
    return value();
  }

  function query(params) {
    return Object.keys(params)
      .filter(function (name) { return params[name] !== null && params[name] !== undefined && params[name] !== ""; })
      .map(function (name) { return encodeURIComponent(name) + "=" + encodeURIComponent(params[name]); })
      .join("&");
  }

  // ------------------------------------------------------------------------------------------------- columnar layout

  // A little-endian blob (a fresh copy from decode's bin, so aligned) as a typed array of its type.
  function typed(blob, type) {
    var Type = { i32: Int32Array, f32: Float32Array, f64: Float64Array }[type];
    if (!Type) throw new Error("unknown column type " + type);
    var count = blob.byteLength / Type.BYTES_PER_ELEMENT;
    if (LITTLE_ENDIAN) return new Type(blob.buffer, blob.byteOffset, count);
    var view = new DataView(blob.buffer, blob.byteOffset, blob.byteLength);
    var out = new Type(count);
    for (var i = 0; i < count; i++) {
      out[i] = type === "i32" ? view.getInt32(i * 4, true) : type === "f32" ? view.getFloat32(i * 4, true) : view.getFloat64(i * 8, true);
    }
    return out;
  }

  function timestamps(series) {
    var ts = new Float64Array(series.count);
    if (!series.count) return ts;
    var deltas = typed(series.ts_deltas, series.ts_delta_type);
    var at = series.ts_base;
    ts[0] = at;
    for (var i = 0; i < deltas.length; i++) {
      at += deltas[i];
      ts[i + 1] = at;
    }
    return ts;
  }

  function decodeColumns(buffer) {
    var body = decode(buffer);
    if (body.layout !== 2) throw new Error("not the columnar series layout (layout " + body.layout + ")");
    return {
      start: body.start,
      end: body.end,
      interval: body.interval,
      series: body.series.map(function (series) {
        var values = {};
        var types = {};
        series.columns.forEach(function (column, index) {
          types[column] = series.types[index];
          values[column] = typed(series.values[index], series.types[index]);
        });
        return {
          device: series.device,
          metric: series.metric,
          unit: series.unit,
          precision: series.precision,
          columns: series.columns,
          ts: timestamps(series),
          values: values,
          types: types,
        };
      }),
    };
  }

  function fetchColumns(url, params) {
    return window
      .fetch(url + "?" + query(params), { credentials: "same-origin", headers: { Accept: COLUMNS } })
      .then(function (response) {
        return response.arrayBuffer().then(function (buffer) {
          if (!response.ok) {
            var refusal = JSON.parse(utf8.decode(buffer)); // refusals are always JSON
            throw new Error(refusal.detail || JSON.stringify(refusal));
          }
          return { payload: decodeColumns(buffer), bytes: buffer.byteLength, encoding: "columns" };
        });
      });
  }

  // ------------------------------------------------------------------------------------------------- open buckets

  // The rollup intervals in ms. `1d` is a UTC day: the charts that fold live readings ask without `tz` (UTC), and
  // local days (`1d` with a tz) are not folded (bucketStart returns null for an interval it does not know).
  var INTERVAL_MS = { "1m": 60000, "5m": 300000, "1h": 3600000, "1d": 86400000 };

  // The start (epoch ms) of the bucket of `interval` holding tsMs, or null when `interval` is not a bucket (raw).
  function bucketStart(interval, tsMs) {
    var size = INTERVAL_MS[interval];
    if (!size || typeof tsMs !== "number" || !isFinite(tsMs)) return null;
    return Math.floor(tsMs / size) * size;
  }

  // A reading folded into a bucket's running figures (bucket null: a new bucket from this reading). Pure: returns a
  // new object. mean/m2 are Welford's, so stddev needs no sum of squares; avg stays sum / count as on the server.
  function foldReading(bucket, interval, tsMs, value) {
    if (typeof value !== "number" || !isFinite(value)) return bucket;
    if (!bucket) {
      var start = bucketStart(interval, tsMs);
      return {
        start: start,
        end: start + INTERVAL_MS[interval],
        count: 1,
        sum: value,
        min: value,
        max: value,
        first: value,
        firstTs: tsMs,
        last: value,
        lastTs: tsMs,
        mean: value,
        m2: 0,
      };
    }
    var count = bucket.count + 1;
    var delta = value - bucket.mean;
    var mean = bucket.mean + delta / count;
    return {
      start: bucket.start,
      end: bucket.end,
      count: count,
      sum: bucket.sum + value,
      min: Math.min(bucket.min, value),
      max: Math.max(bucket.max, value),
      first: tsMs < bucket.firstTs ? value : bucket.first,
      firstTs: Math.min(tsMs, bucket.firstTs),
      last: tsMs >= bucket.lastTs ? value : bucket.last,
      lastTs: Math.max(tsMs, bucket.lastTs),
      mean: mean,
      m2: bucket.m2 + delta * (value - mean),
    };
  }

  // A bucket's figure for one aggregate (null where the server's would be null: stddev of one reading).
  function bucketValue(bucket, aggregate) {
    if (!bucket || !bucket.count) return null;
    switch (aggregate) {
      case "avg": return bucket.sum / bucket.count;
      case "min": return bucket.min;
      case "max": return bucket.max;
      case "first": return bucket.first;
      case "last": return bucket.last;
      case "sum": return bucket.sum;
      case "count": return bucket.count;
      case "stddev": return bucket.count > 1 ? Math.sqrt(Math.max(0, bucket.m2 / (bucket.count - 1))) : null;
      default: return null;
    }
  }

  // When a closed bucket's rollup can be read: rollups.py closes a 1m bucket GRACE (2 min) after its end and
  // coarser ones when the 1m watermark passes their end, on a beat job every 30 s; then some slack for the run.
  var SETTLE_MS = 160000;
  var RETRY_MS = 60000; // a rollup still missing at SETTLE_MS (the job running late): ask again, a few times
  var RETRIES = 3;

  // The open buckets a live chart folds pushed readings into, per series key, with what the server already
  // returned (served: key -> ts of its last bucket in the payload): a reading of a bucket the server returned is
  // ignored (its figure covers it). Each bucket holds only readings pushed since the page loaded, so it is partial
  // until the server's rollup replaces it; schedule(reload) calls reload once the oldest open bucket has settled.
  function OpenBuckets(interval, served) {
    this.interval = interval;
    this.served = served || {};
    this.buckets = {}; // key -> buckets ascending by start
    this.timer = null;
    this.dueAt = null;
    this.retries = 0;
  }

  // Fold a reading; returns its bucket, or null when the interval is not a bucket or the server has the bucket.
  OpenBuckets.prototype.take = function (key, tsMs, value) {
    var start = bucketStart(this.interval, tsMs);
    if (start === null || typeof value !== "number" || !isFinite(value)) return null;
    var served = this.served[key];
    if (served !== undefined && served !== null && start <= served) return null;
    var list = this.buckets[key] || (this.buckets[key] = []);
    var at = list.length;
    while (at > 0 && list[at - 1].start > start) at--;
    if (at > 0 && list[at - 1].start === start) {
      list[at - 1] = foldReading(list[at - 1], this.interval, tsMs, value);
      return list[at - 1];
    }
    var bucket = foldReading(null, this.interval, tsMs, value);
    list.splice(at, 0, bucket);
    return bucket;
  };

  // A new payload's coverage: drop the buckets it now has; returns {key: [buckets still open]} to draw again.
  OpenBuckets.prototype.rebase = function (served) {
    var self = this;
    var kept = {};
    var dropped = false;
    self.served = served || {};
    Object.keys(self.buckets).forEach(function (key) {
      var last = self.served[key];
      var list = self.buckets[key].filter(function (bucket) {
        return last === undefined || last === null || bucket.start > last;
      });
      if (list.length !== self.buckets[key].length) dropped = true;
      if (list.length) kept[key] = list;
    });
    self.buckets = kept;
    if (dropped) self.retries = 0;
    return kept;
  };

  // Every open bucket, oldest first: {key, start, end, count, partial} (what the charts expose for tests).
  OpenBuckets.prototype.list = function () {
    var self = this;
    var out = [];
    Object.keys(self.buckets).forEach(function (key) {
      self.buckets[key].forEach(function (bucket) {
        out.push({ key: key, start: bucket.start, end: bucket.end, count: bucket.count, partial: true });
      });
    });
    return out.sort(function (a, b) { return a.start - b.start; });
  };

  // When the oldest bucket still awaited has settled (null: none). Buckets given up on stay drawn, partial.
  OpenBuckets.prototype.settleAt = function () {
    var at = null;
    var self = this;
    Object.keys(self.buckets).forEach(function (key) {
      self.buckets[key].forEach(function (bucket) {
        if (!bucket.givenUp && (at === null || bucket.end + SETTLE_MS < at)) at = bucket.end + SETTLE_MS;
      });
    });
    return at;
  };

  // One timer for the chart, however many readings: reload() once the oldest open bucket has settled, or again
  // RETRY_MS later (RETRIES times) while the server still lacks a settled bucket.
  OpenBuckets.prototype.schedule = function (reload) {
    var self = this;
    var at = self.settleAt();
    var now = Date.now();
    if (at === null) return;
    if (self.timer !== null && (at <= now || self.dueAt <= at)) return; // already due by then (or a retry pending)
    if (at <= now) {
      if (self.retries >= RETRIES) {
        Object.keys(self.buckets).forEach(function (key) {
          self.buckets[key].forEach(function (bucket) {
            if (bucket.end + SETTLE_MS <= now) bucket.givenUp = true;
          });
        });
        at = self.settleAt();
      } else {
        self.retries += 1;
        at = now + RETRY_MS;
      }
    }
    if (at === null || (self.timer !== null && self.dueAt <= at)) return;
    self.cancel();
    self.dueAt = at;
    self.timer = window.setTimeout(function () {
      self.timer = null;
      self.dueAt = null;
      reload();
    }, Math.max(0, at - now));
  };

  OpenBuckets.prototype.cancel = function () {
    if (this.timer !== null) window.clearTimeout(this.timer);
    this.timer = null;
    this.dueAt = null;
  };

  window.fieldwatchSeries = {
    fetchColumns: fetchColumns,
    OpenBuckets: OpenBuckets,
    SETTLE_MS: SETTLE_MS,
    bucketStart: bucketStart,
    foldReading: foldReading,
    bucketValue: bucketValue,
    INTERVAL_MS: INTERVAL_MS,
    decode: decode,
    decodeColumns: decodeColumns,
    query: query,
    COLUMNS: COLUMNS,
  };
})();
