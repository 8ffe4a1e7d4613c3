/*
 * duplex-recovery.js: channel history recovery for pusher-js (8.x) against `duplex serve`.
 * No dependencies; served by the hub at /js/duplex-recovery.js.
 *
 *   <script src="https://YOUR-HUB/js/duplex-recovery.js"></script>
 *   const pusher = new Pusher(key, { ... });
 *   DuplexRecovery.attach(pusher, { onRecoveryFailed: (name) => reloadState(name) });
 *   const ch = pusher.subscribe("chat-lobby");
 *   ch.bind("duplex:recovered", (info) => {});        // the missed events follow, in order
 *   ch.bind("duplex:recovery_failed", (info) => {});  // nothing replayed: reload the state
 *
 * (In a module: `import "./duplex-recovery.js"` then use `globalThis.DuplexRecovery`;
 * under CommonJS it is also `module.exports`.)
 *
 * On channels with history (the app's `history = { channels = [...] }`), the hub stamps every
 * event with `"position": {"epoch", "offset"}`. This add-on remembers the last position of
 * each such channel (the highest offset seen, or the position `subscription_succeeded`
 * reports), and when pusher-js subscribes that channel again (after a reconnection) it adds
 * `"recover": <position>` to the `pusher:subscribe` data. The hub then answers with
 * `"recovered": true` and replays the events missed, in order, before the live ones; or with
 * `"recovered": false` (too old, or the stream restarted) and replays nothing.
 *
 * The channel then gets `duplex:recovered` or `duplex:recovery_failed` (data: { channel,
 * position }), bound like any event, after its `pusher:subscription_succeeded`; the options
 * `onRecovered(name, info)` and `onRecoveryFailed(name, info)` are called at the same time.
 * `pusher.unsubscribe(name)` forgets the channel's position.
 *
 * Hooks: pusher-js drops unknown top-level fields when it decodes a message, so positions are
 * read from the raw frames. On every 'connected' state the add-on takes pusher-js 8's
 * `pusher.connection.connection.transport` (set just before that state) and listens to its
 * native WebSocket (`.socket`) for 'message', after pusher-js's own handler, so a throwing
 * app handler cannot make it miss a position; for other transports (xhr, sockjs) it binds
 * the transport's own 'message' event, which carries the raw frame too. Positions are thus
 * updated after the event's handlers ran. Subscriptions are sent through
 * `pusher.send_event`, which the add-on wraps. Another client works if it offers
 * `send_event(event, data, channel)`, `channel(name).emit(event, data)` and
 * `onFrame(fn)` (fn called with each received frame's text, after the client handled it).
 *
 * attach returns { position(name), forget(name), detach() }.
 */
(function (root) {
  "use strict";

  function isPosition(p) {
    return !!p && typeof p === "object" && typeof p.epoch === "string" &&
      typeof p.offset === "number" && isFinite(p.offset);
  }

  // Calls fn(text) with every raw frame pusher-js receives; returns an unhook function.
  function pusherJsFrames(pusher, fn, warn) {
    const manager = pusher.connection;
    if (!manager || typeof manager.bind !== "function") {
      warn("no pusher.connection to hook: positions cannot be read");
      return function () {};
    }
    const listener = function (ev) { fn(ev && ev.data); };
    const unbinds = new Map(); // hooked transport -> unbind function
    const hook = function () {
      const conn = manager.connection;
      const transport = conn && conn.transport;
      if (!transport || typeof transport.bind !== "function") {
        warn("pusher.connection.connection.transport not found: is this pusher-js 8?");
        return;
      }
      if (unbinds.has(transport)) return;
      const socket = transport.socket;
      if (socket && typeof socket.addEventListener === "function") {
        // A native WebSocket: our listener runs even when an app's handler throws.
        socket.addEventListener("message", listener);
        unbinds.set(transport, function () { socket.removeEventListener("message", listener); });
      } else {
        transport.bind("message", listener);
        unbinds.set(transport, function () { transport.unbind("message", listener); });
      }
      for (const t of unbinds.keys()) if (t !== transport && !t.socket) unbinds.delete(t); // closed
    };
    manager.bind("connected", hook);
    if (manager.state === "connected") hook();
    return function () {
      manager.unbind("connected", hook);
      unbinds.forEach(function (unbind) { unbind(); });
      unbinds.clear();
    };
  }

  function attach(pusher, options) {
    options = options || {};
    const positions = new Map(); // channel -> { epoch, offset }
    const asked = new Map(); // channel -> the position sent as `recover`, until answered
    let warned = false;
    const warn = function (msg) {
      if (!warned && typeof console !== "undefined") console.warn("DuplexRecovery: " + msg);
      warned = true;
    };

    function emit(name, event, info) {
      const ch = typeof pusher.channel === "function" ? pusher.channel(name) : null;
      if (ch && typeof ch.emit === "function") ch.emit(event, info);
      const cb = event === "duplex:recovered" ? options.onRecovered : options.onRecoveryFailed;
      if (typeof cb === "function") cb(name, info);
    }

    function onFrame(text) {
      if (typeof text !== "string") return;
      let msg;
      try { msg = JSON.parse(text); } catch (e) { return; }
      if (!msg || typeof msg.channel !== "string") return;
      const name = msg.channel;
      if (msg.event === "pusher_internal:subscription_succeeded") {
        let data = msg.data;
        if (typeof data === "string") { try { data = JSON.parse(data); } catch (e) { data = null; } }
        const sent = asked.get(name);
        asked.delete(name);
        if (sent && data && data.recovered === true) {
          // Keep what we had: the replayed events follow and move it forward one by one.
          emit(name, "duplex:recovered", { channel: name, position: sent });
          return;
        }
        const now = data && isPosition(data.position)
          ? { epoch: data.position.epoch, offset: data.position.offset } : null;
        if (now) positions.set(name, now); else positions.delete(name); // null: no history
        if (sent) emit(name, "duplex:recovery_failed", { channel: name, position: now });
        return;
      }
      if (!isPosition(msg.position)) return;
      const cur = positions.get(name);
      if (!cur || cur.epoch !== msg.position.epoch || msg.position.offset > cur.offset) {
        positions.set(name, { epoch: msg.position.epoch, offset: msg.position.offset });
      }
    }

    const send = pusher.send_event;
    if (typeof send !== "function") throw new Error("DuplexRecovery.attach: no send_event");
    const wrapped = function (event, data, channel) {
      if (event === "pusher:subscribe" && data && typeof data.channel === "string") {
        const pos = positions.get(data.channel);
        if (pos) {
          const recover = { epoch: pos.epoch, offset: pos.offset };
          asked.set(data.channel, recover);
          data = Object.assign({}, data, { recover: recover });
        } else {
          asked.delete(data.channel);
        }
      } else if (event === "pusher:unsubscribe" && data && typeof data.channel === "string") {
        positions.delete(data.channel);
        asked.delete(data.channel);
      }
      return send.call(this, event, data, channel);
    };
    pusher.send_event = wrapped;

    const unhook = typeof pusher.onFrame === "function"
      ? pusher.onFrame(onFrame)
      : pusherJsFrames(pusher, onFrame, warn);

    return {
      position: function (name) {
        const p = positions.get(name);
        return p ? { epoch: p.epoch, offset: p.offset } : null;
      },
      forget: function (name) { positions.delete(name); asked.delete(name); },
      detach: function () {
        if (pusher.send_event === wrapped) pusher.send_event = send;
        if (typeof unhook === "function") unhook();
      },
    };
  }

  const api = { attach: attach, version: "1.0.0" };
  if (root) root.DuplexRecovery = api;
  if (typeof module === "object" && module && module.exports) module.exports = api;
})(typeof globalThis !== "undefined" ? globalThis : this);
