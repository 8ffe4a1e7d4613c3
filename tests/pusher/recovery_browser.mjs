// Channel history recovery in a real Chromium: pusher-js 8.4.0 with /js/duplex-recovery.js
// (served by the hub), and the demo page, against a running `duplex serve` whose app keeps a
// history for "chat-*" and "presence-chat-*" with size = 10 and client_event_rate = 100
// (DUPLEX_HUB=host:port), and the demo on a hub with the built-in defaults
// (DUPLEX_DEMO_HUB=host:port). The Rust test crates/duplex-cli/tests/serve_recovery_browser.rs
// starts both and sets them.
// The page reaches the hub through a TCP proxy in this script; cutting the proxy (every
// connection dropped, new ones closed at once) is the page losing its network (Chromium's
// offline emulation leaves open WebSockets alone). Events are published with the `pusher`
// server SDK. Needs /usr/bin/chromium (tests/interop/install.sh).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import net from "node:net";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";
import Pusher from "pusher";

const require = createRequire(import.meta.url);
const hub = process.env.DUPLEX_HUB;
if (!hub) throw new Error("DUPLEX_HUB (host:port of a running duplex serve) is not set");
const [hubHost, hubPort] = [hub.slice(0, hub.lastIndexOf(":")), Number(hub.slice(hub.lastIndexOf(":") + 1))];
const SIZE = 10; // the app's history size (see the Rust test's config)
// A hub on the built-in defaults (--enable-client-events only) for the demo page, whose
// default app keeps a history for "presence-chat-*".
const demoHub = process.env.DUPLEX_DEMO_HUB || hub;
const WAIT = { timeout: 20000 };
const pusherJs = readFileSync(require.resolve("pusher-js/dist/web/pusher.js"), "utf8");
const sdk = new Pusher({ appId: "app-id", key: "app-key", secret: "app-secret", host: hubHost, port: String(hubPort), useTLS: false });
let browser, pages;
const proxies = [];

// A page using pusher-js through the proxy on `wsPort`, subscribed to ?channel=, listing each
// "msg" event's `n` in #log, counting duplex:recovered / duplex:recovery_failed.
const page = (wsPort) => `<!doctype html><meta charset="utf-8"><title>recovery</title>
<p id="notice" hidden>missed messages could not be recovered; reloading history…</p>
<ol id="log"></ol>
<script src="/pusher.js"></script>
<script src="http://${hub}/js/duplex-recovery.js"></script>
<script>
const channelName = new URLSearchParams(location.search).get("channel");
window.got = []; window.recovered = []; window.failed = []; window.failedCallback = []; window.subscribed = 0;
const pusher = new Pusher("app-key", { wsHost: "127.0.0.1", wsPort: ${wsPort}, forceTLS: false,
  enabledTransports: ["ws"], cluster: "", disableStats: true });
window.pusher = pusher;
window.recovery = DuplexRecovery.attach(pusher, { onRecoveryFailed: (name) => window.failedCallback.push(name) });
const ch = pusher.subscribe(channelName);
ch.bind("pusher:subscription_succeeded", () => { window.subscribed++; });
ch.bind("msg", (d) => {
  window.got.push(d.n);
  const li = document.createElement("li"); li.textContent = String(d.n); document.getElementById("log").append(li);
});
// An app handler that throws must not make the add-on miss that event's position.
ch.bind("msg", (d) => { if (d.n === 3) throw new Error("app handler bug (expected)"); });
ch.bind("duplex:recovered", (info) => { window.recovered.push(info); });
ch.bind("duplex:recovery_failed", (info) => {
  window.failed.push(info);
  document.getElementById("notice").hidden = false;
});
</script>`;

// A TCP proxy to a hub that can be cut: open connections are dropped, and new ones are
// held (no answer, like a network that drops packets) until it is restored.
function proxy(target = hub) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const open = new Set();
  let held = [];
  const relay = (client) => {
    const up = net.connect(port, host);
    const pair = [client, up];
    open.add(pair);
    const end = () => { open.delete(pair); client.destroy(); up.destroy(); };
    client.on("error", end).on("close", end);
    up.on("error", end).on("close", end);
    client.pipe(up);
    up.pipe(client);
  };
  let cut = false;
  const server = net.createServer((client) => {
    if (!cut) { relay(client); return; }
    client.on("error", () => {});
    held.push(client);
  });
  proxies.push(server);
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({
    port: server.address().port,
    cut() { cut = true; for (const [a, b] of open) { a.destroy(); b.destroy(); } open.clear(); },
    restore() {
      cut = false;
      for (const c of held) if (!c.destroyed) relay(c);
      held = [];
    },
  })));
}

before(async () => {
  pages = http.createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/pusher.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(pusherJs);
    } else if (url.pathname === "/page") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(page(Number(url.searchParams.get("ws"))));
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => pages.listen(0, "127.0.0.1", r));
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  pages?.close();
  for (const p of proxies) p.close();
});

async function open(channel) {
  const net = await proxy();
  const p = await browser.newPage();
  p.on("pageerror", (e) => { if (!/expected/.test(e.message)) console.error("page error:", e.message); });
  await p.goto(`http://127.0.0.1:${pages.address().port}/page?ws=${net.port}&channel=${channel}`);
  await p.waitForFunction(() => window.subscribed === 1, null, WAIT);
  return { p, net };
}

async function publish(channel, from, to) {
  for (let n = from; n <= to; n++) await sdk.trigger(channel, "msg", { n });
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const got = (p) => p.evaluate(() => window.got);
const gotAtLeast = (p, n) => p.waitForFunction((n) => window.got.length >= n, n, WAIT);

async function goOffline({ p, net }) {
  net.cut();
  await p.waitForFunction(() => window.pusher.connection.state !== "connected", null, WAIT);
}

test("GET /js/duplex-recovery.js is JavaScript", async () => {
  const res = await fetch(`http://${hub}/js/duplex-recovery.js`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/javascript/);
  assert.match(await res.text(), /DuplexRecovery/);
});

test("events missed while offline are replayed on reconnection: each once, in order", async () => {
  const page = await open("chat-recover");
  await publish("chat-recover", 1, 3);
  await gotAtLeast(page.p, 3);
  const before = await page.p.evaluate(() => window.recovery.position("chat-recover"));
  assert.ok(before && typeof before.epoch === "string", "no position recorded for a history channel");

  await goOffline(page);
  await publish("chat-recover", 4, 8); // missed: fewer than the history keeps
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(await got(page.p), [1, 2, 3], "offline, yet events arrived");
  page.net.restore();
  await page.p.waitForFunction(() => window.recovered.length === 1, null, WAIT);
  await gotAtLeast(page.p, 8);
  await publish("chat-recover", 9, 10); // live again
  await gotAtLeast(page.p, 10);
  await new Promise((r) => setTimeout(r, 300)); // a duplicate would arrive by now
  assert.deepEqual(await got(page.p), range(1, 10));
  assert.equal(await page.p.textContent("#log"), range(1, 10).join(""));
  const state = await page.p.evaluate(() => ({
    subscribed: window.subscribed, failed: window.failed.length, recovered: window.recovered,
    position: window.recovery.position("chat-recover"), notice: document.getElementById("notice").hidden,
  }));
  assert.equal(state.subscribed, 2, "subscribed again after the reconnection");
  assert.equal(state.failed, 0);
  assert.equal(state.notice, true, "no notice after a successful recovery");
  assert.deepEqual(state.recovered[0].position.epoch, before.epoch);
  assert.equal(state.position.epoch, before.epoch);
  assert.equal(state.position.offset, before.offset + 7, "one offset per event");
  await page.p.close();
});

test("more missed events than the history keeps: duplex:recovery_failed and the notice", async () => {
  const page = await open("chat-overflow");
  await publish("chat-overflow", 1, 2);
  await gotAtLeast(page.p, 2);

  await goOffline(page);
  await publish("chat-overflow", 3, 3 + SIZE + 2); // the first missed one is gone
  page.net.restore();
  await page.p.waitForFunction(() => window.failed.length === 1, null, WAIT);
  await page.p.waitForSelector("#notice:not([hidden])", WAIT);
  assert.deepEqual(await page.p.evaluate(() => window.failedCallback), ["chat-overflow"]);
  // Nothing is replayed; the position is the channel's current one, and live events follow.
  const last = 3 + SIZE + 2;
  assert.equal(await page.p.evaluate(() => window.recovered.length), 0);
  await publish("chat-overflow", last + 1, last + 1);
  await gotAtLeast(page.p, 3);
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(await got(page.p), [1, 2, last + 1]);
  await page.p.close();
});

// The demo page: alice reaches the hub directly; bob (page, auth and WebSocket) through a
// proxy that is cut while alice sends `missed` messages. Returns what bob's log shows from
// alice, and bob's page.
async function demoOffline(hubAddr, room, missed) {
  const net = await proxy(hubAddr);
  const join = async (base, name) => {
    const p = await browser.newPage();
    p.on("pageerror", (e) => console.error("demo page error:", e.message));
    await p.goto(base);
    await p.fill("#name", name);
    await p.fill("#room", room);
    await p.click("#join button");
    await p.waitForFunction(() => document.querySelector("#log").textContent.includes("joined"), null, WAIT);
    return p;
  };
  const say = async (p, text) => { await p.fill("#text", text); await p.click("#say button"); };
  const logHas = (p, text) => p.waitForFunction((t) => document.querySelector("#log").textContent.includes(t), text, WAIT);
  const alice = await join(`http://${hubAddr}/`, "alice");
  const bob = await join(`http://127.0.0.1:${net.port}/`, "bob");
  await alice.waitForFunction(() => document.querySelector("#count").textContent === "2", null, WAIT);
  await say(alice, "before");
  await logHas(bob, "before");

  net.cut();
  await bob.waitForFunction(() => /connecting/.test(document.querySelector("#status").textContent), null, WAIT);
  for (const text of missed) await say(alice, text);
  net.restore();
  await logHas(bob, "reconnected:");
  await say(alice, "after");
  await logHas(bob, "after");
  await new Promise((r) => setTimeout(r, 300)); // a duplicate would arrive by now
  const said = (await bob.$$eval("#log li:not(.system)", (lis) => lis.map((li) => li.textContent)))
    .filter((t) => t.startsWith("alice")).map((t) => t.slice("alice".length));
  await alice.close();
  return { said, bob };
}

test("the demo page, on the built-in defaults, recovers chat messages sent while it was offline", async () => {
  const { said, bob } = await demoOffline(demoHub, "recovery", ["while-1", "while-2", "while-3"]);
  assert.deepEqual(said, ["before", "while-1", "while-2", "while-3", "after"]);
  assert.match(await bob.textContent("#log"), /messages sent meanwhile follow/);
  assert.equal(await bob.isHidden("#notice"), true);
  await bob.close();
});

test("the demo page shows its notice when missed messages could not be recovered", async () => {
  const missed = range(1, SIZE + 2).map((n) => `lost-${n}`); // more than the history keeps
  const { said, bob } = await demoOffline(hub, "gaps", missed);
  assert.deepEqual(said, ["before", "after"]);
  assert.equal(await bob.isVisible("#notice"), true);
  assert.match(await bob.textContent("#notice"), /could not be recovered/);
  assert.match(await bob.textContent("#log"), /missed messages could not be recovered/);
  await bob.close();
});

test("the demo page shows its own message once when a recovery replays it", async () => {
  // alice (through the proxy) sends after the last event she received, then loses the
  // network: her recovery replays her own message (client events are not echoed live).
  const net = await proxy(demoHub);
  const page = async (base, name) => {
    const p = await browser.newPage();
    p.on("pageerror", (e) => console.error("demo page error:", e.message));
    // Every frame received, to see the replay itself.
    await p.addInitScript(() => {
      window.frames_ = [];
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(...a) { super(...a); this.addEventListener("message", (e) => window.frames_.push(e.data)); }
      };
    });
    await p.goto(base);
    await p.fill("#name", name);
    await p.fill("#room", "echo");
    await p.click("#join button");
    await p.waitForFunction(() => document.querySelector("#log").textContent.includes("joined"), null, WAIT);
    return p;
  };
  const say = async (p, text) => { await p.fill("#text", text); await p.click("#say button"); };
  const logHas = (p, text) => p.waitForFunction((t) => document.querySelector("#log").textContent.includes(t), text, WAIT);
  const alice = await page(`http://127.0.0.1:${net.port}/`, "alice");
  const bob = await page(`http://${demoHub}/`, "bob");
  await alice.waitForFunction(() => document.querySelector("#count").textContent === "2", null, WAIT);
  await say(bob, "hello alice");
  await logHas(alice, "hello alice");
  await say(alice, "mine");
  await logHas(bob, "mine");
  net.cut();
  await alice.waitForFunction(() => /connecting/.test(document.querySelector("#status").textContent), null, WAIT);
  net.restore();
  await logHas(alice, "reconnected:");
  await say(bob, "later");
  await logHas(alice, "later");
  await new Promise((r) => setTimeout(r, 300));
  const replays = await alice.evaluate(() => window.frames_.filter((f) => f.includes("client-message") && f.includes("mine")).length);
  const said = (await alice.$$eval("#log li:not(.system)", (lis) => lis.map((li) => li.textContent)));
  assert.deepEqual(said, ["bobhello alice", "alicemine", "boblater"]);
  // The hub replays it (1) today: a new socket cannot be told from another sender.
  assert.ok(replays <= 1, `alice's own message came ${replays} times`);
  await alice.close();
  await bob.close();
});
