/*
 * The one place the dashboard reads GET /api/v1/series: window.fieldwatchSeries.fetchColumns(url, params) (the
 * device page's and the saved charts) asks for the columnar layout (application/vnd.fieldwatch.series.v2+msgpack,
 * docs/series-layout.md) and resolves to { payload, bytes, encoding } with payload = decodeColumns(body): per series
 * ts (Float64Array, epoch ms) and values {column: Float32Array or Float64Array}, a NaN standing for the JSON
 * layout's null; no object per point. When the series API's layout changes, this file is the only one to follow it.
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

  window.fieldwatchSeries = {
    fetchColumns: fetchColumns,
    decode: decode,
    decodeColumns: decodeColumns,
    query: query,
    COLUMNS: COLUMNS,
  };
})();
