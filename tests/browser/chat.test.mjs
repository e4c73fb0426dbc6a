// End-to-end test of the chat page (src/http/page/) in a real headless Chromium, against a
// real shardcast server speaking `shardcast.v1` (docs/protocol.md).
//
//   SHARDCAST_BIN=target/release/shardcast node --test tests/browser/chat.test.mjs
//
// Environment:
//   SHARDCAST_BIN         the server binary (required)
//   SHARDCAST_MODEL       threading model (default: sharded)
//   SHARDCAST_STATIC_DIR  serve the page from this folder (--static-dir) instead of the copy
//                         embedded in the binary
//   CHROMIUM              the browser (default: /usr/bin/chromium)
//   OPENSSL               the openssl CLI, for the https test's throwaway certificate
//                         (default: openssl)
//
// The tests run in order and share one browser and one server (restarted on the same port by
// the reconnect test); the https test starts its own TLS server. They wait for conditions,
// never for fixed times; every wait is bounded.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const SCREENSHOTS = join(HERE, "screenshots");
const BIN = process.env.SHARDCAST_BIN;
const MODEL = process.env.SHARDCAST_MODEL || "sharded";
const STATIC_DIR = process.env.SHARDCAST_STATIC_DIR || "";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const OPENSSL = process.env.OPENSSL || "openssl";

/** How long any single condition may take to become true. */
const WAIT_MS = 10_000;
/** Per-test limit. */
const TEST_MS = 30_000;
/** How long a page may take to reconnect (backoff 0.5 s doubling, with jitter). */
const RECONNECT_MS = 20_000;
/** How long the server may take to print its port. */
const START_MS = 10_000;

const XSS = "<img src=x onerror=alert(1)>";

// ---- the server ---------------------------------------------------------------------------

/** Every server process started, so that none outlives the test. */
const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/**
 * Starts the server on `listen` (with `extra` arguments) and resolves to `{ child, port }` once
 * it has printed `listening on HOST:PORT`; rejects if it exits first or takes longer than
 * START_MS.
 */
function startServer(listen, extra = []) {
  const args = ["--listen", listen, "--no-pin", "--model", MODEL, "--workers", "2", ...extra];
  if (STATIC_DIR) args.push("--static-dir", STATIC_DIR);
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  child.on("exit", () => children.delete(child));
  return new Promise((resolve, reject) => {
    let stdout = "";
    const fail = (why) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${BIN} ${args.join(" ")}: ${why}\n--- stderr:\n${stderr}`));
    };
    const timer = setTimeout(() => fail(`no "listening on" line in ${START_MS} ms`), START_MS);
    child.on("error", (err) => fail(err.message));
    child.on("exit", (code, signal) => fail(`exited (${code ?? signal}) before listening`));
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
      const found = /listening on \S+:(\d+)/.exec(stdout);
      if (found) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        child.on("exit", () => children.delete(child));
        child.stdout.resume();
        resolve({ child, port: Number(found[1]) });
      }
    });
  });
}

/** Kills `child` at once (a crash, not a graceful shutdown) and waits until it is gone. */
function killServer(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

/** Starts the server again on `port`, retrying briefly if the port is not free yet. */
async function restartServer(port) {
  const deadline = Date.now() + START_MS;
  for (;;) {
    try {
      return await startServer(`127.0.0.1:${port}`);
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

// ---- the browser --------------------------------------------------------------------------

let browser;
let server; // { child, port }
const contexts = [];

/**
 * Opens `path` on `origin` (default: the shared server) in a fresh browser context (its own
 * localStorage; `extra` are more context options) and returns the page with `dialogs`,
 * `errors` and `sockets` arrays recording any alert(), uncaught page error and the URL of every
 * WebSocket it opens.
 */
async function openPage(
  path,
  viewport = { width: 960, height: 640 },
  extra = {},
  origin = `http://127.0.0.1:${server.port}`,
) {
  const context = await browser.newContext({ viewport, ...extra });
  context.setDefaultTimeout(WAIT_MS);
  contexts.push(context);
  const page = await context.newPage();
  page.dialogs = [];
  page.errors = [];
  page.sockets = [];
  page.on("dialog", (dialog) => {
    page.dialogs.push(dialog.message());
    dialog.dismiss().catch(() => {});
  });
  page.on("pageerror", (err) => page.errors.push(err.message));
  page.on("websocket", (ws) => page.sockets.push(ws.url()));
  await page.goto(`${origin}${path}`);
  return page;
}

/** Types `nick`, presses Connect and waits for the welcome. */
async function enter(page, nick) {
  await page.fill("#nick", nick);
  await page.click("#connect");
  await waitState(page, "connected");
}

function waitState(page, state, timeout = WAIT_MS) {
  return page.locator(`#state[data-state="${state}"]`).waitFor({ timeout });
}

function waitOnline(page, count) {
  return page.locator(`#online[data-count="${count}"]`).waitFor();
}

/** Waits for a list item of `kind` (whose text contains `text`, if given). */
function waitItem(page, kind, text) {
  const options = text === undefined ? {} : { hasText: text };
  return page.locator(`#messages li[data-kind="${kind}"]`, options).first().waitFor();
}

async function send(page, text, how = "enter") {
  await page.fill("#text", text);
  if (how === "enter") await page.press("#text", "Enter");
  else await page.click("#send");
  assert.equal(await page.inputValue("#text"), "", "the input is cleared after sending");
}

/** Every list item as `{kind, nick, text, own, time}`. */
function items(page) {
  return page.$$eval("#messages li", (lis) =>
    lis.map((li) => ({
      kind: li.dataset.kind,
      nick: li.querySelector(".nick")?.textContent ?? null,
      text: li.querySelector(".text")?.textContent ?? li.textContent,
      own: li.dataset.own === "true",
      time: li.querySelector("time")?.dateTime ?? null,
    })),
  );
}

function textOf(page, selector) {
  return page.textContent(selector);
}

function count(page, selector) {
  return page.locator(selector).count();
}

function assertClean(page) {
  assert.deepEqual(page.dialogs, [], "no dialog was opened");
  assert.deepEqual(page.errors, [], "no uncaught error in the page");
}

before(async () => {
  assert.ok(BIN, "set SHARDCAST_BIN to the shardcast binary");
  mkdirSync(SCREENSHOTS, { recursive: true });
  server = await startServer("127.0.0.1:0");
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: START_MS,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  for (const context of contexts) await context.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  for (const child of [...children]) await killServer(child);
});

// ---- the tests ----------------------------------------------------------------------------

/**
 * A test that builds on the ones before it: skipped once one of them has failed, so that a
 * failure is reported once instead of as a cascade of timeouts.
 */
let failed = null;
function step(name, body) {
  test(name, { timeout: TEST_MS }, async (t) => {
    if (failed) return t.skip(`"${failed}" failed`);
    try {
      await body();
    } catch (err) {
      failed = name;
      throw err;
    }
  });
}

// Shared between the tests, which run in order.
let ann; // room a
let bob; // room a
let cy; // room b

step("two pages in room a chat; room b sees none of it", async () => {
  cy = await openPage("/b");
  assert.equal(await textOf(cy, "#room"), "#b");
  await enter(cy, "cy");
  await waitOnline(cy, 1);

  ann = await openPage("/a");
  assert.equal(await textOf(ann, "#room"), "#a");
  assert.equal(await ann.isDisabled("#send"), true, "sending is disabled before connecting");
  await enter(ann, "ann");
  await waitOnline(ann, 1);
  assert.match(ann.sockets[0], new RegExp(`^ws://127\\.0\\.0\\.1:${server.port}/a\\?nick=ann$`));

  bob = await openPage("/a");
  await enter(bob, "bob");
  await waitOnline(bob, 2);
  await waitItem(ann, "join", "bob");
  await waitOnline(ann, 2);

  await send(ann, "hi bob, this is ann", "enter");
  await send(bob, "hello ann!", "button");
  for (const page of [ann, bob]) {
    await waitItem(page, "message", "hi bob, this is ann");
    await waitItem(page, "message", "hello ann!");
  }

  const seenByBob = (await items(bob)).filter((i) => i.kind === "message");
  assert.deepEqual(
    seenByBob.map(({ nick, text, own }) => ({ nick, text, own })),
    [
      { nick: "ann", text: "hi bob, this is ann", own: false },
      { nick: "bob", text: "hello ann!", own: true },
    ],
  );
  const seenByAnn = (await items(ann)).filter((i) => i.kind === "message");
  assert.deepEqual(
    seenByAnn.map((i) => i.own),
    [true, false],
    "ann's own message is marked",
  );
  for (const { time } of [...seenByAnn, ...seenByBob]) {
    assert.ok(Math.abs(Date.parse(time) - Date.now()) < 60_000, `message time ${time} is now`);
  }
  assert.equal(await count(bob, '#messages li[data-kind="join"]'), 0, "no join for oneself");

  await send(bob, "is the count in the corner live?");
  await send(ann, "yes: it comes with every join and leave, from every shard");
  await send(bob, "and if the server restarts, the page reconnects by itself");
  await waitItem(ann, "message", "reconnects by itself");
  await ann.screenshot({ path: join(SCREENSHOTS, "chat-desktop.png") });
});

step("received text is shown literally, never run as HTML", async () => {
  await send(bob, XSS);
  for (const page of [ann, bob]) {
    await waitItem(page, "message", "onerror");
    const texts = (await items(page)).filter((i) => i.kind === "message").map((i) => i.text);
    assert.ok(texts.includes(XSS), `the text is present verbatim: ${JSON.stringify(texts)}`);
    assert.equal(await count(page, "#messages img"), 0, "no <img> was created");
  }
  // Give an injected handler every chance to fire: load events run before this round trip.
  await send(ann, "still here");
  await waitItem(bob, "message", "still here");
  assertClean(ann);
  assertClean(bob);
});

step("a leave lowers the count; room b saw nothing", async () => {
  await bob.click("#disconnect");
  await waitState(bob, "disconnected");
  await waitItem(ann, "leave", "bob");
  await waitOnline(ann, 1);

  // Room b's own traffic still flows, and nothing of room a's reached it.
  await send(cy, "anyone in b?");
  await waitItem(cy, "message", "anyone in b?");
  const seen = await items(cy);
  assert.deepEqual(
    seen.filter((i) => i.kind !== "welcome").map(({ kind, text }) => ({ kind, text })),
    [{ kind: "message", text: "anyone in b?" }],
  );
  assert.equal(await cy.getAttribute("#online", "data-count"), "1");
  assertClean(cy);
});

step("a bad nickname is reported and not retried", async () => {
  const page = await openPage("/a");
  await page.fill("#nick", "no spaces!");
  await page.click("#connect");
  await waitItem(page, "error");
  assert.equal(await page.getAttribute('#messages li[data-kind="error"]', "data-code"), "bad_nick");
  await waitState(page, "disconnected");
  assert.equal(await page.isDisabled("#send"), true);
  assert.equal(await ann.getAttribute("#online", "data-count"), "1", "a bad nick never joined");
  assertClean(page);
  await page.context().close();
});

step("the page fits a phone screen", async () => {
  const phone = await openPage("/a", { width: 360, height: 740 }, { isMobile: true, hasTouch: true });
  await enter(phone, "dee");
  await waitItem(ann, "join", "dee");
  await send(ann, "welcome dee, how is the small screen?");
  await send(phone, "fits nicely — no sideways scrolling even for " + "x".repeat(120));
  await waitItem(phone, "message", "no sideways scrolling");
  await waitItem(phone, "message", "small screen");

  const layout = await phone.evaluate(() => {
    const composer = document.getElementById("composer").getBoundingClientRect();
    const send = document.getElementById("send").getBoundingClientRect();
    return {
      scrollWidth: document.documentElement.scrollWidth,
      bodyScrollWidth: document.body.scrollWidth,
      innerHeight: window.innerHeight,
      composerTop: composer.top,
      composerBottom: composer.bottom,
      sendRight: send.right,
    };
  });
  assert.ok(layout.scrollWidth <= 360, `no horizontal overflow: ${JSON.stringify(layout)}`);
  assert.ok(layout.bodyScrollWidth <= 360, `no horizontal overflow: ${JSON.stringify(layout)}`);
  assert.ok(await phone.isVisible("#composer"));
  assert.ok(await phone.isVisible("#send"));
  assert.ok(
    layout.composerTop >= 0 && layout.composerBottom <= layout.innerHeight && layout.sendRight <= 360,
    `the composer is on screen: ${JSON.stringify(layout)}`,
  );
  await phone.screenshot({ path: join(SCREENSHOTS, "chat-phone.png") });
  assertClean(phone);
  await phone.click("#disconnect");
  await waitOnline(ann, 1);
  await phone.context().close();
});

step("pages reconnect by themselves after a server restart", async () => {
  const welcomes = (page) => count(page, '#messages li[data-kind="welcome"]');
  assert.equal(await welcomes(ann), 1);
  assert.equal(await welcomes(cy), 1);

  await killServer(server.child);
  await waitState(ann, "reconnecting");
  await waitState(cy, "reconnecting");
  await ann.locator("#state", { hasText: /^reconnecting in \d+ s$/ }).waitFor();
  assert.equal(await ann.isDisabled("#send"), true, "sending is disabled while reconnecting");

  server = await restartServer(server.port);
  // The backoff has grown by a step or two while the server was down.
  await waitState(ann, "connected", RECONNECT_MS);
  await waitState(cy, "connected", RECONNECT_MS);
  assert.equal(await welcomes(ann), 2, "a new welcome");
  assert.equal(await welcomes(cy), 2, "a new welcome");
  // Bob pressed Disconnect before: he stays out.
  assert.equal(await bob.getAttribute("#state", "data-state"), "disconnected");

  await enter(bob, "bob");
  await waitOnline(ann, 2);
  await send(ann, "back after the restart");
  await waitItem(bob, "message", "back after the restart");
  await waitItem(ann, "message", "back after the restart");
  const last = (await items(ann)).filter((i) => i.kind === "message").at(-1);
  assert.equal(last.own, true, "own messages are marked with the new session id");
  assert.equal(await cy.getAttribute("#online", "data-count"), "1");
  for (const page of [ann, bob, cy]) assertClean(page);
});

// Independent of the steps above (never skipped because one failed): its own TLS server, its
// own pages. Needs only the browser.
test("the page works over https, connecting with wss", { timeout: TEST_MS }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "shardcast-tls-"));
  const opened = [];
  let tls = null;
  try {
    const cert = join(dir, "cert.pem");
    const key = join(dir, "key.pem");
    // A throwaway self-signed P-256 certificate for 127.0.0.1 and localhost.
    await promisify(execFile)(
      OPENSSL,
      [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "1", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-keyout", key, "-out", cert,
      ],
      { timeout: WAIT_MS, killSignal: "SIGKILL" },
    );
    tls = await startServer("127.0.0.1:0", ["--tls-cert", cert, "--tls-key", key]);
    const origin = `https://127.0.0.1:${tls.port}`;
    // The certificate is self-signed: the contexts accept it (for the page and its socket).
    const open = async () => {
      const page = await openPage("/secure", undefined, { ignoreHTTPSErrors: true }, origin);
      opened.push(page);
      return page;
    };

    const eve = await open();
    assert.equal(await eve.evaluate(() => location.protocol), "https:");
    assert.equal(await textOf(eve, "#room"), "#secure");
    await enter(eve, "eve");
    await waitOnline(eve, 1);
    assert.equal(await textOf(eve, "#state"), "connected");
    const wss = new RegExp(`^wss://127\\.0\\.0\\.1:${tls.port}/secure\\?nick=`);
    assert.match(eve.sockets[0] ?? "", wss);
    assert.match(eve.sockets[0], /nick=eve$/);

    const fay = await open();
    await enter(fay, "fay");
    assert.match(fay.sockets[0] ?? "", wss);
    assert.match(fay.sockets[0], /nick=fay$/);
    await waitOnline(fay, 2);
    await waitItem(eve, "join", "fay");
    await waitOnline(eve, 2);

    await send(eve, "is this encrypted?");
    await send(fay, "yes, wss all the way");
    for (const page of [eve, fay]) {
      await waitItem(page, "message", "is this encrypted?");
      await waitItem(page, "message", "wss all the way");
      assert.equal(await page.getAttribute("#state", "data-state"), "connected");
      assert.equal(await textOf(page, "#state"), "connected");
      assert.ok(
        page.sockets.every((url) => url.startsWith("wss://")),
        `only wss sockets: ${JSON.stringify(page.sockets)}`,
      );
      assertClean(page);
    }
    const seenByFay = (await items(fay)).filter((i) => i.kind === "message");
    assert.deepEqual(
      seenByFay.map(({ nick, text, own }) => ({ nick, text, own })),
      [
        { nick: "eve", text: "is this encrypted?", own: false },
        { nick: "fay", text: "yes, wss all the way", own: true },
      ],
    );
  } finally {
    for (const page of opened) await page.context().close().catch(() => {});
    if (tls) await killServer(tls.child);
    rmSync(dir, { recursive: true, force: true });
  }
});
