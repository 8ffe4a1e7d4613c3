// duplex serve against the real pusher-js 8 client and pusher 5 server SDK, in Node.
//
//   tests/pusher/install.sh && cargo build -p duplex-cli && node tests/pusher/run.mjs
//
// DUPLEX_BIN names the binary (default: target/debug/duplex). Starts
// `duplex serve --host 127.0.0.1 --port 0 --enable-client-events`, plus an auth server written
// with the SDK's authorizeChannel / authenticateUser, then runs the cases with node:test.
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
if (!fs.existsSync(path.join(here, "node_modules", "pusher-js"))) {
  console.error("tests/pusher: dependencies missing: run tests/pusher/install.sh");
  process.exit(2);
}
const PusherClient = require("pusher-js");
const PusherServer = require("pusher");

const KEY = "app-key", SECRET = "app-secret", APP_ID = "app-id";
const bin = process.env.DUPLEX_BIN || path.join(here, "..", "..", "target", "debug", "duplex");

let server, host, port, authUrl, sdk, forger, authServer;
const clients = [];

function waitFor(emitter, event, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timeout waiting for ${event}`)), ms);
    emitter.bind(event, function handler(data, meta) {
      clearTimeout(t);
      emitter.unbind(event, handler);
      resolve({ data, meta });
    });
  });
}

function readBody(req) {
  return new Promise((resolve) => {
    let b = "";
    req.on("data", (c) => (b += c));
    req.on("end", () => resolve(new URLSearchParams(b)));
  });
}

async function startServer(args) {
  const child = spawn(bin, ["serve", "--host", "127.0.0.1", "--port", "0", ...args], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, DUPLEX_LOG: process.env.DUPLEX_LOG || "warn" },
  });
  const addr = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("duplex serve did not start")), 20000);
    let buf = "";
    child.stdout.on("data", (d) => {
      buf += d;
      const m = buf.match(/duplex serve: listening on (\S+)/);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    child.on("exit", (c) => reject(new Error(`duplex serve exited: ${c}`)));
  });
  return { child, host: addr.slice(0, addr.lastIndexOf(":")), port: Number(addr.slice(addr.lastIndexOf(":") + 1)) };
}

const LIMITS_TOML = `
[[apps]]
id = "off-id"
key = "off-key"
secret = "off-secret"
enabled = false

[[apps]]
id = "quota-id"
key = "quota-key"
secret = "quota-secret"
max_connections = 1

[[apps]]
id = "drain-id"
key = "drain-key"
secret = "drain-secret"
`;
let limits, limitsDir;

const HISTORY_EVERYWHERE_TOML = `
[[apps]]
id = "${APP_ID}"
key = "${KEY}"
secret = "${SECRET}"
enable_client_events = true
history = { channels = ["*"], size = 100, ttl = 600 }
`;

before(async () => {
  // Every channel of the main app keeps a history: events then carry a top-level
  // `position` and confirmations a `position` in their data, which pusher-js must ignore.
  const mainDir = fs.mkdtempSync(path.join(os.tmpdir(), "duplex-pusher-main-"));
  fs.writeFileSync(path.join(mainDir, "duplex.toml"), HISTORY_EVERYWHERE_TOML);
  const main = await startServer(["--config", path.join(mainDir, "duplex.toml")]);
  [server, host, port] = [main.child, main.host, main.port];
  limitsDir = fs.mkdtempSync(path.join(os.tmpdir(), "duplex-pusher-limits-"));
  fs.writeFileSync(path.join(limitsDir, "duplex.toml"), LIMITS_TOML);
  limits = await startServer(["--config", path.join(limitsDir, "duplex.toml")]);
  sdk = new PusherServer({ appId: APP_ID, key: KEY, secret: SECRET, host, port, useTLS: false });
  forger = new PusherServer({ appId: APP_ID, key: KEY, secret: "not-the-secret", host, port, useTLS: false });

  // The app server's auth endpoints, written with the SDK (pusher-js posts form bodies).
  authServer = createServer(async (req, res) => {
    const form = await readBody(req);
    const socketId = form.get("socket_id");
    let body;
    // `x-forge: 1` signs with the wrong secret: an app server with a stale secret.
    const signer = req.headers["x-forge"] ? forger : sdk;
    if (req.url === "/pusher/auth") {
      const channel = form.get("channel_name");
      const user = req.headers["x-user"] || "anon";
      body = channel.startsWith("presence-")
        ? signer.authorizeChannel(socketId, channel, { user_id: user, user_info: { name: `User ${user}` } })
        : signer.authorizeChannel(socketId, channel);
    } else if (req.url === "/pusher/user-auth") {
      body = signer.authenticateUser(socketId, { id: req.headers["x-user"] || "anon" });
    } else {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  });
  await new Promise((r) => authServer.listen(0, "127.0.0.1", r));
  authUrl = `http://127.0.0.1:${authServer.address().port}`;
});

after(() => {
  for (const c of clients) c.disconnect();
  authServer?.closeAllConnections();
  authServer?.close();
  server?.kill("SIGTERM");
  limits?.child.kill("SIGKILL");
  if (limitsDir) fs.rmSync(limitsDir, { recursive: true, force: true });
});

/// A pusher-js client, not yet connected. Records its connection errors and states.
function newClient(user = "anon", { key = KEY, at = { host, port }, forge = false } = {}) {
  const headers = { "x-user": user, ...(forge ? { "x-forge": "1" } : {}) };
  const c = new PusherClient(key, {
    cluster: "mt1",
    wsHost: at.host,
    wsPort: at.port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { endpoint: `${authUrl}/pusher/auth`, transport: "ajax", headers },
    userAuthentication: { endpoint: `${authUrl}/pusher/user-auth`, transport: "ajax", headers },
  });
  c.errors = [];
  c.states = [];
  c.connection.bind("error", (e) => c.errors.push(e));
  c.connection.bind("state_change", ({ current }) => c.states.push(current));
  clients.push(c);
  return c;
}

async function client(user = "anon", opts = {}) {
  const c = newClient(user, opts);
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not connected: ${c.connection.state}`)), 5000);
    c.connection.bind("connected", () => { clearTimeout(t); resolve(); });
  });
  return c;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// The code in a pusher-js connection `error` event: a pusher:error received while connected
/// is `{type:"PusherError", data}`, a refusal or close is wrapped as
/// `{type:"WebSocketError", error:{type:"PusherError", data}}`.
function errorCode(e) {
  return (e.error?.data ?? e.data)?.code;
}

/// Resolves with the first connection error carrying a code (or `null` code) once seen.
function nextError(c, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`no error event; state ${c.connection.state}, errors ${JSON.stringify(c.errors)}`)), ms);
    c.connection.bind("error", function h(e) {
      clearTimeout(t);
      c.connection.unbind("error", h);
      resolve(e);
    });
  });
}

async function subscribed(c, name) {
  const ch = c.subscribe(name);
  const err = new Promise((_, reject) => ch.bind("pusher:subscription_error", (e) => reject(new Error(`subscription_error ${JSON.stringify(e)}`))));
  const ok = waitFor(ch, "pusher:subscription_succeeded");
  const { data } = await Promise.race([ok, err]);
  return { ch, data };
}

test("pusher-js connects and gets a socket id", async () => {
  const c = await client();
  assert.match(c.connection.socket_id, /^\d+\.\d+$/);
});

test("public channel: SDK trigger reaches pusher-js", async () => {
  const c = await client();
  const { ch } = await subscribed(c, "public-news");
  const got = waitFor(ch, "headline");
  await sdk.trigger("public-news", "headline", { text: "hello" });
  assert.deepEqual((await got).data, { text: "hello" });
});

test("SDK batch trigger reaches two channels", async () => {
  const c = await client();
  const a = (await subscribed(c, "batch-a")).ch;
  const b = (await subscribed(c, "batch-b")).ch;
  const ga = waitFor(a, "e1"), gb = waitFor(b, "e2");
  const res = await sdk.triggerBatch([
    { channel: "batch-a", name: "e1", data: { n: 1 } },
    { channel: "batch-b", name: "e2", data: { n: 2 } },
  ]);
  assert.equal(res.status, 200);
  assert.deepEqual((await ga).data, { n: 1 });
  assert.deepEqual((await gb).data, { n: 2 });
});

test("private channel: auth endpoint with authorizeChannel, then SDK trigger", async () => {
  const c = await client();
  const { ch } = await subscribed(c, "private-orders");
  const got = waitFor(ch, "created");
  await sdk.trigger("private-orders", "created", { id: 7 });
  assert.deepEqual((await got).data, { id: 7 });
});

test("SDK trigger excludes the socket_id it is given", async () => {
  const a = await client(), b = await client();
  const cha = (await subscribed(a, "excl")).ch, chb = (await subscribed(b, "excl")).ch;
  let aGot = false;
  cha.bind("ev", () => (aGot = true));
  const gb = waitFor(chb, "ev");
  await sdk.trigger("excl", "ev", {}, { socket_id: a.connection.socket_id });
  await gb;
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(aGot, false);
});

test("presence: members, join/leave, channel info and users via the SDK", async () => {
  const a = await client("alice");
  const { ch: cha, data } = await subscribed(a, "presence-room");
  assert.equal(data.count, 1);
  assert.equal(data.me.id, "alice");
  assert.deepEqual(data.me.info, { name: "User alice" });

  const added = waitFor(cha, "pusher:member_added");
  const b = await client("bob");
  const { data: bdata } = await subscribed(b, "presence-room");
  assert.equal(bdata.count, 2);
  const { data: member } = await added;
  assert.equal(member.id, "bob");
  assert.deepEqual(member.info, { name: "User bob" });

  const users = await (await sdk.get({ path: "/channels/presence-room/users" })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), ["alice", "bob"]);
  const info = await (await sdk.get({ path: "/channels/presence-room", params: { info: "user_count,subscription_count" } })).json();
  assert.equal(info.occupied, true);
  assert.equal(info.user_count, 2);
  const list = await (await sdk.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })).json();
  assert.equal(list.channels["presence-room"].user_count, 2);

  const removed = waitFor(cha, "pusher:member_removed");
  b.disconnect();
  const { data: gone } = await removed;
  assert.equal(gone.id, "bob");
});

test("client events between two pusher-js clients on a private channel", async () => {
  const a = await client("a"), b = await client("b");
  const cha = (await subscribed(a, "private-chat")).ch;
  const chb = (await subscribed(b, "private-chat")).ch;
  let echoed = false;
  cha.bind("client-typing", () => (echoed = true));
  const got = waitFor(chb, "client-typing");
  assert.equal(cha.trigger("client-typing", { who: "a" }), true);
  assert.deepEqual((await got).data, { who: "a" });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(echoed, false, "client events are not echoed to the sender");
});

test("client events on presence carry the user id", async () => {
  const a = await client("carol"), b = await client("dave");
  const cha = (await subscribed(a, "presence-ce")).ch;
  const chb = (await subscribed(b, "presence-ce")).ch;
  const got = waitFor(chb, "client-hi");
  cha.trigger("client-hi", { x: 1 });
  const { data, meta } = await got;
  assert.deepEqual(data, { x: 1 });
  assert.equal(meta.user_id, "carol");
});

test("signin, then terminateUserConnections closes the user's connection", async () => {
  const c = await client("mallory");
  const signedIn = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no signin_success")), 5000);
    c.bind("pusher:signin_success", () => { clearTimeout(t); resolve(); });
  });
  c.signin();
  await signedIn;
  const closed = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`still ${c.connection.state}`)), 5000);
    c.connection.bind("state_change", ({ current }) => {
      if (current !== "connected") { clearTimeout(t); resolve(current); }
    });
  });
  const res = await sdk.terminateUserConnections("mallory");
  assert.equal(res.status, 200);
  assert.notEqual(await closed, "connected");
  // 4009 is in the 4000-4099 range: pusher-js reports it and does not reconnect.
  assert.ok(c.errors.some((e) => errorCode(e) === 4009), JSON.stringify(c.errors));
  await sleep(1500);
  assert.equal(c.connection.state, "disconnected");
  assert.ok(!c.states.slice(c.states.indexOf("disconnected")).includes("connecting"), c.states.join(","));
});

// ---- error codes, as pusher-js sees them (docs/pusher-errors.md) ----

/// Connects with `key` and expects a refusal with `code`; returns the client.
async function refused(key, code, at) {
  const c = newClient("anon", { key, at });
  const e = await nextError(c);
  assert.equal(e.type, "WebSocketError", JSON.stringify(e));
  assert.equal(errorCode(e), code, JSON.stringify(e));
  assert.match(e.error.data.message, /\w/);
  return c;
}

/// 4000-4099: pusher-js goes to "disconnected" and stays there.
async function staysDisconnected(c) {
  await sleep(1500);
  assert.equal(c.connection.state, "disconnected");
  // The first "connecting" happens in the constructor, before newClient records states.
  assert.deepEqual(c.states, ["disconnected"], "no reconnect attempt");
}

test("4001 unknown app key: pusher-js reports it and does not reconnect", async () => {
  const c = await refused("no-such-key", 4001);
  await staysDisconnected(c);
});

test("4003 disabled app: pusher-js reports it and does not reconnect", async () => {
  const c = await refused("off-key", 4003, limits);
  await staysDisconnected(c);
});

test("4004 over connection quota: the second client is refused, the first stays", async () => {
  const first = await client("q1", { key: "quota-key", at: limits });
  const second = await refused("quota-key", 4004, limits);
  await staysDisconnected(second);
  assert.equal(first.connection.state, "connected");
  first.disconnect();
});

test("4009 signin with a bad signature: pusher:error 4009, the connection stays", async () => {
  const c = await client("eve", { forge: true });
  const err = nextError(c);
  c.signin();
  const e = await err;
  assert.equal(e.type, "PusherError");
  assert.equal(errorCode(e), 4009);
  assert.match(e.data.message, /signin/i);
  await sleep(300);
  assert.equal(c.connection.state, "connected");
});

test("failed channel authorization: pusher:subscription_error on the channel, connection stays", async () => {
  const c = await client("mallet", { forge: true });
  const connErr = nextError(c);
  const ch = c.subscribe("private-vault");
  const subErr = new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("no pusher:subscription_error")), 5000);
    ch.bind("pusher:subscription_error", (e) => { clearTimeout(t); resolve(e); });
  });
  let succeeded = false;
  ch.bind("pusher:subscription_succeeded", () => (succeeded = true));
  const e = await subErr;
  assert.equal(e.type, "AuthError");
  assert.equal(e.status, 401);
  assert.match(e.error, /Unauthorized subscription to private-vault/);
  // Like Pusher: also a pusher:error with code null, reported on the connection.
  const ce = await connErr;
  assert.equal(ce.type, "PusherError");
  assert.equal(errorCode(ce), null);
  assert.equal(ce.data.message, e.error);
  await sleep(200);
  assert.equal(succeeded, false);
  assert.equal(ch.subscribed, false);
  assert.equal(c.connection.state, "connected");
  // An event on the channel does not reach the refused client.
  let got = false;
  ch.bind("secret", () => (got = true));
  await sdk.trigger("private-vault", "secret", {});
  await sleep(300);
  assert.equal(got, false);
});

test("4301 client events over the rate limit: pusher:error 4301, extra events dropped", async () => {
  const a = await client("fast"), b = await client("calm");
  const cha = (await subscribed(a, "private-flood")).ch;
  const chb = (await subscribed(b, "private-flood")).ch;
  let received = 0;
  chb.bind("client-tick", () => received++);
  const err = nextError(a);
  for (let i = 0; i < 30; i++) assert.equal(cha.trigger("client-tick", { i }), true);
  const e = await err;
  assert.equal(e.type, "PusherError");
  assert.equal(errorCode(e), 4301);
  await sleep(800);
  // Burst of 10 (the default 10/s), plus what refilled while the 30 were sent.
  assert.ok(received >= 10 && received <= 13, `received ${received}`);
  assert.ok(a.errors.filter((x) => errorCode(x) === 4301).length >= 17);
  assert.equal(a.connection.state, "connected");
});

async function metric(name) {
  const text = await (await fetch(`http://${host}:${port}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`duplex_${name} `));
  return Number(line.split(" ")[1]);
}

test("4100 slow consumer: a pusher-js client whose socket stops reading is closed, backs off 1 s, reconnects", async () => {
  const c = await client("sloth");
  const { ch } = await subscribed(c, "flood-js");
  const firstId = c.connection.socket_id;
  // Stall the client: stop reading its TCP socket, as a frozen tab or a blocked event loop
  // would. (pusher-js in Node reads through faye-websocket; `_stream` is its net.Socket.)
  const stream = c.connection.connection.transport.socket._stream;
  assert.ok(stream && typeof stream.pause === "function", "faye-websocket internals changed");
  stream.pause();
  let received = 0;
  ch.bind("e", () => received++);
  const before = await metric("slow_consumers_total");
  const data = "z".repeat(8 * 1024);
  const batch = Array.from({ length: 10 }, () => ({ channel: "flood-js", name: "e", data }));
  let batches = 0;
  while ((await metric("slow_consumers_total")) === before) {
    assert.ok(batches < 1000, `${batches} batches and no slow consumer`);
    assert.equal((await sdk.triggerBatch(batch)).status, 200);
    batches++;
  }
  const err = nextError(c, 20000);
  let backoff = null;
  c.connection.bind("connecting_in", (s) => (backoff = s));
  const reconnected = new Promise((resolve) => c.connection.bind("connected", resolve));
  stream.resume();
  const e = await err;
  const closedAt = Date.now();
  assert.equal(errorCode(e), 4100, JSON.stringify(e));
  assert.ok(received > 0 && received < batches * 10, `received ${received} of ${batches * 10}`);
  // 4100-4199: pusher-js waits (connecting_in 1 s), then reconnects with a new socket id.
  await reconnected;
  assert.equal(backoff, 1);
  assert.ok(Date.now() - closedAt >= 900, `reconnected after ${Date.now() - closedAt} ms`);
  assert.notEqual(c.connection.socket_id, firstId);
});

test("413 through the SDK: event data over 10 KB, request body over 100 KB", async () => {
  const tooBig = await sdk.trigger("big", "e", "y".repeat(10 * 1024 + 1)).then(
    () => null,
    (err) => err,
  );
  assert.ok(tooBig, "the SDK resolved an oversized trigger");
  assert.equal(tooBig.status, 413);
  assert.match(JSON.parse(tooBig.body).error, /larger than 10240 bytes/);
  const atLimit = await sdk.trigger("big", "e", "y".repeat(10 * 1024 - 2));
  assert.equal(atLimit.status, 200);

  const huge = await sdk.trigger("big", "e", "y".repeat(150 * 1024)).then(() => null, (err) => err);
  assert.ok(huge);
  assert.equal(huge.status, 413);
  assert.match(JSON.parse(huge.body).error, /larger than 102400 bytes/);
});

// Last: it stops the limits server.
test("4200 drain (SIGTERM): pusher-js reports 4200 and reconnects at once", async () => {
  const c = await client("d", { key: "drain-key", at: limits });
  const err = nextError(c);
  const t0 = Date.now();
  limits.child.kill("SIGTERM");
  const e = await err;
  assert.equal(errorCode(e), 4200, JSON.stringify(e));
  // 4200-4299: pusher-js retries immediately (no 1 s back-off).
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`states ${c.states.join(",")}`)), 900);
    const check = () => c.states.includes("connecting") ? (clearTimeout(t), resolve()) : setTimeout(check, 10);
    check();
  });
  // (pusher-js also announces "connecting_in 1" from its generic closed handler, but the
  // 4200 "retry" action has already scheduled the immediate attempt seen above.)
  assert.ok(Date.now() - t0 < 900);
  c.disconnect();
});
