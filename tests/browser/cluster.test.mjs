// The chat page on a cluster node whose link to Redis breaks (docs/protocol.md, "Cluster
// notices"), in a real headless Chromium: a real redis-server, started and stopped by PID, and
// two shardcast nodes. The page shows `cluster_down` and `cluster_up` as system lines, and its
// count follows the notices.
//
//   SHARDCAST_BIN=target/release/shardcast node --test tests/browser/cluster.test.mjs
//
// Environment: SHARDCAST_BIN (required), SHARDCAST_MODEL (default sharded), CHROMIUM (default
// /usr/bin/chromium), REDIS_SERVER (default redis-server). Every wait is for a condition, with
// a bound; none is a fixed sleep.
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { chromium } from "playwright-core";

const BIN = process.env.SHARDCAST_BIN;
const MODEL = process.env.SHARDCAST_MODEL || "sharded";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const REDIS_SERVER = process.env.REDIS_SERVER || "redis-server";

/** How long the page may take to show a change of the link (seen at once when Redis closes
 * the connection; within the 2 s reconnect backoff and a heartbeat when it is back). */
const LINK_MS = 20_000;
const START_MS = 10_000;

const children = new Set();
process.on("exit", () => {
  for (const child of children) child.kill("SIGKILL");
});

/** A free loopback port (for Redis, which must come back on the same one). */
function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** Spawns `cmd` and resolves once a line of its stdout matches `ready` (with the match). */
function startProcess(cmd, args, ready) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  child.on("exit", () => children.delete(child));
  let out = "";
  let err = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk) => {
    err = (err + chunk).slice(-4000);
  });
  return new Promise((resolve, reject) => {
    const fail = (why) => {
      clearTimeout(timer);
      child.kill("SIGKILL");
      reject(new Error(`${cmd} ${args.join(" ")}: ${why}\n--- stderr:\n${err}\n--- stdout:\n${out}`));
    };
    const timer = setTimeout(() => fail(`not ready within ${START_MS} ms`), START_MS);
    child.on("error", (e) => fail(e.message));
    child.once("exit", (code, signal) => fail(`exited (${code ?? signal}) before ready`));
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const found = ready.exec(out);
      if (found) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        child.on("exit", () => children.delete(child));
        resolve({ child, found });
      }
    });
  });
}

function startRedis(port) {
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
  return startProcess(REDIS_SERVER, args, /Ready to accept connections/);
}

async function startNode(redisPort, nodeId) {
  const args = ["--listen", "127.0.0.1:0", "--no-pin", "--model", MODEL, "--workers", "2",
    "--redis", `redis://127.0.0.1:${redisPort}`, "--node-id", nodeId];
  const { child, found } = await startProcess(BIN, args, /listening on \S+:(\d+)/);
  return { child, port: Number(found[1]) };
}

/** SIGKILL by PID, and wait until it is gone. */
function kill(child) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", () => resolve());
    child.kill("SIGKILL");
  });
}

let browser;
let redisPort;
let redis;
const nodes = [];

before(async () => {
  assert.ok(BIN, "set SHARDCAST_BIN to the shardcast binary");
  redisPort = await freePort();
  redis = (await startRedis(redisPort)).child;
  nodes.push(await startNode(redisPort, "a"), await startNode(redisPort, "b"));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: START_MS,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
  });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  for (const child of [...children]) await kill(child);
});

async function join(port, nick) {
  const context = await browser.newContext({ viewport: { width: 960, height: 640 } });
  context.setDefaultTimeout(LINK_MS);
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(e.message));
  await page.goto(`http://127.0.0.1:${port}/linked`);
  await page.fill("#nick", nick);
  await page.click("#connect");
  await page.locator('#state[data-state="connected"]').waitFor();
  return page;
}

function waitOnline(page, count) {
  return page.locator(`#online[data-count="${count}"]`).waitFor();
}

function notice(page, code) {
  return page.locator(`#messages li.notice.server[data-code="${code}"]`);
}

test("the page shows when cross-node delivery stops and when it resumes", { timeout: 90_000 }, async () => {
  const ann = await join(nodes[0].port, "ann");
  const bob = await join(nodes[1].port, "bob");
  // Both count each other once both nodes see the other's heartbeat.
  await waitOnline(ann, 2);
  await waitOnline(bob, 2);

  await kill(redis);
  await notice(ann, "cluster_down").waitFor();
  const down = await notice(ann, "cluster_down").textContent();
  assert.match(down, /no longer reach members on other servers/);
  // The count drops to the members node a can vouch for.
  await waitOnline(ann, 1);
  await notice(bob, "cluster_down").waitFor();

  redis = (await startRedis(redisPort)).child;
  await notice(ann, "cluster_up").waitFor();
  assert.match(await notice(ann, "cluster_up").textContent(), /reach every server again/);
  await waitOnline(ann, 2);
  await notice(bob, "cluster_up").waitFor();
  // One line each: the notices are news of a change, not repeated.
  assert.equal(await notice(ann, "cluster_down").count(), 1);
  assert.equal(await notice(ann, "cluster_up").count(), 1);
  assert.deepEqual(ann.errors, []);
  assert.deepEqual(bob.errors, []);
});
