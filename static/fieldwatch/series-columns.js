/*
 * Decoder of the columnar series layout, Accept: application/vnd.fieldwatch.series.v2+msgpack (docs/series-layout.md).
 *
 * The body is MessagePack whose bulk is a few binary blobs per series (timestamp deltas, one column of numbers each),
 * so this reads the small MessagePack envelope itself and turns each blob into a typed array without a JavaScript
 * object per point. window.fieldwatchSeriesColumns.decode(arrayBuffer) returns
 *   {start, end, interval, series: [{device, metric, unit, precision, columns, ts: Float64Array (epoch ms),
 *    values: {<column>: Float32Array | Float64Array}, types: {<column>: "f32" | "f64"}}]}
 * where a NaN in a value column is a null of the JSON layout (readings are always finite).
 */
(function () {
  "use strict";

  var LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  var utf8 = new TextDecoder();

  // MessagePack, every type the envelope uses (no extension types: the server never sends them).
  function Reader(bytes) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.at = 0;
  }

  Reader.prototype.read = function () {
    var view = this.view;
    var type = view.getUint8(this.at++);
    if (type < 0x80) return type;
    if (type < 0x90) return this.map(type & 0x0f);
    if (type < 0xa0) return this.array(type & 0x0f);
    if (type < 0xc0) return this.str(type & 0x1f);
    if (type >= 0xe0) return type - 0x100;
    var value;
    switch (type) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: value = view.getUint8(this.at); this.at += 1; return this.bin(value);
      case 0xc5: value = view.getUint16(this.at); this.at += 2; return this.bin(value);
      case 0xc6: value = view.getUint32(this.at); this.at += 4; return this.bin(value);
      case 0xca: value = view.getFloat32(this.at); this.at += 4; return value;
      case 0xcb: value = view.getFloat64(this.at); this.at += 8; return value;
      case 0xcc: value = view.getUint8(this.at); this.at += 1; return value;
      case 0xcd: value = view.getUint16(this.at); this.at += 2; return value;
      case 0xce: value = view.getUint32(this.at); this.at += 4; return value;
      case 0xcf: value = view.getUint32(this.at) * 4294967296 + view.getUint32(this.at + 4); this.at += 8; return value;
      case 0xd0: value = view.getInt8(this.at); this.at += 1; return value;
      case 0xd1: value = view.getInt16(this.at); this.at += 2; return value;
      case 0xd2: value = view.getInt32(this.at); this.at += 4; return value;
      case 0xd3: value = view.getInt32(this.at) * 4294967296 + view.getUint32(this.at + 4); this.at += 8; return value;
      case 0xd9: value = view.getUint8(this.at); this.at += 1; return this.str(value);
      case 0xda: value = view.getUint16(this.at); this.at += 2; return this.str(value);
      case 0xdb: value = view.getUint32(this.at); this.at += 4; return this.str(value);
      case 0xdc: value = view.getUint16(this.at); this.at += 2; return this.array(value);
      case 0xdd: value = view.getUint32(this.at); this.at += 4; return this.array(value);
      case 0xde: value = view.getUint16(this.at); this.at += 2; return this.map(value);
      case 0xdf: value = view.getUint32(this.at); this.at += 4; return this.map(value);
    }
    throw new Error("MessagePack type 0x" + type.toString(16) + " is not part of the series layout");
  };

  Reader.prototype.str = function (length) {
    var text = utf8.decode(this.bytes.subarray(this.at, this.at + length));
    this.at += length;
    return text;
  };

  Reader.prototype.bin = function (length) {
    var blob = this.bytes.subarray(this.at, this.at + length);
    this.at += length;
    return blob;
  };

  Reader.prototype.array = function (length) {
    var items = new Array(length);
    for (var i = 0; i < length; i++) items[i] = this.read();
    return items;
  };

  Reader.prototype.map = function (length) {
    var object = {};
    for (var i = 0; i < length; i++) {
      var name = this.read();
      object[name] = this.read();
    }
    return object;
  };

  // A little-endian blob as a typed array. A copy, since a blob's offset in the body is rarely aligned to its width.
  function typed(blob, type) {
    var Type = { i32: Int32Array, f32: Float32Array, f64: Float64Array }[type];
    if (!Type) throw new Error("unknown column type " + type);
    var count = blob.byteLength / Type.BYTES_PER_ELEMENT;
    if (LITTLE_ENDIAN) return new Type(blob.slice().buffer, 0, count);
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

  function decode(buffer) {
    var body = new Reader(new Uint8Array(buffer)).read();
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

  window.fieldwatchSeriesColumns = { decode: decode, MEDIA_TYPE: "application/vnd.fieldwatch.series.v2+msgpack" };
})();
