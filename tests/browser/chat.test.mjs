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
//
// Order: the server guarantees one order per room (every member sees the same sequence, each
// sender's messages in the order sent), never a particular interleaving of two senders; the
// tests assert exactly that (sameSequence, sentInOrder) and nothing more.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect as tcpConnect } from "node:net";
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
/** Messages of history the page asks for on every join (HISTORY in app.js). */
const HISTORY = 50;

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

/**
 * A TCP proxy to the shared server (whatever its current process), to drop a page's connection
 * abruptly: `cut()` resets every connection through it on both sides, so the server sees its
 * client vanish (ECONNRESET, no close frame) and the page sees code 1006, as with a dead link.
 * No server flag or endpoint drops one client today, and a restart is not a disconnect (it
 * changes the history epoch). While `hold()` is on, new connections are accepted but not
 * passed on until `release()`: the page waits in its reconnect while the room moves on.
 */
function startProxy(targetPort = null) {
  const pairs = new Set();
  const held = [];
  const stranded = [];
  let holding = false;
  const pass = (client) => {
    const upstream = tcpConnect(targetPort ?? server.port, "127.0.0.1");
    const pair = { client, upstream };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on("error", end);
      socket.on("close", end);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  };
  const proxy = createServer((client) => {
    client.on("error", () => client.destroy());
    // A held socket stays paused: what the browser sent waits in its buffer.
    if (holding) held.push(client);
    else pass(client);
  });
  return new Promise((resolve, reject) => {
    proxy.once("error", reject);
    proxy.listen(0, "127.0.0.1", () => {
      resolve({
        port: proxy.address().port,
        hold() {
          holding = true;
        },
        release() {
          holding = false;
          for (const client of held.splice(0)) if (!client.destroyed) pass(client);
        },
        cut() {
          for (const { client, upstream } of [...pairs]) {
            client.resetAndDestroy();
            upstream.resetAndDestroy();
          }
        },
        // Resets the page's side only: the server's side stays open and unread, so the server
        // learns nothing until its ping goes unanswered (a dead link it has not noticed).
        strand() {
          for (const pair of [...pairs]) {
            pairs.delete(pair);
            pair.client.unpipe(pair.upstream);
            pair.upstream.unpipe(pair.client);
            for (const socket of [pair.client, pair.upstream]) {
              socket.removeAllListeners("close");
              socket.removeAllListeners("error");
              socket.on("error", () => {});
            }
            pair.upstream.pause();
            stranded.push(pair.upstream);
            pair.client.resetAndDestroy();
          }
        },
        close() {
          this.cut();
          for (const upstream of stranded.splice(0)) upstream.destroy();
          for (const client of held.splice(0)) client.destroy();
          return new Promise((r) => proxy.close(() => r()));
        },
      });
    });
  });
}

// ---- the browser --------------------------------------------------------------------------

let browser;
let server; // { child, port }
const contexts = [];

/**
 * Opens `path` on `origin` (default: the shared server) in a fresh browser context (its own
 * localStorage; `extra` are more context options) and returns the page with `dialogs`,
 * `errors` and `sockets` arrays recording any alert(), uncaught page error and the URL of every
 * WebSocket it opens, and `console` and `failures` arrays recording every console error and
 * every request that failed or was answered 4xx/5xx (`"STATUS URL"`), from the first load on.
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
  page.console = [];
  page.failures = [];
  page.on("console", (message) => {
    if (message.type() === "error") page.console.push(message.text());
  });
  page.on("requestfailed", (request) => page.failures.push(`failed ${request.url()}`));
  page.on("response", (response) => {
    if (response.status() >= 400) page.failures.push(`${response.status()} ${response.url()}`);
  });
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

/**
 * Every list item as `{kind, nick, text, own, time, offset, history}` (`offset`: the
 * message's offset in the room, a number, or null).
 */
function items(page) {
  return page.$$eval("#messages li", (lis) =>
    lis.map((li) => ({
      kind: li.dataset.kind,
      nick: li.querySelector(".nick")?.textContent ?? null,
      text: li.querySelector(".text")?.textContent ?? li.textContent,
      own: li.dataset.own === "true",
      time: li.querySelector("time")?.dateTime ?? null,
      offset: li.dataset.offset === undefined ? null : Number(li.dataset.offset),
      history: li.dataset.history === "true",
    })),
  );
}

/** The message items only. */
async function messages(page) {
  return (await items(page)).filter((i) => i.kind === "message");
}

/** Waits until `page` shows at least `n` messages. */
function waitMessages(page, n, timeout = WAIT_MS) {
  return page.waitForFunction(
    (n) => document.querySelectorAll('#messages li[data-kind="message"]').length >= n,
    n,
    { timeout },
  );
}

/** `{nick, text, offset}` of each message: what two members of a room must agree on. */
function sequence(list) {
  return list.map(({ nick, text, offset }) => ({ nick, text, offset }));
}

/** Two pages show the same messages in the same order (the one order of their room). */
async function sameSequence(a, b, what) {
  assert.deepEqual(sequence(await messages(a)), sequence(await messages(b)), what);
}

/** `nick`'s messages in `list` are `texts`, in that order (a sender's order is kept). */
function sentInOrder(list, nick, texts) {
  assert.deepEqual(
    list.filter((i) => i.nick === nick).map((i) => i.text),
    texts,
    `${nick}'s messages in the order sent`,
  );
}

/** Each message is shown once, and the offsets follow one another with no hole. */
function contiguous(list) {
  const offsets = list.map((i) => i.offset);
  assert.ok(offsets.every(Number.isSafeInteger), `every message has an offset: ${offsets}`);
  for (let k = 1; k < offsets.length; k++) {
    assert.equal(offsets[k], offsets[k - 1] + 1, `offsets in order, no duplicate, no hole: ${offsets}`);
  }
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
  assert.match(
    ann.sockets[0],
    new RegExp(`^ws://127\\.0\\.0\\.1:${server.port}/a\\?nick=ann&history=${HISTORY}$`),
  );

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

  // Ann's and bob's messages may reach the room in either order: both see the same one.
  const seenByBob = await messages(bob);
  const seenByAnn = await messages(ann);
  assert.equal(seenByBob.length, 2, JSON.stringify(seenByBob));
  await sameSequence(ann, bob, "ann and bob see one order");
  contiguous(seenByAnn);
  for (const [seen, nick] of [[seenByAnn, "ann"], [seenByBob, "bob"]]) {
    assert.deepEqual(
      seen.map((i) => i.own),
      seen.map((i) => i.nick === nick),
      `${nick}'s own message is marked`,
    );
  }
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

step("a page joining shows the room's last messages", async () => {
  // Room a has had fewer than HISTORY messages, all seen live by ann (its first member).
  const before = await messages(ann);
  assert.ok(before.length > 3 && before.length < HISTORY, `room a so far: ${before.length}`);
  contiguous(before);

  const gil = await openPage("/a");
  await enter(gil, "gil");
  assert.match(gil.sockets[0], new RegExp(`/a\\?nick=gil&history=${HISTORY}$`));
  await waitMessages(gil, before.length);
  const shown = await messages(gil);
  assert.deepEqual(sequence(shown), sequence(before), "the same messages, in the same order");
  assert.ok(shown.every((i) => i.history && !i.own), "marked as earlier messages, none own");
  // They were sent before gil joined: the list reads in time order, welcome last.
  const kinds = (await items(gil)).map((i) => i.kind);
  assert.equal(kinds.indexOf("welcome"), shown.length, `history before the welcome: ${kinds}`);
  assert.equal(await count(gil, "#messages img"), 0, "the replayed XSS text is text too");
  assert.equal(await count(gil, "#messages li.gap"), 0, "nothing is missing on a first join");

  // Live messages come after the history, as usual.
  await send(ann, "hello gil");
  await waitItem(gil, "message", "hello gil");
  const last = (await messages(gil)).at(-1);
  assert.deepEqual([last.text, last.history], ["hello gil", false]);
  await sameSequence(ann, gil, "ann and gil agree");
  assertClean(gil);
  await gil.click("#disconnect");
  await waitOnline(ann, 1);
  await gil.context().close();
});

step("a page resumes after its connection drops, missing nothing and showing nothing twice", async () => {
  // hal reaches the server through a proxy that can cut his connection: see startProxy.
  const proxy = await startProxy();
  try {
    const hal = await openPage("/a", undefined, {}, `http://127.0.0.1:${proxy.port}`);
    await enter(hal, "hal");
    await waitOnline(ann, 2);
    await waitMessages(hal, (await messages(ann)).length);
    await sameSequence(ann, hal, "hal starts from the room's history");
    await send(hal, "hal here, about to lose my link");
    await waitItem(ann, "message", "about to lose my link");
    await waitItem(hal, "message", "about to lose my link");
    await hal.fill("#text", "half-typed while the link is down");

    proxy.hold();
    proxy.cut();
    // The server saw hal vanish (a leave for the others), and hal's page saw it too: it is
    // reconnecting, or already waiting in the proxy (the first retry comes within 0.5 s, so
    // the "reconnecting" state may be over by the time it could be seen).
    await waitItem(hal, "status", "code 1006");
    await waitItem(ann, "leave", "hal");
    await waitOnline(ann, 1);
    assert.notEqual(await hal.getAttribute("#state", "data-state"), "connected");

    // The room moves on while hal is away (his reconnect waits in the proxy).
    const missed = ["one while hal is away", "two while hal is away", "three while hal is away"];
    for (const text of missed) await send(ann, text);
    await waitItem(ann, "message", missed.at(-1));
    proxy.release();

    await waitState(hal, "connected", RECONNECT_MS);
    await waitItem(hal, "message", missed.at(-1));
    const resumed = hal.sockets.slice(1);
    assert.ok(
      resumed.length > 0 && resumed.every((url) => new RegExp(`&history=${HISTORY}&since=[0-9a-f]{16}:\\d+&reclaim=[0-9]+\\.[0-9]+\\.[0-9a-f]{32}$`).test(url)),
      `every reconnect asks to resume: ${JSON.stringify(resumed)}`,
    );
    const seen = await messages(hal);
    contiguous(seen);
    await sameSequence(ann, hal, "hal shows exactly the room's sequence");
    sentInOrder(seen.slice(-missed.length), "ann", missed);
    assert.ok(seen.slice(-missed.length).every((i) => i.history), "the missed ones came from history");
    assert.equal(await count(hal, "#messages li.gap"), 0, "recovered: no missing marker");
    assert.equal(await hal.inputValue("#text"), "half-typed while the link is down");

    // And on it goes, live.
    await send(hal, "back, and I saw all three");
    await waitItem(ann, "message", "I saw all three");
    await waitItem(hal, "message", "I saw all three");
    contiguous(await messages(hal));
    await sameSequence(ann, hal, "still one order");
    assertClean(hal);
    await hal.click("#disconnect");
    await waitOnline(ann, 1);
    await hal.context().close();
  } finally {
    await proxy.close();
  }
});

step("two pages sending at once show the same sequence", async () => {
  const ivy = await openPage("/order");
  await enter(ivy, "ivy");
  const jon = await openPage("/order");
  await enter(jon, "jon");
  await waitOnline(ivy, 2);
  const burst = (nick) => Array.from({ length: 8 }, (_, k) => `${nick} ${k + 1} of 8`);
  const sendAll = async (page, texts) => {
    for (const text of texts) await send(page, text);
  };
  await Promise.all([sendAll(ivy, burst("ivy")), sendAll(jon, burst("jon"))]);
  await waitMessages(ivy, 16);
  await waitMessages(jon, 16);
  const seen = await messages(ivy);
  assert.equal(seen.length, 16, JSON.stringify(seen.map((i) => i.text)));
  await sameSequence(ivy, jon, "ivy and jon see one order");
  contiguous(seen);
  sentInOrder(seen, "ivy", burst("ivy"));
  sentInOrder(seen, "jon", burst("jon"));
  for (const page of [ivy, jon]) assertClean(page);
  for (const page of [ivy, jon]) await page.context().close();
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
  // A restarted server has a new history epoch: it cannot vouch that nothing was missed.
  for (const page of [ann, cy]) {
    assert.match(page.sockets.at(-1), /&since=[0-9a-f]{16}:\d+(&reclaim=[0-9.a-f]+)?$/, "the page asked to resume");
    await waitItem(page, "gap", "some messages may be missing");
    assert.equal(await count(page, "#messages li.gap"), 1, "one marker");
    const kinds = (await items(page)).map((i) => i.kind);
    assert.ok(
      kinds.lastIndexOf("gap") > kinds.lastIndexOf("message"),
      `the marker follows the messages from before the restart: ${kinds}`,
    );
  }
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
    assert.match(eve.sockets[0], new RegExp(`nick=eve&history=${HISTORY}$`));

    const fay = await open();
    await enter(fay, "fay");
    assert.match(fay.sockets[0] ?? "", wss);
    assert.match(fay.sockets[0], new RegExp(`nick=fay&history=${HISTORY}$`));
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
    // Eve's and fay's messages race to the server: either order is right, as long as both
    // pages show the same one.
    const seenByFay = await messages(fay);
    assert.equal(seenByFay.length, 2, JSON.stringify(seenByFay));
    await sameSequence(eve, fay, "eve and fay see one order");
    sentInOrder(seenByFay, "eve", ["is this encrypted?"]);
    sentInOrder(seenByFay, "fay", ["yes, wss all the way"]);
    assert.deepEqual(
      seenByFay.map((i) => i.own),
      seenByFay.map((i) => i.nick === "fay"),
      "fay's own message is marked",
    );
  } finally {
    for (const page of opened) await page.context().close().catch(() => {});
    if (tls) await killServer(tls.child);
    rmSync(dir, { recursive: true, force: true });
  }
});

/** An HS256 JWT of `claims` (node:crypto only: base64url header and payload, an HMAC). */
function mintHs256(secret, claims) {
  const b64url = (data) => Buffer.from(data).toString("base64url");
  const signed = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify(claims))}`;
  return `${signed}.${createHmac("sha256", secret).update(signed).digest("base64url")}`;
}

// Independent of the steps above: its own server with `--auth required` (docs/auth.md).
test("a page opened with #token= joins under the token's name; another room is refused", { timeout: TEST_MS }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "shardcast-auth-"));
  const opened = [];
  let signed = null;
  try {
    const secret = "browser-test-secret-of-more-than-32-bytes";
    const secretFile = join(dir, "secret.txt");
    writeFileSync(secretFile, `${secret}\n`);
    signed = await startServer("127.0.0.1:0", ["--auth", "required", "--token-secret-file", secretFile]);
    const origin = `http://127.0.0.1:${signed.port}`;
    const exp = Math.floor(Date.now() / 1000) + 600;
    const annie = mintHs256(secret, { sub: "u-annie", name: "Annie", rooms: ["members"], exp });
    const bo = mintHs256(secret, { sub: "u-bo", name: "Bo", rooms: ["members"], exp });
    const open = async (path) => {
      const page = await openPage(path, undefined, {}, origin);
      opened.push(page);
      return page;
    };

    const a = await open(`/members#token=${annie}`);
    await waitState(a, "connected");
    assert.equal(await a.inputValue("#nick"), "Annie", "the token's name is shown");
    await waitItem(a, "welcome", "Annie");
    assert.equal(await a.evaluate(() => location.hash), "", "the token left the address bar");
    assert.equal(a.sockets.length, 1);
    assert.ok(!a.sockets[0].includes(annie.split(".")[2]), "the token is in no URL");
    assert.ok(!a.sockets[0].includes("nick="), `the name comes from the token: ${a.sockets[0]}`);

    const b = await open(`/members#token=${bo}`);
    await waitState(b, "connected");
    await waitItem(a, "join", "Bo");
    await waitOnline(a, 2);
    await send(b, "signed hello");
    for (const page of [a, b]) await waitItem(page, "message", "signed hello");
    const seen = await messages(a);
    assert.deepEqual(seen.map((m) => [m.nick, m.text]), [["Bo", "signed hello"]]);
    await a.screenshot({ path: join(SCREENSHOTS, "token-joined.png") });

    // The same token in a room it does not list: a clear error, and no retrying.
    const elsewhere = await open(`/backstage#token=${annie}`);
    await waitItem(elsewhere, "error", "does not allow this room");
    const error = await elsewhere.textContent('#messages li[data-kind="error"]');
    assert.match(error, /Cannot join #backstage/);
    await waitState(elsewhere, "disconnected");
    await elsewhere.screenshot({ path: join(SCREENSHOTS, "token-refused.png") });
    assert.equal(elsewhere.sockets.length, 1, "a refused token is not retried");
    for (const page of opened) assertClean(page);
  } finally {
    for (const page of opened) await page.context().close().catch(() => {});
    if (signed) await killServer(signed.child);
    rmSync(dir, { recursive: true, force: true });
  }
});

// Independent of the steps above: its own server (docs/protocol.md, "Who is here" and "Unique
// nicknames").
test("the member list shows who is here; a taken nickname lets you pick another", { timeout: TEST_MS * 2 }, async () => {
  const opened = [];
  let own = null;
  try {
    own = await startServer("127.0.0.1:0");
    const origin = `http://127.0.0.1:${own.port}`;
    const open = async (viewport) => {
      const page = await openPage("/team", viewport, {}, origin);
      opened.push(page);
      return page;
    };
    /** The member list as [name, me?] pairs, in the order shown. */
    const listed = (page) =>
      page.$$eval("#member-list li", (lis) =>
        lis.map((li) => [li.querySelector(".nick").textContent, li.dataset.me === "true"]),
      );
    const waitListed = (page, expected) =>
      page.waitForFunction(
        (expected) =>
          JSON.stringify(
            [...document.querySelectorAll("#member-list li")].map((li) => [
              li.querySelector(".nick").textContent,
              li.dataset.me === "true",
            ]),
          ) === JSON.stringify(expected),
        expected,
      );

    const ann = await open();
    await enter(ann, "ann");
    await waitListed(ann, [["ann", true]]);
    assert.equal(await ann.isVisible("#member-list"), true, "open beside the messages on a wide screen");

    const bob = await open();
    await enter(bob, "bob");
    await waitListed(bob, [["ann", false], ["bob", true]]);
    await waitListed(ann, [["ann", true], ["bob", false]]);

    // A second ann (in any case) is told the name is taken, and picks another; what she had
    // typed stays.
    const other = await open();
    await other.fill("#text", "a draft typed before joining");
    await other.fill("#nick", "ANN");
    await other.click("#connect");
    await waitItem(other, "error", "is taken");
    assert.equal(await other.getAttribute('#messages li[data-kind="error"]', "data-code"), "nick_taken");
    await waitState(other, "disconnected");
    assert.equal(await other.getAttribute("#nick", "aria-invalid"), "true");
    assert.equal(await other.inputValue("#text"), "a draft typed before joining");
    assert.equal(await ann.getAttribute("#online", "data-count"), "2", "the refused ann never joined");
    await enter(other, "Cy");
    await waitListed(other, [["ann", false], ["bob", false], ["Cy", true]]);
    await waitListed(ann, [["ann", true], ["bob", false], ["Cy", false]]);
    assert.equal(await other.getAttribute("#nick", "aria-invalid"), null);
    await ann.locator("#members-title", { hasText: "Members (3)" }).waitFor();

    // A leave takes a name off every list.
    await bob.click("#disconnect");
    await waitListed(ann, [["ann", true], ["Cy", false]]);
    await waitListed(other, [["ann", false], ["Cy", true]]);
    assert.equal(await count(bob, "#member-list li"), 0, "a page that left lists nobody");

    // A phone: the list folds above the conversation and opens on a tap; nothing overflows.
    const phone = await open({ width: 360, height: 740 });
    await enter(phone, "dee");
    await waitListed(ann, [["ann", true], ["Cy", false], ["dee", false]]);
    assert.equal(await phone.isVisible("#member-list"), false, "folded on a narrow screen");
    await phone.click("#members-title");
    await waitListed(phone, [["ann", false], ["Cy", false], ["dee", true]]);
    assert.equal(await phone.isVisible("#member-list"), true);
    const layout = await phone.evaluate(() => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerHeight: window.innerHeight,
      composerBottom: document.getElementById("composer").getBoundingClientRect().bottom,
      logHeight: document.getElementById("log").getBoundingClientRect().height,
    }));
    assert.ok(layout.scrollWidth <= 360, `no horizontal overflow: ${JSON.stringify(layout)}`);
    assert.ok(layout.composerBottom <= layout.innerHeight, `composer on screen: ${JSON.stringify(layout)}`);
    assert.ok(layout.logHeight > 200, `the conversation keeps room: ${JSON.stringify(layout)}`);
    await phone.screenshot({ path: join(SCREENSHOTS, "members-phone.png") });
    await ann.screenshot({ path: join(SCREENSHOTS, "members.png") });

    // Names are text: the list holds no element but the page's own spans.
    const tags = await ann.$$eval("#member-list li *", (nodes) => [...new Set(nodes.map((n) => n.tagName))]);
    assert.deepEqual(tags.sort(), ["SPAN"]);
    assert.deepEqual(await listed(ann), [["ann", true], ["Cy", false], ["dee", false]]);
    for (const page of opened) assertClean(page);
  } finally {
    for (const page of opened) await page.context().close().catch(() => {});
    if (own) await killServer(own.child);
  }
});

// Independent of the steps above: its own server (pinging only every 30 s), behind a proxy.
test("a page whose dropped connection still holds its name takes it back at once", { timeout: TEST_MS * 2 }, async () => {
  let own = null;
  let proxy = null;
  const opened = [];
  try {
    own = await startServer("127.0.0.1:0", ["--ping-interval", "30"]);
    proxy = await startProxy(own.port);
    const watcher = await openPage("/held", undefined, {}, `http://127.0.0.1:${own.port}`);
    opened.push(watcher);
    await enter(watcher, "wes");
    const kim = await openPage("/held", undefined, {}, `http://127.0.0.1:${proxy.port}`);
    opened.push(kim);
    await enter(kim, "kim");
    await waitOnline(watcher, 2);

    // The link dies without the server noticing: it would hold "kim" until its ping went
    // unanswered, half a minute on. The page reconnects with its welcome's reclaim token and
    // is back under its own name at once; the server closes the stranded connection.
    proxy.strand();
    await kim.locator('#messages li[data-kind="welcome"]').nth(1).waitFor({ timeout: RECONNECT_MS });
    await waitState(kim, "connected", RECONNECT_MS);
    const held = kim.locator('#messages li[data-kind="status"]', { hasText: "still held" });
    assert.equal(await held.count(), 0, "the name was taken back, not waited for");
    assert.equal(await count(kim, '#messages li[data-kind="welcome"]'), 2);
    await waitItem(kim, "welcome", "kim");
    assert.equal(await count(kim, '#messages li[data-kind="error"]'), 0, "no error: it was ours");
    assert.equal(await kim.inputValue("#nick"), "kim");
    await waitItem(watcher, "leave", "kim");
    await kim.locator('#member-list li[data-me="true"]', { hasText: "kim" }).waitFor();
    await send(kim, "back as myself");
    await waitItem(watcher, "message", "back as myself");
    for (const page of opened) assertClean(page);
  } finally {
    for (const page of opened) await page.context().close().catch(() => {});
    if (proxy) await proxy.close();
    if (own) await killServer(own.child);
  }
});

// ---- the length limit, multi-line text and links, the bad-room page and the icon ----------
// Independent of the steps above: each test runs its own server and pages.

/** Runs `body(origin)` against a server of its own (started with `extra`), closing its pages
 * and killing it afterwards. */
async function withOwnServer(extra, body) {
  const own = await startServer("127.0.0.1:0", extra);
  const opened = contexts.length;
  try {
    await body(`http://127.0.0.1:${own.port}`);
  } finally {
    for (const context of contexts.splice(opened)) await context.close().catch(() => {});
    await killServer(own.child);
  }
}

/**
 * A message text whose envelope, as the page sends it (`{"type":"message","text":…}`), is
 * exactly `size` bytes of UTF-8: it starts with characters that JSON escapes or UTF-8 makes
 * wider than one byte, so that counting characters instead of bytes would be caught.
 */
function textOfEnvelopeSize(size) {
  const tricky = 'quotes " and \\ a backslash, a\nnewline, a\ttab, é, ☃, 😀 and <b>html</b> ';
  const fixed = Buffer.byteLength(JSON.stringify({ type: "message", text: tricky }));
  assert.ok(size >= fixed, `${size} bytes is too few for the tricky part (${fixed})`);
  return tricky + "x".repeat(size - fixed);
}

test("the page takes the length limit from the welcome, shows what is left and refuses more, keeping the text", { timeout: TEST_MS }, async () => {
  await withOwnServer([], async (origin) => {
    const kim = await openPage("/long", undefined, {}, origin);
    await enter(kim, "kim");
    const lee = await openPage("/long", undefined, {}, origin);
    await enter(lee, "lee");
    await waitOnline(kim, 2);
    assert.equal(await kim.getAttribute("#text", "maxlength"), null, "nothing cuts the text");

    // Far from the limit (but over the page's old 4,000-character cut): nothing is shown.
    const long = "long ".repeat(2_000);
    await kim.fill("#text", long);
    assert.equal(await kim.isHidden("#room-left"), true, "no count far from the limit");
    await send(kim, long);

    // Exactly the server's default limit, 65,536 bytes: the count says 0 left, and it goes.
    const fits = textOfEnvelopeSize(65_536);
    await kim.fill("#text", fits);
    assert.equal(await kim.isVisible("#room-left"), true, "the count shows near the limit");
    assert.equal(await kim.getAttribute("#room-left", "data-left"), "0");
    assert.equal(await kim.isHidden("#too-long"), true);
    assert.equal(await kim.isDisabled("#send"), false);
    await kim.press("#text", "Enter");
    assert.equal(await kim.inputValue("#text"), "");
    await waitMessages(lee, 2);

    // One byte over: refused with a note, by Enter and by a submit alike; the text stays.
    const over = fits + "x";
    await kim.fill("#text", over);
    assert.equal(await kim.getAttribute("#room-left", "data-left"), "-1");
    assert.match(await kim.getAttribute("#room-left", "class"), /\bover\b/);
    assert.equal(await kim.isVisible("#too-long"), true);
    assert.match(
      await kim.textContent("#too-long"),
      /^Too long to send: the server takes at most 65,536 bytes per message\./,
    );
    assert.equal(await kim.textContent("#room-left"), "1 byte too long");
    assert.equal(await kim.isDisabled("#send"), true, "Send is off over the limit");
    await kim.press("#text", "Enter");
    await kim.evaluate(() => document.getElementById("composer").requestSubmit());
    assert.equal(await kim.inputValue("#text"), over, "the text stays in the box");
    assert.equal(await kim.isVisible("#too-long"), true);
    await kim.screenshot({ path: join(SCREENSHOTS, "too-long.png") });
    // One Backspace brings it back under: the note goes, Send comes back.
    await kim.press("#text", "Backspace");
    assert.equal(await kim.isHidden("#too-long"), true);
    assert.equal(await kim.getAttribute("#room-left", "data-left"), "0");
    assert.equal(await kim.isDisabled("#send"), false);

    await send(kim, "after the long ones");
    await waitItem(lee, "message", "after the long ones");
    // lee got exactly what kim sent, and nothing of the refused one; kim never reconnected.
    assert.deepEqual(
      (await messages(lee)).map((m) => m.text),
      [long, fits, "after the long ones"],
      "intact, in order, and the refused one never left",
    );
    assert.equal(kim.sockets.length, 1, "no reconnect");
    assert.equal(await kim.getAttribute("#state", "data-state"), "connected");
    assert.equal(await count(kim, '#messages li[data-kind="status"]'), 0, "no disconnect");
    for (const page of [kim, lee]) assertClean(page);
  });

  // Another server, another limit: the page follows its welcome.
  await withOwnServer(["--max-message", "2000"], async (origin) => {
    const pat = await openPage("/small", undefined, {}, origin);
    await enter(pat, "pat");
    await pat.fill("#text", textOfEnvelopeSize(2001));
    assert.match(await pat.textContent("#too-long"), /the server takes at most 2,000 bytes per message/);
    assert.equal(await pat.textContent("#room-left"), "1 byte too long");
    assert.equal(await pat.isDisabled("#send"), true);
    const fits = textOfEnvelopeSize(2000);
    await pat.fill("#text", fits);
    assert.equal(await pat.isHidden("#too-long"), true);
    await pat.press("#text", "Enter");
    await waitMessages(pat, 1);
    assert.deepEqual((await messages(pat)).map((m) => m.text), [fits]);
    assert.equal(pat.sockets.length, 1, "no reconnect");
    assertClean(pat);
  });
});

test("Shift+Enter adds a line; http(s) links are clickable, everything else stays text", { timeout: TEST_MS }, async () => {
  await withOwnServer([], async (origin) => {
    const mo = await openPage("/lines", undefined, {}, origin);
    await enter(mo, "mo");
    const ned = await openPage("/lines", undefined, {}, origin);
    await enter(ned, "ned");
    await waitOnline(mo, 2);

    // Typed as a person would: Shift+Enter is a new line in the box, Enter sends.
    await mo.focus("#text");
    await mo.keyboard.type("first line");
    await mo.keyboard.press("Shift+Enter");
    await mo.keyboard.type("second line");
    assert.equal(await mo.inputValue("#text"), "first line\nsecond line", "not sent yet");
    const oneLine = await mo.evaluate(() => document.getElementById("text").offsetHeight);
    await mo.keyboard.press("Shift+Enter");
    await mo.keyboard.type("third");
    const threeLines = await mo.evaluate(() => document.getElementById("text").offsetHeight);
    assert.ok(threeLines > oneLine, `the box grows with its lines: ${oneLine} → ${threeLines} px`);
    await mo.keyboard.press("Enter");
    assert.equal(await mo.inputValue("#text"), "");
    await waitMessages(ned, 1);
    const shown = await ned.$eval('#messages li[data-kind="message"] .text', (el) => ({
      text: el.textContent,
      rendered: el.innerText,
      whiteSpace: getComputedStyle(el).whiteSpace,
      lines: Math.round(el.getBoundingClientRect().height / parseFloat(getComputedStyle(el).lineHeight)),
    }));
    assert.equal(shown.text, "first line\nsecond line\nthird");
    assert.equal(shown.rendered, "first line\nsecond line\nthird", "shown on three lines");
    assert.equal(shown.whiteSpace, "pre-wrap");
    assert.equal(shown.lines, 3, JSON.stringify(shown));

    // Links: http and https only, built as elements; hostile text stays text.
    const hostile = [
      "see https://example.com/a_(b)?q=1&r=2#frag. and (https://example.org/x), or",
      '"https://example.net/q" javascript:alert(1) JavaScript:alert(1)',
      "data:text/html,<script>alert(2)</script> <img src=x onerror=alert(3)>",
      'https://example.com/"onmouseover="alert(4) ftp://example.com/f www.example.com',
      "HTTPS://EXAMPLE.COM/UP! xhttps://not.a.link https:// http://[bad",
    ].join("\n");
    await send(mo, hostile);
    await waitMessages(ned, 2);
    await waitMessages(mo, 2);
    for (const page of [mo, ned]) {
      const last = await page.$$eval('#messages li[data-kind="message"] .text', (els) => {
        const el = els.at(-1);
        return {
          text: el.textContent,
          links: [...el.querySelectorAll("a")].map((a) => ({
            text: a.textContent,
            href: a.getAttribute("href"),
            target: a.target,
            rel: a.rel,
          })),
          elements: [...el.querySelectorAll("*")].map((e) => e.tagName),
        };
      });
      assert.equal(last.text, hostile, "every character is there, as text");
      assert.deepEqual(last.elements, ["A", "A", "A", "A", "A"], "no element but the links");
      const link = (text, href) => ({ text, href, target: "_blank", rel: "noopener noreferrer" });
      assert.deepEqual(last.links, [
        link("https://example.com/a_(b)?q=1&r=2#frag", "https://example.com/a_(b)?q=1&r=2#frag"),
        link("https://example.org/x", "https://example.org/x"),
        link("https://example.net/q", "https://example.net/q"),
        link("https://example.com/", "https://example.com/"),
        link("HTTPS://EXAMPLE.COM/UP", "https://example.com/UP"),
      ]);
      assert.equal(await count(page, "#messages img, #messages script"), 0);
    }
    // Give an injected handler every chance to run before looking for its traces.
    await send(ned, "still here");
    await waitItem(mo, "message", "still here");
    for (const page of [mo, ned]) assertClean(page);
    await ned.screenshot({ path: join(SCREENSHOTS, "lines-and-links.png") });
  });
});

test("the page and its icon load with no console error or failed request; a bad room name gets a page that leads to a room", { timeout: TEST_MS }, async () => {
  await withOwnServer([], async (origin) => {
    const page = await openPage("/icons", undefined, {}, origin);
    await enter(page, "ola");
    const icon = await page.evaluate(async () => {
      const link = document.querySelector('link[rel="icon"]');
      const fetched = [];
      for (const href of [link.href, "/favicon.ico"]) {
        const response = await fetch(href);
        const blob = await response.blob();
        fetched.push({ status: response.status, type: response.headers.get("content-type"), size: blob.size });
      }
      return fetched;
    });
    assert.deepEqual(
      icon.map(({ status, type }) => [status, type]),
      [[200, "image/svg+xml"], [200, "image/x-icon"]],
    );
    assert.ok(icon.every(({ size }) => size > 0), JSON.stringify(icon));
    assert.deepEqual(page.console, [], "no console error");
    assert.deepEqual(page.failures, [], "no failed request");

    // The bad room: a 404 page in the chat page's style that leads to a valid room.
    const lost = await openPage("/bad.room", undefined, {}, origin);
    assert.equal(await lost.textContent("h1"), "Not a room name");
    assert.equal(await lost.textContent("#name"), "bad.room");
    assert.match(await lost.textContent("#rule"), /1–64 characters/);
    const barColour = await lost.$eval(".bar", (el) => getComputedStyle(el).backgroundColor);
    assert.notEqual(barColour, "rgba(0, 0, 0, 0)", "styled by the chat page's style sheet");
    await lost.screenshot({ path: join(SCREENSHOTS, "bad-room.png") });
    // Only the document itself is a 404: its style sheet and icon load.
    assert.deepEqual(lost.failures, [`404 ${origin}/bad.room`]);
    await lost.click("#suggestion");
    await lost.waitForURL(`${origin}/bad-room`);
    assert.equal(await textOf(lost, "#room"), "#bad-room");
    await enter(lost, "pia");
    await waitOnline(lost, 1);
    for (const p of [page, lost]) assertClean(p);
  });
});
