/*
 * Fieldwatch live updates: one websocket per dashboard page (ws /ws/live/), following the DOM contract.
 *
 * - connects to <body data-live-url>, subscribes to <body data-sites> (and <body data-device> on a device page);
 *   the server decides which of those the user may see;
 * - "latest"  -> [data-latest="uid:metric"] text, [data-status="uid"] Online, [data-last-seen="uid"], chart append;
 * - "status"  -> [data-status="uid"] Online/Offline and the overview's online/offline counters;
 * - "alert"   -> re-fetches every <tbody data-alert-list data-alert-list-url> (pull-on-notify: the server renders
 *   rows with the buttons this user may press);
 * - on a page with export controls ([data-export-form], [data-export-row]) it also subscribes to the user's own
 *   exports: "export" -> the `fieldwatch:export` DOM event (detail: the job, as the export API answers it);
 *   `fieldwatch:exports-live` when pushes are on (detail.reconnected: after a reconnect), `fieldwatch:live-closed`
 *   when the socket drops (exports.js polls meanwhile);
 * - shows the connection in #live-status and reconnects by itself with backoff (1 s doubling to 10 s).
 * Every lookup is guarded: a page without some of these elements simply has nothing to update.
 * window.fieldwatchLive exposes the state (and `received`, the messages of this page) for tests and debugging.
 */
(function () {
  "use strict";

  var body = document.body;
  if (!body || !body.getAttribute("data-live-url")) {
    return;
  }

  var MIN_DELAY = 1000;
  var MAX_DELAY = 10000;
  var RECEIVED_KEEP = 500;
  var ALERT_REFRESH_DEBOUNCE = 250;
  var LATEST_REFRESH_MAX = 50; // devices re-read after a reconnect (a device list page shows 25 to 100)
  var LATEST_API = "/api/v1/devices/";

  var live = {
    received: [],
    connected: false,
    connects: 0,
    socket: null,
    subscribedSites: [],
    exportsSubscribed: false,
  };
  window.fieldwatchLive = live;

  var delay = MIN_DELAY;
  var reconnectTimer = null;
  var alertRefreshTimer = null;
  var stopped = false;

  // --- helpers ---------------------------------------------------------------------------------------------------
  function socketUrl(path) {
    if (/^wss?:\/\//.test(path)) {
      return path;
    }
    var scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + window.location.host + (path.charAt(0) === "/" ? path : "/" + path);
  }

  function siteIds() {
    var raw = body.getAttribute("data-sites") || "";
    var ids = [];
    raw.split(",").forEach(function (part) {
      var id = parseInt(part, 10);
      if (isFinite(id)) {
        ids.push(id);
      }
    });
    return ids;
  }

  function escapeValue(value) {
    return String(value).replace(/["\\]/g, "\\$&");
  }

  function each(attribute, value, fn) {
    var nodes;
    try {
      nodes = document.querySelectorAll("[" + attribute + '="' + escapeValue(value) + '"]');
    } catch (error) {
      return;
    }
    for (var i = 0; i < nodes.length; i++) {
      fn(nodes[i]);
    }
  }

  // The same formatting as the `reading` template filter: at most two decimals, thousands grouped.
  function formatReading(value) {
    if (typeof value !== "number" || !isFinite(value)) {
      return "—";
    }
    if (Math.abs(value) >= 1000) {
      return Math.round(value).toLocaleString("en-US");
    }
    var text = value.toFixed(2).replace(/0+$/, "").replace(/\.$/, "");
    return text === "-0" || text === "" ? "0" : text;
  }

  function setStatusClass(element, code) {
    var classes = (element.className || "").split(/\s+/).filter(function (name) {
      return name && name.indexOf("status--") !== 0;
    });
    if (classes.indexOf("status") === -1) {
      classes.push("status");
    }
    classes.push("status--" + code);
    element.className = classes.join(" ");
  }

  var STATUS_TEXT = { online: "Online", offline: "Offline" };

  function setDeviceStatus(uid, code) {
    each("data-status", uid, function (element) {
      if (element.textContent === "Inactive") {
        return; // an inactive device's readings are rejected; its label is the admin's decision, not ours
      }
      element.textContent = STATUS_TEXT[code] || code;
      setStatusClass(element, code);
    });
  }

  // Pages show last seen either absolute ("2025-01-02 10:11:12 UTC", the device page) or relative ("5 minutes
  // ago", lists): keep each element's style.
  function setLastSeen(uid, tsMs, relativeText) {
    if (typeof tsMs !== "number" || !isFinite(tsMs)) {
      return;
    }
    var iso = new Date(tsMs).toISOString();
    var absolute = iso.replace("T", " ").replace(/\.\d+Z$/, " UTC");
    each("data-last-seen", uid, function (element) {
      element.setAttribute("datetime", iso);
      if (/^\d{4}-\d{2}-\d{2}/.test(element.textContent || "")) {
        element.textContent = absolute;
      } else {
        element.setAttribute("title", absolute);
        if (relativeText) {
          element.textContent = relativeText;
        }
      }
    });
  }

  // A latest value's "at": the reading's own time, as the page renders it (UTC, HH:MM:SS).
  function setLatestAt(key, tsMs) {
    if (!isFinite(tsMs)) {
      return;
    }
    var iso = new Date(tsMs).toISOString();
    each("data-latest-at", key, function (element) {
      element.setAttribute("datetime", iso);
      element.textContent = iso.slice(11, 19);
    });
  }

  function bumpCounter(name, delta) {
    var nodes = document.querySelectorAll('[data-counter="' + name + '"]');
    for (var i = 0; i < nodes.length; i++) {
      var current = parseInt((nodes[i].textContent || "").replace(/[^\d-]/g, ""), 10);
      if (isFinite(current)) {
        nodes[i].textContent = String(Math.max(0, current + delta));
      }
    }
  }

  // --- messages --------------------------------------------------------------------------------------------------
  function onLatest(message) {
    var uid = message.device;
    var values = message.values || {};
    var newest = null;
    Object.keys(values).forEach(function (metric) {
      var pair = values[metric];
      if (!pair || pair.length < 2) {
        return;
      }
      var tsMs = pair[0];
      var value = pair[1];
      if (newest === null || tsMs > newest) {
        newest = tsMs;
      }
      each("data-latest", uid + ":" + metric, function (element) {
        element.textContent = formatReading(value);
      });
      setLatestAt(uid + ":" + metric, tsMs);
      var charts = window.fieldwatchCharts;
      if (charts && typeof charts.append === "function") {
        try {
          charts.append(uid, metric, tsMs, value);
        } catch (error) {
          // A chart that cannot take the point keeps its data; the next range change reloads it.
        }
      }
      // Saved charts and other listeners (saved_charts.js) take the same reading from an event.
      document.dispatchEvent(
        new CustomEvent("fieldwatch:reading", { detail: { device: uid, metric: metric, ts: tsMs, value: value } })
      );
    });
    // A device that just reported is online (its status message may come from another process, or not at all
    // right after a listener restart); last seen is the arrival, which is now.
    setDeviceStatus(uid, "online");
    setLastSeen(uid, Date.now(), "just now");
  }

  function onStatus(message) {
    var uid = message.device;
    var code = message.status;
    setDeviceStatus(uid, code);
    setLastSeen(uid, message.last_seen, code === "online" ? "just now" : null);
    if (code === "online" && message.previous === "offline") {
      bumpCounter("devices_online", 1);
      bumpCounter("devices_offline", -1);
    } else if (code === "online" && message.previous === "never_seen") {
      bumpCounter("devices_online", 1);
    } else if (code === "offline" && message.previous === "online") {
      bumpCounter("devices_online", -1);
      bumpCounter("devices_offline", 1);
    }
  }

  function refreshAlertLists() {
    var lists = document.querySelectorAll("[data-alert-list]");
    for (var i = 0; i < lists.length; i++) {
      refreshAlertList(lists[i]);
    }
  }

  // The alert list's "N alerts": the rows partial says how many match its filters.
  function setAlertCount(header) {
    var count = parseInt(header, 10);
    if (!isFinite(count)) {
      return;
    }
    var nodes = document.querySelectorAll("[data-alert-count]");
    for (var i = 0; i < nodes.length; i++) {
      nodes[i].textContent = count + (count === 1 ? " alert" : " alerts");
    }
  }

  function refreshAlertList(tbody) {
    var url = tbody.getAttribute("data-alert-list-url");
    if (!url || !window.fetch) {
      return;
    }
    window
      .fetch(url, { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        if (!response.ok) {
          return null;
        }
        setAlertCount(response.headers.get("X-Total-Count"));
        return response.text();
      })
      .then(function (html) {
        if (html !== null) {
          tbody.innerHTML = html;
        }
      })
      .catch(function () {
        // Offline or the server restarting: the next alert message or reconnect refreshes again.
      });
  }

  function onAlert() {
    // Several alerts change in one flush: one re-fetch for all of them.
    if (alertRefreshTimer !== null) {
      return;
    }
    alertRefreshTimer = window.setTimeout(function () {
      alertRefreshTimer = null;
      refreshAlertLists();
    }, ALERT_REFRESH_DEBOUNCE);
  }

  function onCounters(message) {
    Object.keys(message).forEach(function (key) {
      if (key === "type" || key === "site") {
        return;
      }
      var nodes = document.querySelectorAll('[data-counter="' + escapeValue(key) + '"]');
      for (var i = 0; i < nodes.length; i++) {
        nodes[i].textContent = String(message[key]);
      }
    });
  }

  // "Live" only once the server has joined us to the groups: from then on nothing is missed. After a reconnect,
  // fetch what changed while we were away (alert lists; the latest values shown, through the latest-values API).
  function onSubscribed() {
    showStatus(true);
    if (live.connects > 1) {
      refreshAlertLists();
      refreshLatestValues();
    }
  }

  function refreshLatestValues() {
    if (!window.fetch) {
      return;
    }
    var uids = [];
    var nodes = document.querySelectorAll("[data-latest]");
    for (var i = 0; i < nodes.length && uids.length < LATEST_REFRESH_MAX; i++) {
      var key = nodes[i].getAttribute("data-latest") || "";
      var uid = key.slice(0, key.lastIndexOf(":"));
      if (uid && uids.indexOf(uid) === -1) {
        uids.push(uid);
      }
    }
    uids.forEach(function (uid) {
      window
        .fetch(LATEST_API + encodeURIComponent(uid) + "/latest", {
          credentials: "same-origin",
          headers: { Accept: "application/json" },
        })
        .then(function (response) {
          return response.ok ? response.json() : null;
        })
        .then(function (data) {
          if (!data || !Array.isArray(data.values)) {
            return;
          }
          data.values.forEach(function (item) {
            each("data-latest", uid + ":" + item.metric, function (element) {
              element.textContent = formatReading(item.value);
            });
            setLatestAt(uid + ":" + item.metric, item.ts);
          });
        })
        .catch(function () {
          // The next pushed reading updates it anyway.
        });
    });
  }

  function onExport(message) {
    document.dispatchEvent(new CustomEvent("fieldwatch:export", { detail: message.export }));
  }

  function onExportsSubscribed() {
    live.exportsSubscribed = true;
    document.dispatchEvent(new CustomEvent("fieldwatch:exports-live", { detail: { reconnected: live.connects > 1 } }));
  }

  function wantsExports() {
    return !!document.querySelector("[data-export-form], [data-export-row]");
  }

  var HANDLERS = {
    latest: onLatest,
    status: onStatus,
    alert: onAlert,
    counters: onCounters,
    export: onExport,
    subscribed_exports: onExportsSubscribed,
  };

  // A frame holds one message, or an array of messages the server sent together.
  function onFrame(event) {
    var data;
    try {
      data = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (Array.isArray(data)) {
      data.forEach(onMessage);
    } else {
      onMessage(data);
    }
  }

  function onMessage(message) {
    if (!message || typeof message !== "object") {
      return;
    }
    live.received.push(message);
    if (live.received.length > RECEIVED_KEEP) {
      live.received.splice(0, live.received.length - RECEIVED_KEEP);
    }
    if (message.type === "subscribed" && Array.isArray(message.sites)) {
      live.subscribedSites = message.sites;
      onSubscribed();
    }
    var handler = HANDLERS[message.type];
    if (handler) {
      try {
        handler(message);
      } catch (error) {
        // One malformed message must not stop the next ones.
      }
    }
  }

  // --- connection ------------------------------------------------------------------------------------------------
  function showStatus(ok) {
    var element = document.getElementById("live-status");
    if (!element) {
      return;
    }
    element.textContent = ok ? "Live" : "Disconnected — reconnecting…";
    element.classList.toggle("live-status--ok", ok);
    element.classList.toggle("live-status--down", !ok);
  }

  // A device page without <body data-device> still names its device on its charts.
  function chartDevice() {
    var chart = document.querySelector("[data-chart][data-device]");
    return chart ? chart.getAttribute("data-device") : null;
  }

  function scheduleReconnect() {
    if (stopped || reconnectTimer !== null) {
      return;
    }
    var wait = delay;
    delay = Math.min(delay * 2, MAX_DELAY);
    reconnectTimer = window.setTimeout(function () {
      reconnectTimer = null;
      connect();
    }, wait);
  }

  function connect() {
    if (stopped || !window.WebSocket) {
      return;
    }
    var socket;
    try {
      socket = new window.WebSocket(socketUrl(body.getAttribute("data-live-url")));
    } catch (error) {
      showStatus(false);
      scheduleReconnect();
      return;
    }
    live.socket = socket;
    socket.onopen = function () {
      delay = MIN_DELAY;
      live.connected = true;
      live.connects += 1;
      socket.send(JSON.stringify({ type: "subscribe", sites: siteIds() }));
      var device = body.getAttribute("data-device") || chartDevice();
      if (device) {
        socket.send(JSON.stringify({ type: "subscribe_device", device: device }));
      }
      if (wantsExports()) {
        socket.send(JSON.stringify({ type: "subscribe_exports" }));
      }
    };
    socket.onmessage = onFrame;
    socket.onerror = function () {
      // onclose follows and handles it; nothing to report on the console.
    };
    socket.onclose = function (event) {
      live.connected = false;
      live.socket = null;
      if (live.exportsSubscribed) {
        live.exportsSubscribed = false;
        document.dispatchEvent(new CustomEvent("fieldwatch:live-closed"));
      }
      if (event && event.code === 4401) {
        // Signed out (session ended): reconnecting cannot help until the user signs in again.
        stopped = true;
        var element = document.getElementById("live-status");
        if (element) {
          element.textContent = "Disconnected — sign in again";
          element.classList.remove("live-status--ok");
          element.classList.add("live-status--down");
        }
        return;
      }
      showStatus(false);
      scheduleReconnect();
    };
  }

  window.addEventListener("pagehide", function () {
    stopped = true;
    if (live.socket) {
      live.socket.close(1000);
    }
  });
  window.addEventListener("pageshow", function (event) {
    if (event.persisted && stopped) {
      stopped = false; // back from the back-forward cache: reconnect
      connect();
    }
  });

  connect();
})();
