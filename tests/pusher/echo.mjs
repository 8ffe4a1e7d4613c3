// duplex serve against Laravel Echo 2 (broadcaster "pusher", pusher-js 8 underneath) and the
// Node pusher 5 server SDK, in Node.
//
//   tests/pusher/install.sh && cargo build -p duplex-cli && node --test-force-exit echo.mjs
//
// DUPLEX_BIN names the binary (default: target/debug/duplex). Starts
// `duplex serve --host 127.0.0.1 --port 0 --enable-client-events` and an app server standing in
// for Laravel's /broadcasting/auth, written with the SDK's authorizeChannel. In Node, pusher-js
// opens its sockets through faye-websocket (its own dependency), so no global WebSocket is used.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";
import fs from "node:fs";
import os from "node:os";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
if (!fs.existsSync(path.join(here, "node_modules", "laravel-echo"))) {
  console.error("tests/pusher: laravel-echo missing: run tests/pusher/install.sh");
  process.exit(2);
}
const { default: Echo } = await import("laravel-echo");
const PusherClient = require("pusher-js");
const PusherServer = require("pusher");

const KEY = "app-key", SECRET = "app-secret", APP_ID = "app-id";
// 32 bytes, base64: the master key the SDK derives per-channel keys from for private-encrypted-.
const MASTER_KEY = Buffer.alloc(32, 7).toString("base64");
const bin = process.env.DUPLEX_BIN || path.join(here, "..", "..", "target", "debug", "duplex");

let server, host, port, authUrl, sdk, forger, authServer;
const echos = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Resolves with the first value `register(cb)` passes to `cb`, or rejects after `ms`.
function once(what, register, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${what}`)), ms);
    register((v) => { clearTimeout(t); resolve(v); });
  });
}

/// Polls `pred` every 10 ms until it holds (bounded: `ms`).
async function until(what, pred, ms = 5000) {
  for (const end = Date.now() + ms; !pred();) {
    if (Date.now() > end) assert.fail(`timeout waiting for ${what}`);
    await sleep(10);
  }
}

function readBody(req) {
  return new Promise((resolve) => {
    let b = "";
    req.on("data", (c) => (b += c));
    req.on("end", () => resolve(new URLSearchParams(b)));
  });
}

before(async () => {
  // Every channel keeps a history (events carry `position`): Laravel Echo must not notice.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "duplex-echo-"));
  fs.writeFileSync(
    path.join(dir, "duplex.toml"),
    `[[apps]]\nid = "${APP_ID}"\nkey = "${KEY}"\nsecret = "${SECRET}"\nenable_client_events = true\n` +
      `history = { channels = ["*"], size = 100, ttl = 600 }\n`,
  );
  server = spawn(bin, ["serve", "--host", "127.0.0.1", "--port", "0", "--config", path.join(dir, "duplex.toml")], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, DUPLEX_LOG: process.env.DUPLEX_LOG || "warn" },
  });
  const addr = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("duplex serve did not start")), 20000);
    let buf = "";
    server.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/duplex serve: listening on (\S+)/);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    server.on("exit", (c) => reject(new Error(`duplex serve exited: ${c}`)));
  });
  host = addr.slice(0, addr.lastIndexOf(":"));
  port = Number(addr.slice(addr.lastIndexOf(":") + 1));
  const base = { appId: APP_ID, key: KEY, host, port, useTLS: false, encryptionMasterKeyBase64: MASTER_KEY };
  sdk = new PusherServer({ ...base, secret: SECRET });
  forger = new PusherServer({ ...base, secret: "not-the-secret" });

  // Laravel's /broadcasting/auth, reduced: the user comes from a header instead of a session.
  // Presence user info is {id, name}, as Laravel's channel callbacks usually return.
  authServer = createServer(async (req, res) => {
    const form = await readBody(req);
    if (req.url !== "/broadcasting/auth") {
      res.writeHead(404).end();
      return;
    }
    const signer = req.headers["x-forge"] ? forger : sdk;
    const socketId = form.get("socket_id"), channel = form.get("channel_name");
    const user = req.headers["x-user"] || "anon";
    const body = channel.startsWith("presence-")
      ? signer.authorizeChannel(socketId, channel, { user_id: user, user_info: { id: user, name: `User ${user}` } })
      : signer.authorizeChannel(socketId, channel);
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  });
  await new Promise((r) => authServer.listen(0, "127.0.0.1", r));
  authUrl = `http://127.0.0.1:${authServer.address().port}`;
});

after(() => {
  for (const e of echos) e.disconnect();
  authServer?.closeAllConnections();
  authServer?.close();
  server?.kill("SIGTERM");
});

/// A connected Echo instance for `user`, configured as a Laravel app configures it for Pusher,
/// pointed at duplex serve.
async function echo(user = "anon", { forge = false, authorizer } = {}) {
  const e = new Echo({
    broadcaster: "pusher",
    Pusher: PusherClient,
    key: KEY,
    cluster: "mt1",
    wsHost: host,
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    authEndpoint: `${authUrl}/broadcasting/auth`,
    auth: { headers: { "x-user": user, ...(forge ? { "x-forge": "1" } : {}) } },
    ...(authorizer ? { authorizer } : {}),
  });
  echos.push(e);
  await once(`${user} connected (${e.connectionStatus()})`, (done) => {
    const off = e.connector.onConnectionChange((s) => { if (s === "connected") { off(); done(); } });
  });
  return e;
}

/// Resolves once `ch` (an Echo channel) is subscribed; rejects on its subscription error.
function subscribed(ch, what) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what}: not subscribed`)), 5000);
    ch.subscribed(() => { clearTimeout(t); resolve(ch); });
    ch.error((err) => { clearTimeout(t); reject(new Error(`${what}: ${JSON.stringify(err)}`)); });
  });
}

/// Polls the SDK's channel info until `pred(info)` holds (bounded: 5 s).
async function channelInfoUntil(name, pred) {
  let info;
  for (let i = 0; i < 100; i++) {
    info = await (await sdk.get({ path: `/channels/${name}`, params: { info: "subscription_count" } })).json();
    if (pred(info)) return info;
    await sleep(50);
  }
  assert.fail(`channel ${name}: ${JSON.stringify(info)}`);
}

test("Echo connects through pusher-js and has a socket id", async () => {
  const e = await echo();
  assert.equal(e.connectionStatus(), "connected");
  assert.match(e.socketId(), /^\d+\.\d+$/);
});

test("public channel: listen('.order.shipped') and listen('OrderShipped') (App\\Events namespace)", async () => {
  const e = await echo();
  const ch = await subscribed(e.channel("orders"), "orders");
  const dotted = once(".order.shipped", (cb) => ch.listen(".order.shipped", cb));
  const namespaced = once("OrderShipped", (cb) => ch.listen("OrderShipped", cb));
  // Echo also formats dots in namespaced names: 'Orders.Cancelled' is App\Events\Orders\Cancelled.
  const nested = once("Orders.Cancelled", (cb) => ch.listen("Orders.Cancelled", cb));
  let bare = 0;
  ch.on("OrderShipped", () => bare++);

  await sdk.trigger("orders", "order.shipped", { id: 1 });
  assert.deepEqual(await dotted, { id: 1 });
  // A Laravel event without broadcastAs() is broadcast under its class name.
  await sdk.trigger("orders", "App\\Events\\OrderShipped", { id: 2 });
  assert.deepEqual(await namespaced, { id: 2 });
  await sdk.trigger("orders", "App\\Events\\Orders\\Cancelled", { id: 3 });
  assert.deepEqual(await nested, { id: 3 });
  // The bare name is a different event: listen('OrderShipped') must not have fired for it.
  await sdk.trigger("orders", "OrderShipped", { id: 4 });
  await until("bare OrderShipped", () => bare > 0);
  await sleep(100);
  assert.equal(bare, 1);
});

test("Echo.listen shorthand, a custom namespace and listenToAll", async () => {
  const e = await echo();
  const all = [];
  const ch = e.channel("shop").listenToAll((name, data) => all.push([name, data]));
  await subscribed(ch, "shop");
  const got = once("shorthand", (cb) => e.listen("shop", ".sale", cb));
  await sdk.trigger("shop", "sale", { pct: 10 });
  assert.deepEqual(await got, { pct: 10 });
  await sdk.trigger("shop", "App\\Events\\Restocked", { n: 5 });
  await until("listenToAll", () => all.length >= 2);
  // listenToAll strips the App\Events namespace and marks other names with a leading dot.
  assert.deepEqual(all, [[".sale", { pct: 10 }], ["Restocked", { n: 5 }]]);

  const custom = new Echo({
    broadcaster: "pusher", client: e.connector.pusher, namespace: "Domain.Events",
  });
  const ch2 = custom.channel("shop");
  const got2 = once("custom namespace", (cb) => ch2.listen("PriceChanged", cb));
  await sdk.trigger("shop", "Domain\\Events\\PriceChanged", { p: 3 });
  assert.deepEqual(await got2, { p: 3 });
});

test("Echo.private with the auth endpoint (SDK authorizeChannel), then an SDK trigger", async () => {
  const e = await echo("u1");
  const ch = await subscribed(e.private("orders.1"), "private-orders.1");
  assert.equal(e.connector.pusher.channel("private-orders.1").subscribed, true);
  const got = once("OrderStatus", (cb) => ch.listen("OrderStatus", cb));
  await sdk.trigger("private-orders.1", "App\\Events\\OrderStatus", { status: "packed" });
  assert.deepEqual(await got, { status: "packed" });
});

test("Echo.private with a custom authorizer (as in Laravel's docs), then notification()", async () => {
  let calls = 0;
  const authorizer = (channel) => ({
    authorize: (socketId, callback) => {
      calls++;
      fetch(`${authUrl}/broadcasting/auth`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", "x-user": "u2" },
        body: new URLSearchParams({ socket_id: socketId, channel_name: channel.name }),
      }).then((r) => r.json()).then((data) => callback(null, data), (err) => callback(err, null));
    },
  });
  const e = await echo("u2", { authorizer });
  const ch = await subscribed(e.private("App.Models.User.2"), "private-App.Models.User.2");
  assert.equal(calls, 1);
  const got = once("notification", (cb) => ch.notification(cb));
  await sdk.trigger("private-App.Models.User.2", "Illuminate\\Notifications\\Events\\BroadcastNotificationCreated",
    { id: "n1", type: "App\\Notifications\\InvoicePaid", amount: 12 });
  assert.deepEqual(await got, { id: "n1", type: "App\\Notifications\\InvoicePaid", amount: 12 });
});

test("Echo.private with a bad signature: .error() fires and no event arrives", async () => {
  const e = await echo("intruder", { forge: true });
  const ch = e.private("vault");
  const err = await once("error()", (cb) => ch.error(cb));
  assert.equal(err.type, "AuthError");
  assert.equal(err.status, 401);
  assert.match(err.error, /Unauthorized subscription to private-vault/);
  let got = false;
  ch.listen(".secret", () => (got = true));
  await sdk.trigger("private-vault", "secret", {});
  await sleep(300);
  assert.equal(got, false);
  assert.equal(e.connectionStatus(), "connected");
});

test("Echo.encryptedPrivate: SDK-encrypted events are decrypted by pusher-js", async () => {
  const e = await echo("u3");
  const ch = await subscribed(e.encryptedPrivate("ledger"), "private-encrypted-ledger");
  const got = once("Entry", (cb) => ch.listen("Entry", cb));
  await sdk.trigger("private-encrypted-ledger", "App\\Events\\Entry", { amount: 42 });
  assert.deepEqual(await got, { amount: 42 });
});

test("Echo.join presence: here, joining, leaving across two Echo instances; SDK sees the users", async () => {
  const a = await echo("alice");
  const roomA = a.join("chat.1");
  const hereA = once("alice here", (cb) => roomA.here(cb));
  const joined = once("joining", (cb) => roomA.joining(cb));
  const left = once("leaving", (cb) => roomA.leaving(cb));
  assert.deepEqual(await hereA, [{ id: "alice", name: "User alice" }]);

  const b = await echo("bob");
  const hereB = await once("bob here", (cb) => b.join("chat.1").here(cb));
  assert.deepEqual(hereB.map((m) => m.id).sort(), ["alice", "bob"]);
  assert.deepEqual(await joined, { id: "bob", name: "User bob" });

  const users = await (await sdk.get({ path: "/channels/presence-chat.1/users" })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ["alice", "bob"]);

  // Bob leaves the room (Echo.leave), staying connected: alice's leaving() fires.
  b.leave("chat.1");
  assert.deepEqual(await left, { id: "bob", name: "User bob" });
  assert.equal(b.connectionStatus(), "connected");
  const after = await (await sdk.get({ path: "/channels/presence-chat.1/users" })).json();
  assert.deepEqual(after.users.map((u) => u.id), ["alice"]);
});

test("whisper / listenForWhisper (client events) on private and presence channels", async () => {
  const a = await echo("ann"), b = await echo("ben");
  const pa = await subscribed(a.private("doc.9"), "ann private-doc.9");
  const pb = await subscribed(b.private("doc.9"), "ben private-doc.9");
  let echoed = false;
  pa.listenForWhisper("typing", () => (echoed = true));
  const got = once("whisper", (cb) => pb.listenForWhisper("typing", cb));
  pa.whisper("typing", { name: "ann" });
  assert.deepEqual(await got, { name: "ann" });

  const ra = a.join("doc.9"), rb = b.join("doc.9");
  await subscribed(ra, "ann presence-doc.9");
  await subscribed(rb, "ben presence-doc.9");
  const got2 = once("presence whisper", (cb) => ra.listenForWhisper("cursor", cb));
  rb.whisper("cursor", { x: 3, y: 4 });
  assert.deepEqual(await got2, { x: 3, y: 4 });

  // stopListeningForWhisper: no further delivery to that handler.
  let after = 0;
  const h = () => after++;
  pb.listenForWhisper("typing", h);
  pb.stopListeningForWhisper("typing", h);
  pa.whisper("typing", { name: "again" });
  await sleep(300);
  assert.equal(after, 0);
  assert.equal(echoed, false, "a whisper is not echoed to its sender");
});

test("Echo.leave unsubscribes public, private and presence channels of that name", async () => {
  const e = await echo("lea");
  const pub = await subscribed(e.channel("feed"), "feed");
  await subscribed(e.private("feed"), "private-feed");
  await subscribed(e.join("feed"), "presence-feed");
  let got = 0;
  pub.listen(".post", () => got++);
  await sdk.trigger("feed", "post", {});
  await until("first post", () => got > 0);

  e.leave("feed");
  for (const name of ["feed", "private-feed", "presence-feed"]) {
    const info = await channelInfoUntil(name, (i) => i.occupied === false);
    assert.equal(info.subscription_count ?? 0, 0, name);
  }
  await sdk.trigger("feed", "post", {});
  await sleep(300);
  assert.equal(got, 1);
  assert.deepEqual(Object.keys(e.connector.channels), []);
  assert.equal(e.connectionStatus(), "connected");
});
