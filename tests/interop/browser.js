#!/usr/bin/env node
// Drives Chromium's own WebSocket for duplex's interop tests (crates/duplex/tests/interop.rs).
//
//   node browser.js --page http://127.0.0.1:P/ --ws ws://127.0.0.1:Q/path --scenario NAME
//                   [--trust-cert CERT_FILE]
//
// Launches /usr/bin/chromium (or $DUPLEX_INTEROP_CHROMIUM) headless through playwright-core with
// a fresh user-data dir, opens the page (served by the Rust test, so the WebSocket's Origin is
// a real http://127.0.0.1 origin), runs `runScenario(ws, name)` from web/index.html in it and
// prints one JSON line on stdout: {"event":"result","ok":...,...}, adding what the DevTools
// protocol saw of the socket (handshake errors). Exits 0 when ok, 1 otherwise. The browser is
// closed and its profile removed on every exit path, SIGTERM included.
//
// TLS: `--trust-cert CERT_FILE` (PEM, leaf first) makes Chromium accept that one server
// certificate, for the https:// page and the wss:// WebSocket alike, by launching it with
// `--ignore-certificate-errors-spki-list=<base64 SHA-256 of the leaf's SubjectPublicKeyInfo>`
// (honoured because a --user-data-dir is given; errors for any other certificate still fail).
// The report then has `page_tls`, the page's TLS as DevTools saw it.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const TOTAL = 90_000;
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-quic',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--no-proxy-server',
];

const log = (...a) => console.error('[chromium driver]', ...a);
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '');
    if (!['page', 'ws', 'scenario', 'trust-cert'].includes(key)) throw new Error(`unknown argument ${argv[i]}`);
    args[key] = argv[++i];
  }
  for (const k of ['page', 'ws', 'scenario']) if (!args[k]) throw new Error(`missing --${k}`);
  return args;
}

// Chromium's SPKI pin of the first certificate in a PEM file: base64(SHA-256(SPKI DER)).
function spkiHash(pemFile) {
  const first = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/.exec(fs.readFileSync(pemFile, 'utf8'));
  if (!first) throw new Error(`no certificate in ${pemFile}`);
  const spki = new crypto.X509Certificate(first[0]).publicKey.export({ type: 'spki', format: 'der' });
  return crypto.createHash('sha256').update(spki).digest('base64');
}

let context = null;
let profile = null;
let exiting = false;

async function cleanup() {
  if (context) {
    const c = context;
    context = null;
    await c.close().catch((e) => log('closing the browser:', e.message));
  }
  if (profile) {
    fs.rmSync(profile, { recursive: true, force: true });
    profile = null;
  }
}

async function finish(result) {
  if (exiting) return;
  exiting = true;
  emit({ event: 'result', ...result });
  await cleanup();
  process.exit(result.ok ? 0 : 1);
}

for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP']) {
  process.on(sig, () => finish({ ok: false, error: `driver got ${sig}` }));
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  setTimeout(() => finish({ ok: false, error: `gave up after ${TOTAL / 1000}s`, scenario: args.scenario }), TOTAL).unref();
  const executablePath = process.env.DUPLEX_INTEROP_CHROMIUM || '/usr/bin/chromium';
  profile = fs.mkdtempSync(path.join(os.tmpdir(), 'duplex-interop-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args: args['trust-cert'] ? [...ARGS, `--ignore-certificate-errors-spki-list=${spkiHash(args['trust-cert'])}`] : ARGS,
    timeout: 30_000,
    // We handle signals ourselves (close the browser, remove the profile, report).
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  const page = context.pages()[0] || (await context.newPage());
  const socketErrors = [];
  const consoleLines = [];
  page.on('websocket', (ws) => {
    ws.on('socketerror', (e) => socketErrors.push(String(e)));
  });
  page.on('console', (m) => {
    consoleLines.push(`${m.type()}: ${m.text()}`);
    log(`console ${m.type()}:`, m.text());
  });
  page.on('pageerror', (e) => log('page error:', e.message));
  const response = await page.goto(args.page, { timeout: 30_000 });
  const pageTls = response && (await response.securityDetails());
  const result = await page.evaluate(([url, name]) => window.runScenario(url, name), [args.ws, args.scenario]);
  if (pageTls && pageTls.protocol) result.page_tls = pageTls;
  result.socket_errors = socketErrors;
  result.console = consoleLines;
  if (!result.ok) log('FAIL:', result.error);
  await finish(result);
}

main().catch((e) => {
  log(e.stack || String(e));
  finish({ ok: false, error: String(e && e.message || e) });
});
