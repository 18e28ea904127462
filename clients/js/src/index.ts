// @sluice/client: a browser producer that obeys the stream config. The
// surface is the Metrics Platform JS client's (submit, submitInteraction,
// submitClick, isStreamInSample, getStreamConfig), so its instrumentation
// runs unchanged.

import {
  type DropReason,
  type StreamConfigs,
  type StreamSettings,
  UNIT_FIELDS,
  lookup,
  verdict,
} from "./rules.js";
import { OfflineStore } from "./store.js";

export * from "./rules.js";

/** An event as submitted and sent: JSON with `$schema`, `meta`, `dt` and the stream's fields. */
export type EventData = Record<string, unknown>;

/** The page's context, of which the client copies what a stream's `provide_values` asks. */
export interface ContextAttributes {
  agent?: Record<string, unknown>;
  page?: Record<string, unknown>;
  mediawiki?: Record<string, unknown>;
  performer?: Record<string, unknown>;
  [group: string]: Record<string, unknown> | undefined;
}

/** How the client reaches the page it runs in. */
export interface Integration {
  /** The page's context values (agent, page, performer…). */
  getContextAttributes?(): ContextAttributes;
  /** Whether a device id may be kept and sent (`agent.app_install_id`); no when absent. */
  allowDeviceId?(): boolean;
}

/** Options of {@link create}; every one but `edge` is optional. */
export interface Options {
  /** The edge's base URL, e.g. `http://127.0.0.1:8420`. */
  edge: string;
  /** The stream config, given inline instead of fetched from the edge's `/v1/streams`. */
  streamConfig?: StreamConfigs;
  integration?: Integration;
  /** How often queued events are sent: 5,000 ms by default. */
  flushIntervalMs?: number;
  /** How often the config is fetched again: 300,000 ms (five minutes) by default. */
  configRefreshMs?: number;
  /** Events held at most; the oldest go (counted as `queue_full`) beyond it. 1,000 by default. */
  maxQueue?: number;
  /** Events per request at most: 100 by default. */
  maxBatch?: number;
  /** Milliseconds a request may take before it is given up and its events sent again (default 10 s). */
  requestTimeoutMs?: number;
  /** Warn on the console about every event not sent. */
  debug?: boolean;
}

/** What the client has done, by outcome. */
export interface Stats {
  /** Events the edge acknowledged (201, 202, or accepted in a 207). */
  sent: number;
  /** Events sent with a beacon (or keepalive fetch) as the page went away. */
  beaconed: number;
  /** Requests sent again after a refusal (429, 503) or a network failure. */
  retries: number;
  /** Events not sent, by reason. */
  dropped: Record<string, number>;
}

/** A client, as `create` returns it. */
export interface Client {
  submit(streamName: string, eventData: EventData): void;
  submitInteraction(
    streamName: string,
    schemaId: string,
    action: string,
    interactionData?: EventData,
  ): void;
  submitClick(streamName: string, interactionData?: EventData): void;
  isStreamInSample(streamName: string): boolean;
  getStreamConfig(streamName: string): StreamSettings | null;
  /** Sends what is queued now; resolves once the edge has answered (or the send failed). */
  flush(): Promise<void>;
  /** Counts of what happened to the events. */
  stats(): Stats;
  /** Stops the timers and listeners. */
  close(): void;
}

/** The schema `submitClick` uses, and `submitInteraction`'s fields follow. */
export const INTERACTION_SCHEMA = "/sluice/product_metrics/web/base/1.0.0";

const SESSION_IDLE_MS = 30 * 60 * 1000;
const BEACON_BYTES = 60_000;

function hex(bytes: number): string {
  const a = new Uint8Array(bytes);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

function uuid(): string {
  const h = hex(16).split("");
  h[12] = "4";
  h[16] = "89ab"[parseInt(h[16] ?? "0", 16) & 3] ?? "8";
  const s = h.join("");
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

function storage(kind: "localStorage" | "sessionStorage"): Storage | undefined {
  try {
    return globalThis[kind];
  } catch {
    return undefined;
  }
}

/** The session id: kept in sessionStorage, a new one after 30 idle minutes. */
function sessionId(now: number): string {
  const s = storage("sessionStorage");
  let held: { id?: string; last?: number } = {};
  try {
    held = JSON.parse(s?.getItem("sluice.session") ?? "{}");
  } catch {
    held = {};
  }
  const id = held.id && now - (held.last ?? 0) < SESSION_IDLE_MS ? held.id : hex(10);
  s?.setItem("sluice.session", JSON.stringify({ id, last: now }));
  return id;
}

function deviceId(): string {
  const l = storage("localStorage");
  let id = l?.getItem("sluice.device");
  if (!id) {
    id = hex(10);
    l?.setItem("sluice.device", id);
  }
  return id;
}

/** A queued event and the time it was submitted, before or after the config came. */
interface Pending {
  stream: string;
  data: EventData;
  at: number;
}

/** Whether the browser says it is offline (unknown counts as online). */
const offline = (): boolean => globalThis.navigator?.onLine === false;

/** Creates a client sending to `options.edge`. */
export function create(options: Options): Client {
  const edge = options.edge.replace(/\/+$/, "");
  const integration = options.integration ?? {};
  const flushMs = options.flushIntervalMs ?? 5000;
  const refreshMs = options.configRefreshMs ?? 300_000;
  const maxQueue = options.maxQueue ?? 1000;
  const maxBatch = options.maxBatch ?? 100;
  const requestTimeoutMs = options.requestTimeoutMs ?? 10_000;
  const pageviewId = hex(10);
  const configKey = `sluice.streams:${edge}`;
  const stats: Stats = { sent: 0, beaconed: 0, retries: 0, dropped: {} };
  const store = new OfflineStore();

  let streams: StreamConfigs | undefined = options.streamConfig;
  let etag: string | undefined;
  let waiting: Pending[] = [];
  let queue: EventData[] = [];
  // The batch whose request is under way: a page that goes away before its answer sends
  // it again by beacon (the aggregator drops the copy that arrives twice by its meta.id).
  let inflight: EventData[] = [];
  let sending: Promise<void> | undefined;
  let retryAt = 0;
  let backoff = 0;
  let refreshTimer: ReturnType<typeof setTimeout> | undefined;

  // Writes to IndexedDB, one after another: a flush waits for them, so an event made offline
  // is stored (not still on its way) once flush() resolves.
  let storing: Promise<void> = Promise.resolve();
  const keep = (events: EventData[]) => {
    storing = storing.then(() => store.put(events));
  };

  const drop = (reason: DropReason | string, n: number, detail?: string) => {
    stats.dropped[reason] = (stats.dropped[reason] ?? 0) + n;
    if (options.debug) console.warn(`sluice: ${n} event(s) not sent: ${reason}${detail ? `: ${detail}` : ""}`);
  };

  const unitId = (unit: string, data?: EventData): string | undefined => {
    if (unit === "pageview") return pageviewId;
    if (unit === "session") return sessionId(Date.now());
    if (unit === "device") return integration.allowDeviceId?.() ? deviceId() : undefined;
    if (unit === "event") return ((data?.meta as EventData | undefined)?.id as string) ?? undefined;
    return undefined;
  };

  const setPath = (event: EventData, [group, field]: [string, string], value: unknown) => {
    const o = { ...((event[group] as EventData | undefined) ?? {}) };
    if (o[field] === undefined) o[field] = value;
    event[group] = o;
  };

  /** The event as sent: meta, dt, sample, the provided context values and the sampling unit. */
  const build = (stream: string, data: EventData, settings: StreamSettings, at: number): EventData => {
    const event: EventData = { ...data };
    const meta = { ...((data.meta as EventData | undefined) ?? {}) };
    meta.stream = stream;
    meta.id ??= uuid();
    if (globalThis.location?.hostname) meta.domain ??= location.hostname;
    event.meta = meta;
    event.dt ??= new Date(at).toISOString();
    const wanted = settings.producers?.metrics_platform_client?.provide_values ?? [];
    if (wanted.length > 0) {
      const context = integration.getContextAttributes?.() ?? {};
      for (const name of wanted) {
        const cut = name.indexOf("_");
        const group = name.slice(0, cut);
        const field = name.slice(cut + 1);
        const value = context[group]?.[field];
        if (cut > 0 && value !== undefined) setPath(event, [group, field], value);
        else if (name === "performer_session_id") setPath(event, ["performer", "session_id"], unitId("session"));
        else if (name === "performer_pageview_id") setPath(event, ["performer", "pageview_id"], pageviewId);
      }
    }
    const sample = settings.sample;
    if (sample) {
      event.sample = { unit: sample.unit, rate: sample.rate };
      const field = UNIT_FIELDS[sample.unit];
      const id = unitId(sample.unit, event);
      if (field && id !== undefined) setPath(event, field, id);
    }
    return event;
  };

  /** Applies the config to a submitted event: queued to send, or dropped with a reason. */
  const admit = ({ stream, data, at }: Pending) => {
    if (!streams) {
      waiting.push({ stream, data, at });
      if (waiting.length > maxQueue) drop("queue_full", waiting.splice(0, 1).length);
      return;
    }
    const settings = lookup(streams, stream);
    const meta = { ...((data.meta as EventData | undefined) ?? {}), id: (data.meta as EventData | undefined)?.id ?? uuid() };
    const why = verdict(settings, at, (unit) => unitId(unit, { meta }));
    if (why || !settings) {
      drop(why ?? "unknown_stream", 1, stream);
      return;
    }
    if (typeof data.$schema !== "string") {
      drop("no_schema", 1, stream);
      return;
    }
    const event = build(stream, { ...data, meta }, settings, at);
    if (offline()) {
      keep([event]);
      return;
    }
    queue.push(event);
    if (queue.length > maxQueue) drop("queue_full", queue.splice(0, queue.length - maxQueue).length);
  };

  const useConfig = (config: StreamConfigs) => {
    streams = config;
    const held = waiting;
    waiting = [];
    held.forEach(admit);
  };

  const fetchConfig = async () => {
    try {
      const r = await fetch(`${edge}/v1/streams`, {
        headers: etag ? { "If-None-Match": etag } : {},
        cache: "no-cache",
      });
      if (r.status === 200) {
        const body = (await r.json()) as { streams?: StreamConfigs };
        etag = r.headers.get("ETag") ?? undefined;
        const config = body.streams ?? {};
        storage("localStorage")?.setItem(configKey, JSON.stringify({ etag, streams: config }));
        useConfig(config);
      }
    } catch (e) {
      if (options.debug) console.warn("sluice: the stream config could not be fetched", e);
    } finally {
      refreshTimer = setTimeout(fetchConfig, refreshMs);
    }
  };

  if (!streams) {
    try {
      const kept = JSON.parse(storage("localStorage")?.getItem(configKey) ?? "null") as {
        etag?: string;
        streams?: StreamConfigs;
      } | null;
      if (kept?.streams) {
        etag = kept.etag;
        useConfig(kept.streams);
      }
    } catch {
      // A damaged copy is fetched again.
    }
    void fetchConfig();
  }

  /** Answers one request's events: what to send again, after how long. */
  const answer = async (r: Response, batch: EventData[]): Promise<EventData[]> => {
    if (r.status === 201 || r.status === 202) {
      stats.sent += batch.length;
      return [];
    }
    if (r.status === 207 || r.status === 400) {
      let body: { invalid?: { event?: EventData }[]; error?: { event?: EventData }[] } = {};
      try {
        body = await r.json();
      } catch {
        body = {};
      }
      const ids = (items?: { event?: EventData }[]) =>
        new Set((Array.isArray(items) ? items : []).map((i) => (i?.event?.meta as EventData | undefined)?.id));
      const invalid = ids(body.invalid);
      const failed = ids(body.error);
      const again = batch.filter((e) => failed.has((e.meta as EventData).id));
      const refused = batch.filter((e) => invalid.has((e.meta as EventData).id));
      if (refused.length) drop("invalid", refused.length);
      if (r.status === 400 && refused.length === 0) drop("invalid", batch.length);
      else stats.sent += batch.length - again.length - refused.length;
      if (r.status === 400) return [];
      if (again.length) waitAfter(r);
      return again;
    }
    if (r.status < 500 && r.status !== 429) {
      drop(`http_${r.status}`, batch.length);
      return [];
    }
    waitAfter(r);
    return batch;
  };

  /** The next send waits for the answer's `Retry-After`, else for a backoff. */
  const waitAfter = (r: Response) => {
    const after = Number(r.headers.get("Retry-After"));
    retryAt = Date.now() + (after > 0 ? after * 1000 : delay());
  };

  const delay = () => {
    backoff = Math.min(backoff ? backoff * 2 : 500, 60_000);
    return backoff * (0.5 + Math.random() / 2);
  };

  /** Sends the queue, a batch at a time, until it is empty or the edge says wait. */
  const send = async () => {
    // Offline, nothing is tried: what IndexedDB keeps stays there (taken out and put back,
    // it would live only in this page's memory in between), and the queue joins it.
    if (offline()) {
      if (queue.length) keep(queue.splice(0));
      await storing;
      return;
    }
    await storing;
    const kept = await store.take();
    if (kept.length) queue.unshift(...kept);
    while (queue.length && Date.now() >= retryAt) {
      const batch = queue.splice(0, maxBatch);
      inflight = batch;
      let again: EventData[];
      try {
        const r = await fetch(`${edge}/v1/events`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(batch),
          credentials: "include",
          // A request that hangs (a network that came and went under it) would hold the
          // queue for good: it is given up and its events sent again (a repeat is dropped
          // by the aggregator's dedupe of meta.id).
          signal: typeof AbortSignal.timeout === "function" ? AbortSignal.timeout(requestTimeoutMs) : undefined,
        });
        again = await answer(r, batch);
        if (again.length === 0) backoff = 0;
      } catch {
        again = batch;
        if (offline()) {
          keep(again);
          await storing;
          again = [];
        } else {
          retryAt = Date.now() + delay();
        }
      }
      inflight = [];
      if (again.length) {
        stats.retries += 1;
        queue.unshift(...again);
        break;
      }
    }
    if (queue.length && retryAt > Date.now()) {
      setTimeout(() => void flush(), retryAt - Date.now());
    }
  };

  const flush = (): Promise<void> => {
    sending ??= send().finally(() => {
      sending = undefined;
    });
    return sending;
  };

  /** The page is going away: everything queued leaves now, with beacons. */
  const leave = () => {
    queue.unshift(...inflight.splice(0));
    if (offline()) {
      // No beacon can leave: the events wait in IndexedDB for the next page.
      keep(queue.splice(0));
      return;
    }
    while (queue.length) {
      let n = Math.min(queue.length, maxBatch);
      let body = JSON.stringify(queue.slice(0, n));
      while (body.length > BEACON_BYTES && n > 1) {
        n = Math.ceil(n / 2);
        body = JSON.stringify(queue.slice(0, n));
      }
      const url = `${edge}/v1/events?hasty=true`;
      const beaconed =
        typeof navigator.sendBeacon === "function" &&
        navigator.sendBeacon(url, new Blob([body], { type: "application/json" }));
      if (!beaconed) {
        void fetch(url, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body,
          keepalive: true,
          credentials: "include",
        }).catch(() => undefined);
      }
      stats.beaconed += n;
      queue.splice(0, n);
    }
  };

  const onHide = () => {
    if (document.visibilityState === "hidden") leave();
  };
  const onOnline = () => void flush();
  const timer = setInterval(() => void flush(), flushMs);
  if (typeof document !== "undefined") document.addEventListener("visibilitychange", onHide);
  if (typeof addEventListener === "function") {
    addEventListener("pagehide", leave);
    addEventListener("online", onOnline);
  }

  const client: Client = {
    submit(streamName, eventData) {
      admit({ stream: streamName, data: eventData, at: Date.now() });
    },
    submitInteraction(streamName, schemaId, action, interactionData = {}) {
      client.submit(streamName, { ...interactionData, $schema: schemaId, action });
    },
    submitClick(streamName, interactionData = {}) {
      client.submitInteraction(streamName, INTERACTION_SCHEMA, "click", interactionData);
    },
    isStreamInSample(streamName) {
      if (!streams) return false;
      return verdict(lookup(streams, streamName), Date.now(), (u) => unitId(u)) === null;
    },
    getStreamConfig(streamName) {
      return (streams && lookup(streams, streamName)) ?? null;
    },
    flush,
    stats: () => ({ ...stats, dropped: { ...stats.dropped } }),
    close() {
      clearInterval(timer);
      clearTimeout(refreshTimer);
      if (typeof document !== "undefined") document.removeEventListener("visibilitychange", onHide);
      if (typeof removeEventListener === "function") {
        removeEventListener("pagehide", leave);
        removeEventListener("online", onOnline);
      }
    },
  };
  return client;
}
