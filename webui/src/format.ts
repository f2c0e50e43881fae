// Formatting of times, counts and durations for people.

export function formatTime(iso: string | null | undefined): string {
  if (!iso) {
    return "–";
  }
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) {
    return iso;
  }
  return date.toLocaleString(undefined, { year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

// Formatters are made once: toLocale*String with options builds a new one on every call,
// which the live view (thousands of rows a second) cannot afford.
const clockFormat = new Intl.DateTimeFormat(undefined, { hour12: false, hour: "2-digit", minute: "2-digit", second: "2-digit" });
const countFormat = new Intl.NumberFormat("en-US");

export function formatClock(ms: number): string {
  return clockFormat.format(ms);
}

export function formatAge(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) {
    return "never";
  }
  const ms = now - new Date(iso).getTime();
  if (!Number.isFinite(ms)) {
    return iso;
  }
  return formatDuration(Math.max(0, ms)) + " ago";
}

export function formatDuration(ms: number): string {
  const seconds = Math.round(ms / 1000);
  if (seconds < 60) {
    return `${seconds} s`;
  }
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) {
    return `${minutes} min`;
  }
  const hours = Math.floor(minutes / 60);
  if (hours < 48) {
    return `${hours} h ${minutes % 60} min`;
  }
  return `${Math.floor(hours / 24)} d`;
}

export function formatCount(n: number): string {
  return countFormat.format(n);
}

export function eventTimeMs(event: { time_unix_ms?: number; received_at?: string }): number {
  if (typeof event.time_unix_ms === "number") {
    return event.time_unix_ms;
  }
  return event.received_at ? new Date(event.received_at).getTime() : Date.now();
}
