// Incidents: the list, newest first, filtered by state, severity and source workload.
import type { View } from "../context";
import { badge, emptyState, errorState, h, link, loadingState, replaceChildren, table } from "../dom";
import { formatAge, formatCount, formatTime } from "../format";
import type { Incident } from "../types";
import { keepFresh } from "./refresh";

export const incidentsView: View = (container, context, route) => {
  const state = route.query.get("state") ?? "";
  const severity = route.query.get("severity") ?? "";
  const workload = route.query.get("workload") ?? "";
  const stateSelect = h("select", { id: "incident-state", name: "state" }, ["", "open", "acknowledged", "resolved"].map((s) => h("option", { value: s, selected: s === state }, s || "any")));
  const severitySelect = h("select", { id: "incident-severity", name: "severity" }, ["", "critical", "high", "medium", "low"].map((s) => h("option", { value: s, selected: s === severity }, s || "any")));
  const workloadInput = h("input", { id: "incident-workload", name: "workload", value: workload, placeholder: "vdi-002" });
  const apply = () => {
    const q = new URLSearchParams();
    if (stateSelect.value) q.set("state", stateSelect.value);
    if (severitySelect.value) q.set("severity", severitySelect.value);
    if (workloadInput.value.trim()) q.set("workload", workloadInput.value.trim());
    const text = q.toString();
    context.navigate("#/incidents" + (text ? "?" + text : ""));
  };
  stateSelect.addEventListener("change", apply);
  severitySelect.addEventListener("change", apply);
  const listBox = h("div", { id: "incident-list" }, loadingState("incidents"));
  replaceChildren(
    container,
    h("h1", {}, "Incidents"),
    h(
      "form",
      { class: "filters", onsubmit: (e: Event) => { e.preventDefault(); apply(); } },
      h("label", { class: "filter" }, h("span", {}, "State"), stateSelect),
      h("label", { class: "filter" }, h("span", {}, "Severity"), severitySelect),
      h("label", { class: "filter" }, h("span", {}, "Source workload"), workloadInput),
      h("div", { class: "filter-buttons" }, h("button", { class: "button", type: "submit" }, "Apply")),
    ),
    listBox,
  );

  const stop = keepFresh(
    context,
    async () => {
      try {
        const params = new URLSearchParams({ limit: "500" });
        if (state) params.set("state", state);
        if (workload) params.set("workload", workload);
        const { incidents } = await context.api.get<{ incidents: Incident[] }>(`/incidents?${params}`);
        const rows = severity ? incidents.filter((i) => i.severity === severity) : incidents;
        replaceChildren(
          listBox,
          rows.length === 0
            ? emptyState("No incident matches. Drops between workloads that look like scans, sweeps or decoy touches open one.")
            : table<Incident>(
                [
                  { header: "#", cell: (i) => link(`#/incidents/${i.id}`, String(i.id)) },
                  { header: "Severity", cell: (i) => badge(i.severity, i.severity) },
                  { header: "State", cell: (i) => badge(i.state, "state-" + i.state) },
                  { header: "Title", cell: (i) => link(`#/incidents/${i.id}`, i.title), className: "wide" },
                  { header: "Source workload", cell: (i) => link(`#/workloads/${encodeURIComponent(i.source_workload)}`, i.source_workload) },
                  { header: "User", cell: (i) => i.user || i.details.user || "–" },
                  { header: "Events", cell: (i) => formatCount(i.event_count), className: "number" },
                  { header: "Opened", cell: (i) => formatTime(i.opened_at) },
                  { header: "Updated", cell: (i) => formatAge(i.updated_at) },
                ],
                rows,
                { rowAttributes: (i) => ({ "data-incident": i.id, "data-severity": i.severity }) },
              ),
        );
      } catch (error) {
        replaceChildren(listBox, errorState(error));
      }
    },
    { intervalMs: 10000, on: ["incident"] },
  );
  return stop;
};
