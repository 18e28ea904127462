// Builds the browser bundle: one minified IIFE defining window.SluiceClient,
// and checks it stays within 6 KB gzipped.
import { build } from "esbuild";
import { gzipSync } from "node:zlib";
import { readFileSync } from "node:fs";

const out = "dist/sluice-client.iife.js";
await build({
  entryPoints: ["src/index.ts"],
  bundle: true,
  minify: true,
  format: "iife",
  globalName: "SluiceClient",
  target: "es2020",
  outfile: out,
  legalComments: "none",
});
const gz = gzipSync(readFileSync(out), { level: 9 }).length;
console.log(`${out}: ${gz} bytes gzipped`);
if (gz > 6 * 1024) {
  console.error(`the bundle is over 6 KB gzipped (${gz} bytes)`);
  process.exit(1);
}
