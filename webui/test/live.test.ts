// The live view's pure parts: the bounded log, filters, segments, drop statistics.
import assert from "node:assert/strict";
import { test } from "node:test";
import { cidrContains, parseAddress, parseCidr } from "../src/live/address_match";
import { BoundedLog } from "../src/live/bounded_log";
import { NO_CRITERIA, makeDropPredicate, searchableText } from "../src/live/drop_filter";
import { BlockedTraffic, PerSecondSeries, isBlockedDrop } from "../src/live/drop_statistics";
import { SegmentIndex } from "../src/live/segment_index";
import type { DropEvent } from "../src/types";

const drop = (overrides: Partial<DropEvent>): DropEvent => ({ id: 1, type: "drop", enforcer: "hv1", enforcer_seq: 1, received_at: "2026-11-24T00:00:00.000Z", ...overrides });

test("bounded log keeps the newest items and trims the oldest", () => {
  const log = new BoundedLog<number>(3);
  for (let i = 1; i <= 10; i++) log.push(i);
  assert.equal(log.length, 3);
  assert.equal(log.newest(0), 10);
  assert.equal(log.at(0), 8);
  log.dropOldestWhile((n) => n < 10);
  assert.equal(log.length, 1);
  assert.equal(log.newest(0), 10);
});

test("drop filter: every criterion narrows, search matches all terms", () => {
  const event = drop({ workload: "vdi-002", src: "10.1.0.2", dst: "10.1.0.3", dport: 445, proto_name: "tcp", reason: "deny" });
  const text = () => searchableText(event);
  const matches = (criteria: Partial<typeof NO_CRITERIA>) => makeDropPredicate({ ...NO_CRITERIA, ...criteria }, undefined)(event, text);
  assert.ok(matches({}));
  assert.ok(matches({ workload: "vdi-002", port: "445", address: "10.1.0.3", reason: "deny", search: "TCP 445" }));
  assert.ok(!matches({ workload: "vdi-003" }));
  assert.ok(!matches({ port: "22" }));
  assert.ok(!matches({ reason: "decoy" }));
  assert.ok(!matches({ search: "udp" }));
  assert.ok(!matches({ segment: "vdi" }), "a segment filter without the segment index matches nothing");
});

test("segments: labels, workload lists and cidrs, IPv4 and IPv6", () => {
  const index = new SegmentIndex(
    [
      { name: "vdi", selector: { labels: { role: ["vdi", "desktop"] } } },
      { name: "decoys", selector: { cidrs: ["10.0.0.64/28", "fd00:0:0:1::60/124"] } },
      { name: "servers", selector: { workloads: ["fs-01"] } },
    ],
    [
      { id: "vdi-001", addresses: ["10.1.0.1"], labels: { role: "vdi" } },
      { id: "fs-01", addresses: ["10.0.0.30"], labels: { role: "file-server" } },
    ],
  );
  assert.ok(index.touches("vdi", drop({ workload: "vdi-001" })));
  assert.ok(index.touches("vdi", drop({ src: "10.9.9.9", dst: "10.1.0.1" })));
  assert.ok(index.touches("servers", drop({ workload: "vdi-001", dst: "10.0.0.30" })));
  assert.ok(index.touches("decoys", drop({ dst: "10.0.0.66" })));
  assert.ok(index.touches("decoys", drop({ dst: "fd00:0:0:1::66" })));
  assert.ok(!index.touches("decoys", drop({ dst: "10.0.0.80" })));
  assert.deepEqual(index.segmentsOf("vdi-001"), ["vdi"]);
});

test("addresses and cidrs", () => {
  assert.ok(cidrContains(parseCidr("10.0.0.0/8")!, parseAddress("10.200.1.1")!));
  assert.ok(!cidrContains(parseCidr("10.0.0.0/8")!, parseAddress("11.0.0.1")!));
  assert.ok(cidrContains(parseCidr("::/0")!, parseAddress("fd00::1")!));
  assert.ok(!cidrContains(parseCidr("10.0.0.0/8")!, parseAddress("fd00::1")!));
  assert.equal(parseAddress("10.0.0.256"), undefined);
  assert.equal(parseAddress("1::2::3"), undefined);
});

test("drop statistics: per-second series, top blocked, allowed flows and monitor drops left out", () => {
  const now = 1_000_000_000;
  const series = new PerSecondSeries(60);
  series.add(now - 2500, 3, now);
  series.add(now - 2400, 2, now);
  series.add(now + 60_000, 1, now);  // clock skew: counted now
  const { times, values } = series.snapshot(now);
  assert.equal(times.length, 60);
  assert.equal(values[values.length - 4], 5);  // 2.5 s and 2.4 s ago: the second 3 s before now
  assert.equal(values[values.length - 1], 1);
  assert.ok(isBlockedDrop(drop({ reason: "deny" })));
  assert.ok(!isBlockedDrop(drop({ type: "allowed_flow", reason: "allow" })));
  assert.ok(!isBlockedDrop(drop({ reason: "deny", would_drop: true })));
  const blocked = new BlockedTraffic();
  blocked.add(drop({ workload: "vdi-002", src: "10.1.0.2", dst: "10.1.0.3", dport: 445, proto_name: "tcp", count: 4 }));
  blocked.add(drop({ src: "10.9.9.9", dst: "10.1.0.3", dport: 22, proto_name: "tcp" }));
  assert.deepEqual(blocked.sources.top(1), [{ key: "vdi-002", count: 4 }]);
  assert.deepEqual(blocked.destinations.top(1), [{ key: "10.1.0.3", count: 5 }]);
  assert.deepEqual(blocked.ports.top(2).map((p) => p.key), ["tcp/445", "tcp/22"]);
});
