// Makes the page's favicon.ico from its favicon.svg: renders the SVG at 16, 32 and 48 px in
// Chromium and packs the three PNGs into one ICO (PNG-in-ICO, which every current browser
// reads). Run it again after changing the SVG:
//
//   node tests/browser/favicon-ico.mjs src/http/page/favicon.svg src/http/page/favicon.ico
import { chromium } from "playwright-core";
import { readFileSync, writeFileSync } from "node:fs";
const svg = readFileSync(process.argv[2], "utf8");
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox", "--headless"] });
const pngs = [];
for (const size of [16, 32, 48]) {
  const page = await browser.newPage({ viewport: { width: size, height: size } });
  await page.setContent(`<style>html,body{margin:0;background:transparent}</style><img src="data:image/svg+xml;base64,${Buffer.from(svg).toString("base64")}" width="${size}" height="${size}" style="display:block">`);
  await page.waitForFunction(() => document.images[0].complete);
  pngs.push([size, await page.screenshot({ omitBackground: true, type: "png" })]);
  await page.close();
}
await browser.close();
const header = Buffer.alloc(6);
header.writeUInt16LE(0, 0); header.writeUInt16LE(1, 2); header.writeUInt16LE(pngs.length, 4);
let offset = 6 + 16 * pngs.length;
const entries = [];
for (const [size, png] of pngs) {
  const e = Buffer.alloc(16);
  e.writeUInt8(size % 256, 0); e.writeUInt8(size % 256, 1); e.writeUInt8(0, 2); e.writeUInt8(0, 3);
  e.writeUInt16LE(1, 4); e.writeUInt16LE(32, 6); e.writeUInt32LE(png.length, 8); e.writeUInt32LE(offset, 12);
  offset += png.length;
  entries.push(e);
}
writeFileSync(process.argv[3], Buffer.concat([header, ...entries, ...pngs.map((p) => p[1])]));
