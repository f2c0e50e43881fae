// Counting drops for the overview: per second over a sliding window, and the top blocked
// sources, destinations and ports. Pure: values in, values out; time comes in as a parameter.
import type { DropEvent } from "../types";
import { eventTimeMs } from "../format";

export function isBlockedDrop(event: DropEvent): boolean {
  return (event.type === "drop" || event.type === "drop_summary") && event.reason !== "allow" && event.would_drop !== true;
}

export function eventCount(event: DropEvent): number {
  return typeof event.count === "number" && event.count > 0 ? event.count : 1;
}

/** Drops per second for the last `seconds` seconds. */
export class PerSecondSeries {
  private readonly counts = new Map<number, number>();

  constructor(private readonly seconds: number) {}

  add(timeMs: number, count: number, nowMs: number): void {
    const nowSecond = Math.floor(nowMs / 1000);
    let second = Math.floor(timeMs / 1000);
    if (second > nowSecond || second <= nowSecond - this.seconds) {
      second = nowSecond;  // a skewed clock must not hide the drop
    }
    this.counts.set(second, (this.counts.get(second) ?? 0) + count);
  }

  addEvent(event: DropEvent, nowMs: number): void {
    this.add(eventTimeMs(event), eventCount(event), nowMs);
  }

  /** Times (s) and values, one per second, oldest first, ending at the current second. */
  snapshot(nowMs: number): { times: number[]; values: number[] } {
    const nowSecond = Math.floor(nowMs / 1000);
    const first = nowSecond - this.seconds + 1;
    for (const second of this.counts.keys()) {
      if (second < first) {
        this.counts.delete(second);
      }
    }
    const times: number[] = [];
    const values: number[] = [];
    for (let s = first; s <= nowSecond; s++) {
      times.push(s);
      values.push(this.counts.get(s) ?? 0);
    }
    return { times, values };
  }

  /** The average over the last `window` complete seconds. */
  recentRate(nowMs: number, window = 5): number {
    const nowSecond = Math.floor(nowMs / 1000);
    let sum = 0;
    for (let s = nowSecond - window; s < nowSecond; s++) {
      sum += this.counts.get(s) ?? 0;
    }
    return sum / window;
  }
}

/** How often each key was seen; bounded so a storm of distinct keys cannot grow it forever. */
export class TopCounter {
  private readonly counts = new Map<string, number>();

  constructor(private readonly maxKeys = 5000) {}

  add(key: string | undefined, count: number): void {
    if (!key) {
      return;
    }
    this.counts.set(key, (this.counts.get(key) ?? 0) + count);
    if (this.counts.size > this.maxKeys) {
      this.prune();
    }
  }

  top(n: number): { key: string; count: number }[] {
    return [...this.counts.entries()]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, n)
      .map(([key, count]) => ({ key, count }));
  }

  private prune(): void {
    const kept = this.top(Math.floor(this.maxKeys / 2));
    this.counts.clear();
    for (const { key, count } of kept) {
      this.counts.set(key, count);
    }
  }
}

export class BlockedTraffic {
  readonly sources = new TopCounter();
  readonly destinations = new TopCounter();
  readonly ports = new TopCounter();

  add(event: DropEvent): void {
    const n = eventCount(event);
    this.sources.add(event.workload || event.src, n);
    this.destinations.add(event.dst, n);
    if (event.dport !== undefined) {
      this.ports.add(`${event.proto_name ?? "?"}/${event.dport}`, n);
    } else if (event.proto_name) {
      this.ports.add(event.proto_name, n);
    }
  }
}
