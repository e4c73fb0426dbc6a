// Takes the README's picture of the chat page (docs/img/chat.png): three people in room
// `general`, a short conversation, the member list beside it. Not a test, and not part of the
// test command: run it by hand after changing the page.
//
//   SHARDCAST_BIN=target/release/shardcast node tests/browser/screenshot.mjs [OUT.png]
//
// Environment: SHARDCAST_BIN (required), SHARDCAST_STATIC_DIR (serve the page from this folder
// instead of the copy in the binary), CHROMIUM (default /usr/bin/chromium).
import { spawn } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
const OUT = process.argv[2] || join(HERE, "../../docs/img/chat.png");
const BIN = process.env.SHARDCAST_BIN;
const STATIC_DIR = process.env.SHARDCAST_STATIC_DIR || "";
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const WAIT_MS = 10_000;

if (!BIN) {
  console.error("set SHARDCAST_BIN to the shardcast binary");
  process.exit(2);
}

/** Starts the server on a free port; resolves to `{ child, port }`. */
function startServer() {
  const args = ["--listen", "127.0.0.1:0", "--no-pin", "--workers", "2"];
  if (STATIC_DIR) args.push("--static-dir", STATIC_DIR);
  const child = spawn(BIN, args, { stdio: ["ignore", "pipe", "inherit"] });
  return new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error("the server did not start")), WAIT_MS);
    child.on("exit", (code) => reject(new Error(`the server exited (${code})`)));
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const found = /listening on \S+:(\d+)/.exec(out);
      if (found) {
        clearTimeout(timer);
        child.removeAllListeners("exit");
        resolve({ child, port: Number(found[1]) });
      }
    });
  });
}

const server = await startServer();
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });
try {
  const pages = {};
  for (const nick of ["ann", "bob", "cy"]) {
    const context = await browser.newContext({ viewport: { width: 960, height: 640 }, colorScheme: "light" });
    context.setDefaultTimeout(WAIT_MS);
    const page = await context.newPage();
    await page.goto(`http://127.0.0.1:${server.port}/general`);
    await page.fill("#nick", nick);
    await page.click("#connect");
    await page.locator('#state[data-state="connected"]').waitFor();
    pages[nick] = page;
  }
  await pages.ann.locator("#member-list li", { hasText: "cy" }).waitFor();
  const say = async (nick, text) => {
    await pages[nick].fill("#text", text);
    await pages[nick].press("#text", "Enter");
    await pages.ann.locator('#messages li[data-kind="message"]', { hasText: text }).waitFor();
  };
  await say("bob", "morning all — is the deploy still on for 11?");
  await say("ann", "yes, the build is green. cy, can you watch the dashboards?");
  await say("cy", "on it, watching now");
  await say("ann", "thanks! I'll post here when it's out.");
  await pages.ann.fill("#text", "");
  await pages.ann.locator("#text").blur();
  await pages.ann.screenshot({ path: OUT });
  console.log(`wrote ${OUT}`);
} finally {
  await browser.close();
  server.child.kill("SIGKILL");
}
