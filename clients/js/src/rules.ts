// The stream config's rules, decided exactly as the Rust core decides them
// (shared/src/sampling.rs, shared/src/windows.rs, shared/src/stream_config.rs);
// clients/vectors.json holds the cases both are tested on.

/** `sample: {unit, rate}`. */
export interface Sample {
  unit: string;
  rate: number;
}

/** One producing window; every bound it sets must hold. */
export interface ProducingWindow {
  /** First instant inside the window (RFC 3339). */
  start?: string;
  /** First instant after the window (RFC 3339). */
  end?: string;
  /** Weekdays (UTC): `mon` … `sun`. */
  days?: string[];
  /** UTC time of day, `HH:MM-HH:MM`, end exclusive; wraps past midnight when end < start. */
  hours?: string;
}

/** A stream's settings as the edge's `/v1/streams` gives them to clients. */
export interface StreamSettings {
  schema_title?: string;
  destination_event_service?: string;
  sample?: Sample;
  enabled?: boolean;
  windows?: ProducingWindow[];
  producers?: {
    metrics_platform_client?: { provide_values?: string[] };
    [producer: string]: unknown;
  };
  [key: string]: unknown;
}

/** Streams by name or `/regex/`, as in EventStreamConfig. */
export type StreamConfigs = Record<string, StreamSettings>;

/** Where each sampling unit's id is in an event, as the core's defaults have it. */
export const UNIT_FIELDS: Record<string, [string, string]> = {
  pageview: ["performer", "pageview_id"],
  session: ["performer", "session_id"],
  device: ["agent", "app_install_id"],
  event: ["meta", "id"],
};

/** Wikimedia's formula: the first 8 hex digits of the id over 0xFFFFFFFF; null without them. */
export function unitPosition(id: string): number | null {
  const head = id.slice(0, 8);
  return /^[0-9a-fA-F]{8}$/.test(head) ? parseInt(head, 16) / 0xffffffff : null;
}

/** Whether a unit at `position` is in a sample of `rate` (a rate of 1 keeps everything). */
export function positionInSample(position: number, rate: number): boolean {
  return rate >= 1 || position < rate;
}

/** The settings of stream `name`: an exact key, else the first `/regex/` key that matches. */
export function lookup(streams: StreamConfigs, name: string): StreamSettings | undefined {
  if (Object.prototype.hasOwnProperty.call(streams, name)) return streams[name];
  for (const key of Object.keys(streams)) {
    if (key.length > 2 && key.startsWith("/") && key.endsWith("/")) {
      try {
        if (new RegExp(key.slice(1, -1)).test(name)) return streams[key];
      } catch {
        // A pattern this browser cannot compile matches nothing here.
      }
    }
  }
  return undefined;
}

const DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/** Minutes into the day of `HH:MM`, or NaN. */
function minuteOf(text: string): number {
  const m = /^\s*(\d+):(\d+)\s*$/.exec(text);
  if (!m) return NaN;
  const h = Number(m[1]);
  const min = Number(m[2]);
  return h <= 24 && min < 60 && h * 60 + min <= 1440 ? (h * 60 + min) % 1440 : NaN;
}

/** Whether instant `t` (ms since the epoch) lies inside window `w`. */
export function windowContains(w: ProducingWindow, t: number): boolean {
  if (w.start !== undefined && t < Date.parse(w.start)) return false;
  if (w.end !== undefined && t >= Date.parse(w.end)) return false;
  const at = new Date(t);
  if (w.days && !w.days.some((d) => d.toLowerCase().slice(0, 3) === DAYS[at.getUTCDay()])) {
    return false;
  }
  if (w.hours !== undefined) {
    const [a = "", b = ""] = w.hours.split("-");
    const from = minuteOf(a);
    const to = minuteOf(b);
    const minute = at.getUTCHours() * 60 + at.getUTCMinutes();
    if (from < to && !(minute >= from && minute < to)) return false;
    if (from > to && !(minute >= from || minute < to)) return false;
  }
  return true;
}

/** Whether a stream with `windows` takes events at `t` (always, when there are none). */
export function isOpen(windows: ProducingWindow[] | undefined, t: number): boolean {
  return !windows || windows.length === 0 || windows.some((w) => windowContains(w, t));
}

/** Why an event of a stream is not sent, or null when it is. */
export type DropReason = "unknown_stream" | "disabled" | "closed" | "out_of_sample";

/**
 * The client's verdict for an event of stream `name` at `t`, given the
 * sampling units' ids: null to send, or why not.
 */
export function verdict(
  settings: StreamSettings | undefined,
  t: number,
  unitId: (unit: string) => string | undefined,
): DropReason | null {
  if (!settings) return "unknown_stream";
  if (settings.enabled === false) return "disabled";
  if (!isOpen(settings.windows, t)) return "closed";
  if (settings.sample) {
    const position = unitPosition(unitId(settings.sample.unit) ?? "");
    // Without a position the edge decides by the event's id, which the
    // client makes; sampling by `event` lands here too.
    const p = position ?? unitPosition(unitId("event") ?? "") ?? 0;
    if (!positionInSample(p, settings.sample.rate)) return "out_of_sample";
  }
  return null;
}
