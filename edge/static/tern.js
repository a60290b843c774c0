/*
 * tern.js: a small, dependency-free client for the Tern WebSocket protocol
 * (subprotocol "tern.v1.json", see docs/js-client.md and the client contract).
 *
 * Classic script: loading it defines the global `TernClient` (and `TernError`);
 * under CommonJS it also sets module.exports. No external assets, no build step.
 *
 *   const tern = new TernClient("ws://127.0.0.1:8080/v1/ws");
 *   tern.on("message", (m) => console.log(m.channel, m.seq, m.data));
 *   await tern.subscribe("chat:lobby", { rewind: 10 });
 *   const { seq, id } = await tern.publish("chat:lobby", { text: "hi" });
 *
 * Guarantees this client adds on top of the server's:
 * - Every request carries a `ref`; its promise resolves with the `ok`/`pong`
 *   reply or rejects with a TernError built from the `error` reply.
 * - After a lost connection it reconnects with exponential backoff and
 *   re-subscribes every channel with `from_seq` = the last seq it saw (or the
 *   point it started from), so no message that history still holds is missed.
 *   Messages with a seq it already delivered are dropped, so none is seen twice.
 * - If the server is silent for 2.5 heartbeat intervals the socket is
 *   considered dead and is replaced.
 */
(function (root) {
  "use strict";

  var SUBPROTOCOL = "tern.v1.json";

  /** An error reply from the server, or a local failure (code 50300, retryable). */
  function TernError(err) {
    err = err || {};
    this.name = "TernError";
    this.code = typeof err.code === "number" ? err.code : 50000;
    this.status = typeof err.status === "number" ? err.status : Math.floor(this.code / 100);
    this.message = err.message || "error " + this.code;
    this.retryable = !!err.retryable;
    this.stack = new Error(this.message).stack;
  }
  TernError.prototype = Object.create(Error.prototype);
  TernError.prototype.constructor = TernError;

  function unavailable(message) {
    return new TernError({ code: 50300, status: 503, message: message, retryable: true });
  }

  /** Default endpoint: the page's own origin, ws(s)://host/v1/ws. */
  function defaultUrl() {
    if (typeof location === "undefined" || !location.host) return "ws://127.0.0.1:8080/v1/ws";
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/v1/ws";
  }

  /** Base64 of a Uint8Array or ArrayBuffer (for binary payloads). */
  function bytesToBase64(bytes) {
    if (bytes instanceof ArrayBuffer) bytes = new Uint8Array(bytes);
    var s = "";
    for (var i = 0; i < bytes.length; i += 0x8000) {
      s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(s);
  }

  /** Uint8Array from a base64 string (messages with "encoding":"base64"). */
  function base64ToBytes(b64) {
    var s = atob(b64), out = new Uint8Array(s.length);
    for (var i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  /**
   * new TernClient(url?, options?)
   * options: reconnect (true), minDelayMs (250), maxDelayMs (10000),
   *          requestTimeoutMs (30000), WebSocket (constructor, default global),
   *          autoConnect (true).
   */
  function TernClient(url, options) {
    this.url = url || defaultUrl();
    this.options = options || {};
    this.state = "closed"; // closed | connecting | open | reconnecting
    this.connectionId = null;
    this.heartbeatMs = 15000;
    this.maxMessageBytes = 65536;
    this._ws = null;
    this._nextRef = 1;
    this._pending = new Map(); // ref -> {resolve, reject, timer, onOk}
    this._subs = new Map(); // channel -> {opts, resume, waiters, onMessage}
    this._consumers = new Map(); // queue -> {prefetch, onDelivery}
    this._listeners = {};
    this._attempt = 0;
    this._retryTimer = null;
    this._watchdog = null;
    this._closedByUser = false;
    if (this.options.autoConnect !== false) this.connect();
  }

  var P = TernClient.prototype;

  /**
   * on(event, fn): events are
   *   "state"     (state)            state changed: connecting, open, reconnecting, closed
   *   "connected" (frame)            the server's first frame on each connection
   *   "message"   (msg)              a channel message {channel, seq, id, name?, data, ts, encoding?}
   *   "delivery"  (d)                a queue delivery, with d.ack() and d.nack(requeue)
   *   "error"     (TernError)        an error frame without ref (a request sent without ref)
   *   "close"     ({code, reason})   the socket closed (a reconnect may follow)
   *   "frame"     (frame)            every frame from the server, raw
   */
  P.on = function (event, fn) {
    (this._listeners[event] = this._listeners[event] || []).push(fn);
    return this;
  };

  /** off(event, fn): removes a listener added with on(). */
  P.off = function (event, fn) {
    var l = this._listeners[event];
    if (l) this._listeners[event] = l.filter(function (f) { return f !== fn; });
    return this;
  };

  P._emit = function (event, arg) {
    var l = this._listeners[event];
    if (!l) return;
    l.slice().forEach(function (fn) {
      try { fn(arg); } catch (e) { setTimeout(function () { throw e; }); }
    });
  };

  P._setState = function (s) {
    if (this.state === s) return;
    this.state = s;
    this._emit("state", s);
  };

  /** connect(): opens the socket (also called by the constructor unless autoConnect is false). */
  P.connect = function () {
    var self = this;
    this._closedByUser = false;
    if (this._ws) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    var WS = this.options.WebSocket || root.WebSocket;
    this._setState(this._attempt > 0 ? "reconnecting" : "connecting");
    var ws;
    try {
      ws = new WS(this.url, SUBPROTOCOL);
    } catch (e) {
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onmessage = function (ev) { if (self._ws === ws) self._onFrame(ev.data); };
    ws.onclose = function (ev) { if (self._ws === ws) self._onClose(ev.code, ev.reason); };
    ws.onerror = function () { /* a close event always follows */ };
  };

  /** close(): closes the connection for good (no reconnect); pending requests reject. */
  P.close = function () {
    this._closedByUser = true;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    var ws = this._ws;
    if (ws) {
      this._ws = null;
      try { ws.close(1000, "bye"); } catch (e) { /* already closing */ }
      this._onClose(1000, "closed by client", true);
    }
    this._setState("closed");
  };

  P._armWatchdog = function () {
    var self = this;
    clearTimeout(this._watchdog);
    // The server sends a heartbeat after heartbeat_ms of silence; 2.5x that
    // without any frame means the connection is dead.
    this._watchdog = setTimeout(function () {
      var ws = self._ws;
      if (!ws) return;
      self._ws = null;
      try { ws.close(4000, "heartbeat timeout"); } catch (e) { /* ignore */ }
      self._onClose(1006, "heartbeat timeout");
    }, Math.max(1000, this.heartbeatMs * 2.5));
  };

  P._onFrame = function (text) {
    var f;
    try { f = JSON.parse(text); } catch (e) { return; }
    if (!f || typeof f !== "object") return;
    this._armWatchdog();
    this._emit("frame", f);
    switch (f.op) {
      case "connected": return this._onConnected(f);
      case "message": return this._onMessage(f);
      case "delivery": return this._onDelivery(f);
      case "ok":
      case "pong":
        return this._settle(f, null);
      case "error":
        if (typeof f.ref === "number" && this._pending.has(f.ref)) return this._settle(f, new TernError(f.error));
        return this._emit("error", new TernError(f.error));
      default:
        return; // heartbeat, delivery, and future ops
    }
  };

  P._onConnected = function (f) {
    var self = this;
    this.connectionId = f.connection_id || null;
    if (typeof f.heartbeat_ms === "number") this.heartbeatMs = f.heartbeat_ms;
    if (typeof f.max_message_bytes === "number") this.maxMessageBytes = f.max_message_bytes;
    this._attempt = 0;
    this._armWatchdog();
    this._setState("open");
    this._emit("connected", f);
    this._subs.forEach(function (sub, channel) { self._sendSubscribe(channel, sub); });
    // Consumers resume on the new connection; what the old one held unacked
    // was given back by the server and comes again with attempt + 1.
    this._consumers.forEach(function (c, queue) {
      self.request({ op: "consume", queue: queue, prefetch: c.prefetch }).catch(function (err) {
        self._emit("error", err);
      });
    });
  };

  P._onDelivery = function (d) {
    var self = this;
    d.ack = function () { return self.ack(d.queue, d.delivery_id); };
    d.nack = function (requeue) { return self.nack(d.queue, d.delivery_id, requeue); };
    var c = this._consumers.get(d.queue);
    if (c && c.onDelivery) {
      try { c.onDelivery(d); } catch (e) { setTimeout(function () { throw e; }); }
    }
    this._emit("delivery", d);
  };

  P._onMessage = function (m) {
    var sub = this._subs.get(m.channel);
    if (sub) {
      // Drop what was already delivered (possible only around a reconnect).
      if (sub.resume !== null && typeof m.seq === "number" && m.seq <= sub.resume) return;
      if (typeof m.seq === "number") sub.resume = m.seq;
      if (sub.onMessage) {
        try { sub.onMessage(m); } catch (e) { setTimeout(function () { throw e; }); }
      }
    }
    this._emit("message", m);
  };

  P._settle = function (f, err) {
    var p = this._pending.get(f.ref);
    if (!p) return;
    this._pending.delete(f.ref);
    clearTimeout(p.timer);
    if (err) return p.reject(err);
    if (p.onOk) p.onOk(f);
    p.resolve(f);
  };

  P._onClose = function (code, reason, byUser) {
    clearTimeout(this._watchdog);
    this._ws = null;
    var err = unavailable("connection closed (" + code + (reason ? " " + reason : "") + ")");
    var pending = this._pending;
    this._pending = new Map();
    pending.forEach(function (p) { clearTimeout(p.timer); p.reject(err); });
    this._emit("close", { code: code, reason: reason || "" });
    if (byUser || this._closedByUser || this.options.reconnect === false) {
      this._subs.forEach(function (sub) {
        sub.waiters.forEach(function (w) { w.reject(err); });
        sub.waiters = [];
      });
      this._setState("closed");
      return;
    }
    this._scheduleReconnect();
  };

  P._scheduleReconnect = function () {
    var self = this;
    this._ws = null;
    this._setState("reconnecting");
    var min = this.options.minDelayMs || 250, max = this.options.maxDelayMs || 10000;
    var delay = Math.min(max, min * Math.pow(2, this._attempt));
    delay = delay / 2 + Math.random() * delay / 2; // jitter: spread reconnect storms
    this._attempt++;
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(function () { self._retryTimer = null; self.connect(); }, delay);
  };

  /**
   * request(frame): sends one frame with a fresh ref. Resolves with the reply
   * frame (`ok` or `pong`), rejects with a TernError. Rejects at once with a
   * retryable 50300 when not connected.
   */
  P.request = function (frame, onOk) {
    var self = this;
    return new Promise(function (resolve, reject) {
      if (!self._ws || self.state !== "open") return reject(unavailable("not connected"));
      var ref = self._nextRef++;
      var msg = Object.assign({}, frame, { ref: ref });
      var timeout = self.options.requestTimeoutMs || 30000;
      var p = { resolve: resolve, reject: reject, onOk: onOk, timer: null };
      p.timer = setTimeout(function () {
        if (self._pending.get(ref) !== p) return;
        self._pending.delete(ref);
        reject(unavailable("no reply within " + timeout + " ms"));
      }, timeout);
      self._pending.set(ref, p);
      try {
        self._ws.send(JSON.stringify(msg));
      } catch (e) {
        self._pending.delete(ref);
        clearTimeout(p.timer);
        reject(unavailable("send failed: " + e.message));
      }
    });
  };

  P._sendSubscribe = function (channel, sub) {
    var self = this;
    var frame = { op: "subscribe", channel: channel };
    if (sub.resume !== null) frame.from_seq = sub.resume;
    else if (sub.opts.from_seq != null) frame.from_seq = sub.opts.from_seq;
    else if (sub.opts.rewind != null) frame.rewind = sub.opts.rewind;
    this.request(frame, function (ok) {
      // Where to resume after a reconnect if no message arrives before it:
      // right after what this subscription already covers.
      if (sub.resume === null) {
        if (frame.from_seq != null) sub.resume = frame.from_seq;
        else if (frame.rewind != null) sub.resume = Math.max(0, ok.seq - frame.rewind);
        else sub.resume = ok.seq;
      }
    }).then(function (ok) {
      var w = sub.waiters; sub.waiters = [];
      w.forEach(function (x) { x.resolve(ok); });
    }, function (err) {
      if (err.code === 50300) return; // connection lost: retried on reconnect
      if (self._subs.get(channel) === sub) self._subs.delete(channel);
      var w = sub.waiters; sub.waiters = [];
      w.forEach(function (x) { x.reject(err); });
    });
  };

  /**
   * subscribe(channel, opts?, onMessage?): opts may hold `rewind` (last N from
   * history) or `from_seq` (everything after seq N). Resolves with the `ok`
   * reply ({seq: the channel's last seq}) once the server confirmed, also when
   * called while disconnected (it is sent on connect). The subscription is kept
   * across reconnects until unsubscribe(). A second subscribe to the same
   * channel resolves at once without touching the server.
   */
  P.subscribe = function (channel, opts, onMessage) {
    var self = this;
    if (typeof opts === "function") { onMessage = opts; opts = null; }
    var existing = this._subs.get(channel);
    if (existing) {
      if (onMessage) existing.onMessage = onMessage;
      return this.request({ op: "subscribe", channel: channel });
    }
    var sub = { opts: opts || {}, resume: null, waiters: [], onMessage: onMessage || null };
    this._subs.set(channel, sub);
    return new Promise(function (resolve, reject) {
      sub.waiters.push({ resolve: resolve, reject: reject });
      if (self.state === "open") self._sendSubscribe(channel, sub);
    });
  };

  /** unsubscribe(channel): resolves with the `ok` reply; no message of the channel follows. */
  P.unsubscribe = function (channel) {
    var sub = this._subs.get(channel);
    this._subs.delete(channel);
    if (sub) {
      var err = new TernError({ code: 40000, status: 400, message: "unsubscribed" });
      sub.waiters.forEach(function (w) { w.reject(err); });
    }
    if (this.state !== "open") return Promise.resolve({ op: "ok" });
    return this.request({ op: "unsubscribe", channel: channel });
  };

  /**
   * publish(channel, data, opts?): data is any JSON value; a Uint8Array or
   * ArrayBuffer is sent as base64 with "encoding":"base64". opts: name,
   * idempotency_key. Resolves with {op:"ok", seq, id} once the message is durable.
   */
  P.publish = function (channel, data, opts) {
    opts = opts || {};
    var frame = { op: "publish", channel: channel };
    if (opts.name != null) frame.name = opts.name;
    if (data instanceof ArrayBuffer || (typeof Uint8Array !== "undefined" && data instanceof Uint8Array)) {
      frame.data = bytesToBase64(data);
      frame.encoding = "base64";
    } else {
      frame.data = data === undefined ? null : data;
      if (opts.encoding) frame.encoding = opts.encoding;
    }
    if (opts.idempotency_key != null) frame.idempotency_key = opts.idempotency_key;
    return this.request(frame);
  };

  /**
   * enqueue(queue, data, opts?): puts one message on a queue (data as for
   * publish; opts.idempotency_key). Resolves with {op:"ok", id} once durable.
   */
  P.enqueue = function (queue, data, opts) {
    opts = opts || {};
    var frame = { op: "enqueue", queue: queue };
    if (data instanceof ArrayBuffer || (typeof Uint8Array !== "undefined" && data instanceof Uint8Array)) {
      frame.data = bytesToBase64(data);
      frame.encoding = "base64";
    } else {
      frame.data = data === undefined ? null : data;
    }
    if (opts.idempotency_key != null) frame.idempotency_key = opts.idempotency_key;
    return this.request(frame);
  };

  /**
   * consume(queue, opts?, onDelivery?): opts.prefetch (1-1000, default 10).
   * Each delivery {queue, delivery_id, id, data, attempt, channel?, name?}
   * comes with d.ack() and d.nack(requeue = true). The consumer is kept across
   * reconnects until cancel(queue). Calling it again updates the prefetch.
   */
  P.consume = function (queue, opts, onDelivery) {
    if (typeof opts === "function") { onDelivery = opts; opts = null; }
    var prefetch = (opts && opts.prefetch) || 10;
    var c = this._consumers.get(queue) || {};
    c.prefetch = prefetch;
    if (onDelivery) c.onDelivery = onDelivery;
    this._consumers.set(queue, c);
    if (this.state !== "open") return Promise.resolve({ op: "ok" }); // sent on connect
    return this.request({ op: "consume", queue: queue, prefetch: prefetch });
  };

  /** ack(queue, deliveryId) / nack(queue, deliveryId, requeue = true): settle a delivery. */
  P.ack = function (queue, deliveryId) {
    return this.request({ op: "ack", queue: queue, delivery_id: deliveryId });
  };
  P.nack = function (queue, deliveryId, requeue) {
    return this.request({ op: "nack", queue: queue, delivery_id: deliveryId,
                          requeue: requeue === undefined ? true : !!requeue });
  };

  /** cancel(queue): stops consuming; unacked deliveries go back to the queue. */
  P.cancel = function (queue) {
    this._consumers.delete(queue);
    if (this.state !== "open") return Promise.resolve({ op: "ok" });
    return this.request({ op: "cancel", queue: queue });
  };

  /** ping(): resolves with the `pong` reply. */
  P.ping = function () {
    return this.request({ op: "ping" });
  };

  /** subscriptions(): the channels this client keeps subscribed, with the last seq seen. */
  P.subscriptions = function () {
    var out = {};
    this._subs.forEach(function (sub, ch) { out[ch] = sub.resume; });
    return out;
  };

  TernClient.TernError = TernError;
  TernClient.SUBPROTOCOL = SUBPROTOCOL;
  TernClient.bytesToBase64 = bytesToBase64;
  TernClient.base64ToBytes = base64ToBytes;

  root.TernClient = TernClient;
  root.TernError = TernError;
  if (typeof module === "object" && module && module.exports) module.exports = TernClient;
})(typeof globalThis !== "undefined" ? globalThis : this);
