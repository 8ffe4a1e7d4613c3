#!/usr/bin/env node
// Node `ws` peer of duplex's interop tests (crates/duplex/tests/interop.rs).
//
//   node peer.js client URL --scenario NAME [--origin ORIGIN] [--tls CA_FILE]
//   node peer.js server --port 0 --scenario NAME [--cert CHAIN_FILE --key KEY_FILE]
//
// A wss:// URL makes the client speak TLS, trusting CA_FILE only (`--tls`, ws's `ca` option)
// or, without it, Node's default roots (scenario `tls-untrusted`: duplex's certificate must
// be refused). `--cert/--key` make the server an https.createServer with `ws` on it.
//
// Each scenario is one scripted dialogue with duplex (see README.md). The peer checks what
// duplex does and prints JSON lines on stdout:
//   {"event":"listening","port":N}        server mode, once bound
//   {"event":"result","ok":true,...}      always last; ok=false with "error"
// and exits 0 when its checks passed, 1 otherwise. Diagnostics go to stderr.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const https = require('node:https');
const { WebSocket, WebSocketServer } = require('ws');

const STEP = 20_000; // ms allowed for any single wait
const TOTAL = 90_000; // hard limit for the whole run: never linger

// ------------------------------------------------------------------ shared test data
// Must match crates/duplex/tests/interop_support/mod.rs, peer.py and web/index.html.
const TEXT = 'hello, ünïcødé ✓';
const US_TEXT = 'duplex says hi ✓';
const BIN_A = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
const BIN_B = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));
const US_BIN = Buffer.from([0x00, 0xff, ...Buffer.from('duplex')]);
const FRAG_TEXT_PARTS = ['frag', 'mented ✓', ' text'];
const FRAG_BIN = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9]);
const US_FRAG_TEXT = 'split ✓ code point';
const MIB = 1 << 20;
const RANDOM_LEN = 256 << 10;
const SMALL = 'hello hello hello';
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789 ';

function pattern(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + (i >> 11)) & 0xff;
  return b;
}
function textPattern(n) {
  const chars = new Array(n);
  for (let i = 0; i < n; i++) chars[i] = ALPHABET[(i * 7 + Math.floor(i / 1000)) % 37];
  return chars.join('');
}

class Fail extends Error {}

const log = (...a) => console.error('[node peer]', ...a);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

function describe(m) {
  if (!m.isBinary) {
    const s = m.data.toString('utf8');
    return `text(${m.data.length} bytes: ${JSON.stringify(s.slice(0, 40))}${s.length > 40 ? '...' : ''})`;
  }
  return `binary(${m.data.length} bytes: ${m.data.subarray(0, 16).toString('hex')}${m.data.length > 16 ? '...' : ''})`;
}

function expect(got, want, what) {
  const w = typeof want === 'string' ? { isBinary: false, data: Buffer.from(want) } : { isBinary: true, data: want };
  if (got.isBinary !== w.isBinary || !got.data.equals(w.data)) {
    throw new Fail(`${what}: expected ${describe(w)}, got ${describe(got)}`);
  }
}

function withTimeout(promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Fail(`timed out after ${STEP / 1000}s waiting for ${what}`)), STEP);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Queues messages, pings and the close event of one connection.
class Inbox {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.pings = [];
    this.closed = null;
    this.error = null;
    this.wake = null;
    ws.on('message', (data, isBinary) => this.push({ data: Buffer.from(data), isBinary }));
    ws.on('ping', (data) => this.pings.push(data.toString()));
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString() };
      this.poke();
    });
    ws.on('error', (e) => {
      log('socket error:', e.message);
      this.error = e;
      this.poke();
    });
  }
  push(m) {
    this.queue.push(m);
    this.poke();
  }
  poke() {
    const w = this.wake;
    this.wake = null;
    if (w) w();
  }
  changed() {
    return new Promise((resolve) => (this.wake = resolve));
  }
  async next(what) {
    return withTimeout(
      (async () => {
        for (;;) {
          if (this.queue.length) return this.queue.shift();
          if (this.closed) {
            throw new Fail(`connection closed (${this.closed.code} ${JSON.stringify(this.closed.reason)}) while waiting for ${what}`);
          }
          await this.changed();
        }
      })(),
      what,
    );
  }
  async close(what) {
    return withTimeout(
      (async () => {
        while (!this.closed) await this.changed();
        return this.closed;
      })(),
      what,
    );
  }
}

async function send(ws, data, options = {}) {
  await new Promise((resolve, reject) => ws.send(data, options, (e) => (e ? reject(e) : resolve())));
}

async function closeWith(ws, inbox, code, reason, info) {
  ws.close(code, reason);
  const c = await inbox.close('the end of the closing handshake');
  if (c.code === 1006) throw new Fail(`closed with ${code} but duplex never answered with a close frame`);
  info.close = c;
}

async function awaitClose(inbox, info) {
  const c = await withTimeout(
    (async () => {
      for (;;) {
        if (inbox.queue.length) throw new Fail(`expected duplex to close, got a message ${describe(inbox.queue[0])}`);
        if (inbox.closed) return inbox.closed;
        await inbox.changed();
      }
    })(),
    "duplex's close frame",
  );
  if (c.code === 1006) throw new Fail('connection ended without a close frame from duplex');
  info.close = c;
}

// ------------------------------------------------------------------ scenarios
const scenarios = {
  async text(ws, inbox, info) {
    await send(ws, TEXT);
    expect(await inbox.next('echo of our text'), TEXT, 'echo of our text');
    expect(await inbox.next("duplex's text"), US_TEXT, "duplex's text");
    await closeWith(ws, inbox, 1000, 'done', info);
  },
  async binary(ws, inbox, info) {
    await send(ws, BIN_A);
    expect(await inbox.next('echo of binary A'), BIN_A, 'echo of binary A');
    await send(ws, BIN_B);
    expect(await inbox.next('echo of binary B'), BIN_B, 'echo of binary B');
    expect(await inbox.next("duplex's binary"), US_BIN, "duplex's binary");
    await closeWith(ws, inbox, 1000, 'done', info);
  },
  async empty(ws, inbox, info) {
    await send(ws, '');
    expect(await inbox.next('echo of empty text'), '', 'echo of empty text');
    await send(ws, Buffer.alloc(0));
    expect(await inbox.next('echo of empty binary'), Buffer.alloc(0), 'echo of empty binary');
    await closeWith(ws, inbox, 1000, 'done', info);
  },
  async large(ws, inbox, info) {
    const big = pattern(MIB);
    await send(ws, big);
    expect(await inbox.next('echo of 1 MiB binary'), big, 'echo of 1 MiB binary');
    expect(await inbox.next("duplex's 1 MiB text"), textPattern(MIB), "duplex's 1 MiB text");
    await closeWith(ws, inbox, 1000, 'done', info);
  },
  async fragments(ws, inbox, info) {
    // ws sends a fragment per send() with fin:false, the last with fin:true.
    FRAG_TEXT_PARTS.forEach((part, i) => ws.send(part, { fin: i === FRAG_TEXT_PARTS.length - 1 }));
    ws.send(FRAG_BIN.subarray(0, 3), { binary: true, fin: false });
    ws.send(FRAG_BIN.subarray(3, 6), { binary: true, fin: false });
    await send(ws, FRAG_BIN.subarray(6, 9), { binary: true, fin: true });
    expect(await inbox.next("duplex's fragmented text"), US_FRAG_TEXT, "duplex's fragmented text");
    expect(await inbox.next("duplex's streamed binary"), pattern(3000), "duplex's streamed binary");
    info.pings_seen = inbox.pings;
    await closeWith(ws, inbox, 1000, 'done', info);
  },
  async ping(ws, inbox, info) {
    // duplex pings us first; ws answers automatically and duplex says when it saw the pong.
    expect(await inbox.next("duplex's 'got-pong'"), 'got-pong', "duplex's 'got-pong'");
    const pong = new Promise((resolve) => ws.once('pong', (d) => resolve(d.toString())));
    ws.ping(Buffer.from('peer-ping'));
    const data = await withTimeout(pong, "duplex's pong to 'peer-ping'");
    if (data !== 'peer-ping') throw new Fail(`pong payload ${JSON.stringify(data)}, expected "peer-ping"`);
    info.pong_received = true;
    info.pings_seen = inbox.pings;
    await send(ws, 'done');
    await closeWith(ws, inbox, 1000, 'done', info);
  },
  async subprotocol(ws, inbox, info) {
    info.protocol = ws.protocol;
    if (ws.protocol !== 'v1') throw new Fail(`expected subprotocol "v1", negotiated ${JSON.stringify(ws.protocol)}`);
    await send(ws, ws.protocol);
    expect(await inbox.next("duplex's subprotocol"), 'v1', "duplex's subprotocol");
    await closeWith(ws, inbox, 1000, 'done', info);
  },
  async 'subprotocol-none'(ws, inbox, info) {
    info.outcome = 'open';
    info.protocol = ws.protocol || null;
    await send(ws, `open:${ws.protocol || 'none'}`);
    await closeWith(ws, inbox, 1000, 'done', info);
  },
  async 'close-by-peer'(ws, inbox, info) {
    await closeWith(ws, inbox, 4001, 'bye', info);
  },
  async 'close-by-us'(ws, inbox, info) {
    await send(ws, 'ready');
    await awaitClose(inbox, info);
  },
  async deflate(ws, inbox, info) {
    const ext = ws._extensions['permessage-deflate'];
    info.extensions = ws.extensions;
    info.deflate_params = ext ? ext.params : null;
    if (!ext) throw new Fail(`permessage-deflate was not negotiated (extensions: ${JSON.stringify(ws.extensions)})`);
    // Phase 1: we send, duplex echoes, we compare.
    const messages = [SMALL, SMALL, '', textPattern(MIB), pattern(MIB), crypto.randomBytes(RANDOM_LEN)];
    for (const [i, m] of messages.entries()) {
      await send(ws, m);
      expect(await inbox.next(`echo of message ${i}`), m, `echo of message ${i}`);
    }
    // Phase 2: duplex sends, we echo, duplex compares.
    await send(ws, 'your-turn');
    for (let i = 0; i < 4; i++) {
      const m = await inbox.next(`duplex's message ${i}`);
      await send(ws, m.data, { binary: m.isBinary });
    }
    await closeWith(ws, inbox, 1000, 'done', info);
  },
};
scenarios['deflate-no-takeover'] = scenarios.deflate;
scenarios['deflate-server-no-takeover'] = scenarios.deflate;
scenarios['deflate-peer-no-takeover'] = scenarios.deflate;
// tls-untrusted: the TLS handshake must fail (see runClient, runServer).
const NAMES = [...Object.keys(scenarios), 'reject-origin', 'reject-403', 'tls-untrusted'];

// The TLS version of a connection's socket (null over ws://).
const tlsOf = (socket) => (typeof socket.getProtocol === 'function' ? socket.getProtocol() : null);

function deflateOptions(scenario) {
  if (scenario === 'deflate-peer-no-takeover') {
    return { threshold: 0, serverNoContextTakeover: true, clientNoContextTakeover: true };
  }
  if (scenario.startsWith('deflate')) return { threshold: 0 };
  return false;
}

// ------------------------------------------------------------------ client mode
async function runClient(args, info) {
  const { scenario } = args;
  const protocols = scenario === 'subprotocol' || scenario === 'subprotocol-none' ? ['v2', 'v1'] : [];
  const ws = new WebSocket(args.url, protocols, {
    origin: args.origin,
    perMessageDeflate: deflateOptions(scenario),
    maxPayload: 16 * MIB,
    handshakeTimeout: STEP,
    ...(args.tls ? { ca: fs.readFileSync(args.tls) } : {}),
  });
  const inbox = new Inbox(ws);
  try {
    await withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      }),
      'the opening handshake',
    );
  } catch (e) {
    const m = /Unexpected server response: (\d+)/.exec(e.message);
    info.outcome = m ? 'refused' : 'failed';
    if (m) info.status = Number(m[1]);
    info.error = e.message;
    // A certificate the TLS layer refused: its OpenSSL verify code, e.g. SELF_SIGNED_CERT_IN_CHAIN.
    if (e.code) info.cert_error = e.code;
    if (scenario === 'reject-origin' || scenario === 'subprotocol-none') return;
    if (scenario === 'tls-untrusted' && e.code) return;
    throw new Fail(`handshake failed: ${e.message}`);
  }
  if (scenario === 'reject-origin') {
    ws.terminate();
    throw new Fail('duplex accepted a handshake from a forbidden origin');
  }
  if (scenario === 'tls-untrusted') {
    ws.terminate();
    throw new Fail('the certificate of a CA we were not told to trust was accepted');
  }
  info.tls = tlsOf(ws._socket);
  await scenarios[scenario](ws, inbox, info);
}

// ------------------------------------------------------------------ server mode
async function runServer(args, info) {
  const { scenario } = args;
  let finish;
  let failed;
  const done = new Promise((resolve, reject) => {
    finish = resolve;
    failed = reject;
  });
  // With --cert/--key, ws runs on an https server (as it would in production).
  const server = args.cert
    ? https.createServer({ cert: fs.readFileSync(args.cert), key: fs.readFileSync(args.key) })
    : http.createServer();
  server.on('request', (_req, res) => res.writeHead(426).end('WebSocket only\n'));
  if (scenario === 'tls-untrusted') {
    // Our certificate is from a CA duplex does not trust: duplex must abort the TLS handshake.
    server.on('tlsClientError', (e) => {
      info.outcome = 'failed';
      info.tls_error = e.message;
      finish();
    });
  }
  const wss = new WebSocketServer({
    server,
    perMessageDeflate: deflateOptions(scenario),
    maxPayload: 16 * MIB,
    handleProtocols:
      scenario === 'subprotocol' || scenario === 'subprotocol-none'
        ? (protocols) => (protocols.has('v1') ? 'v1' : false)
        : undefined,
    verifyClient: (client, cb) => {
      const { req } = client;
      info.request_path = req.url;
      info.request_extensions = req.headers['sec-websocket-extensions'] ?? null;
      info.request_protocols = req.headers['sec-websocket-protocol'] ?? null;
      info.tls = tlsOf(req.socket);
      if (info.tls) info.sni = req.socket.servername || null;
      if (scenario === 'tls-untrusted') {
        failed(new Fail('duplex accepted a certificate from a CA it does not trust'));
        cb(false, 400);
        return;
      }
      if (scenario === 'reject-403') {
        info.outcome = 'refused';
        info.status = 403;
        // Done once the refusal is written and the client is gone.
        req.socket.once('close', () => finish());
        cb(false, 403, 'Forbidden by the node peer');
        return;
      }
      cb(true);
    },
  });
  wss.on('error', (e) => failed(e));
  wss.on('listening', () => emit({ event: 'listening', port: wss.address().port }));
  server.listen(args.port, '127.0.0.1');
  wss.on('connection', (ws) => {
    const inbox = new Inbox(ws);
    scenarios[scenario](ws, inbox, info).then(finish, failed);
  });
  try {
    await done;
  } finally {
    wss.close();
    server.close();
  }
}

// ------------------------------------------------------------------ main
function parseArgs(argv) {
  const [mode, ...rest] = argv;
  const args = { mode, port: 0 };
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === '--scenario') args.scenario = rest[++i];
    else if (a === '--origin') args.origin = rest[++i];
    else if (a === '--port') args.port = Number(rest[++i]);
    else if (a === '--tls' && mode === 'client') args.tls = rest[++i];
    else if (a === '--cert' && mode === 'server') args.cert = rest[++i];
    else if (a === '--key' && mode === 'server') args.key = rest[++i];
    else if (!a.startsWith('--') && mode === 'client' && !args.url) args.url = a;
    else throw new Error(`unknown argument ${a}`);
  }
  if (!['client', 'server'].includes(mode)) {
    throw new Error('usage: peer.js client URL --scenario NAME [--origin O] [--tls CA] | server --port 0 --scenario NAME [--cert C --key K]');
  }
  if (!NAMES.includes(args.scenario)) throw new Error(`unknown scenario ${args.scenario}; one of ${NAMES.join(', ')}`);
  if (mode === 'client' && !args.url) throw new Error('client mode needs a URL');
  if (!args.cert !== !args.key) throw new Error('--cert and --key go together');
  return args;
}

async function main() {
  const info = { peer: `node ws ${require('ws/package.json').version}` };
  const watchdog = setTimeout(() => {
    emit({ event: 'result', ok: false, error: `gave up after ${TOTAL / 1000}s`, ...info });
    process.exit(1);
  }, TOTAL);
  try {
    const args = parseArgs(process.argv.slice(2));
    info.scenario = args.scenario;
    await (args.mode === 'client' ? runClient : runServer)(args, info);
  } catch (e) {
    log(e instanceof Fail ? `FAIL: ${e.message}` : e.stack);
    emit({ event: 'result', ok: false, error: e.message, ...info });
    process.exit(1);
  }
  clearTimeout(watchdog);
  emit({ event: 'result', ok: true, ...info });
  process.exit(0);
}

main();
