// The client's queue, batches and answers, against a recording fetch.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { create } from "../../dist/index.js";

const EDGE = "http://edge.test";
const STREAMS = {
  "web.events": {
    schema_title: "sluice/test/event",
    sample: { unit: "pageview", rate: 1 },
    producers: { metrics_platform_client: { provide_values: ["page_title", "agent_client_platform", "performer_session_id"] } },
  },
  "web.off": { schema_title: "sluice/test/event", enabled: false },
  "web.none": { schema_title: "sluice/test/event", sample: { unit: "session", rate: 0 } },
};

let calls;
let answers;
beforeEach(() => {
  calls = [];
  answers = [];
  globalThis.fetch = async (url, init = {}) => {
    const body = init.body ? JSON.parse(init.body) : undefined;
    calls.push({ url: String(url), init, body, at: Date.now() });
    const next = answers.shift() ?? ((b) => new Response(null, { status: 201 }));
    return next(body, init);
  };
});

/** Resolves once the edge has been asked `n` times. */
const requests = (n) =>
  new Promise((resolve) => {
    const poll = setInterval(() => {
      if (calls.length >= n) {
        clearInterval(poll);
        resolve();
      }
    }, 10);
  });

const event = (n) => ({ $schema: "/sluice/test/event/1.0.0", count: n, message: `m${n}` });
const client = (extra = {}) =>
  create({ edge: EDGE, streamConfig: STREAMS, flushIntervalMs: 3_600_000, ...extra });

test("events are filled as the stream asks and sent in one batch", async () => {
  const c = client({
    integration: { getContextAttributes: () => ({ page: { title: "Main", id: 7 }, agent: { client_platform: "web" } }) },
  });
  for (let n = 0; n < 3; n++) c.submit("web.events", event(n));
  await c.flush();
  c.close();
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, `${EDGE}/v1/events`);
  const sent = calls[0].body;
  assert.equal(sent.length, 3);
  for (const e of sent) {
    assert.equal(e.meta.stream, "web.events");
    assert.match(e.meta.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.ok(!Number.isNaN(Date.parse(e.dt)));
    assert.deepEqual(e.sample, { unit: "pageview", rate: 1 });
    assert.match(e.performer.pageview_id, /^[0-9a-f]{20}$/);
    assert.equal(e.page.title, "Main");
    assert.equal(e.page.id, undefined, "only the values the stream asks for");
    assert.equal(e.agent.client_platform, "web");
  }
  assert.equal(new Set(sent.map((e) => e.performer.pageview_id)).size, 1);
  assert.equal(new Set(sent.map((e) => e.meta.id)).size, 3);
  assert.equal(c.stats().sent, 3);
});

test("disabled, unknown and sampled-out streams send nothing and are counted", async () => {
  const c = client();
  c.submit("web.off", event(1));
  c.submit("web.nope", event(2));
  c.submit("web.none", event(3));
  c.submit("web.events", { count: 4 });
  await c.flush();
  c.close();
  assert.equal(calls.length, 0);
  assert.deepEqual(c.stats().dropped, { disabled: 1, unknown_stream: 1, out_of_sample: 1, no_schema: 1 });
  assert.equal(c.isStreamInSample("web.none"), false);
  assert.equal(c.isStreamInSample("web.events"), true);
  assert.equal(c.getStreamConfig("web.off").enabled, false);
  assert.equal(c.getStreamConfig("web.nope"), null);
});

test("a bounded queue drops the oldest and counts them", async () => {
  const c = client({ maxQueue: 5, maxBatch: 100 });
  for (let n = 0; n < 8; n++) c.submit("web.events", event(n));
  await c.flush();
  c.close();
  assert.deepEqual(calls[0].body.map((e) => e.count), [3, 4, 5, 6, 7]);
  assert.equal(c.stats().dropped.queue_full, 3);
});

test("a 207 drops the invalid events and sends the failed ones again", async () => {
  answers.push((body) =>
    Response.json(
      {
        invalid: [{ status: "invalid", event: body[0], context: { message: "bad" } }],
        error: [{ status: "error", event: body[1], context: { kind: "rate_limited" } }],
      },
      { status: 207 },
    ),
  );
  const c = client({ maxBatch: 100 });
  for (let n = 0; n < 3; n++) c.submit("web.events", event(n));
  await c.flush();
  assert.equal(calls.length, 1);
  assert.equal(c.stats().dropped.invalid, 1);
  assert.equal(c.stats().sent, 1);
  // The failed one waits for its backoff, then goes alone, with its id.
  await requests(2);
  await c.flush();
  c.close();
  assert.equal(calls[1].body.length, 1);
  assert.equal(calls[1].body[0].meta.id, calls[0].body[1].meta.id);
  assert.equal(c.stats().sent, 2);
  assert.equal(c.stats().retries, 1);
});

test("a 400 drops the batch, counted; another 4xx too, by status", async () => {
  answers.push(() => Response.json({ error: "bad" }, { status: 400 }));
  answers.push(() => Response.json({ error: "too big" }, { status: 413 }));
  const c = client({ maxBatch: 2 });
  for (let n = 0; n < 4; n++) c.submit("web.events", event(n));
  await c.flush();
  c.close();
  assert.equal(calls.length, 2);
  assert.deepEqual(c.stats().dropped, { invalid: 2, http_413: 2 });
  assert.equal(c.stats().sent, 0);
});

test("a 503 with Retry-After is sent again once the wait is over, not before", async () => {
  answers.push(() => new Response(null, { status: 503, headers: { "Retry-After": "1" } }));
  const c = client();
  c.submit("web.events", event(1));
  await c.flush();
  await c.flush(); // too early: nothing goes
  assert.equal(calls.length, 1);
  await requests(2);
  c.close();
  assert.ok(calls[1].at - calls[0].at >= 1000, `${calls[1].at - calls[0].at} ms`);
  assert.deepEqual(calls[1].body, calls[0].body);
});

test("events submitted before the config arrives wait for it, and it is asked for conditionally", async () => {
  let release;
  const gate = new Promise((r) => (release = r));
  answers.push(async () => {
    await gate;
    return Response.json({ streams: STREAMS }, { headers: { ETag: '"abc"' } });
  });
  answers.push(() => new Response(null, { status: 304, headers: { ETag: '"abc"' } }));
  const c = create({ edge: EDGE, flushIntervalMs: 3_600_000, configRefreshMs: 50 });
  c.submit("web.events", event(1));
  c.submit("web.off", event(2));
  assert.equal(c.isStreamInSample("web.events"), false);
  release();
  await requests(2);
  assert.equal(calls[0].url, `${EDGE}/v1/streams`);
  assert.equal(calls[1].init.headers["If-None-Match"], '"abc"');
  await c.flush();
  c.close();
  const posts = calls.filter((c) => c.url.endsWith("/v1/events"));
  assert.equal(posts.length, 1);
  assert.deepEqual(posts[0].body.map((e) => e.count), [1]);
  assert.equal(c.stats().dropped.disabled, 1);
});

/** A Storage kept in a Map, installed as `globalThis[name]`. */
function fakeStorage(name) {
  const m = new Map();
  globalThis[name] = {
    getItem: (k) => (m.has(k) ? m.get(k) : null),
    setItem: (k, v) => m.set(k, String(v)),
  };
  return m;
}

test("a session id lasts while the session is active and is renewed after 30 idle minutes", async () => {
  const held = fakeStorage("sessionStorage");
  const streams = { s: { schema_title: "t", sample: { unit: "session", rate: 1 } } };
  const c = create({ edge: EDGE, streamConfig: streams, flushIntervalMs: 3_600_000 });
  held.set("sluice.session", JSON.stringify({ id: "aaaaaaaaaaaaaaaaaaaa", last: Date.now() - 29 * 60_000 }));
  c.submit("s", event(1));
  c.submit("s", event(2));
  held.set("sluice.session", JSON.stringify({ id: "bbbbbbbbbbbbbbbbbbbb", last: Date.now() - 31 * 60_000 }));
  c.submit("s", event(3));
  await c.flush();
  c.close();
  delete globalThis.sessionStorage;
  const ids = calls[0].body.map((e) => e.performer.session_id);
  assert.equal(ids[0], "aaaaaaaaaaaaaaaaaaaa");
  assert.equal(ids[1], "aaaaaaaaaaaaaaaaaaaa");
  assert.match(ids[2], /^[0-9a-f]{20}$/);
  assert.notEqual(ids[2], "bbbbbbbbbbbbbbbbbbbb");
});

test("a device id is kept and sent only when the integration allows it", async () => {
  const held = fakeStorage("localStorage");
  const streams = { d: { schema_title: "t", sample: { unit: "device", rate: 1 } } };
  let allowed = false;
  const c = create({
    edge: EDGE,
    streamConfig: streams,
    flushIntervalMs: 3_600_000,
    integration: { allowDeviceId: () => allowed },
  });
  c.submit("d", event(1));
  allowed = true;
  c.submit("d", event(2));
  c.submit("d", event(3));
  await c.flush();
  c.close();
  delete globalThis.localStorage;
  const [a, b, d] = calls[0].body;
  assert.equal(a.agent?.app_install_id, undefined);
  assert.match(b.agent.app_install_id, /^[0-9a-f]{20}$/);
  assert.equal(d.agent.app_install_id, b.agent.app_install_id);
  assert.equal(held.get("sluice.device"), b.agent.app_install_id);
});
