// The demo page at `/` in a real Chromium: two tabs join the same room, see each other in the
// presence member list, exchange chat messages (client events), and one leaving updates the
// other (each launch gets a fresh temporary profile). DUPLEX_BIN names the binary. Needs /usr/bin/chromium (tests/interop/install.sh).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const bin = process.env.DUPLEX_BIN || path.join(here, "..", "..", "target", "debug", "duplex");
const WAIT = { timeout: 15000 };
let server, base, browser;

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
  base = `http://${addr}/`;
  browser = await chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"],
  });
});

after(async () => {
  await browser?.close();
  server?.kill("SIGTERM");
});

async function join(name) {
  const page = await browser.newPage();
  await page.goto(base);
  await page.fill("#name", name);
  await page.click("#join button");
  return page;
}

const count = (page, n) => page.waitForFunction((n) => document.querySelector("#count").textContent === String(n), n, WAIT);
const logHas = (page, text) => page.waitForFunction((t) => document.querySelector("#log").textContent.includes(t), text, WAIT);

test("two tabs see each other's presence and messages, and a leave", async () => {
  const alice = await join("alice");
  const bob = await join("bob");
  await count(alice, 2);
  await count(bob, 2);
  assert.match(await alice.textContent("#members"), /alice[\s\S]*bob|bob[\s\S]*alice/);

  await alice.fill("#text", "hello from alice");
  await alice.click("#say button");
  await logHas(bob, "hello from alice");
  await bob.fill("#text", "hi alice, bob here");
  await bob.click("#say button");
  await logHas(alice, "bob here");

  await bob.close();
  await count(alice, 1);
  assert.doesNotMatch(await alice.textContent("#members"), /bob/);
});
