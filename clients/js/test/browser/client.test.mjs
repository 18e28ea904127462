// @sluice/client in real headless Chromium against a real `sluice up`: the
// page is served from another origin than the edge, so every request is a
// CORS request, credentialed as beacons are.

import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { PACKAGE, STREAM, Up, createClient, launch, openClient, servePage, streamsYaml, waitFor } from "./harness.mjs";

let up;
let site;
let browser;

before(async () => {
  up = await Up.start();
  site = await servePage();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await site?.close();
  if (up) assert.equal(await up.stop(), 0, "sluice up stops cleanly");
});

/** The web stream's events in the log whose `element_id` starts with `tag`. */
const tagged = (tag) => up.events().filter((e) => String(e.element_id ?? "").startsWith(tag));

const click = (page, tag, n) =>
  page.evaluate(
    ([tag, n]) => {
      for (let i = 0; i < n; i++) window.client.submitClick("sluice.product_metrics.web_base", { element_id: `${tag}-${i}` });
    },
    [tag, n],
  );

test("events from a page land in the log, filled as the stream config asks", async () => {
  const context = await browser.newContext();
  const { page, posts } = await openClient(context, site.url, up.edge);
  await page.waitForFunction(() => window.client.getStreamConfig("sluice.product_metrics.web_base") !== null);
  await click(page, "land", 5);
  await page.evaluate(() => window.client.flush());
  const stats = await page.evaluate(() => window.client.stats());
  assert.equal(stats.sent, 5, JSON.stringify(stats));
  assert.equal(posts.length, 1);
  const events = await waitFor("5 events in the log", () => {
    const got = tagged("land-");
    return got.length >= 5 && got;
  });
  assert.equal(events.length, 5);
  assert.equal(new Set(events.map((e) => e.meta.id)).size, 5);
  const sessions = new Set(events.map((e) => e.performer.session_id));
  const pageviews = new Set(events.map((e) => e.performer.pageview_id));
  assert.equal(sessions.size, 1);
  assert.equal(pageviews.size, 1);
  for (const e of events) {
    assert.equal(e.$schema, "/sluice/product_metrics/web/base/1.0.0");
    assert.equal(e.action, "click");
    assert.equal(e.meta.stream, STREAM);
    assert.equal(e.meta.domain, "127.0.0.1");
    assert.deepEqual(e.sample, { unit: "pageview", rate: 1 });
    assert.equal(e.agent.client_platform, "web");
    assert.equal(e.page.title, "Browser test page");
    assert.match(e.performer.session_id, /^[0-9a-f]{20}$/);
    assert.match(e.http.request_headers["user-agent"], /Chrome/);
  }
  await context.close();
});

test("sampling and producing windows in the browser decide the shared vectors as the core does", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(site.url);
  const vectors = JSON.parse(readFileSync(join(PACKAGE, "../vectors.json"), "utf8"));
  const got = await page.evaluate((v) => {
    const C = window.SluiceClient;
    return {
      sampling: v.sampling.map(({ id, rate }) => {
        const p = C.unitPosition(id);
        return p === null ? null : C.positionInSample(p, rate);
      }),
      windows: v.windows.map((c) => C.isOpen(c.windows, Date.parse(c.at))),
    };
  }, vectors);
  assert.deepEqual(got.sampling, vectors.sampling.map((c) => c.in_sample));
  assert.deepEqual(got.windows, vectors.windows.map((c) => c.open));
  await context.close();
});

test("a stream reconfigured to rate 0, then to a closed window, stops the page's events within one refresh", async () => {
  const context = await browser.newContext();
  const { page, posts } = await openClient(context, site.url, up.edge, { configRefreshMs: 500 });
  await page.waitForFunction(() => window.client.isStreamInSample("sluice.product_metrics.web_base"));
  const before = tagged("").length;
  const requestsBefore = await up.metric("sluice_edge_requests_total");

  for (const [sample, windows, reason] of [
    ["{unit: pageview, rate: 0.0}", null, "out_of_sample"],
    ["{unit: pageview, rate: 1.0}", "[{start: '2099-01-01T00:00:00Z'}]", "closed"],
  ]) {
    up.reconfigure(streamsYaml(sample, windows));
    // The edge serves the new config once it has it from the aggregator...
    const served = await waitFor("the edge to serve the new config", async () => {
      const s = (await (await fetch(`${up.edge}/v1/streams`)).json()).streams[STREAM];
      return (windows ? s.windows?.length === 1 : s.sample?.rate === 0) && Date.now();
    });
    // ...and the page follows within one refresh of the client.
    await page.waitForFunction(
      (closed) => {
        const s = window.client.getStreamConfig("sluice.product_metrics.web_base");
        return closed ? s?.windows?.length === 1 : s?.sample?.rate === 0;
      },
      windows !== null,
      { timeout: 10_000 },
    );
    assert.equal(await page.evaluate(() => window.client.isStreamInSample("sluice.product_metrics.web_base")), false);
    const took = Date.now() - served;
    assert.ok(took <= 1500, `the page took ${took} ms to follow the config (refresh 500 ms)`);
    await click(page, `stopped-${reason}`, 10);
    await page.evaluate(() => window.client.flush());
    const stats = await page.evaluate(() => window.client.stats());
    assert.equal(stats.dropped[reason], 10, JSON.stringify(stats));
  }
  assert.equal(posts.length, 0, "the page sent nothing");
  assert.equal(await up.metric("sluice_edge_requests_total"), requestsBefore, "the edge was sent nothing");
  assert.equal(tagged("").length, before);
  up.reconfigure(streamsYaml());
  await waitFor("the edge to serve the restored config", async () => {
    const s = (await (await fetch(`${up.edge}/v1/streams`)).json()).streams[STREAM];
    return s.sample?.rate === 1 && !s.windows;
  });
  await context.close();
});

test("events submitted just before navigation arrive, with a beacon on pagehide", async () => {
  const context = await browser.newContext();
  const { page } = await openClient(context, site.url, up.edge);
  await page.waitForFunction(() => window.client.getStreamConfig("sluice.product_metrics.web_base") !== null);
  const hastyBefore = await up.metric("sluice_edge_requests_total", 'status="202"');
  await click(page, "leaving", 7);
  await page.goto("about:blank");
  const events = await waitFor("7 beaconed events in the log", () => {
    const got = tagged("leaving-");
    return got.length >= 7 && got;
  });
  assert.equal(events.length, 7);
  // One hasty request (the beacon) carried all seven.
  assert.equal(await up.metric("sluice_edge_requests_total", 'status="202"'), hastyBefore + 1);
  await context.close();
});

test("events made offline are kept in IndexedDB, across a reload, and sent once online, once", async () => {
  const context = await browser.newContext();
  // The reload below happens offline, so the page and the bundle come from the test, as
  // from a cache; the same page is reloaded (a closed page would take the browser's
  // offline emulation with it and come back online as it unloads).
  const html = readFileSync(join(PACKAGE, "test/browser/page.html"), "utf8");
  const bundle = readFileSync(join(PACKAGE, "dist/sluice-client.iife.js"), "utf8");
  await context.route(`${site.url}/`, (r) => r.fulfill({ contentType: "text/html", body: html }));
  await context.route(`${site.url}/dist/sluice-client.iife.js`, (r) => r.fulfill({ contentType: "text/javascript", body: bundle }));
  const { page, posts } = await openClient(context, `${site.url}/`, up.edge);
  await page.waitForFunction(() => window.client.getStreamConfig("sluice.product_metrics.web_base") !== null);
  await context.setOffline(true);
  await page.waitForFunction(() => navigator.onLine === false);
  await click(page, "offline-a", 6);
  await page.evaluate(() => window.client.flush());
  // A new load of the page, still offline: the first load's events wait in IndexedDB.
  await page.reload();
  await createClient(page, up.edge);
  await page.waitForFunction(() => navigator.onLine === false);
  await page.waitForFunction(() => window.client.getStreamConfig("sluice.product_metrics.web_base") !== null);
  await click(page, "offline-b", 4);
  await page.evaluate(() => window.client.flush());
  assert.equal(tagged("offline-").length, 0);
  await context.setOffline(false);
  await page.waitForFunction(() => navigator.onLine === true);
  const events = await waitFor("10 offline events in the log", () => {
    const got = tagged("offline-");
    return got.length >= 10 && got;
  }).catch(async (e) => {
    // What the page holds, for the reader of a failure.
    const held = await page.evaluate(
      () =>
        new Promise((done) => {
          const r = indexedDB.open("sluice-client", 1);
          r.onsuccess = () => {
            const all = r.result.transaction("events").objectStore("events").count();
            all.onsuccess = () => done(all.result);
            all.onerror = () => done(`count failed: ${all.error}`);
          };
          r.onerror = () => done(`open failed: ${r.error}`);
        }),
    );
    const stats = await page.evaluate(() => JSON.stringify(window.client.stats()));
    throw new Error(`${e.message}: ${tagged("offline-").length} in the log, ${held} in IndexedDB, ${posts.length} posts, stats ${stats}`);
  });
  await page.evaluate(() => window.client.flush());
  assert.equal(events.length, 10);
  assert.equal(new Set(events.map((e) => e.meta.id)).size, 10);
  assert.equal(new Set(events.map((e) => e.element_id)).size, 10);
  const accepted = posts.length;
  assert.ok(accepted >= 1);
  await page.evaluate(() => window.client.flush());
  assert.equal(tagged("offline-").length, 10, "sent once");
  await context.close();
});

test("a 503 from the edge is sent again after its Retry-After", async () => {
  const context = await browser.newContext();
  let refused = 0;
  // The first request the edge gets is answered as an edge under backpressure answers.
  await context.route(`${up.edge}/v1/events`, async (route) => {
    if (route.request().method() === "POST" && refused === 0) {
      refused += 1;
      await route.fulfill({
        status: 503,
        headers: {
          "Retry-After": "2",
          "Content-Type": "application/json",
          "Access-Control-Allow-Origin": site.url,
          "Access-Control-Allow-Credentials": "true",
          "Access-Control-Expose-Headers": "retry-after",
        },
        body: JSON.stringify({ error: "the aggregator is busy" }),
      });
    } else {
      await route.fallback();
    }
  });
  const { page, posts } = await openClient(context, site.url, up.edge);
  await page.waitForFunction(() => window.client.getStreamConfig("sluice.product_metrics.web_base") !== null);
  await click(page, "retried", 3);
  await page.evaluate(() => window.client.flush());
  const events = await waitFor("3 retried events in the log", () => {
    const got = tagged("retried-");
    return got.length >= 3 && got;
  });
  assert.equal(events.length, 3);
  assert.equal(refused, 1);
  assert.equal(posts.length, 2);
  const waited = posts[1].at - posts[0].at;
  assert.ok(waited >= 2000, `sent again after ${waited} ms`);
  assert.ok(waited < 6000, `sent again after ${waited} ms`);
  const stats = await page.evaluate(() => window.client.stats());
  assert.equal(stats.retries, 1);
  assert.equal(stats.sent, 3);
  await context.close();
});

test("the example page works against sluice up", async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const warnings = [];
  page.on("console", (m) => m.type() === "warning" && warnings.push(m.text()));
  await page.goto(`${site.url}/examples/?edge=${encodeURIComponent(up.edge)}`);
  await page.waitForFunction(() => document.getElementById("sample").textContent.includes("in sample"));
  for (let i = 0; i < 3; i++) await page.click("#click-me");
  await page.click("#flush");
  const events = await waitFor("the example's 3 clicks in the log", () => {
    const got = up.events().filter((e) => e.element_id === "click-me");
    return got.length >= 3 && got;
  });
  assert.equal(events.length, 3);
  assert.deepEqual(events.map((e) => e.action_context).sort(), ["1", "2", "3"]);
  assert.deepEqual(warnings, []);
  await context.close();
});
