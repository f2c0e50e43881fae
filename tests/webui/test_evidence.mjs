#!/usr/bin/env node
// The dashboard's evidence features in a real browser (Debian's Chromium, headless, driven
// by playwright-core) against the real controller alone — no lab, no root, no kernel:
//   * the drop log browses history: events uploaded through the API with kernel times spread
//     over days; a range picked in the page (From/To, and the quick choices) shows exactly
//     the events of that range (count and ids), pages through the API (a small page size),
//     narrows by workload and address, says when a range is empty and shows an API error's
//     message;
//   * the clock flag: one upload's batch sent_ns is two hours ahead of the controller's clock,
//     so its events are clock_suspect; the flag shows on those rows only, in history and live;
//   * the Evidence view: checkpoints, a UDP destination delivering to a receiver this test
//     holds open (the datagrams arrive), a TCP destination to a closed port failing with
//     "unreachable" and a growing backlog; a second controller without destinations says
//     "no SIEM destination configured" and points to docs/siem.md.
// Every port is bound to 0 first; every process the test starts is stopped, even on failure.
//
// Alone:  node tests/webui/test_evidence.mjs --source-dir . --bin-dir build/bin --screenshot-dir build/screenshots
// (ctest -R webui_evidence does the same). Exit 77 (skipped) without Chromium, playwright-core
// or the built dashboard.
import { spawn } from "node:child_process";
import dgram from "node:dgram";
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { argument, check, failures, loadPlaywright, poll } from "./lab_driver.mjs";

const REPO = path.resolve(argument("--source-dir", "."));
const BIN = path.resolve(argument("--bin-dir", path.join(REPO, "build/bin")));
const SHOTS = path.resolve(argument("--screenshot-dir", path.join(REPO, "build/screenshots")));
const VIEWPORT = { width: 1366, height: 900 };
const ADMIN = "evidence-admin-token-0123456789abcdef";
const HOUR = 3_600_000;
const SKEW_MS = 2 * HOUR;

/** A TCP port nobody listens on right now (bound to 0, then closed). */
function freeTcpPort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** A controller process of this test: its own data directory, port and log. */
class Controller {
  constructor(name, state, extraArgs = []) {
    this.name = name;
    this.dir = path.join(state, name);
    mkdirSync(this.dir, { recursive: true });
    this.extraArgs = extraArgs;
    this.process = undefined;
  }

  async start() {
    const tokens = path.join(this.dir, "tokens.json");
    writeFileSync(tokens, JSON.stringify({ tokens: [{ name: "evidence-admin", role: "admin", token: ADMIN }] }), { mode: 0o600 });
    // The port comes from bind(0); another process may take it before the controller does,
    // so a start that fails is retried on a new port.
    for (let attempt = 0; attempt < 5; attempt++) {
      this.port = await freeTcpPort();
      const log = openSync(path.join(this.dir, "controller.log"), "a");
      this.process = spawn(
        path.join(BIN, "bulkhead-controller"),
        ["--data-dir", path.join(this.dir, "data"), "--plain-listen", `127.0.0.1:${this.port}`, "--bootstrap-tokens", tokens,
          "--webui-dir", path.join(REPO, "webui/dist"), "--heartbeat-interval-ms", "300", ...this.extraArgs],
        { stdio: ["ignore", log, log] },
      );
      const exited = new Promise((resolve) => this.process.once("exit", () => resolve("exited")));
      const up = await Promise.race([exited, this.waitHealthy(15000)]);
      if (up === true) {
        return true;
      }
      await this.stop();
    }
    console.log(readFileSync(path.join(this.dir, "controller.log"), "utf8").slice(-3000));
    return false;
  }

  async waitHealthy(ms) {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      if (this.process.exitCode !== null) {
        return "exited";
      }
      try {
        const response = await fetch(`${this.baseUrl}/api/v1/health`, { signal: AbortSignal.timeout(2000) });
        if (response.ok) {
          return true;
        }
      } catch {
        // not listening yet
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return false;
  }

  async stop() {
    const child = this.process;
    this.process = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      return;
    }
    const gone = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10000);
    await gone;
    clearTimeout(timer);
  }

  get baseUrl() {
    return `http://127.0.0.1:${this.port}`;
  }

  async api(method, apiPath, token, body) {
    try {
      const response = await fetch(`${this.baseUrl}/api/v1${apiPath}`, {
        method,
        headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), "Content-Type": "application/json" },
        body: body === undefined ? (method === "POST" ? "" : undefined) : JSON.stringify(body),
        signal: AbortSignal.timeout(15000),
      });
      const text = await response.text();
      let parsed = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = text;
      }
      return { status: response.status, body: parsed };
    } catch (error) {
      return { status: null, body: String(error) };
    }
  }
}

/** The drops this test uploads: kernel times spread over days, two enforcers, one skewed batch. */
function plannedDrops(now) {
  const drop = (enforcer, workload, src, dst, dport, agoMs) => ({ enforcer, workload, src, dst, dport, timeMs: now - agoMs });
  return {
    hv1: [
      drop("hv1", "vdi-001", "10.1.0.1", "10.0.0.30", 445, 10 * 60_000),
      drop("hv1", "vdi-002", "10.1.0.2", "10.0.0.30", 139, 40 * 60_000),
      drop("hv1", "vdi-001", "10.1.0.1", "10.1.0.3", 22, 2.5 * HOUR),
      drop("hv1", "vdi-003", "10.1.0.3", "10.0.0.30", 3389, 3.5 * HOUR),
      drop("hv1", "vdi-002", "10.1.0.2", "10.1.1.1", 445, 4.5 * HOUR),
      drop("hv1", "vdi-001", "10.1.0.1", "10.0.0.30", 445, 6 * HOUR),
      drop("hv1", "vdi-003", "10.1.0.3", "10.1.0.2", 22, 26 * HOUR),
      drop("hv1", "vdi-002", "10.1.0.2", "10.0.0.30", 445, 72 * HOUR),
    ],
    // sent two hours ahead of the controller's clock: clock_suspect
    hv2: [
      drop("hv2", "vdi-101", "10.1.1.1", "10.0.0.30", 445, 20 * 60_000),
      drop("hv2", "vdi-102", "10.1.1.2", "10.0.0.30", 139, 3 * HOUR),
      drop("hv2", "vdi-101", "10.1.1.1", "10.1.0.1", 3389, 4 * HOUR),
      drop("hv2", "vdi-102", "10.1.1.2", "10.1.0.3", 22, 30 * HOUR),
    ],
  };
}

function batchOf(drops, firstSeq, sentNs) {
  return {
    sent_ns: sentNs,
    events: drops.map((d, i) => ({
      seq: firstSeq + i,
      event: {
        type: "drop", count: 1, time_ns: d.timeMs * 1_000_000, time_unix_ms: d.timeMs, direction: "out", reason: "deny",
        workload: d.workload, src: d.src, dst: d.dst, proto_name: "tcp", dport: d.dport, family: 4, mode: "enforce",
      },
    })),
  };
}

const sameSet = (a, b) => a.length === b.length && [...a].sort().join(",") === [...b].sort().join(",");

async function main() {
  const { chromium } = loadPlaywright(REPO) ?? {};
  const missing = [];
  if (!existsSync("/usr/bin/chromium")) missing.push("/usr/bin/chromium (apt-get install chromium)");
  if (!chromium) missing.push("playwright-core in webui/node_modules (scripts/build.sh installs it)");
  if (!existsSync(path.join(BIN, "bulkhead-controller"))) missing.push(path.join(BIN, "bulkhead-controller"));
  if (!existsSync(path.join(REPO, "webui/dist/index.html"))) missing.push("the built dashboard (webui/dist; scripts/build.sh)");
  if (missing.length > 0) {
    console.log("skipped: needs " + missing.join(", "));
    return 77;
  }
  mkdirSync(SHOTS, { recursive: true });
  const state = mkdtempSync(path.join(os.tmpdir(), "bhui-evidence-"));
  const controllers = [];
  let browser;
  let receiver;
  const cleanup = async () => {
    await browser?.close().catch(() => {});
    browser = undefined;
    for (const c of controllers) {
      await c.stop();
    }
    receiver?.close();
    receiver = undefined;
    rmSync(state, { recursive: true, force: true });
  };
  // ctest's timeout or Ctrl-C: still stop what this test started.
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      void cleanup().finally(() => process.exit(1));
    });
  }
  try {
    // --- a SIEM receiver this test holds, and a TCP port nobody listens on ----------------
    receiver = dgram.createSocket("udp4");
    const datagrams = [];
    receiver.on("message", (message) => datagrams.push(message.toString("utf8")));
    await new Promise((resolve) => receiver.bind(0, "127.0.0.1", resolve));
    const udpPort = receiver.address().port;
    const closedPort = await freeTcpPort();
    const config = path.join(state, "controller.json");
    writeFileSync(config, JSON.stringify({
      evidence_checkpoint_interval_ms: 1000,
      siem: {
        destinations: [
          { name: "soc", transport: "udp", address: `127.0.0.1:${udpPort}`, format: "cef", records: ["drops"] },
          { name: "qradar", transport: "tcp", address: `127.0.0.1:${closedPort}`, format: "leef", records: ["drops"] },
        ],
      },
    }));
    const controller = new Controller("main", state, ["--config", config]);
    controllers.push(controller);
    if (!check(await controller.start(), "the controller starts with a UDP and a TCP SIEM destination")) {
      return 1;
    }

    // --- two enrolled enforcers upload drops spread over three days ----------------------
    const inventory = JSON.parse(readFileSync(path.join(REPO, "examples/vdi-pool/inventory.json"), "utf8"));
    const put = await controller.api("PUT", "/inventory", ADMIN, inventory);
    check(put.status === 200, `inventory with hv1 and hv2 (PUT 200; got ${put.status} ${JSON.stringify(put.body).slice(0, 200)})`);
    const credentials = {};
    for (const enforcer of ["hv1", "hv2"]) {
      const token = await controller.api("POST", `/enforcers/${enforcer}/enrollment-token`, ADMIN);
      const enrolled = await controller.api("POST", "/enforcers/enroll", undefined, { enforcer, token: token.body?.token });
      check(enrolled.status === 201, `${enforcer} enrolls (201; got ${enrolled.status})`);
      credentials[enforcer] = enrolled.body?.credential;
    }
    const now = Date.now();
    const planned = plannedDrops(now);
    const upA = await controller.api("POST", "/enforcers/hv1/events", credentials.hv1, batchOf(planned.hv1, 1, now * 1_000_000));
    const upB = await controller.api("POST", "/enforcers/hv2/events", credentials.hv2, batchOf(planned.hv2, 1, (now + SKEW_MS) * 1_000_000));
    check(upA.status === 200 && upA.body?.accepted === planned.hv1.length, `hv1 uploads ${planned.hv1.length} drops, its clock in step (${upA.status} ${JSON.stringify(upA.body)})`);
    check(upB.status === 200 && upB.body?.accepted === planned.hv2.length, `hv2 uploads ${planned.hv2.length} drops with sent_ns two hours ahead (${upB.status} ${JSON.stringify(upB.body)})`);
    // The ids the controller gave them, by enforcer and seq (the ranges below are computed
    // from the planned times, not from the API's filter).
    const stored = await controller.api("GET", "/events?limit=100", ADMIN);
    const all = [...planned.hv1.map((d, i) => ({ ...d, seq: i + 1 })), ...planned.hv2.map((d, i) => ({ ...d, seq: i + 1 }))];
    for (const d of all) {
      const e = stored.body?.events?.find((x) => x.enforcer === d.enforcer && x.enforcer_seq === d.seq);
      d.id = e?.id;
      d.suspect = e?.clock_suspect === true;
    }
    check(all.every((d) => d.id !== undefined), "every uploaded drop is stored with an id");
    check(all.every((d) => d.suspect === (d.enforcer === "hv2")), "the API marks hv2's drops clock_suspect and hv1's not");
    const idsIn = (fromMs, toMs, keep = () => true) => all.filter((d) => d.timeMs >= fromMs && d.timeMs < toMs && keep(d)).map((d) => String(d.id));
    const suspectIds = new Set(all.filter((d) => d.enforcer === "hv2").map((d) => String(d.id)));

    // --- the browser ------------------------------------------------------------------------
    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
    const context = await browser.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    const pageErrors = [];
    page.on("pageerror", (error) => pageErrors.push(error.message));
    const shot = (name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
    const text = async (selector) => (await page.locator(selector).first().textContent({ timeout: 5000 }).catch(() => "")) ?? "";
    const attr = (selector, name) => page.locator(selector).first().getAttribute(name, { timeout: 5000 }).catch(() => null);
    /** The rows the table shows: [{key, text, flag, flagTitle}]. */
    const rows = () =>
      page.evaluate(() =>
        [...document.querySelectorAll(".vt-row")]
          .filter((r) => r.style.display !== "none")
          .map((r) => ({ key: r.dataset.key, text: r.textContent ?? "", flag: r.querySelector(".clock-flag")?.textContent ?? "", flagTitle: r.querySelector(".clock-flag")?.getAttribute("title") ?? "" })),
      );
    const shownKeys = async () => (await rows()).map((r) => r.key);
    const historyLoaded = async (count) =>
      (await attr("#history-status", "data-state")) === (count === 0 ? "empty" : "loaded") && Number(await attr("#history-status", "data-count")) === count;

    await page.goto(controller.baseUrl + "/");
    await page.fill("#token", ADMIN);
    await page.press("#token", "Enter");
    await poll(async () => (await text("#whoami")) === "evidence-admin (admin)", 10, "signed in");

    // --- drop log: live is the default --------------------------------------------------------
    await page.goto(controller.baseUrl + "/#/live");
    await page.locator("#live-stats").waitFor();
    check((await attr("#mode-live", "aria-pressed")) === "true" && (await text("h1")) === "Live drop log", "the drop log opens live");
    check(!(await page.locator("#history-form").isVisible()), "the history range is hidden in live mode");

    // --- history: a range picked with From and To --------------------------------------------
    await page.click("#mode-history");
    await poll(async () => (await text("h1")) === "Drop log history" && (await page.locator("#history-form").isVisible()), 5, "History shows the range form");
    check((await text("#drop-log-empty")).includes("Choose a time range"), "before a range is chosen, the page says to choose one");
    const minute = (ms) => Math.floor(ms / 60_000) * 60_000;  // datetime-local holds minutes
    const toLocal = (ms) => {
      const d = new Date(ms);
      const p = (n) => String(n).padStart(2, "0");
      return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
    };
    const fromMs = minute(now - 5 * HOUR);
    const toMs = minute(now - 2 * HOUR);
    await page.fill("#history-from", toLocal(fromMs));
    await page.fill("#history-to", toLocal(toMs));
    await page.click("#history-load");
    const expected = idsIn(fromMs, toMs);
    await poll(async () => (await historyLoaded(expected.length)) && sameSet(await shownKeys(), expected), 10,
      `From 5 h ago to 2 h ago shows exactly the ${expected.length} drops of that range (ids ${expected.join(", ")})`);
    check(expected.length === 5, "(the range holds 5 planned drops, 2 of them from the skewed enforcer)");
    check((await text("#history-status")).includes(`${expected.length} events`), "the status line counts them");
    // the clock flag: on hv2's rows only, with the offset and what it means
    const shown = await rows();
    const flagged = shown.filter((r) => r.flag !== "").map((r) => r.key);
    check(sameSet(flagged, shown.filter((r) => suspectIds.has(r.key)).map((r) => r.key)) && flagged.length === 2,
      `the clock flag shows on the skewed enforcer's rows only (${flagged.join(", ")})`);
    const flaggedRow = shown.find((r) => r.flag !== "");
    check(/^clock \+(1 h 59 min|2 h)$/.test(flaggedRow?.flag ?? ""), `the flag gives the offset ("${flaggedRow?.flag}")`);
    check(/off by \+7\d{6} ms \(ahead of the controller's\).*may not order correctly against other devices' logs/.test(flaggedRow?.flagTitle ?? ""),
      `its tooltip explains it ("${flaggedRow?.flagTitle.slice(0, 160)}")`);
    await page.locator(`.vt-row[data-key="${flaggedRow?.key}"] > div`).nth(2).click();  // the Enforcer cell (Workload is a link)
    await poll(async () => (await text("#detail-clock-flag")).includes("off by +"), 5, "the selected drop's detail repeats the clock warning");
    await shot("history-range");

    // the range is in the address: a reload shows it again
    check((await page.evaluate(() => location.hash)).includes(`from=${fromMs}`), "the range is kept in the address");

    // --- quick choices, server-side filters -------------------------------------------------
    await page.click('button[data-range="1h"]');
    const clickedAt = Date.now();
    const lastHour = idsIn(now - HOUR, clickedAt);
    await poll(async () => (await historyLoaded(lastHour.length)) && sameSet(await shownKeys(), lastHour), 10,
      `Last hour shows exactly its ${lastHour.length} drops (${lastHour.join(", ")})`);
    await page.click('button[data-range="24h"]');
    const lastDay = idsIn(now - 24 * HOUR, Date.now());
    await poll(async () => (await historyLoaded(lastDay.length)) && sameSet(await shownKeys(), lastDay), 10,
      `Last day shows exactly its ${lastDay.length} drops`);
    await page.fill("#filter-workload", "vdi-002");
    const vdi002 = idsIn(now - 24 * HOUR, Date.now(), (d) => d.workload === "vdi-002");
    await poll(async () => (await historyLoaded(vdi002.length)) && sameSet(await shownKeys(), vdi002), 10,
      `with workload vdi-002 the controller is asked again: ${vdi002.length} drops`);
    await page.fill("#filter-workload", "");
    await page.fill("#filter-address", "10.0.0.30");
    const fileServer = idsIn(now - 24 * HOUR, Date.now(), (d) => d.src === "10.0.0.30" || d.dst === "10.0.0.30");
    await poll(async () => (await historyLoaded(fileServer.length)) && sameSet(await shownKeys(), fileServer), 10,
      `with address 10.0.0.30: ${fileServer.length} drops`);
    await page.fill("#filter-address", "");
    await page.click('button[data-range="7d"]');
    const lastWeek = idsIn(now - 7 * 24 * HOUR, Date.now());
    await poll(async () => (await historyLoaded(lastWeek.length)) && sameSet(await shownKeys(), lastWeek), 10,
      `Last week shows all ${lastWeek.length} drops`);

    // --- an API error shows its message; an empty range says so ---------------------------
    await page.fill("#filter-port", "99999");
    await poll(async () => (await attr("#history-status", "data-state")) === "error" && (await text("#history-status")).includes('query parameter "port"'), 10,
      "an API error (port 99999) shows the controller's message");
    await shot("history-error");
    await page.fill("#filter-port", "");
    await page.fill("#history-from", toLocal(now - 10 * 24 * HOUR));
    await page.fill("#history-to", toLocal(now - 9 * 24 * HOUR));
    await page.click("#history-load");
    await poll(async () => (await historyLoaded(0)) && (await text("#drop-log-empty")).includes("No drop was stored") && (await shownKeys()).length === 0, 10,
      "a range without drops says that none was stored");
    await page.fill("#history-from", toLocal(now - HOUR));
    await page.fill("#history-to", toLocal(now - 2 * HOUR));
    await page.click("#history-load");
    await poll(async () => (await attr("#history-status", "data-state")) === "invalid" && (await text("#history-status")).includes("From must be before To"), 5,
      "From after To is refused in the page");

    // --- paging: a small page size walks the API's next_after_id ----------------------------
    await page.goto(`${controller.baseUrl}/#/live?mode=history&from=${fromMs}&to=${toMs}&page_size=2`);
    await poll(async () => (await historyLoaded(expected.length)) && sameSet(await shownKeys(), expected) && (await attr("#history-status", "data-pages")) === "3", 10,
      "a link with the range and page_size=2 loads the same 5 drops in 3 pages");

    // --- live: a skewed upload arrives over the stream with its flag -------------------------
    await page.click("#mode-live");
    await poll(async () => (await attr("#mode-live", "aria-pressed")) === "true" && (await page.locator("#stream-status").getAttribute("data-status")) === "open", 10, "back to live, the stream is open");
    const liveNow = Date.now();
    const liveBatch = [
      { enforcer: "hv2", workload: "vdi-102", src: "10.1.1.2", dst: "10.0.0.30", dport: 8443, timeMs: liveNow },
    ];
    const liveInStep = [{ enforcer: "hv1", workload: "vdi-003", src: "10.1.0.3", dst: "10.0.0.30", dport: 8444, timeMs: liveNow }];
    await controller.api("POST", "/enforcers/hv2/events", credentials.hv2, batchOf(liveBatch, planned.hv2.length + 1, (liveNow + SKEW_MS) * 1_000_000));
    await controller.api("POST", "/enforcers/hv1/events", credentials.hv1, batchOf(liveInStep, planned.hv1.length + 1, liveNow * 1_000_000));
    await poll(async () => {
      const live = await rows();
      const skewed = live.find((r) => r.text.includes("/8443"));
      const inStep = live.find((r) => r.text.includes("/8444"));
      return skewed && inStep && skewed.flag.startsWith("clock +") && inStep.flag === "";
    }, 10, "in live mode too, the skewed upload's drop carries the clock flag and the in-step one does not");
    await shot("live-clock-flag");

    // --- the Evidence view ------------------------------------------------------------------
    const dropsStored = all.length + 2;
    await page.goto(controller.baseUrl + "/#/evidence");
    await poll(async () => (await text("#evidence-key-id")).length >= 8 && Number(await attr("#evidence-written", "data-value")) >= 1, 10,
      "the checkpoints panel shows the signing key id and checkpoints written");
    check((await text("#evidence-interval")) === "1 s", `the checkpoint interval (${await text("#evidence-interval")})`);
    await poll(async () => (await page.locator('tr[data-destination="soc"][data-state="delivering"]').count()) === 1 &&
      Number(await attr('tr[data-destination="soc"] .siem-delivered', "data-value")) >= dropsStored &&
      Number(await attr('tr[data-destination="soc"] .siem-pending', "data-value")) === 0, 15,
      `the UDP destination "soc" is delivering, ${dropsStored} drops delivered, none pending`);
    const socRow = await text('tr[data-destination="soc"]');
    check(socRow.includes("udp / cef") && socRow.includes(`127.0.0.1:${udpPort}`), "with its transport, format and address");
    check(!socRow.includes("never"), "and a last delivery time");
    await poll(async () => datagrams.filter((d) => d.includes("CEF:")).length >= dropsStored, 10, `the receiver got ${dropsStored} CEF datagrams`);
    await poll(async () => (await page.locator('tr[data-destination="qradar"][data-state="failing"]').count()) === 1 &&
      (await attr('tr[data-destination="qradar"] .siem-error', "data-error-kind")) === "unreachable", 15,
      'the TCP destination to a closed port is failing with kind "unreachable"');
    const pending = Number(await attr('tr[data-destination="qradar"] .siem-pending', "data-value"));
    check(pending >= dropsStored, `its backlog holds the ${pending} undelivered drops`);
    await poll(async () => /\d+ s/.test(await text('tr[data-destination="qradar"] [data-age-ms]')), 10,
      `the age of its oldest pending record is shown (${await text('tr[data-destination="qradar"] [data-age-ms]')})`);
    check((await text("#siem-failing")).includes("1 of 2 destinations failing"), "a failing destination is called out above the table");
    // polled: a drop uploaded now raises the backlog without a reload
    await controller.api("POST", "/enforcers/hv1/events", credentials.hv1, batchOf([{ ...liveInStep[0], dport: 8445 }], planned.hv1.length + 2, Date.now() * 1_000_000));
    await poll(async () => Number(await attr('tr[data-destination="qradar"] .siem-pending', "data-value")) === pending + 1, 10,
      "the view refreshes by itself: the backlog grows by the new drop");
    await shot("evidence");

    // --- a controller without destinations --------------------------------------------------
    const bare = new Controller("bare", state);
    controllers.push(bare);
    if (check(await bare.start(), "a second controller without SIEM destinations starts")) {
      const barePage = await context.newPage();
      await barePage.goto(bare.baseUrl + "/");
      await barePage.fill("#token", ADMIN);
      await barePage.press("#token", "Enter");
      await barePage.locator("#whoami").waitFor({ timeout: 10000 });
      await barePage.goto(bare.baseUrl + "/#/evidence");
      await poll(async () => ((await barePage.locator("#siem-none").textContent().catch(() => "")) ?? "").includes("No SIEM destination configured"), 10,
        'without destinations the view says "No SIEM destination configured"');
      check(((await barePage.locator("#siem-none").textContent()) ?? "").includes("docs/siem.md"), "and points to docs/siem.md");
      await barePage.screenshot({ path: path.join(SHOTS, "evidence-none.png"), fullPage: true });
      await barePage.close();
    }
    check(pageErrors.length === 0, `no uncaught error in the page (${pageErrors.slice(0, 3).join("; ")})`);
  } finally {
    await cleanup();
  }
  check(controllers.every((c) => c.process === undefined), "every controller this test started is stopped");
  console.log(`${failures.length} failures; screenshots in ${SHOTS}`);
  return failures.length > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
