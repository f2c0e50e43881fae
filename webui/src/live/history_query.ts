// The drop log's history mode, the pure part: a time range (a quick choice or from/to),
// the /api/v1/events query of one page, and the order rows are shown in. The API filters on
// the event's own time (time_ns: from inclusive, to exclusive) and pages forward by id
// (order=asc, after_id = the previous answer's next_after_id).
import type { DropEvent } from "../types";

export interface TimeRange {
  fromMs: number;
  toMs: number;
}

export const QUICK_RANGES = [
  { key: "1h", label: "Last hour", ms: 3_600_000 },
  { key: "24h", label: "Last day", ms: 86_400_000 },
  { key: "7d", label: "Last week", ms: 7 * 86_400_000 },
] as const;

export type QuickRangeKey = (typeof QUICK_RANGES)[number]["key"];

export function quickRange(key: string, nowMs: number): TimeRange | undefined {
  const choice = QUICK_RANGES.find((r) => r.key === key);
  return choice ? { fromMs: nowMs - choice.ms, toMs: nowMs } : undefined;
}

/** What the server filters on in history mode (segment and search stay in the browser). */
export interface HistoryFilters {
  workload: string;
  address: string;
  port: string;
  reason: string;
}

/** "?from=…&to=…&…&order=asc&limit=…[&after_id=…]" for one page. */
export function historyPageQuery(range: TimeRange, filters: HistoryFilters, pageSize: number, afterId?: number): string {
  const search = new URLSearchParams();
  search.set("from", String(Math.floor(range.fromMs)));
  search.set("to", String(Math.floor(range.toMs)));
  for (const key of ["workload", "address", "port", "reason"] as const) {
    const value = filters[key].trim();
    if (value !== "") {
      search.set(key, value);
    }
  }
  search.set("order", "asc");
  search.set("limit", String(pageSize));
  if (afterId !== undefined) {
    search.set("after_id", String(afterId));
  }
  return "?" + search.toString();
}

/** What a problem with the range is, before asking the server; undefined when it is fine. */
export function rangeProblem(range: Partial<TimeRange>): string | undefined {
  if (range.fromMs === undefined || Number.isNaN(range.fromMs)) {
    return "Choose when the range starts (From).";
  }
  if (range.toMs === undefined || Number.isNaN(range.toMs)) {
    return "Choose when the range ends (To).";
  }
  if (range.fromMs >= range.toMs) {
    return "From must be before To.";
  }
  return undefined;
}

/** The event's own time in ms since the epoch: what the API's from/to select on. */
export function eventOwnTimeMs(event: DropEvent): number {
  if (typeof event.time_ns === "number") {
    return Math.floor(event.time_ns / 1_000_000);
  }
  if (typeof event.time_unix_ms === "number") {
    return event.time_unix_ms;
  }
  return event.received_at ? new Date(event.received_at).getTime() : 0;
}

/** Newest first, as the live table shows: by the event's time, then by id. */
export function newestFirst(a: DropEvent, b: DropEvent): number {
  return eventOwnTimeMs(b) - eventOwnTimeMs(a) || b.id - a.id;
}

// <input type="datetime-local"> holds local wall-clock time, minutes precision.
export function toLocalInput(ms: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

export function fromLocalInput(text: string): number | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2}))?$/.exec(text.trim());
  if (!m) {
    return undefined;
  }
  const [, y, mo, d, h, mi, s] = m;
  const ms = new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s ?? 0)).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}

/** A route value for from/to: ms since the epoch, or an ISO time. */
export function parseRouteTime(text: string | null): number | undefined {
  if (!text) {
    return undefined;
  }
  if (/^\d+$/.test(text)) {
    return Number(text);
  }
  const ms = new Date(text).getTime();
  return Number.isNaN(ms) ? undefined : ms;
}
