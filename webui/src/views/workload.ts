// One workload: inventory facts, its quarantine, its incidents and its latest drops.
import { ApiError } from "../api";
import type { View } from "../context";
import { badge, emptyState, errorState, h, link, loadingState, replaceChildren, section, table } from "../dom";
import { eventTimeMs, formatClock, formatTime } from "../format";
import type { DropEvent, Incident, Workload } from "../types";
import { keepFresh } from "./refresh";

export const workloadView: View = (container, context, route) => {
  const id = route.params[0];
  const facts = h("div", {}, loadingState("the workload"));
  const incidents = h("div", {}, loadingState("incidents"));
  const drops = h("div", {}, loadingState("drops"));
  replaceChildren(
    container,
    h("h1", {}, `Workload ${id}`),
    h("p", {}, link(`#/live?workload=${encodeURIComponent(id)}`, "Live drops of this workload")),
    h("div", { class: "grid" }, section("Inventory", facts), section("Incidents", incidents), section("Latest drops", drops)),
  );
  return keepFresh(
    context,
    async () => {
      const api = context.api;
      try {
        const w = await api.get<Workload>(`/workloads/${encodeURIComponent(id)}`);
        const q = w.quarantine && !w.quarantine.released_at ? w.quarantine : undefined;
        replaceChildren(
          facts,
          h(
            "dl",
            { class: "facts" },
            [
              ["Addresses", w.addresses.join(", ")],
              ["User", w.user ?? "–"],
              ["Host", w.hostname ?? "–"],
              ["Enforcer", w.enforcer ?? "–"],
              ["Port", w.attachment?.interface ?? w.attachment?.mode ?? "–"],
              ["MAC", w.mac ?? "–"],
              ["Labels", Object.entries(w.labels ?? {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"],
            ].map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
            h("dt", {}, "Quarantine"),
            h("dd", { id: "workload-quarantine" }, q ? [badge("quarantined", "bad"), ` since ${formatTime(q.created_at)} by ${q.actor}: ${q.reason}`] : "not quarantined"),
          ),
        );
      } catch (error) {
        replaceChildren(facts, error instanceof ApiError && error.status === 404 ? emptyState(`${id} is not in the inventory.`) : errorState(error));
      }
      try {
        const { incidents: list } = await api.get<{ incidents: Incident[] }>(`/incidents?workload=${encodeURIComponent(id)}&limit=50`);
        replaceChildren(
          incidents,
          list.length === 0
            ? emptyState("No incident.")
            : table<Incident>(
                [
                  { header: "#", cell: (i) => link(`#/incidents/${i.id}`, String(i.id)) },
                  { header: "Severity", cell: (i) => badge(i.severity, i.severity) },
                  { header: "State", cell: (i) => i.state },
                  { header: "Title", cell: (i) => link(`#/incidents/${i.id}`, i.title) },
                  { header: "Opened", cell: (i) => formatTime(i.opened_at) },
                ],
                list,
              ),
        );
      } catch (error) {
        replaceChildren(incidents, errorState(error));
      }
      try {
        const { events } = await api.get<{ events: DropEvent[] }>(`/events?workload=${encodeURIComponent(id)}&limit=50`);
        replaceChildren(
          drops,
          events.length === 0
            ? emptyState("No drop of this workload is stored.")
            : table<DropEvent>(
                [
                  { header: "Time", cell: (e) => formatClock(eventTimeMs(e)) },
                  { header: "Type", cell: (e) => e.type },
                  { header: "Source", cell: (e) => e.src ?? "" },
                  { header: "Destination", cell: (e) => e.dst ?? "" },
                  { header: "Port", cell: (e) => (e.dport !== undefined ? `${e.proto_name}/${e.dport}` : e.proto_name ?? "") },
                  { header: "Reason", cell: (e) => e.reason ?? "" },
                ],
                events,
              ),
        );
      } catch (error) {
        replaceChildren(drops, errorState(error));
      }
    },
    { intervalMs: 10000, on: ["quarantine", "incident"] },
  );
};
