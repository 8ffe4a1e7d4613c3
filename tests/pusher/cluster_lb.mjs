// A duplex serve cluster behind a load balancer, with the real pusher-js 8 client and the
// pusher 5 server SDK. Run by crates/duplex-cli/tests/cluster_balancers.rs, which starts Redis,
// three `duplex serve --redis` nodes and the balancer, then runs:
//
//   LB_PORT=<balancer> NODES=<addr,addr,addr> NODE_PIDS=<pid,pid,pid> node cluster_lb.mjs
//
// Every wait is bounded; the script exits 0 when every step passed, 1 (with the reason) if not.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import net from "node:net";
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
const LB_HOST = "127.0.0.1";
const LB_PORT = Number(process.env.LB_PORT);
const NODES = process.env.NODES.split(",");
const PIDS = process.env.NODE_PIDS.split(",").map(Number);
const NODE_TIMEOUT_MS = Number(process.env.NODE_TIMEOUT || "3") * 1000;
const LABEL = process.env.LABEL || "lb";
const CLIENTS = 6;
const CHANNEL = "presence-lb";
// Nodes run with --proxy-protocol: direct requests (for /metrics) start with a PROXY header.
const PROXY_PROTOCOL = process.env.PROXY_PROTOCOL === "1";
// Subscribe every client at once instead of one after the other (see step 2).
// All clients subscribe at once by default (the hard case for presence ordering);
// SEQUENTIAL_SUBSCRIBE=1 waits for each confirmation first.
const CONCURRENT_SUBSCRIBE = process.env.SEQUENTIAL_SUBSCRIBE !== "1";

const started = Date.now();
const log = (...a) => console.log(`[${LABEL} +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Polls `check` (sync or async, returns truthy when done) every 100 ms, at most `ms`.
async function until(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what} (last: ${last?.stack ?? JSON.stringify(last)})`);
    await sleep(100);
  }
}

// The app server's auth endpoint, written with the SDK: the user id comes from a header.
const sdkDirect = new PusherServer({ appId: APP_ID, key: KEY, secret: SECRET, host: LB_HOST, port: LB_PORT, useTLS: false });
const authServer = createServer((req, res) => {
  let b = "";
  req.on("data", (c) => (b += c));
  req.on("end", () => {
    const form = new URLSearchParams(b);
    const user = req.headers["x-user"];
    const body = sdkDirect.authorizeChannel(form.get("socket_id"), form.get("channel_name"), {
      user_id: user,
      user_info: { name: `User ${user}` },
    });
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  });
});
await new Promise((r) => authServer.listen(0, "127.0.0.1", r));
const authUrl = `http://127.0.0.1:${authServer.address().port}/pusher/auth`;

/// `GET path` on a node over a plain socket (HTTP/1.0, so the body ends at close), with a
/// PROXY v1 header first when the nodes expect one. Rejects after 2 s.
function nodeGet(addr, target) {
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  return new Promise((resolve, reject) => {
    const s = net.connect({ host, port });
    const t = setTimeout(() => { s.destroy(); reject(new Error(`GET ${target} on ${addr}: timeout`)); }, 2000);
    let body = "";
    s.on("connect", () => {
      const proxy = PROXY_PROTOCOL ? `PROXY TCP4 127.0.0.1 127.0.0.1 ${s.localPort} ${port}\r\n` : "";
      s.write(`${proxy}GET ${target} HTTP/1.0\r\nHost: ${addr}\r\n\r\n`);
    });
    s.on("data", (d) => (body += d));
    s.on("error", (e) => { clearTimeout(t); reject(e); });
    s.on("close", () => { clearTimeout(t); resolve(body); });
  });
}

/// `duplex_connections_current` of each node (null for a node that does not answer).
async function gauges() {
  return Promise.all(
    NODES.map(async (addr, i) => {
      if (killed.has(i)) return null;
      try {
        const m = (await nodeGet(addr, "/metrics")).match(/^duplex_connections_current (\d+)/m);
        return m ? Number(m[1]) : null;
      } catch {
        return null;
      }
    }),
  );
}
const killed = new Set();

const clients = [];
function newClient(i) {
  const user = `user-${i}`;
  const c = new PusherClient(KEY, {
    cluster: "mt1",
    wsHost: LB_HOST,
    wsPort: LB_PORT,
    forceTLS: false,
    enabledTransports: ["ws"],
    disableStats: true,
    channelAuthorization: { endpoint: authUrl, transport: "ajax", headers: { "x-user": user } },
  });
  c.user = user;
  c.received = [];
  c.socketIds = [];
  c.connection.bind("connected", () => c.socketIds.push(c.connection.socket_id));
  clients.push(c);
  return c;
}

/// Every member id a client's presence channel lists, sorted (duplicates kept).
function memberIds(c) {
  const ch = c.channel(CHANNEL);
  if (!ch || !ch.subscribed) return null;
  const ids = [];
  ch.members.each((m) => ids.push(m.id));
  return ids.sort();
}
const allUsers = () => clients.map((c) => c.user).sort();
const sameList = (a, b) => a && a.length === b.length && a.every((x, i) => x === b[i]);

let exitCode = 0;
try {
  // 1. Clients connect through the balancer and spread over the nodes.
  for (let i = 0; i < CLIENTS; i++) {
    const c = newClient(i);
    await until(`client ${i} connected`, 10000, () => c.connection.state === "connected");
  }
  const spread = await until("the nodes count every client", 10000, async () => {
    const g = await gauges();
    return g.reduce((a, b) => a + (b ?? 0), 0) === CLIENTS ? g : null;
  });
  log("connections per node:", spread.join(" "));
  assert.ok(spread.filter((n) => n > 0).length >= 2, `round robin should use >= 2 nodes: ${spread}`);

  // 2. One presence channel: every client sees every member. All subscribe at once, on
  //    every node: a member_added published while a client's member list is being read must
  //    reach it after its subscription_succeeded (the hub holds it), or pusher-js, which
  //    resets its list on the confirmation, would lose that member.
  for (const c of clients) {
    const ch = c.subscribe(CHANNEL);
    ch.bind("pusher:subscription_error", (e) => {
      console.error(`${c.user}: subscription_error ${JSON.stringify(e)}`);
    });
    for (const ev of ["client-hello", "server-news", "server-after"]) {
      ch.bind(ev, (data) => c.received.push({ ev, data }));
    }
    if (!CONCURRENT_SUBSCRIBE) {
      await until(`${c.user} subscribed`, 10000, () => ch.subscribed);
    }
  }
  await until("every client lists every member once", 10000, () =>
    clients.every((c) => sameList(memberIds(c), allUsers())),
  );
  log("presence: every client lists", CLIENTS, "members");

  // 3. Client events cross nodes.
  clients[0].channel(CHANNEL).trigger("client-hello", { from: clients[0].user });
  await until("client-hello reaches the other clients", 10000, () =>
    clients.slice(1).every((c) => c.received.some((r) => r.ev === "client-hello" && r.data.from === "user-0")),
  );
  assert.ok(!clients[0].received.some((r) => r.ev === "client-hello"), "the sender does not get its own client event");
  log("client event: reached", CLIENTS - 1, "clients on every node");

  // 4. The REST API through the balancer.
  const sdk = new PusherServer({ appId: APP_ID, key: KEY, secret: SECRET, host: LB_HOST, port: String(LB_PORT), useTLS: false });
  const res = await sdk.trigger(CHANNEL, "server-news", { n: 1 });
  assert.equal(res.status, 200);
  await until("the SDK's event reaches every client", 10000, () =>
    clients.every((c) => c.received.some((r) => r.ev === "server-news")),
  );
  log("REST trigger through the balancer: reached", CLIENTS, "clients");

  // 5. SIGKILL the busiest node: its clients reconnect through the balancer on their own.
  const before = await gauges();
  const victim = before.indexOf(Math.max(...before.map((n) => n ?? 0)));
  const moved = before[victim];
  const idsBefore = clients.map((c) => c.connection.socket_id);
  killed.add(victim);
  process.kill(PIDS[victim], "SIGKILL");
  const killedAt = Date.now();
  log(`SIGKILLed node ${victim} (${moved} clients)`);
  await until("every client is connected to a live node", 15000, async () => {
    if (!clients.every((c) => c.connection.state === "connected")) return false;
    const g = await gauges();
    return g.reduce((a, b) => a + (b ?? 0), 0) === CLIENTS;
  });
  const reconnected = clients.filter((c, i) => c.connection.socket_id !== idsBefore[i]).length;
  log(`reconnected: ${reconnected} clients in ${Date.now() - killedAt} ms; per node:`, (await gauges()).join(" "));
  assert.equal(reconnected, moved, "exactly the killed node's clients reconnect");

  // 6. Presence settles: the killed node's sockets leave (node timeout + sweep), every member
  //    is listed once by every client, and the channel counts only live subscriptions.
  const settleMs = NODE_TIMEOUT_MS * 2 + 8000;
  await until("presence settles on every client", settleMs, () =>
    clients.every((c) => sameList(memberIds(c), allUsers())),
  );
  await until("the channel counts only live subscriptions", settleMs, async () => {
    const r = await sdk.get({ path: `/channels/${CHANNEL}`, params: { info: "user_count,subscription_count" } });
    const info = await r.json();
    return info.user_count === CLIENTS && info.subscription_count === CLIENTS ? info : null;
  });
  const users = await (await sdk.get({ path: `/channels/${CHANNEL}/users` })).json();
  assert.deepEqual(users.users.map((u) => u.id).sort(), allUsers());
  log(`presence settled ${Date.now() - killedAt} ms after the kill: ${CLIENTS} users, ${CLIENTS} subscriptions`);

  // 7. The REST API still reaches everyone, through the balancer, after the failover.
  await sdk.trigger(CHANNEL, "server-after", { n: 2 });
  await until("events after the failover reach every client", 10000, () =>
    clients.every((c) => c.received.some((r) => r.ev === "server-after")),
  );
  log("after the failover: REST trigger reached", CLIENTS, "clients");
  console.log(`${LABEL}: ok`);
} catch (e) {
  console.error(`${LABEL}: FAILED: ${e.stack ?? e}`);
  for (const c of clients) {
    console.error(`  ${c.user}: state ${c.connection.state}, socket ids ${c.socketIds.join(" ")}, members ${JSON.stringify(memberIds(c))}`);
  }
  exitCode = 1;
} finally {
  for (const c of clients) c.disconnect();
  authServer.closeAllConnections();
  authServer.close();
}
process.exit(exitCode);
