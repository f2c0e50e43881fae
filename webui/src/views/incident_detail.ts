// One incident: explanation and findings, timeline chart, scope graph, attribution, notes,
// and the actions the role allows (acknowledge, resolve, note, quarantine, release).
import { ApiError, describeError } from "../api";
import { TimeSeriesChart } from "../charts/time_series_chart";
import type { View } from "../context";
import { badge, emptyState, errorState, h, link, loadingState, replaceChildren, section, table } from "../dom";
import { eventTimeMs, formatAge, formatCount, formatTime } from "../format";
import type { DropEvent, IncidentDetail, IncidentScope, Quarantine, VpnSession } from "../types";
import { keepFresh } from "./refresh";

export const incidentDetailView: View = (container, context, route) => {
  const id = Number(route.params[0]);
  const header = h("div", { class: "incident-header" }, loadingState(`incident ${id}`));
  const actions = h("div", { class: "actions", id: "incident-actions" });
  const actionMessage = h("p", { class: "action-message", role: "status", id: "action-message" });
  const explanation = h("div", { id: "incident-explanation" });
  const attribution = h("div", { id: "incident-attribution" });
  const quarantineBox = h("div", { id: "incident-quarantine" });
  const timelineBox = h("div", { class: "chart", id: "incident-timeline" });
  const targetsBox = h("div", { id: "incident-targets" });
  const scopeBox = h("div", { class: "scope-graph", id: "scope-graph", role: "img", "aria-label": "Scope graph" });
  const scopeLegend = h("p", { class: "hint", id: "scope-legend" });
  const notesBox = h("div", { id: "incident-notes" });
  replaceChildren(
    container,
    h("p", { class: "breadcrumb" }, link("#/incidents", "Incidents"), " / ", `#${id}`),
    header,
    actions,
    actionMessage,
    h(
      "div",
      { class: "grid incident-grid" },
      section("Explanation", explanation),
      section("Attribution", attribution),
      section("Timeline", timelineBox, targetsBox),
      section("Scope", scopeBox, scopeLegend),
      section("Quarantine", quarantineBox),
      section("Notes", notesBox),
    ),
  );

  let timelineChart: TimeSeriesChart | undefined;
  let graph: { destroy(): void } | undefined;
  let incident: IncidentDetail | undefined;
  let scopeLoaded = false;

  const load = async () => {
    try {
      incident = await context.api.get<IncidentDetail>(`/incidents/${id}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        replaceChildren(header, emptyState(`There is no incident #${id}.`));
        return;
      }
      if (!incident) {
        replaceChildren(header, errorState(error, () => void load()));
      }
      return;
    }
    renderHeader(incident);
    renderActions(incident);
    renderExplanation(incident);
    void renderAttribution(incident);
    renderQuarantine(incident.quarantine);
    renderTimeline(incident);
    renderNotes(incident);
    if (!scopeLoaded) {
      scopeLoaded = true;
      void loadScope();
    }
  };

  function renderHeader(i: IncidentDetail): void {
    replaceChildren(
      header,
      h("h1", { id: "incident-title" }, `#${i.id} ${i.title}`),
      h(
        "p",
        { class: "incident-meta" },
        badge(i.severity, i.severity),
        " ",
        h("span", { id: "incident-state", "data-state": i.state }, badge(i.state, "state-" + i.state)),
        ` opened ${formatTime(i.opened_at)}, updated ${formatAge(i.updated_at)}, ${formatCount(i.event_count)} events`,
      ),
    );
  }

  function renderExplanation(i: IncidentDetail): void {
    const findings = i.details.findings ?? [];
    replaceChildren(
      explanation,
      h("p", { class: "explanation", id: "incident-explanation-text" }, i.explanation),
      findings.length === 0
        ? null
        : table(
            [
              { header: "Finding", cell: (f) => f.kind ?? "" },
              { header: "Severity", cell: (f) => (f.severity ? badge(f.severity, f.severity) : "") },
              { header: "Targets", cell: (f) => String(f.distinct_targets ?? "") },
              { header: "Hosts", cell: (f) => String(f.distinct_hosts ?? "") },
              { header: "Ports", cell: (f) => String(f.distinct_ports ?? "") },
              { header: "At", cell: (f) => formatTime(f.at) },
            ],
            findings,
          ),
      i.details.findings_folded ? h("p", { class: "hint" }, `${i.details.findings_folded} older findings folded.`) : null,
      i.details.dry_run_quarantine ? h("p", { class: "hint" }, `Dry run: would have quarantined at ${formatTime(i.details.dry_run_quarantine.at)} (${i.details.dry_run_quarantine.reason}).`) : null,
    );
  }

  async function renderAttribution(i: IncidentDetail): Promise<void> {
    const source = i.source;
    const firstEvent: DropEvent | undefined = i.timeline[0];
    const user = i.details.user || source?.user || "";
    const rows: [string, string | Node][] = [
      ["Workload", link(`#/workloads/${encodeURIComponent(i.source_workload)}`, i.source_workload)],
      ["User", user || "–"],
      ["Host", source?.hostname ?? "–"],
      ["Hypervisor / enforcer", source?.enforcer ?? firstEvent?.enforcer ?? "–"],
      ["Port", source?.attachment?.interface ?? firstEvent?.indev ?? "–"],
      ["MAC", source?.mac ?? firstEvent?.src_mac ?? "–"],
      ["Addresses", source?.addresses.join(", ") ?? firstEvent?.src ?? "–"],
    ];
    const vpnInDetails = Object.entries(i.details).filter(([key]) => key.startsWith("vpn"));
    for (const [key, value] of vpnInDetails) {
      rows.push([key.replace(/_/g, " "), typeof value === "string" ? value : JSON.stringify(value)]);
    }
    const render = (vpn?: VpnSession) =>
      replaceChildren(
        attribution,
        h(
          "dl",
          { class: "facts" },
          rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
          vpn ? [h("dt", {}, "VPN session"), h("dd", { id: "vpn-session" }, `${vpn.user} from ${vpn.real_address} (pool ${vpn.pool_address}) since ${formatTime(vpn.start)}${vpn.end ? ", ended " + formatTime(vpn.end) : ""}`)] : null,
        ),
      );
    render();
    if (vpnInDetails.length === 0 && source) {
      try {
        const { sessions } = await context.api.get<{ sessions: VpnSession[] }>(`/vpn-sessions?active_at=${encodeURIComponent(i.opened_at)}&limit=1000`);
        const match = (sessions ?? []).find((s) => source.addresses.includes(s.pool_address));
        if (match) {
          render(match);
        }
      } catch {
        // attribution without the VPN session is still useful
      }
    }
  }

  function renderQuarantine(q: Quarantine | undefined): void {
    if (!q || q.released_at) {
      replaceChildren(quarantineBox, emptyState(`${incident?.source_workload ?? "The source"} is not in quarantine.`));
      return;
    }
    replaceChildren(
      quarantineBox,
      h("p", {}, `In quarantine since ${formatTime(q.created_at)} by ${q.contained_by === "kernel" ? "the kernel (contained by the kernel on the tripwire's packet)" : q.actor}${q.automatic && q.contained_by !== "kernel" ? " (automatic)" : ""}: ${q.reason}`),
      h("ul", { class: "enforcer-states" }, q.enforcers.map((e) => h("li", { "data-enforcer": e.enforcer, "data-state": e.state }, badge(`${e.enforcer}: ${e.state}`, e.state === "applied" ? "ok" : "warn"), ` generation ${e.desired_generation}`))),
    );
  }

  function renderTimeline(i: IncidentDetail): void {
    if (i.timeline.length === 0) {
      replaceChildren(timelineBox, emptyState("No events in the timeline."));
    } else {
      const times = i.timeline.map((e) => eventTimeMs(e));
      const first = Math.min(...times);
      const last = Math.max(...times);
      const bucketMs = timelineBucketMs(last - first);
      const counts = new Map<number, number>();
      i.timeline.forEach((e, index) => {
        const bucket = Math.floor(times[index] / bucketMs) * bucketMs;
        counts.set(bucket, (counts.get(bucket) ?? 0) + (e.count ?? 1));
      });
      const buckets: number[] = [];
      for (let b = Math.floor(first / bucketMs) * bucketMs; b <= last; b += bucketMs) {
        buckets.push(b);
      }
      if (!timelineChart) {
        timelineBox.textContent = "";
        timelineChart = new TimeSeriesChart(timelineBox, { label: `events per ${bucketMs >= 1000 ? bucketMs / 1000 + " s" : bucketMs + " ms"}`, unit: "", height: 160, bars: true, color: "#5b9dff" });
      }
      timelineChart.setData(buckets.map((b) => b / 1000), buckets.map((b) => counts.get(b) ?? 0));
    }
    const targets = Object.entries(i.targets).sort((a, b) => b[1] - a[1]);
    replaceChildren(
      targetsBox,
      targets.length === 0
        ? null
        : table<[string, number]>(
            [
              { header: "Target (dst proto/port)", cell: ([t]) => t },
              { header: "Events", cell: ([, n]) => formatCount(n), className: "number" },
            ],
            targets.slice(0, 20),
            { caption: `Targets (${targets.length})` },
          ),
    );
  }

  function renderNotes(i: IncidentDetail): void {
    const list =
      i.notes.length === 0
        ? emptyState("No notes yet.")
        : h("ul", { class: "notes" }, i.notes.map((n) => h("li", {}, h("p", { class: "note-meta" }, `${n.author}, ${formatTime(n.at)}`), h("p", {}, n.text))));
    if (!context.can("handle-incidents")) {
      replaceChildren(notesBox, list);
      return;
    }
    const text = h("textarea", { id: "note-text", rows: 3, "aria-label": "New note", placeholder: "What you found or did" });
    const form = h("form", { class: "note-form" }, text, h("button", { class: "button", type: "submit" }, "Add note"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = text.value.trim();
      if (value) {
        void act("Note added", () => context.api.post(`/incidents/${id}/notes`, { json: { text: value } }));
      }
    });
    replaceChildren(notesBox, list, form);
  }

  function renderActions(i: IncidentDetail): void {
    const buttons: HTMLElement[] = [];
    const button = (label: string, idName: string, run: () => Promise<unknown>, done: string) =>
      h("button", { class: "button", type: "button", id: idName, onclick: () => void act(done, run) }, label);
    if (context.can("handle-incidents") && i.state === "open") {
      buttons.push(button("Acknowledge", "action-acknowledge", () => context.api.post(`/incidents/${id}/acknowledge`), "Acknowledged"));
    }
    if (context.can("handle-incidents") && i.state !== "resolved") {
      buttons.push(button("Resolve", "action-resolve", () => context.api.post(`/incidents/${id}/resolve`), "Resolved"));
    }
    const quarantined = i.quarantine && !i.quarantine.released_at;
    if (context.can("quarantine") && !quarantined) {
      buttons.push(
        button(
          `Quarantine ${i.source_workload}`,
          "action-quarantine",
          () => context.api.post("/quarantines?wait_ms=5000", { json: { workload: i.source_workload, reason: `incident #${id}: ${i.title}`, incident: id } }),
          "Quarantine requested",
        ),
      );
    }
    if (context.can("quarantine") && quarantined) {
      buttons.push(button(`Release ${i.source_workload}`, "action-release", () => context.api.delete(`/quarantines/${encodeURIComponent(i.source_workload)}?wait_ms=5000`), "Released"));
    }
    replaceChildren(actions, buttons.length > 0 ? buttons : h("p", { class: "hint" }, `Role ${context.user.role}: read only.`));
  }

  async function act(done: string, run: () => Promise<unknown>): Promise<void> {
    for (const b of actions.querySelectorAll("button")) {
      b.disabled = true;
    }
    actionMessage.textContent = "Working…";
    try {
      await run();
      actionMessage.textContent = done + ".";
    } catch (error) {
      actionMessage.textContent = "Failed: " + describeError(error);
    }
    await load();
  }

  async function loadScope(): Promise<void> {
    replaceChildren(scopeBox, loadingState("scope"));
    try {
      const scope = await context.api.get<IncidentScope>(`/incidents/${id}/scope`);
      if (scope.nodes.length === 0) {
        replaceChildren(scopeBox, emptyState("The scope is empty."));
        return;
      }
      scopeBox.textContent = "";
      scopeBox.dataset.nodes = String(scope.nodes.length);
      const { renderScopeGraph } = await import("../charts/scope_graph");
      graph = renderScopeGraph(scopeBox, scope);
      const kinds = (k: string) => scope.nodes.filter((n) => n.kind === k).length;
      scopeLegend.textContent = `${kinds("source")} source, ${kinds("target")} targets, ${kinds("other-source")} other sources, ${kinds("segment")} segments; red: blocked, green: allowed, dashed: segment membership.`;
    } catch (error) {
      if (error instanceof ApiError && (error.status === 404 || error.status === 501)) {
        scopeBox.dataset.nodes = "0";
        replaceChildren(scopeBox, h("div", { class: "state state-empty", id: "scope-unavailable", "data-state": "unavailable" }, "Scope not available: this controller does not offer GET /incidents/{id}/scope yet."));
      } else {
        replaceChildren(scopeBox, errorState(error, () => void loadScope()));
      }
    }
  }

  const stop = keepFresh(context, load, { intervalMs: 10000, on: ["incident", "quarantine"] });
  return () => {
    stop();
    timelineChart?.destroy();
    graph?.destroy();
  };
};

/** A round bucket width that cuts `spanMs` into at most ~40 bars (100 ms at least). */
export function timelineBucketMs(spanMs: number): number {
  const steps = [100, 250, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000];
  return steps.find((step) => spanMs / step <= 40) ?? Math.ceil(spanMs / 40 / 3_600_000) * 3_600_000;
}
