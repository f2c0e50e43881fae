#!/usr/bin/env node
// The SOC dashboard in a real browser: Debian's Chromium, headless,
// driven by playwright-core, against the real controller and enforcers of a lab of our own
// (prefix bhui-). Sign in; live drops while a VDI scans; the incident with its explanation
// and scope; release and quarantine from the UI, applied on the enforcer and in force in the
// kernel; a policy error marked at its line; activating a valid policy; a soc token kept
// out of policy editing (UI and API 403); the banner when the controller stops.
// Screenshots of every view go to --screenshot-dir (build/screenshots/).
//
// Alone:  node tests/webui/test_webui.mjs --source-dir . --bin-dir build/bin --screenshot-dir build/screenshots
// (as root; ctest -R webui_browser does the same). Exit 77 (skipped) without root, Chromium,
// nmap or playwright-core.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Lab, argument, check, failures, loadPlaywright, poll, requirements } from "./lab_driver.mjs";

const REPO = path.resolve(argument("--source-dir", "."));
const BIN = path.resolve(argument("--bin-dir", path.join(REPO, "build/bin")));
const SHOTS = path.resolve(argument("--screenshot-dir", path.join(REPO, "build/screenshots")));
const VIEWPORT = { width: 1366, height: 768 };

// A TCP connect: an answer (accepted or refused) means the packets passed the enforcer.
const PROBE = "import socket,sys\ns=socket.socket()\ns.settimeout(2)\ntry:\n s.connect((sys.argv[1],int(sys.argv[2])));print('reached')\n" +
  "except ConnectionRefusedError:\n print('reached')\nexcept OSError:\n print('blocked')\n";

/** The elements of hv1's @quarantined_ports set, as `nft list` prints them. */
function quarantinedPorts() {
  const listed = spawnSync("ip", ["netns", "exec", "bhui-hv1", "nft", "list", "set", "inet", "bulkhead", "quarantined_ports"], { encoding: "utf8" });
  return listed.stdout ?? "";
}

async function main() {
  const missing = requirements(REPO);
  if (spawnSync("sh", ["-c", "command -v nmap"]).status !== 0) missing.push("nmap");
  if (missing.length > 0) {
    console.log("skipped: needs " + missing.join(", "));
    return 77;
  }
  if (!check(existsSync(path.join(REPO, "webui/dist/index.html")), "the dashboard is built (webui/dist/index.html; scripts/build.sh)")) {
    return 1;
  }
  mkdirSync(SHOTS, { recursive: true });
  const state = mkdtempSync(path.join(os.tmpdir(), "bhui-state-"));
  const lab = new Lab({ repo: REPO, bin: BIN, prefix: "bhui-", state, mgmt: "10.254.81.0/24", apiPort: 18581, tlsPort: 18843 });
  const { chromium } = loadPlaywright(REPO);
  let browser;
  // ctest's timeout or Ctrl-C: still take the lab down.
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.on(signal, () => {
      lab.down();
      rmSync(state, { recursive: true, force: true });
      process.exit(1);
    });
  }
  try {
    // Port discovery on (the lab's ports, vdi001 …, match none of its patterns): the
    // enforcers view lists an unknown VM port made below.
    const up = lab.up(["--enforcer-arg=--port-discovery"]);
    if (!check(up.code === 0, "lab up with the real controller and enforcers")) {
      console.log(up.stdout.slice(-3000), up.stderr.slice(-3000));
      return 1;
    }
    const admin = lab.token("lab-admin");
    const soc = lab.token("lab-soc");
    await lab.activateLabPolicy(admin);

    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ["--no-sandbox"] });
    const context = await browser.newContext({ viewport: VIEWPORT });
    const page = await context.newPage();
    const foreignRequests = [];
    const pageErrors = [];
    page.on("request", (request) => {
      const url = new URL(request.url());
      if (!["http:", "data:"].includes(url.protocol) || (url.protocol === "http:" && url.host !== `127.0.0.1:${lab.apiPort}`)) {
        foreignRequests.push(request.url());
      }
    });
    page.on("pageerror", (error) => pageErrors.push(error.message));
    const shot = async (name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
    const text = async (selector) => (await page.locator(selector).first().textContent({ timeout: 5000 }).catch(() => "")) ?? "";
    const visible = (selector) => page.locator(selector).first().isVisible().catch(() => false);

    // --- sign in -----------------------------------------------------------------------
    const started = Date.now();
    await page.goto(lab.baseUrl + "/");
    check(await page.locator("#token").isVisible(), "/ serves the sign-in page");
    await page.fill("#token", "not-a-valid-token-at-all");
    await page.press("#token", "Enter");
    await poll(async () => (await text("#signin-message")).includes("not valid"), 10, "a wrong token is refused on the sign-in page");
    await page.fill("#token", admin);
    await page.press("#token", "Enter");
    await poll(async () => (await text("#whoami")) === "lab-admin (admin)", 10, "signed in as lab-admin (admin) (whoami)");
    check(await visible('nav a[data-nav="policy"]'), "an admin sees the Policy view in the navigation");
    await poll(async () => (await page.locator("#stream-status").getAttribute("data-status")) === "open", 10, "the live stream is open (SSE with ?access_token=)");
    console.log(`first render and sign-in took ${Date.now() - started} ms`);

    // --- live drops while a VDI scans ---------------------------------------------------
    await page.goto(lab.baseUrl + "/#/live");
    await page.locator("#live-stats").waitFor();
    const scan = lab.background("vdi-002", ["nmap", "-sT", "-Pn", "-n", "--max-retries", "0", "-p", "22,139,445,3389", "10.1.0.0/30", "10.1.1.0/30"]);
    const liveRows = () =>
      page.evaluate(() => [...document.querySelectorAll(".vt-row")].filter((r) => r.style.display !== "none").map((r) => r.textContent ?? ""));
    const scanRows = await poll(async () => (await liveRows()).filter((t) => t.includes("vdi-002") && t.includes("10.1.0.2")).length > 0, 30, "drops of vdi-002's scan appear in the live view");
    if (scanRows) {
      await poll(async () => Number(await page.locator("#live-stats").getAttribute("data-received")) > 0, 10, "the drops came over the live stream (SSE)");
      await shot("live");
      // Filters: a port filter keeps only that port; search narrows by text.
      await page.fill("#filter-port", "445");
      await poll(async () => {
        const rows = await liveRows();
        return rows.length > 0 && rows.every((t) => t.includes("/445"));
      }, 10, "the port filter shows only port 445");
      await page.fill("#filter-port", "");
      await page.fill("#filter-search", "no-such-text-anywhere");
      await poll(async () => (await liveRows()).length === 0, 10, "a search without match empties the table");
      await page.fill("#filter-search", "");
      await page.click("#pause-button");
      check((await page.locator("#pause-button").getAttribute("aria-pressed")) === "true", "pause toggles (aria-pressed)");
      await page.click("#pause-button");
      // Click-through: a row opens its detail with a link to the workload.
      await page.locator(".vt-row", { hasText: "vdi-002" }).first().locator("div").nth(4).click();
      await poll(async () => visible("#detail-workload-link"), 5, "clicking a drop shows its detail with a link to the workload");
    }
    const scanExit = await scan;
    check(scanExit === 0, "nmap ran in vdi-002");

    // --- overview ------------------------------------------------------------------------
    await page.goto(lab.baseUrl + "/#/overview");
    await poll(async () => (await text("#top-sources")).includes("vdi-002"), 15, "the overview lists vdi-002 among the top blocked sources");
    await poll(async () => (await text("#fleet-health")).includes("2/2"), 15, "the overview shows 2/2 enforcers connected and in sync");
    await poll(async () => Number(await page.locator("#drop-rate-chart").getAttribute("data-total")) > 0, 10, "the drops-per-second chart has the scan's drops");
    await shot("overview");

    // --- the incident: explanation, attribution, scope -----------------------------------
    await page.goto(lab.baseUrl + "/#/incidents");
    const incidentRow = await poll(async () => (await page.locator("tr[data-incident]", { hasText: "vdi-002" }).count()) > 0, 20, "the incident of vdi-002 appears in the incident list");
    await shot("incidents");
    const incidents = await lab.api("GET", "/incidents?workload=vdi-002", soc);
    const incidentId = incidents.body?.incidents?.[0]?.id;
    if (incidentRow && incidentId !== undefined) {
      await page.locator(`tr[data-incident="${incidentId}"] a`).first().click();
      await poll(async () => (await text("#incident-explanation-text")).includes("vdi-002 (user sato) tried"), 10, "the incident detail shows its explanation");
      const attribution = await text("#incident-attribution");
      check(["sato", "hv1", "vdi002", "52:54:00:01:00:02", "10.1.0.2"].every((s) => attribution.includes(s)), "attribution: user, hypervisor, port, MAC, address");
      await poll(async () => (await page.locator("#incident-timeline canvas").count()) > 0, 10, "the timeline chart is drawn");
      const scope = await lab.api("GET", `/incidents/${incidentId}/scope`, soc);
      if (scope.status === 200) {
        await poll(async () => Number(await page.locator("#scope-graph").getAttribute("data-nodes")) === scope.body.nodes.length && (await page.locator("#scope-graph canvas").count()) > 0, 15,
          `the scope graph is drawn with the endpoint's ${scope.body?.nodes?.length} nodes`);
        check(scope.body.nodes.some((n) => n.kind === "source"), "the scope has the source node");
      } else {
        check(scope.status === 404, `the scope endpoint is missing (${scope.status}): the UI must say so`);
        await poll(async () => visible("#scope-unavailable"), 10, "the incident shows 'scope not available'");
      }
      // The analyzer quarantined vdi-002 automatically; release it and quarantine it again, from the UI.
      await poll(async () => {
        const q = await lab.api("GET", "/quarantines/vdi-002", soc);
        return q.status === 200 && q.body.enforcers.every((e) => e.state === "applied");
      }, 20, "the automatic quarantine of vdi-002 is applied on hv1");
      await poll(async () => visible("#action-release"), 15, "the incident offers to release vdi-002");
      await shot("incident");
      await page.click("#action-release");
      await poll(async () => (await text("#incident-quarantine")).includes("not in quarantine"), 15, "released from the UI: the incident shows no quarantine");
      check((await lab.api("GET", "/quarantines/vdi-002", soc)).status === 404, "the API confirms the release (404)");
      check(lab.exec("vdi-002", ["ping", "-c1", "-W2", "10.0.0.30"]).code === 0, "released vdi-002 reaches the file server again");
      await page.click("#action-quarantine");
      await poll(async () => (await page.locator('#incident-quarantine li[data-enforcer="hv1"][data-state="applied"]').count()) > 0, 15,
        "quarantined from the UI: the incident shows it applied on hv1");
      const q = await lab.api("GET", "/quarantines/vdi-002", soc);
      check(q.status === 200 && q.body.actor === "lab-admin" && !q.body.automatic && q.body.incident === incidentId, "the quarantine is lab-admin's, manual, tied to the incident");
      check(lab.exec("vdi-002", ["ping", "-c1", "-W1", "10.0.0.30"]).code !== 0, "quarantined vdi-002 cannot reach the file server (enforced in hv1's kernel)");
      check(quarantinedPorts().includes('"vdi002"'), "hv1's kernel has vdi-002's port in @quarantined_ports (nft list)");
      // Acknowledge and a note.
      if (await visible("#action-acknowledge")) {
        await page.click("#action-acknowledge");
        await poll(async () => (await page.locator('#incident-state[data-state="acknowledged"]').count()) > 0, 10, "acknowledged from the UI");
      }
      await page.fill("#note-text", "checked from the browser test");
      await page.click(".note-form button");
      await poll(async () => (await text("#incident-notes")).includes("checked from the browser test"), 10, "a note added from the UI shows");
    }

    // --- quarantines view: applied on the enforcer; release --------------------------------
    await page.goto(lab.baseUrl + "/#/quarantines");
    await poll(async () => (await page.locator('tr[data-workload="vdi-002"] .enforcer-state[data-enforcer="hv1"][data-state="applied"]').count()) > 0, 15,
      "the quarantine list shows vdi-002 applied on hv1");
    check((await text('tr[data-workload="vdi-002"]')).includes("lab-admin"), "the quarantine list says who quarantined it");
    await shot("quarantines");
    await page.click('button[data-release="vdi-002"]');
    await poll(async () => (await page.locator('tr[data-workload="vdi-002"]').count()) === 0, 15, "released from the quarantine list");
    await poll(async () => (await lab.api("GET", "/quarantines/vdi-002", soc)).status === 404, 10, "the API confirms the release");
    check(lab.exec("vdi-002", ["ping", "-c1", "-W2", "10.0.0.30"]).code === 0, "released vdi-002 reaches the file server");
    check(!quarantinedPorts().includes('"vdi002"'), "and its port left @quarantined_ports on hv1");

    // --- policy: an error pointed at its line; activate a valid one ------------------------
    check(lab.exec("vdi-001", ["python3", "-c", PROBE, "10.0.0.30", "139"]).stdout.trim() === "blocked", "before the policy edit, vdi-001 -> file server tcp/139 is blocked");
    await page.goto(lab.baseUrl + "/#/policy");
    await poll(async () => (await page.inputValue("#policy-text")).includes('"name": "lab"'), 10, "the editor holds the active lab policy");
    const activeText = await page.inputValue("#policy-text");
    const lines = activeText.split("\n");
    const defaultsLine = lines.findIndex((l) => l.trim() === '"defaults": {');
    const actionLine = lines.findIndex((l, i) => i > defaultsLine && l.includes('"action": "deny"'));
    if (check(defaultsLine >= 0 && actionLine > defaultsLine, "found defaults.action in the editor")) {
      lines[actionLine] = lines[actionLine].replace('"deny"', '"maybe"');
      await page.fill("#policy-text", lines.join("\n"));
      await page.click("#policy-validate");
      const expected = actionLine + 1;
      await poll(async () => (await page.locator(`.gutter [data-line="${expected}"].error`).count()) === 1, 10, `the invalid defaults.action is marked at line ${expected}`);
      check((await page.locator(".gutter .error").count()) === 1, "only that line is marked");
      check((await text("#policy-problem-list")).includes("/defaults/action"), "the problem list names /defaults/action");
      check((await page.locator(`.band.error[data-line="${expected}"]`).count()) === 1, "the line is highlighted in the text");
      await shot("policy-error");
      // A valid change that reaches the kernel: SMB also on tcp/139; activate, and both
      // enforcers apply the new ruleset.
      const edited = JSON.parse(activeText);
      edited.description = "Edited in the dashboard. " + edited.description;
      edited.services.find((s) => s.name === "smb").entries[0].ports.push(139);
      const before = Object.fromEntries(((await lab.api("GET", "/enforcers", admin)).body?.enforcers ?? []).map((e) => [e.id, e.applied_generation ?? 0]));
      await page.fill("#policy-text", JSON.stringify(edited, null, 2) + "\n");
      await poll(async () => (await text("#policy-diff")).includes("139"), 5, "the line diff against the active revision shows the added port");
      await page.click("#policy-activate");
      await poll(async () => (await text("#policy-status")).includes("is active"), 15, "activating the valid policy succeeds");
      check((await page.locator(".gutter .error").count()) === 0, "no line is marked any more");
      const active = await lab.api("GET", "/policies/active", admin);
      check(active.status === 200 && String(active.body.id) === (await page.locator("#policy-status").getAttribute("data-activated")) && active.body.document.description.startsWith("Edited in the dashboard."),
        "the API's active revision is the one activated from the UI");
      await poll(async () => (await text("#policy-diff")).includes("No change"), 10, "the diff against the new active revision is empty");
      await poll(async () => {
        const { status, body } = await lab.api("GET", "/enforcers", admin);
        return status === 200 && body.enforcers.length === 2 && body.enforcers.every((e) => e.connected && e.in_sync && (e.applied_generation ?? 0) > before[e.id]);
      }, 20, "both enforcers applied the activated revision (a newer generation, in sync)");
      check(lab.exec("vdi-001", ["python3", "-c", PROBE, "10.0.0.30", "139"]).stdout.trim() === "reached", "vdi-001 reaches the file server on tcp/139 now (the change is in the kernel)");
      await page.locator("#policy-history tr[data-state=active]").first().waitFor({ timeout: 5000 }).catch(() => {});
      await shot("policy");
    }

    // --- enforcers and audit ------------------------------------------------------------
    await page.goto(lab.baseUrl + "/#/enforcers");
    await poll(async () => (await page.locator("tr[data-enforcer]").count()) === 2, 10, "the enforcers view lists hv1 and hv2");
    check((await text('tr[data-enforcer="hv1"]')).includes("in sync"), "hv1 is in sync");
    // A VM port whose MAC no workload has (its other end stays on the hypervisor, under a
    // name no pattern matches): the enforcer isolates it and the view lists it.
    const madePort = spawnSync("ip", ["-n", "bhui-hv1", "link", "add", "vnet29", "address", "fe:12:34:56:78:9a", "type", "veth", "peer", "name", "guest29"], { encoding: "utf8" });
    check(madePort.status === 0, "an unknown VM port vnet29 on hv1 " + (madePort.stderr ?? ""));
    await poll(async () => (await page.locator('tr[data-port="hv1/vnet29"]').count()) === 1, 20,
      "the enforcers view lists vnet29 on hv1 among the unidentified ports");
    check((await text('tr[data-port="hv1/vnet29"]')).includes("fe:12:34:56:78:9a"), "with its MAC");
    await shot("enforcers");
    await page.goto(lab.baseUrl + "/#/audit");
    await poll(async () => (await page.locator('tr[data-action="quarantine.create"]').count()) > 0 && (await page.locator('tr[data-action="policy.activate"]').count()) > 0, 10,
      "the audit log shows the quarantine and the activation");
    await shot("audit");

    // --- a soc token: no policy editing ---------------------------------------------------
    const socContext = await browser.newContext({ viewport: VIEWPORT });
    const socPage = await socContext.newPage();
    await socPage.goto(lab.baseUrl + "/");
    await socPage.fill("#token", soc);
    await socPage.press("#token", "Enter");
    await poll(async () => (await socPage.locator("#whoami").textContent().catch(() => "")) === "lab-soc (soc)", 10, "signed in as lab-soc (soc)");
    check((await socPage.locator('nav a[data-nav="policy"]').count()) === 0, "a soc user has no Policy view in the navigation");
    await socPage.goto(lab.baseUrl + "/#/policy");
    await poll(async () => socPage.locator("#policy-forbidden").isVisible().catch(() => false), 10, "#/policy tells a soc user the role cannot edit policy");
    check((await socPage.locator("#policy-text").count()) === 0, "no policy editor for soc");
    const refused = await lab.api("POST", "/policies", soc, JSON.parse(activeText));
    check(refused.status === 403 && refused.body?.error?.code === "forbidden", "the API refuses a policy upload with the soc token (403 forbidden)");
    const refusedActivate = await lab.api("POST", "/policies/rollback", soc);
    check(refusedActivate.status === 403, "and a rollback (403)");
    await socContext.close();

    // --- the controller goes down: a banner, not a blank page -----------------------------
    await page.goto(lab.baseUrl + "/#/overview");
    await page.locator("#fleet-health").waitFor({ timeout: 10000 });
    const stop = lab.run("stop", ["controller"]);
    check(stop.code === 0, "lab.py stop controller");
    await poll(async () => visible("#controller-banner"), 15, "the 'controller unreachable' banner shows");
    check((await text("#controller-banner")).includes("Controller unreachable"), "the banner says the controller is unreachable");
    check(await visible("#whoami"), "the page is still there under the banner");
    await shot("controller-down");
    const start = lab.run("start", ["controller"]);
    check(start.code === 0, "lab.py start controller");
    await poll(async () => !(await visible("#controller-banner")), 20, "the banner goes away once the controller answers again");

    check(foreignRequests.length === 0, `no request left the controller's origin (${foreignRequests.slice(0, 3).join(", ")})`);
    check(pageErrors.length === 0, `no uncaught error in the page (${pageErrors.slice(0, 3).join("; ")})`);
  } finally {
    if (browser) {
      await browser.close().catch(() => {});
    }
    const down = lab.down();
    check(down.code === 0, "lab down");
    const left = spawnSync("ip", ["netns", "list"], { encoding: "utf8" }).stdout ?? "";
    check(!left.includes("bhui-"), "no namespace of the test left");
    rmSync(state, { recursive: true, force: true });
  }
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
