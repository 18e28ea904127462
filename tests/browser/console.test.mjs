// The console in Debian's Chromium against a real `sluice up` with events
// flowing: every page renders real data, and a screenshot of each is written
// to tests/browser/screenshots/ for people to look at.
//
// Run: (cd clients/js && npm ci) once, then `node --test tests/browser/`.

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Up, freePort, launch, waitFor } from "../../clients/js/test/browser/harness.mjs";

const SHOTS = join(dirname(fileURLToPath(import.meta.url)), "screenshots");
const STREAM = "sluice.test.event";

let up;
let browser;
let page;

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // Alerts after 3 quiet seconds instead of 5 minutes, so the test can see one.
  up = await Up.start({ env: { SLUICE_AGGREGATOR_CONSOLE__ALERT_AFTER_SECS: "3" } });
  browser = await launch();
  page = await (await browser.newContext({ viewport: { width: 1280, height: 860 } })).newPage();
});

after(async () => {
  await browser?.close();
  if (up) assert.equal(await up.stop(), 0, "sluice up stops cleanly");
});

let serial = 0;
const event = (fields = {}) => ({
  $schema: "/sluice/test/event/1.1.0",
  meta: { stream: STREAM, id: crypto.randomUUID() },
  dt: new Date().toISOString(),
  count: serial++,
  ...fields,
});

const shot = async (name) => {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  console.log(`# screenshot: ${path}`);
};

test("the streams pages show the flow: totals, plots and the stream's config", async () => {
  // Nineteen events and a canary event, as `sluice canary` sends it.
  const canary = event({ message: "canary" });
  canary.meta.domain = "canary";
  const sent = await up.send([...Array.from({ length: 19 }, () => event({ message: "flow" })), canary]);
  assert.equal(sent.status, 201, JSON.stringify(sent.body));
  await page.goto(`${up.aggregator}/console/`);
  const row = page.locator(`tr[data-stream="${STREAM}"]`);
  assert.equal(await row.count(), 1);
  assert.match(await row.innerText(), /sluice\/test\/event/);
  await shot("streams");

  await page.goto(`${up.aggregator}/console/stream?name=${STREAM}`);
  await page.waitForFunction(() => document.querySelector('[data-total="accepted"]')?.textContent === "20");
  // The plot has drawn the seconds counted so far, holding all 20 events.
  await page.waitForFunction(() => Number(document.querySelector('svg[data-series="accepted"]')?.dataset.sum) === 20);
  assert.equal(await page.locator('[data-total="invalid"]').innerText(), "0");
  const config = await page.locator("#config").innerText();
  assert.match(config, /schema_title\s+sluice\/test\/event/);
  assert.match(config, /rate_limit/);
  // The stream asks for canary events (canary_events_enabled), and one arrived.
  assert.match(await page.locator("#canary").innerText(), /canary events enabled; the last one arrived 20\d\d-/);
  assert.notEqual(await page.locator("#last-event").innerText(), "never");
  await shot("stream");
});

test("the schema pages list fields, find them by name, and diff two versions", async () => {
  await page.goto(`${up.aggregator}/console/schemas?q=tags`);
  const hits = await page.locator("a.title").allInnerTexts();
  assert.deepEqual(hits, ["sluice/test/event"], "only this schema has a field named tags");
  await shot("schemas-search");

  await page.click("a.title");
  assert.match(page.url(), /version=1\.1\.0/);
  const paths = await page.locator("#fields td.path").allInnerTexts();
  assert.deepEqual(
    [...paths].sort(),
    ["$schema", "count", "dt", "message", "meta", "meta.domain", "meta.dt", "meta.id", "meta.request_id", "meta.stream", "tags", "tags[]"],
  );
  const dt = await page.locator("#fields tr", { hasText: "meta.dt" }).innerText();
  assert.match(dt, /string\s+date-time\s+required/);
  const yaml = await (await fetch(new URL(await page.locator("#yaml").getAttribute("href"), up.aggregator))).text();
  assert.match(yaml, /\$id: \/sluice\/test\/event\/1\.1\.0/);
  const json = await (await fetch(new URL(await page.locator("#json").getAttribute("href"), up.aggregator))).json();
  assert.equal(json.$id, "/sluice/test/event/1.1.0");
  await shot("schema");

  // The form's default: the version before against this one.
  await page.click("form.diff button");
  assert.match(page.url(), /from=1\.0\.0&to=1\.1\.0/);
  assert.match(await page.locator("#verdict").innerText(), /^Compatible/);
  const rows = await page.locator("#diff tbody tr").allInnerTexts();
  assert.equal(rows.length, 2, rows.join("\n"));
  assert.ok(rows.every((r) => r.startsWith("added")), rows.join("\n"));
  assert.match(rows[0], /tags array/);
  assert.match(rows[1], /tags\[\] string/);
  await shot("diff");
});

test("the live tail shows a new event within 2 s, pauses, filters, and shows an invalid one with its error", async () => {
  await page.goto(`${up.aggregator}/console/tail?stream=${STREAM}`);
  await page.waitForSelector("#tail-status[data-ready]");
  const tag = `tail-${Date.now()}`;
  assert.equal((await up.send([event({ message: tag })])).status, 201);
  await page.waitForSelector(`#events li:has-text("${tag}")`, { timeout: 2000 });

  // Paused: new events wait; resumed: they show.
  await page.click("#pause");
  const held = `held-${Date.now()}`;
  assert.equal((await up.send([event({ message: held })])).status, 201);
  await page.waitForFunction(() => /Resume \(1 waiting\)/.test(document.getElementById("pause").textContent));
  assert.equal(await page.locator(`#events li:has-text("${held}")`).count(), 0);
  await page.click("#pause");
  assert.equal(await page.locator(`#events li:has-text("${held}")`).count(), 1);

  // An invalid event: the edge refuses it, reports it, and the tail shows its error at the field.
  const bad = event({ message: "bad", count: "three" });
  const refused = await up.send([bad]);
  assert.equal(refused.status, 400);
  const item = page.locator("#invalid li", { hasText: bad.meta.id });
  await item.waitFor({ timeout: 10_000 });
  const error = item.locator('.field-error[data-path="/count"]');
  assert.equal(await error.count(), 1);
  assert.match(await error.innerText(), /"count": "three".*← .*integer/s);
  await shot("tail");

  // Filtered by a field's value: only the matching event shows.
  await page.goto(`${up.aggregator}/console/tail?stream=${STREAM}&field=message&value=wanted-${tag}`);
  await page.waitForSelector("#tail-status[data-ready]");
  assert.equal((await up.send([event({ message: `other-${tag}` }), event({ message: `wanted-${tag}` })])).status, 201);
  await page.waitForSelector(`#events li:has-text("wanted-${tag}")`);
  // The other one, sent in the same request, was filtered out.
  assert.equal(await page.locator("#events li").count(), 1);
});

test("try an event gives the edge's verdict, with errors by field, and sends nothing", async () => {
  const before = up.events(STREAM).length;
  await page.goto(`${up.aggregator}/console/try`);
  await page.fill("#try-event", JSON.stringify({ $schema: "/sluice/test/event/1.1.0", meta: { stream: STREAM }, count: -1 }, null, 2));
  await page.click("#try-check");
  await page.waitForSelector("#try-status");
  assert.equal(await page.locator("#try-status").getAttribute("data-status"), "400");
  assert.equal(await page.locator('[data-verdict="rejected"]').count(), 1);
  assert.match(await page.locator('.field-error[data-path="/count"]').innerText(), /minimum|less than|0/);
  assert.match(await page.locator("#try-result").innerText(), /dt/);
  await shot("try");

  // One good and one bad: what the edge answers with 207.
  await page.fill("#try-event", JSON.stringify([event({ message: "good" }), event({ count: "x" })]));
  await page.click("#try-check");
  await page.waitForFunction(() => document.getElementById("try-status")?.dataset.status === "207");
  assert.equal(await page.locator('[data-verdict="accepted"]').count(), 1);
  assert.equal(await page.locator('[data-verdict="rejected"]').count(), 1);
  assert.match(await page.locator("#try-result").innerText(), /rate limit: 1000\/s per stream/);
  assert.equal(up.events(STREAM).length, before, "nothing was sent");
});

test("a stream that stops flowing is alerted on the page and on /metrics", async () => {
  const stream = "sluice.server.event";
  const schema = await (await fetch(`${up.aggregator}/repositories/schemas/jsonschema/sluice/server/event/latest.json`)).json();
  const example = schema.examples[0];
  const alert = `sluice_aggregator_stream_alert{stream="${stream}",alert="zero_flow"}`;
  // Flowing for a few seconds...
  for (let i = 0; i < 6; i++) {
    const e = { ...example, meta: { ...example.meta, stream, id: crypto.randomUUID() }, dt: new Date().toISOString() };
    assert.equal((await up.send([e])).status, 201);
    await new Promise((r) => setTimeout(r, 500));
  }
  assert.equal(await up.metric(alert, "", up.aggregator), 0);
  // ...then nothing: after 3 quiet seconds the stream is alerted.
  await waitFor("the zero-flow alert on /metrics", async () => (await up.metric(alert, "", up.aggregator)) === 1, 15_000);
  await waitFor("the zero-flow alert in the log", () => up.log.includes(`stream=${stream} alert="zero_flow"`));
  await page.goto(`${up.aggregator}/console/`);
  assert.equal(await page.locator(`tr[data-stream="${stream}"] [data-alert="zero_flow"]`).count(), 1);
  assert.match(await page.locator("#alerts").innerText(), new RegExp(`${stream.replace(/\./g, "\\.")}: zero_flow`));
  await shot("alert");
  await page.goto(`${up.aggregator}/console/stream?name=${stream}`);
  await page.waitForSelector('#state [data-alert="zero_flow"]');

  // Flowing again clears it.
  const e = { ...example, meta: { ...example.meta, stream, id: crypto.randomUUID() }, dt: new Date().toISOString() };
  assert.equal((await up.send([e])).status, 201);
  await waitFor("the alert cleared", async () => (await up.metric(alert, "", up.aggregator)) === 0, 15_000);
});

test("with a console token, the console asks for it once and keeps it in a cookie", async () => {
  const guarded = await Up.start({ env: { SLUICE_AGGREGATOR_CONSOLE__TOKEN: "let-me-see" } });
  try {
    const context = await browser.newContext();
    const p = await context.newPage();
    const first = await p.goto(`${guarded.aggregator}/console/schemas`);
    assert.equal(first.status(), 401);
    assert.equal(await p.locator("#token").count(), 1);
    assert.equal((await fetch(`${guarded.aggregator}/console/api/flow?stream=${STREAM}`)).status, 401);
    await p.fill("#token", "wrong");
    await p.click("form.login button");
    assert.match(await p.locator("#login-error").innerText(), /not the console token/);
    await p.fill("#token", "let-me-see");
    await p.click("form.login button");
    await p.waitForURL(`${guarded.aggregator}/console/`);
    assert.equal(await p.locator("#streams").count(), 1);
    // The cookie lets every page through now.
    const again = await p.goto(`${guarded.aggregator}/console/schemas`);
    assert.equal(again.status(), 200);
    // The bearer token works for scripts.
    const api = await fetch(`${guarded.aggregator}/console/api/flow?stream=${STREAM}`, {
      headers: { Authorization: "Bearer let-me-see" },
    });
    assert.equal(api.status, 200);
    await context.close();
  } finally {
    assert.equal(await guarded.stop(), 0);
  }
});

test("the connectors page shows each sink's rows, lag and dead letters per stream", async () => {
  // A PostgreSQL sink beside the platform (sluice up --connect), on tables of this run's own.
  const run = `console_${process.pid}_${Date.now()}`;
  const metricsPort = await freePort();
  const withSink = await Up.start({
    args: (dir) => {
      const file = join(dir, "connect.toml");
      writeFileSync(
        file,
        [
          `metrics_listen = "127.0.0.1:${metricsPort}"`,
          "[[sink]]",
          'name = "warehouse"',
          'kind = "postgres"',
          'url = "postgres://postgres@127.0.0.1:5432/test"',
          `streams = ["${STREAM}"]`,
          "flush_interval_ms = 100",
          `table = "${run}_{stream}"`,
          `dead_letter_table = "${run}_dead_letters"`,
          `positions_table = "${run}_positions"`,
          "",
        ].join("\n"),
      );
      return ["--connect", file];
    },
  });
  try {
    assert.equal((await withSink.send(Array.from({ length: 5 }, () => event({ message: "to the warehouse" })))).status, 201);
    await page.goto(`${withSink.aggregator}/console/connectors`);
    const row = page.locator("#connectors tr", { hasText: "warehouse" });
    await waitFor("5 rows written on the connectors page", async () => {
      await page.reload();
      return (await row.count()) === 1 && /warehouse\s+sluice\.test\.event\s+5\s+0\s+0\s+0\s+0/.test(await row.innerText());
    });
    await shot("connectors");
  } finally {
    assert.equal(await withSink.stop(), 0);
    spawnSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-q", "-c",
      `DROP TABLE IF EXISTS "${run}_sluice_test_event", "${run}_dead_letters", "${run}_positions"`]);
  }
});

test("the console is off with a setting", async () => {
  const off = await Up.start({ env: { SLUICE_AGGREGATOR_CONSOLE__ENABLED: "false" } });
  try {
    assert.equal((await fetch(`${off.aggregator}/console/`)).status, 404);
    assert.equal((await fetch(`${off.aggregator}/metrics`)).status, 200);
  } finally {
    assert.equal(await off.stop(), 0);
  }
});
