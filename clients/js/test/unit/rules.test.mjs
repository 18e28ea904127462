// The stream config's rules against the vectors the Rust core is tested on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { isOpen, lookup, positionInSample, unitPosition, verdict } from "../../dist/index.js";

const vectors = JSON.parse(readFileSync(new URL("../../../vectors.json", import.meta.url), "utf8"));

test("sampling decides every shared vector as the core does", () => {
  assert.ok(vectors.sampling.length >= 40);
  for (const { id, rate, in_sample } of vectors.sampling) {
    const p = unitPosition(id);
    assert.equal(p === null ? null : positionInSample(p, rate), in_sample, `${id} at ${rate}`);
  }
});

test("producing windows decide every shared vector as the core does", () => {
  assert.ok(vectors.windows.length >= 20);
  for (const c of vectors.windows) {
    assert.equal(isOpen(c.windows, Date.parse(c.at)), c.open, JSON.stringify(c));
  }
});

test("a stream is found by name, else by the first pattern that matches", () => {
  const streams = {
    "app.click": { schema_title: "exact" },
    "/^app\\./": { schema_title: "app pattern" },
    "/click/": { schema_title: "click pattern" },
  };
  assert.equal(lookup(streams, "app.click").schema_title, "exact");
  assert.equal(lookup(streams, "app.view").schema_title, "app pattern");
  assert.equal(lookup(streams, "web.click").schema_title, "click pattern");
  assert.equal(lookup(streams, "web.view"), undefined);
  assert.equal(lookup({ "/(/": {} }, "x"), undefined);
});

test("the verdict names why an event is not sent", () => {
  const t = Date.parse("2026-11-27T10:00:00Z");
  const ids = { session: "7fffffff00", pageview: "80000000aa" };
  const unit = (u) => ids[u];
  assert.equal(verdict(undefined, t, unit), "unknown_stream");
  assert.equal(verdict({ enabled: false }, t, unit), "disabled");
  assert.equal(verdict({ windows: [{ hours: "12:00-13:00" }] }, t, unit), "closed");
  assert.equal(verdict({ windows: [{ hours: "09:00-13:00" }] }, t, unit), null);
  assert.equal(verdict({ sample: { unit: "session", rate: 0.5 } }, t, unit), null);
  assert.equal(verdict({ sample: { unit: "pageview", rate: 0.5 } }, t, unit), "out_of_sample");
  assert.equal(verdict({ sample: { unit: "session", rate: 0 } }, t, unit), "out_of_sample");
  // Without the unit's id the edge samples by the event's id.
  const byEvent = (u) => (u === "event" ? "00000001-0000-4000-8000-000000000000" : undefined);
  assert.equal(verdict({ sample: { unit: "device", rate: 0.1 } }, t, byEvent), null);
});
