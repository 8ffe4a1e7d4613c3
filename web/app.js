// duplex serve demo chat: a small Pusher protocol 7 client (our own code, no library).
// Presence channel "presence-chat-<room>" for the member list, client events for messages
// and typing notices. Subscriptions are signed by the server's demo-only /demo/auth.
// /js/duplex-recovery.js (DuplexRecovery) is attached to the client: when the app keeps a
// history for "presence-chat-*", messages missed while offline are replayed on reconnection.
// For it, PusherLite offers what the add-on needs of a client that is not pusher-js:
// send_event(event, data, channel), channel(name).emit(event, data) and onFrame(fn).
"use strict";

class PusherLite {
  constructor(key, { onState, onError } = {}) {
    this.key = key;
    this.channels = new Map(); // name -> { handlers: Map(event -> [fn]), auth params, api }
    this.frameListeners = []; // fn(text) for every frame received, after it is handled
    this.onState = onState || (() => {});
    this.onError = onError || (() => {});
    this.socketId = null;
    this.retry = 0;
    this.closedByUser = false;
    this.connect();
  }

  connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/app/${encodeURIComponent(this.key)}?protocol=7&client=duplex-demo&version=1.0`;
    this.onState("connecting");
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (e) => {
      try {
        this.receive(e.data);
      } finally {
        for (const fn of this.frameListeners.slice()) fn(e.data);
      }
    };
    ws.onclose = (e) => this.closed(e.code, e.reason);
  }

  send_event(event, data, channel) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    const msg = { event, data };
    if (channel) msg.channel = channel;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  // Any message proves the connection alive; after activity_timeout of silence, ping.
  touch() {
    clearTimeout(this.idleTimer);
    clearTimeout(this.pongTimer);
    this.idleTimer = setTimeout(() => {
      this.send_event("pusher:ping", {});
      this.pongTimer = setTimeout(() => this.ws.close(), 30000);
    }, this.activityTimeout * 1000);
  }

  receive(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    this.touch();
    // Pusher sends `data` as a JSON string for most events.
    let data = msg.data;
    if (typeof data === "string") { try { data = JSON.parse(data); } catch { /* plain string */ } }
    switch (msg.event) {
      case "pusher:connection_established":
        this.socketId = data.socket_id;
        this.activityTimeout = Math.min(data.activity_timeout || 120, 120);
        this.retry = 0;
        this.onState("connected");
        this.touch();
        for (const name of this.channels.keys()) this.subscribeNow(name);
        return;
      case "pusher:ping":
        this.send_event("pusher:pong", {});
        return;
      case "pusher:pong":
        return;
      case "pusher:error":
        this.onError(data);
        return;
    }
    const ch = msg.channel && this.channels.get(msg.channel);
    if (ch) ch.api.emit(msg.event, data, { user_id: msg.user_id });
  }

  // Calls fn(text) with every frame received; returns a function that stops it.
  onFrame(fn) {
    this.frameListeners.push(fn);
    return () => { this.frameListeners = this.frameListeners.filter((f) => f !== fn); };
  }

  channel(name) {
    const ch = this.channels.get(name);
    return ch ? ch.api : undefined;
  }

  closed(code, reason) {
    clearTimeout(this.idleTimer);
    clearTimeout(this.pongTimer);
    this.socketId = null;
    if (this.closedByUser) { this.onState("disconnected"); return; }
    // 4000-4099: do not reconnect; 4100-4199: back off; 4200-4299 (and others): reconnect.
    if (code >= 4000 && code < 4100) { this.onState(`closed: ${code} ${reason}`); return; }
    const delay = code >= 4200 && code < 4300 ? 0 : Math.min(1000 * 2 ** this.retry++, 10000);
    this.onState(`reconnecting in ${delay / 1000}s (${code}${reason ? " " + reason : ""})`);
    setTimeout(() => this.connect(), delay);
  }

  subscribe(name, authParams) {
    const ch = { handlers: new Map(), authParams };
    ch.api = {
      bind: (event, fn) => {
        if (!ch.handlers.has(event)) ch.handlers.set(event, []);
        ch.handlers.get(event).push(fn);
      },
      emit: (event, data, meta = {}) => {
        for (const fn of ch.handlers.get(event) || []) fn(data, meta);
      },
      trigger: (event, data) => this.send_event(event, data, name),
    };
    this.channels.set(name, ch);
    if (this.socketId) this.subscribeNow(name);
    return ch.api;
  }

  async subscribeNow(name) {
    const ch = this.channels.get(name);
    const data = { channel: name };
    if (name.startsWith("private-") || name.startsWith("presence-")) {
      const body = new URLSearchParams({ socket_id: this.socketId, channel_name: name, ...ch.authParams });
      const res = await fetch("/demo/auth", { method: "POST", body });
      if (!res.ok) { this.onError({ message: `auth failed: HTTP ${res.status}` }); return; }
      const auth = await res.json();
      data.auth = auth.auth;
      if (auth.channel_data) data.channel_data = auth.channel_data;
    }
    this.send_event("pusher:subscribe", data);
  }

  disconnect() {
    this.closedByUser = true;
    if (this.ws) this.ws.close(1000);
  }
}

// ---- the chat ----

const $ = (id) => document.getElementById(id);
const members = new Map(); // user_id -> name
let me = null;
let channel = null;
let clientEvents = false;
const mine = new Set(); // ids of the messages this page sent

function line(html, cls) {
  const li = document.createElement("li");
  if (cls) li.className = cls;
  li.append(...html);
  $("log").append(li);
  $("log").scrollTop = $("log").scrollHeight;
}
function system(text) { line([text], "system"); }
function said(name, text) {
  const b = document.createElement("b");
  b.textContent = name;
  line([b, document.createTextNode(text)]);
}
function renderMembers() {
  $("members").replaceChildren(...[...members].map(([id, name]) => {
    const li = document.createElement("li");
    li.textContent = name;
    if (id === me) li.className = "me";
    return li;
  }));
  $("count").textContent = members.size;
}

async function join(name, room) {
  const config = await (await fetch("/demo/config.json")).json();
  clientEvents = config.clientEvents;
  const pusher = new PusherLite(config.key, {
    onState: (s) => { $("status").textContent = `Connection: ${s}.`; },
    onError: (e) => system(`error ${e.code ?? ""}: ${e.message}`),
  });
  if (window.DuplexRecovery) window.DuplexRecovery.attach(pusher);
  channel = pusher.subscribe(`presence-chat-${room}`, { user_name: name });
  // Only after a reconnection, and only when the app keeps a history for this channel.
  channel.bind("duplex:recovered", () => {
    $("notice").hidden = true;
    system("reconnected: messages sent meanwhile follow");
  });
  channel.bind("duplex:recovery_failed", () => {
    $("notice").textContent = "Missed messages could not be recovered (offline too long, or "
      + "the server restarted): the chat below may have gaps.";
    $("notice").hidden = false;
    system("reconnected: missed messages could not be recovered");
  });
  channel.bind("pusher_internal:subscription_succeeded", (data) => {
    me = pusher.socketId; // /demo/auth uses the socket id as the user id
    members.clear();
    const p = data.presence || { hash: {} };
    for (const [id, info] of Object.entries(p.hash)) members.set(id, (info && info.name) || id);
    renderMembers();
    system(`joined ${room} as ${name}`);
    if (!clientEvents) system("client events are off: restart with --enable-client-events to chat");
  });
  channel.bind("pusher_internal:member_added", (data) => {
    members.set(data.user_id, (data.user_info && data.user_info.name) || data.user_id);
    renderMembers();
    system(`${members.get(data.user_id)} joined`);
  });
  channel.bind("pusher_internal:member_removed", (data) => {
    const who = members.get(data.user_id) || data.user_id;
    members.delete(data.user_id);
    renderMembers();
    system(`${who} left`);
  });
  channel.bind("client-message", (data, meta) => {
    // A recovery after our own reconnection may replay what we sent: shown once.
    if (data.id && mine.has(data.id)) return;
    // A replayed message's sender may have left (or reconnected under a new id) since.
    said(members.get(meta.user_id) || (data.name ? String(data.name) : "?"), String(data.text));
  });
  let typingTimer;
  channel.bind("client-typing", (data, meta) => {
    $("typing").textContent = `${members.get(meta.user_id) || "someone"} is typing…`;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(() => { $("typing").textContent = ""; }, 2000);
  });
}

$("join").addEventListener("submit", (e) => {
  e.preventDefault();
  $("join").hidden = true;
  $("chat").hidden = false;
  join($("name").value.trim() || "guest", $("room").value.trim() || "lobby");
});

let lastTyping = 0;
$("text").addEventListener("input", () => {
  const now = Date.now();
  if (channel && clientEvents && now - lastTyping > 1000) {
    lastTyping = now;
    channel.trigger("client-typing", {});
  }
});

$("say").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !channel) return;
  const id = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
  if (channel.trigger("client-message", { text, id, name: members.get(me) })) {
    mine.add(id);
    said(members.get(me) || "me", text);
  }
  $("text").value = "";
});
