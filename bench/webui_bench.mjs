#!/usr/bin/env node
// The web UI benchmark's measuring part (bench/benchmarks/webui.sh starts the controller):
//   1. bundle size gzipped: app code apart from the chart (uPlot) and graph (Cytoscape) chunks;
//   2. time to first render against the local controller: the sign-in page, and the signed-in
//      overview with its data (median of --runs cold page loads);
//   3. frame rate of the live drop view while a fake enforcer (enrolled through the API)
//      uploads --rate events/s for --seconds seconds, frames counted with
//      requestAnimationFrame in the page.
// Prints one JSON object (the figures) on stdout; progress on stderr.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { gzipSync } from "node:zlib";

function argument(name, fallback) {
  const index = process.argv.indexOf(name);
  return index >= 0 ? process.argv[index + 1] : fallback;
}
const log = (...parts) => console.error("webui:", ...parts);

const URL_BASE = argument("--url", "http://127.0.0.1:18582");
const ADMIN = argument("--admin-token", "");
const REPO = path.resolve(argument("--source-dir", "."));
const DIST = path.join(REPO, "webui/dist");
const RATE = Number(argument("--rate", "5000"));
const SECONDS = Number(argument("--seconds", "20"));
const RUNS = Number(argument("--runs", "5"));
const BATCH = 250;
const { chromium } = createRequire(path.join(REPO, "webui/package.json"))("playwright-core");

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const round1 = (v) => Math.round(v * 10) / 10;

// --- 1. bundle size ------------------------------------------------------------------------
function bundleSizes() {
  const sizes = { app: 0, uplot: 0, cytoscape: 0, app_raw: 0, files: {} };
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const file = path.join(dir, name);
      if (statSync(file).isDirectory()) {
        walk(file);
        continue;
      }
      const raw = readFileSync(file);
      const gz = gzipSync(raw, { level: 9 }).length;
      const part = name.startsWith("lib-uplot") ? "uplot" : name.startsWith("lib-cytoscape") ? "cytoscape" : "app";
      sizes[part] += gz;
      if (part === "app") sizes.app_raw += raw.length;
      sizes.files[path.relative(DIST, file)] = gz;
    }
  };
  walk(DIST);
  return sizes;
}

// --- controller set-up: an inventory and an enrolled fake enforcer -----------------------
async function call(method, apiPath, token, body, expected) {
  const response = await fetch(URL_BASE + "/api/v1" + apiPath, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? (method === "GET" ? undefined : "") : JSON.stringify(body),
  });
  const text = await response.text();
  if (expected !== undefined && response.status !== expected) {
    throw new Error(`${method} ${apiPath}: ${response.status} ${text.slice(0, 300)}`);
  }
  return text ? JSON.parse(text) : null;
}

const WORKLOADS = 64;
const workloadId = (w) => `bench-vdi-${String(w).padStart(3, "0")}`;
const workloadAddress = (w) => `10.70.${Math.floor(w / 250)}.${(w % 250) + 1}`;

async function enrollFakeEnforcer() {
  const workloads = [];
  for (let w = 0; w < WORKLOADS; w++) {
    workloads.push({ id: workloadId(w), enforcer: "bench-hv1", addresses: [workloadAddress(w)], labels: { role: "vdi" }, user: `user-${w}`, attachment: { mode: "port", interface: `vdi${String(w).padStart(3, "0")}` } });
  }
  await call("PUT", "/inventory", ADMIN, { enforcers: [{ id: "bench-hv1" }], workloads }, 200);
  const token = await call("POST", "/enforcers/bench-hv1/enrollment-token", ADMIN, undefined, 201);
  const enrolled = await call("POST", "/enforcers/enroll", "", { enforcer: "bench-hv1", token: token.token, version: "bench", hostname: "bench-hv1" }, 201);
  return enrolled.credential;
}

const PORTS = [22, 135, 139, 445, 3389, 5985, 389, 1433, 8080, 443];
let seq = 0;
function batchBody(count) {
  const events = [];
  const now = Date.now();
  for (let i = 0; i < count; i++) {
    seq++;
    const w = seq % 5 === 0 ? (seq * 7) % WORKLOADS : seq % 2;
    events.push({
      seq,
      event: {
        type: "drop", count: 1, time_ns: now * 1e6 + i, time_unix_ms: now, time_source: "kernel", hook: "forward",
        mode: "enforce", direction: "out", reason: seq % 17 === 0 ? "decoy" : "default", indev: `vdi${String(w).padStart(3, "0")}`,
        family: 4, src: workloadAddress(w), dst: `10.0.${(seq >> 8) & 15}.${seq & 255}`, proto: 6, proto_name: "tcp",
        sport: 32768 + (seq % 28000), dport: w < 2 ? 1 + (seq % 1024) : PORTS[seq % 10], workload: workloadId(w), policy_generation: 1,
      },
    });
  }
  return JSON.stringify({ events });
}

/** Uploads `rate` events/s for `seconds` s; resolves with what was sent. */
async function generate(credential, rate, seconds) {
  const start = Date.now();
  let sent = 0;
  while (Date.now() - start < seconds * 1000) {
    const due = Math.floor(((Date.now() - start) / 1000) * rate);
    if (sent >= due) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      continue;
    }
    const count = Math.min(BATCH, due - sent);
    const response = await fetch(URL_BASE + "/api/v1/enforcers/bench-hv1/events", {
      method: "POST",
      headers: { Authorization: `Bearer ${credential}`, "Content-Type": "application/json" },
      body: batchBody(count),
    });
    await response.arrayBuffer();
    if (!response.ok) {
      throw new Error(`event upload: ${response.status}`);
    }
    sent += count;
  }
  return { sent, seconds: (Date.now() - start) / 1000 };
}

// --- 2. time to first render ------------------------------------------------------------
async function firstRender(browser) {
  const signIn = [];
  const overview = [];
  const paint = [];
  for (let run = 0; run < RUNS; run++) {
    const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
    const page = await context.newPage();
    await page.goto(URL_BASE + "/");
    await page.locator("#token").waitFor();
    signIn.push(await page.evaluate(() => performance.now()));
    paint.push(await page.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime ?? NaN));
    await context.close();

    const signed = await browser.newContext({ viewport: { width: 1366, height: 768 } });
    await signed.addInitScript((token) => sessionStorage.setItem("bulkhead.token", token), ADMIN);
    const page2 = await signed.newPage();
    await page2.goto(URL_BASE + "/#/overview");
    await page2.locator("#fleet-health").waitFor();
    await page2.locator("#top-sources").waitFor();
    overview.push(await page2.evaluate(() => performance.now()));
    await signed.close();
  }
  return { sign_in_ms: round1(median(signIn)), first_contentful_paint_ms: round1(median(paint)), overview_ms: round1(median(overview)), sign_in_runs: signIn.map(round1), overview_runs: overview.map(round1) };
}

// --- 3. live view frame rate under load ----------------------------------------------------
async function liveFrameRate(browser, credential) {
  const context = await browser.newContext({ viewport: { width: 1366, height: 768 } });
  await context.addInitScript((token) => sessionStorage.setItem("bulkhead.token", token), ADMIN);
  const page = await context.newPage();
  await page.goto(URL_BASE + "/#/live");
  await page.waitForFunction(() => document.querySelector("#stream-status")?.getAttribute("data-status") === "open");
  const generation = generate(credential, RATE, SECONDS);
  await new Promise((resolve) => setTimeout(resolve, 3000));  // warm-up: the buffer fills, the JIT settles
  const windowMs = Math.max(2000, (SECONDS - 5) * 1000);
  const measured = await page.evaluate(async (windowMs) => {
    const stats = document.querySelector("#live-stats");
    const receivedAtStart = Number(stats?.getAttribute("data-received") ?? 0);
    const frames = [];
    const longTasks = [];
    const observer = new PerformanceObserver((list) => list.getEntries().forEach((e) => longTasks.push(e.duration)));
    try {
      observer.observe({ type: "longtask", buffered: false });
    } catch {
      // no long-task timing in this browser
    }
    const start = performance.now();
    await new Promise((resolve) => {
      const frame = (t) => {
        frames.push(t);
        if (t - start < windowMs) requestAnimationFrame(frame);
        else resolve();
      };
      requestAnimationFrame(frame);
    });
    observer.disconnect();
    const elapsed = frames[frames.length - 1] - frames[0];
    const gaps = frames.slice(1).map((t, i) => t - frames[i]).sort((a, b) => a - b);
    const received = Number(stats?.getAttribute("data-received") ?? 0) - receivedAtStart;
    return {
      fps: ((frames.length - 1) * 1000) / elapsed,
      frame_p50_ms: gaps[Math.floor(gaps.length * 0.5)],
      frame_p95_ms: gaps[Math.floor(gaps.length * 0.95)],
      frame_max_ms: gaps[gaps.length - 1],
      long_tasks: longTasks.length,
      events_per_second_received: (received * 1000) / elapsed,
      rows_shown: Number(stats?.getAttribute("data-shown") ?? 0),
      buffered: Number(stats?.getAttribute("data-buffered") ?? 0),
      window_ms: elapsed,
    };
  }, windowMs);
  const sent = await generation;
  const lostText = (await page.locator("#live-stats").textContent()) ?? "";
  await context.close();
  return { ...measured, sent_events: sent.sent, sent_per_second: sent.sent / sent.seconds, lost_messages: Number((/([\d,]+) stream messages lost/.exec(lostText)?.[1] ?? "0").replace(/,/g, "")) };
}

const sizes = bundleSizes();
log(`bundle gzip: app ${sizes.app} B, uPlot ${sizes.uplot} B, Cytoscape ${sizes.cytoscape} B`);
const credential = await enrollFakeEnforcer();
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
let result;
try {
  const render = await firstRender(browser);
  log("first render", JSON.stringify(render));
  const live = await liveFrameRate(browser, credential);
  log("live view", JSON.stringify(live));
  result = {
    bundle_app_gzip_bytes: sizes.app,
    bundle_app_raw_bytes: sizes.app_raw,
    bundle_uplot_gzip_bytes: sizes.uplot,
    bundle_cytoscape_gzip_bytes: sizes.cytoscape,
    bundle_files: sizes.files,
    ...Object.fromEntries(Object.entries(render).map(([k, v]) => [`render_${k}`, v])),
    ...Object.fromEntries(Object.entries(live).map(([k, v]) => [`live_${k}`, typeof v === "number" ? round1(v) : v])),
    rate: RATE,
    seconds: SECONDS,
    chromium: browser.version(),
  };
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
