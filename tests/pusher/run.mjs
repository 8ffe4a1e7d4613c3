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

let server, host, port, authUrl, sdk, authServer;
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

before(async () => {
  server = spawn(bin, ["serve", "--host", "127.0.0.1", "--port", "0", "--enable-client-events"], {
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
  [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  sdk = new PusherServer({ appId: APP_ID, key: KEY, secret: SECRET, host, port, useTLS: false });

  // The app server's auth endpoints, written with the SDK (pusher-js posts form bodies).
  authServer = createServer(async (req, res) => {
    const form = await readBody(req);
    const socketId = form.get("socket_id");
    let body;
    if (req.url === "/pusher/auth") {
      const channel = form.get("channel_name");
      const user = req.headers["x-user"] || "anon";
      body = channel.startsWith("presence-")
        ? sdk.authorizeChannel(socketId, channel, { user_id: user, user_info: { name: `User ${user}` } })
        : sdk.authorizeChannel(socketId, channel);
    } else if (req.url === "/pusher/user-auth") {
      body = sdk.authenticateUser(socketId, { id: req.headers["x-user"] || "anon" });
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
});

async function client(user = "anon") {
  const c = new PusherClient(KEY, {
    cluster: "mt1",
    wsHost: host,
    wsPort: port,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { endpoint: `${authUrl}/pusher/auth`, transport: "ajax", headers: { "x-user": user } },
    userAuthentication: { endpoint: `${authUrl}/pusher/user-auth`, transport: "ajax", headers: { "x-user": user } },
  });
  clients.push(c);
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`not connected: ${c.connection.state}`)), 5000);
    c.connection.bind("connected", () => { clearTimeout(t); resolve(); });
  });
  return c;
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
});
