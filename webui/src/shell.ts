// The signed-in page: header with navigation by role, the "controller unreachable" banner,
// and the routed view.
import { ApiClient } from "./api";
import { ConnectivityMonitor, type ConnectivityState } from "./connectivity";
import type { AppContext, View, ViewCleanup } from "./context";
import { h, replaceChildren } from "./dom";
import { formatClock } from "./format";
import { LiveStream, type StreamStatus } from "./live_stream";
import { roleAllows, type Permission } from "./permissions";
import { matchRoute, type RouteDefinition } from "./router";
import type { Whoami } from "./types";
import { auditView } from "./views/audit";
import { enforcersView } from "./views/enforcers";
import { evidenceView } from "./views/evidence";
import { incidentDetailView } from "./views/incident_detail";
import { incidentsView } from "./views/incidents";
import { liveView } from "./views/live";
import { overviewView } from "./views/overview";
import { policyView } from "./views/policy";
import { quarantinesView } from "./views/quarantines";
import { workloadView } from "./views/workload";

interface NavEntry {
  hash: string;
  label: string;
  key: string;
  permission: Permission;
}

const NAVIGATION: NavEntry[] = [
  { hash: "#/overview", label: "Overview", key: "1", permission: "read" },
  { hash: "#/live", label: "Live drops", key: "2", permission: "read" },
  { hash: "#/incidents", label: "Incidents", key: "3", permission: "read" },
  { hash: "#/quarantines", label: "Quarantines", key: "4", permission: "read" },
  { hash: "#/policy", label: "Policy", key: "5", permission: "write-policy" },
  { hash: "#/enforcers", label: "Enforcers", key: "6", permission: "read" },
  { hash: "#/audit", label: "Audit log", key: "7", permission: "read-audit" },
  { hash: "#/evidence", label: "Evidence", key: "8", permission: "read" },
];

const ROUTES: RouteDefinition<View>[] = [
  { pattern: /^(?:overview)?$/, target: overviewView },
  { pattern: /^live$/, target: liveView },
  { pattern: /^incidents$/, target: incidentsView },
  { pattern: /^incidents\/(\d+)$/, target: incidentDetailView },
  { pattern: /^quarantines$/, target: quarantinesView },
  { pattern: /^policy$/, target: policyView },
  { pattern: /^enforcers$/, target: enforcersView },
  { pattern: /^audit$/, target: auditView },
  { pattern: /^evidence$/, target: evidenceView },
  { pattern: /^workloads\/([^/]+)$/, target: workloadView },
];

export function startShell(root: HTMLElement, token: string, user: Whoami, signOut: () => void): void {
  const connectivity = new ConnectivityMonitor();
  const api = new ApiClient(token, connectivity);
  const stream = new LiveStream(token, connectivity);
  const context: AppContext = {
    api,
    stream,
    connectivity,
    user,
    can: (permission) => roleAllows(user.role, permission),
    navigate: (hash) => {
      window.location.hash = hash;
    },
  };

  const banner = h("div", { id: "controller-banner", class: "banner", role: "alert", hidden: true });
  const streamIndicator = h("span", { class: "stream-status", id: "stream-status", title: "Live event stream" });
  const nav = h(
    "nav",
    { class: "main-nav", "aria-label": "Views" },
    h(
      "ul",
      {},
      NAVIGATION.filter((entry) => context.can(entry.permission)).map((entry) =>
        h("li", {}, h("a", { href: entry.hash, "data-nav": entry.hash.slice(2), title: `${entry.label} (Alt+${entry.key})` }, entry.label)),
      ),
    ),
  );
  const main = h("main", { id: "view", class: "view", tabindex: "-1" });
  const doSignOut = () => {
    teardown();
    signOut();
  };
  const header = h(
    "header",
    { class: "top-bar" },
    h("a", { class: "skip-link", href: "#view", onclick: (e: Event) => { e.preventDefault(); main.focus(); } }, "Skip to content"),
    h("span", { class: "brand" }, "Bulkhead", h("span", { class: "brand-sub" }, " SOC")),
    nav,
    h(
      "div",
      { class: "who" },
      streamIndicator,
      h("span", { id: "whoami", "data-role": user.role }, `${user.name} (${user.role})`),
      h("button", { class: "button small", type: "button", id: "sign-out", onclick: doSignOut }, "Sign out"),
    ),
  );
  replaceChildren(root, header, banner, main);

  const showConnectivity = (state: ConnectivityState) => {
    if (state.up) {
      banner.hidden = true;
      banner.textContent = "";
      document.body.classList.remove("controller-down");
    } else {
      banner.hidden = false;
      replaceChildren(
        banner,
        h("strong", {}, "Controller unreachable."),
        ` No answer since ${formatClock(state.since.getTime())} (${state.reason}). The dashboard keeps retrying; what you see may be out of date.`,
      );
      document.body.classList.add("controller-down");
    }
  };
  connectivity.subscribe(showConnectivity);
  connectivity.setUnauthenticatedHandler(() => {
    teardown();
    signOut();
  });
  const streamLabels: Record<StreamStatus, string> = { connecting: "stream: connecting", open: "stream: live", down: "stream: down" };
  stream.onStatus((status) => {
    streamIndicator.textContent = streamLabels[status];
    streamIndicator.dataset.status = status;
  });
  stream.start();

  let cleanup: ViewCleanup | void;
  const render = () => {
    if (cleanup) {
      cleanup();
      cleanup = undefined;
    }
    const matched = matchRoute(ROUTES, window.location.hash);
    const current = window.location.hash.replace(/^#\/?/, "").split(/[/?]/)[0] || "overview";
    for (const a of nav.querySelectorAll<HTMLAnchorElement>("a[data-nav]")) {
      if (a.dataset.nav === current) {
        a.setAttribute("aria-current", "page");
      } else {
        a.removeAttribute("aria-current");
      }
    }
    main.textContent = "";
    if (!matched) {
      main.append(h("h1", {}, "Not found"), h("p", {}, "No view at this address. ", h("a", { href: "#/overview" }, "Back to the overview")));
      return;
    }
    cleanup = matched.target(main, context, matched.match);
  };
  const onKey = (event: KeyboardEvent) => {
    if (!event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    const entry = NAVIGATION.find((n) => n.key === event.key && context.can(n.permission));
    if (entry) {
      event.preventDefault();
      window.location.hash = entry.hash;
      main.focus();
    }
  };
  window.addEventListener("hashchange", render);
  window.addEventListener("keydown", onKey);
  render();

  function teardown(): void {
    window.removeEventListener("hashchange", render);
    window.removeEventListener("keydown", onKey);
    if (cleanup) {
      cleanup();
    }
    stream.stop();
    connectivity.stop();
  }
}
