/*
 * The one place the dashboard's saved charts read GET /api/v1/series: window.fieldwatchSeries.fetch(url, params)
 * resolves to { payload, bytes, encoding }. It asks for MessagePack where the browser can decode it (TextDecoder,
 * DataView) and falls back to JSON; the payload is the document the API documents either way. When the series
 * API's MessagePack layout changes, this file is the only one to follow it.
 */
(function () {
  "use strict";

  var utf8 = typeof TextDecoder === "function" ? new TextDecoder("utf-8") : null;
  var MSGPACK = "application/msgpack";

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

  function fetchSeries(url, params) {
    var wantMsgpack = utf8 !== null && typeof DataView === "function";
    // Only one type: DRF picks among the listed types by its renderers' order, not by q-values.
    var accept = wantMsgpack ? MSGPACK : "application/json";
    return window
      .fetch(url + "?" + query(params), { credentials: "same-origin", headers: { Accept: accept } })
      .then(function (response) {
        return response.arrayBuffer().then(function (buffer) {
          var type = response.headers.get("Content-Type") || "";
          var msgpack = type.indexOf("msgpack") !== -1;
          var payload = msgpack ? decode(buffer) : JSON.parse(utf8 ? utf8.decode(buffer) : String.fromCharCode.apply(null, new Uint8Array(buffer)));
          if (!response.ok) {
            var reason = (payload && (payload.detail || JSON.stringify(payload))) || "HTTP " + response.status;
            throw new Error(reason);
          }
          return { payload: payload, bytes: buffer.byteLength, encoding: msgpack ? "MessagePack" : "JSON" };
        });
      });
  }

  window.fieldwatchSeries = { fetch: fetchSeries, decode: decode, query: query };
})();
