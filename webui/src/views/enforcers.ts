// Enforcers: generation applied vs desired, drift repairs, last heartbeat, clock offset;
// below them the VM ports port discovery found whose MAC no workload has (isolated, or as
// the enforcer's unknown_ports says, until the inventory names them).
import type { View } from "../context";
import { badge, emptyState, errorState, h, loadingState, replaceChildren, table } from "../dom";
import { formatAge, formatTime } from "../format";
import type { Enforcer, Port } from "../types";
import { keepFresh } from "./refresh";

export const enforcersView: View = (container, context) => {
  const listBox = h("div", { id: "enforcer-list" }, loadingState("enforcers"));
  const portsBox = h("div", { id: "unidentified-ports" }, loadingState("unidentified ports"));
  replaceChildren(container, h("h1", {}, "Enforcers"), listBox, h("h2", {}, "Unidentified ports"), portsBox);
  return keepFresh(
    context,
    async () => {
      try {
        const { enforcers } = await context.api.get<{ enforcers: Enforcer[] }>("/enforcers");
        replaceChildren(
          listBox,
          enforcers.length === 0
            ? emptyState("No enforcer is enrolled. Issue an enrollment token (POST /api/v1/enforcers/{id}/enrollment-token) and start bulkhead-enforcer with it.")
            : table<Enforcer>(
                [
                  { header: "Enforcer", cell: (e) => [h("strong", {}, e.id), e.description ? [h("br", {}), h("span", { class: "hint" }, e.description)] : null] },
                  { header: "Channel", cell: (e) => (e.connected ? badge("connected", "ok") : badge("disconnected", "bad")) },
                  { header: "Generation applied / desired", cell: (e) => h("span", { class: e.applied_generation === e.desired_generation ? "" : "warn-text" }, `${e.applied_generation ?? "–"} / ${e.desired_generation}`) },
                  { header: "Ruleset", cell: (e) => (e.in_sync ? badge("in sync", "ok") : badge(e.apply_state === "failed" ? "apply failed" : "behind", "warn")) },
                  { header: "Drift repairs", cell: (e) => [String(e.drift_repairs ?? 0), e.last_drift_at ? [h("br", {}), h("span", { class: "hint" }, `last ${formatAge(e.last_drift_at)}`)] : null] },
                  { header: "Last heartbeat", cell: (e) => [formatAge(e.last_heartbeat), h("br", {}), h("span", { class: "hint" }, formatTime(e.last_heartbeat))] },
                  { header: "Clock offset", cell: (e) => (e.clock_offset_ms === undefined ? "–" : h("span", { class: Math.abs(e.clock_offset_ms) > 2000 ? "warn-text" : "" }, `${e.clock_offset_ms > 0 ? "+" : ""}${e.clock_offset_ms} ms`)) },
                  { header: "Version / host", cell: (e) => `${e.version ?? "–"} ${e.hostname ? "on " + e.hostname : ""}` },
                  { header: "Last error", cell: (e) => e.last_error || "–", className: "wide" },
                ],
                enforcers,
                { rowAttributes: (e) => ({ "data-enforcer": e.id }) },
              ),
        );
      } catch (error) {
        replaceChildren(listBox, errorState(error));
      }
      try {
        const { ports } = await context.api.get<{ ports: Port[] }>("/ports?state=unidentified");
        replaceChildren(
          portsBox,
          ports.length === 0
            ? emptyState("Every VM port the enforcers found belongs to a workload of the inventory.")
            : table<Port>(
                [
                  { header: "Enforcer", cell: (p) => h("strong", {}, p.enforcer) },
                  { header: "Port", cell: (p) => h("code", {}, p.interface) },
                  { header: "MAC", cell: (p) => h("code", {}, p.mac) },
                  { header: "VM", cell: (p) => (p.domain?.name ? [p.domain.name, p.domain.uuid ? [h("br", {}), h("span", { class: "hint" }, p.domain.uuid)] : null] : "–") },
                  { header: "Addresses seen", cell: (p) => (p.addresses?.length ? p.addresses.join(", ") : "–") },
                  { header: "Reported", cell: (p) => formatAge(p.reported_at ?? null) },
                ],
                ports,
                { rowAttributes: (p) => ({ "data-port": `${p.enforcer}/${p.interface}` }) },
              ),
        );
      } catch (error) {
        replaceChildren(portsBox, errorState(error));
      }
    },
    { intervalMs: 5000, on: ["enforcer", "policy"] },
  );
};
