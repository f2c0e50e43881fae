// The drop log's history mode and the clock flag: the pure parts.
import assert from "node:assert/strict";
import { test } from "node:test";
import { clockFlag, formatOffset } from "../src/live/clock_flag";
import { eventOwnTimeMs, fromLocalInput, historyPageQuery, newestFirst, parseRouteTime, quickRange, rangeProblem, toLocalInput } from "../src/live/history_query";
import type { DropEvent } from "../src/types";

const drop = (overrides: Partial<DropEvent>): DropEvent => ({ id: 1, type: "drop", enforcer: "hv1", enforcer_seq: 1, received_at: "2026-11-24T00:00:00.000Z", ...overrides });
const NONE = { workload: "", address: "", port: "", reason: "" };

test("history: quick ranges end now and reach back an hour, a day, a week", () => {
  const now = 1_800_000_000_000;
  assert.deepEqual(quickRange("1h", now), { fromMs: now - 3_600_000, toMs: now });
  assert.deepEqual(quickRange("24h", now), { fromMs: now - 86_400_000, toMs: now });
  assert.deepEqual(quickRange("7d", now), { fromMs: now - 604_800_000, toMs: now });
  assert.equal(quickRange("1y", now), undefined);
});

test("history: a page query pages forward and sends only the filters that are set", () => {
  const range = { fromMs: 1000.7, toMs: 5000 };
  const first = new URLSearchParams(historyPageQuery(range, { ...NONE, workload: " vdi-101 " }, 500).slice(1));
  assert.equal(first.get("from"), "1000");
  assert.equal(first.get("to"), "5000");
  assert.equal(first.get("workload"), "vdi-101");
  assert.equal(first.get("order"), "asc");
  assert.equal(first.get("limit"), "500");
  assert.ok(!first.has("address") && !first.has("port") && !first.has("reason") && !first.has("after_id"));
  const next = new URLSearchParams(historyPageQuery(range, { ...NONE, address: "10.0.0.30", port: "445", reason: "deny" }, 500, 42).slice(1));
  assert.equal(next.get("after_id"), "42");
  assert.equal(next.get("address"), "10.0.0.30");
  assert.equal(next.get("port"), "445");
  assert.equal(next.get("reason"), "deny");
});

test("history: a range must have both ends, the start first", () => {
  assert.match(rangeProblem({ toMs: 5 }) ?? "", /From/);
  assert.match(rangeProblem({ fromMs: 5 }) ?? "", /To/);
  assert.match(rangeProblem({ fromMs: 5, toMs: 5 }) ?? "", /before/);
  assert.equal(rangeProblem({ fromMs: 4, toMs: 5 }), undefined);
});

test("history: rows newest first by the event's own time, then by id", () => {
  const a = drop({ id: 1, time_ns: 3_000_000_000 });
  const b = drop({ id: 2, time_ns: 1_000_000_000 });
  const c = drop({ id: 3, time_ns: 3_000_000_000 });
  assert.deepEqual([a, b, c].sort(newestFirst).map((e) => e.id), [3, 1, 2]);
  assert.equal(eventOwnTimeMs(drop({ time_ns: 1_234_567_890 })), 1234);
  assert.equal(eventOwnTimeMs(drop({ time_unix_ms: 99 })), 99);
  assert.equal(eventOwnTimeMs(drop({})), Date.parse("2026-11-24T00:00:00.000Z"));
});

test("history: datetime-local values round-trip in local time; route times take ms or ISO", () => {
  const ms = new Date(2026, 10, 24, 13, 5).getTime();
  assert.equal(toLocalInput(ms), "2026-11-24T13:05");
  assert.equal(fromLocalInput("2026-11-24T13:05"), ms);
  assert.equal(fromLocalInput("2026-11-24T13:05:30"), ms + 30_000);
  assert.equal(fromLocalInput("yesterday"), undefined);
  assert.equal(parseRouteTime("1700000000000"), 1_700_000_000_000);
  assert.equal(parseRouteTime("2026-11-24T00:00:00Z"), Date.parse("2026-11-24T00:00:00Z"));
  assert.equal(parseRouteTime("soon"), undefined);
  assert.equal(parseRouteTime(null), undefined);
});

test("clock flag: only suspect events, with the signed offset and what it means", () => {
  assert.equal(clockFlag(drop({ clock_offset_ms: 300, clock_suspect: false })), undefined);
  assert.equal(clockFlag(drop({})), undefined);
  const ahead = clockFlag(drop({ clock_offset_ms: 7_200_000, clock_suspect: true }));
  assert.equal(ahead?.label, "clock +2 h");
  assert.match(ahead?.tooltip ?? "", /off by \+7200000 ms \(ahead of the controller's\)/);
  assert.match(ahead?.tooltip ?? "", /may not order correctly against other devices' logs/);
  const behind = clockFlag(drop({ clock_offset_ms: -1500, clock_suspect: true }));
  assert.equal(behind?.label, "clock −1.5 s");
  assert.match(behind?.tooltip ?? "", /-1500 ms \(behind/);
  assert.equal(formatOffset(45_000), "+45 s");
  assert.equal(formatOffset(-600_000), "−10 min");
  assert.equal(formatOffset(2 * 3_600_000 + 5 * 60_000), "+2 h 5 min");
  assert.equal(formatOffset(3 * 86_400_000), "+3 d");
});
