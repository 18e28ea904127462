// What the browser tests stand on: a real `sluice up` (the binary cargo
// built), a static server on another origin for the page and the bundle,
// and Debian's Chromium driven by playwright-core.

import { spawn, spawnSync } from "node:child_process";
import { createServer } from "node:http";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as netServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const PACKAGE = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const WORKSPACE = resolve(PACKAGE, "../..");
export const STREAM = "sluice.product_metrics.web_base";

/** The `sluice` binary: SLUICE_BIN, else cargo's debug build. */
export function sluiceBinary() {
  if (process.env.SLUICE_BIN) return process.env.SLUICE_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(WORKSPACE, "target");
  return join(target, "debug", "sluice");
}

/** A free loopback TCP port. */
export function freePort() {
  return new Promise((done, fail) => {
    const s = netServer();
    s.once("error", fail);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => done(port));
    });
  });
}

/** Polls `check` every 50 ms until it returns a truthy value; fails after `ms` with `what`. */
export async function waitFor(what, check, ms = 30_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The repository's stream config with the web stream's `sample` (and `windows`) replaced. */
export function streamsYaml(sample = "{unit: pageview, rate: 1.0}", windows = null) {
  const text = readFileSync(join(WORKSPACE, "schemas/streams.yaml"), "utf8");
  const line = "    sample: {unit: pageview, rate: 1.0}\n";
  if (!text.includes(line)) throw new Error("schemas/streams.yaml has no web stream sampled by pageview");
  return text.replace(line, `    sample: ${sample}\n` + (windows ? `    windows: ${windows}\n` : ""));
}

/** A running `sluice up` on free ports with its own data folder and stream config file. */
export class Up {
  /**
   * `env`: more variables for `sluice up` (e.g. aggregator settings); `args`: more
   * arguments, or a function of the data folder that returns them.
   */
  static async start({ env = {}, args = [] } = {}) {
    const up = new Up();
    up.dir = mkdtempSync(join(tmpdir(), "sluice-browser-"));
    up.streams = join(up.dir, "streams.yaml");
    writeFileSync(up.streams, streamsYaml());
    const [edge, http, quic] = [await freePort(), await freePort(), await freePort()];
    up.edge = `http://127.0.0.1:${edge}`;
    up.aggregator = `http://127.0.0.1:${http}`;
    up.child = spawn(
      sluiceBinary(),
      [
        "up",
        "--data-dir", join(up.dir, "data"),
        "--repo", join(WORKSPACE, "schemas"),
        "--streams", up.streams,
        "--edge-addr", `127.0.0.1:${edge}`,
        "--aggregator-addr", `127.0.0.1:${http}`,
        "--quic-addr", `127.0.0.1:${quic}`,
        ...(typeof args === "function" ? args(up.dir) : args),
      ],
      {
        cwd: WORKSPACE,
        stdio: ["ignore", "pipe", "pipe"],
        env: {
          ...process.env,
          SLUICE_LOG: "warn",
          // The edge asks the aggregator for changed config every second, and sends
          // hasty events on at once.
          SLUICE_EDGE_BUNDLE__REFRESH_SECS: "1",
          SLUICE_EDGE_BATCH__HASTY_AGE_MS: "50",
          ...env,
        },
      },
    );
    up.exited = new Promise((r) => up.child.once("exit", (code, signal) => r({ code, signal })));
    // Its log goes on to the test's output, and is kept for tests that look for a line.
    up.log = "";
    up.child.stderr.setEncoding("utf8");
    up.child.stderr.on("data", (chunk) => {
      up.log += chunk;
      process.stderr.write(chunk);
    });
    let printed = "";
    await waitFor("sluice up to print its edge's address", async () => {
      const chunk = up.child.stdout.read();
      if (chunk) printed += chunk;
      if (up.child.exitCode !== null) throw new Error(`sluice up exited: ${printed}`);
      return printed.includes("edge listening on");
    });
    up.child.stdout.resume();
    return up;
  }

  /** Writes a new stream config and tells the aggregator (SIGHUP). */
  reconfigure(yaml) {
    writeFileSync(this.streams, yaml);
    this.child.kill("SIGHUP");
  }

  /** The events of `stream` in the embedded log, in order. */
  events(stream = STREAM) {
    const r = spawnSync(
      sluiceBinary(),
      ["tail", stream, "--from-beginning", "--no-follow", "--data-dir", join(this.dir, "data"), "--streams", this.streams],
      { encoding: "utf8", env: { ...process.env, SLUICE_LOG: "warn" } },
    );
    if (r.status !== 0) throw new Error(`sluice tail failed: ${r.stderr}`);
    return r.stdout.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l));
  }

  /** Posts `events` (JSON) to the edge; its status and answer. */
  async send(events, query = "") {
    const r = await fetch(`${this.edge}/v1/events${query}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(events),
    });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  }

  /** One of the edge's metrics (or `from`'s), summed over the series whose labels include `labels`. */
  async metric(name, labels = "", from = this.edge) {
    const text = await (await fetch(`${from}/metrics`)).text();
    let sum = 0;
    for (const line of text.split("\n")) {
      if (line.startsWith(name) && line.includes(labels)) sum += Number(line.split(" ").pop());
    }
    return sum;
  }

  async stop() {
    this.child.kill("SIGTERM");
    const { code } = await this.exited;
    rmSync(this.dir, { recursive: true, force: true });
    return code;
  }
}

/** Serves the package's `dist/` and `test/browser/page.html` on a free port (another origin than the edge). */
export async function servePage() {
  const files = {
    "/": ["test/browser/page.html", "text/html; charset=utf-8"],
    "/dist/sluice-client.iife.js": ["dist/sluice-client.iife.js", "text/javascript"],
    "/vectors.json": ["../vectors.json", "application/json"],
    "/examples/": ["examples/index.html", "text/html; charset=utf-8"],
  };
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const file = files[path];
    if (!file) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "Content-Type": file[1], "Cache-Control": "no-store" });
    res.end(readFileSync(join(PACKAGE, file[0])));
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((r) => server.close(r)) };
}

/** Debian's Chromium, headless. */
export function launch() {
  return chromium.launch({
    executablePath: process.env.SLUICE_CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
      // A page the test serves from memory while the browser is offline has no address, so
      // Chromium takes it for a public one that may not reach loopback; a page served over
      // the network (every other one here, and every real one) is not affected.
      "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessChecks",
    ],
  });
}

/**
 * A page of `pageUrl` with a client created on it (`window.client`), and the
 * list of the requests it made to the edge's `/v1/events`.
 */
export async function openClient(context, pageUrl, edge, options = {}) {
  const page = await context.newPage();
  const posts = [];
  page.on("request", (r) => {
    if (r.url().startsWith(`${edge}/v1/events`) && r.method() === "POST") {
      posts.push({ url: r.url(), at: Date.now(), type: r.resourceType() });
    }
  });
  await page.goto(pageUrl);
  await createClient(page, edge, options);
  return { page, posts };
}

/** Creates `window.client` on a loaded page (again after a reload). */
export async function createClient(page, edge, options = {}) {
  await page.evaluate(
    ([edge, options]) => {
      window.client = window.SluiceClient.create({
        edge,
        flushIntervalMs: 3_600_000,
        integration: {
          getContextAttributes: () => ({
            agent: { client_platform: "web", client_platform_family: "desktop_browser" },
            page: { title: document.title },
          }),
        },
        ...options,
      });
    },
    [edge, options],
  );
}
